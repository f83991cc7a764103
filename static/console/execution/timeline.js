/* The Timeline tab: a Gantt of every attempt (outcome told by pattern and symbol, not colour
   alone), waits for a slot, a "now" line while running, and the wall clock against the estimates. */

import {at, attemptDuration, executionDuration, serverNow} from "./clock.js";

const {h, s, replace, duration, time, STATUS_SYMBOLS} = Console;

/* Attempt outcome → legend text (the CSS classes and patterns are named by outcome). */
const OUTCOMES = [
  ["succeeded", "succeeded (solid)"], ["running", "running (light stripes)"], ["failed", "failed (hatched)"],
  ["expired", "timed out (cross-hatched)"], ["lost", "worker lost (dotted)"], ["cancelled", "cancelled (lined)"],
];

function patternDefs() {
  const stripe = (id, cls, angle, gap, width) => s("pattern", {id, patternUnits: "userSpaceOnUse", width: gap, height: gap,
                                                               patternTransform: `rotate(${angle})`},
    s("rect", {width: gap, height: gap, class: `pat-bg ${cls}`}), s("rect", {width, height: gap, class: "pat-fg"}));
  return s("defs", {},
    s("pattern", {id: "pat-succeeded", patternUnits: "userSpaceOnUse", width: 8, height: 8},
      s("rect", {width: 8, height: 8, class: "pat-bg pat-succeeded"})),
    stripe("pat-running", "pat-running", 45, 10, 4),
    stripe("pat-failed", "pat-failed", -45, 6, 2),
    s("pattern", {id: "pat-expired", patternUnits: "userSpaceOnUse", width: 8, height: 8},
      s("rect", {width: 8, height: 8, class: "pat-bg pat-expired"}),
      s("path", {d: "M0,0 L8,8 M8,0 L0,8", class: "pat-line"})),
    s("pattern", {id: "pat-lost", patternUnits: "userSpaceOnUse", width: 8, height: 8},
      s("rect", {width: 8, height: 8, class: "pat-bg pat-lost"}), s("circle", {cx: 4, cy: 4, r: 1.6, class: "pat-dot"})),
    s("pattern", {id: "pat-cancelled", patternUnits: "userSpaceOnUse", width: 6, height: 6},
      s("rect", {width: 6, height: 6, class: "pat-bg pat-cancelled"}), s("rect", {y: 2, width: 6, height: 1.5, class: "pat-fg"})));
}

/* Once per page: the patterns (ids must be unique) and the legend. The patterns live in an SVG of
   no size, not display:none, so the browser still paints what references them. */
export function installTimeline() {
  document.body.appendChild(s("svg", {class: "pattern-defs", width: 0, height: 0, "aria-hidden": "true", focusable: "false"},
    patternDefs()));
  const swatch = (status) => s("svg", {width: 28, height: 14, class: "swatch", "aria-hidden": "true"},
    s("rect", {width: 28, height: 14, rx: 3, class: `att att-${status}`, fill: `url(#pat-${status})`}));
  replace(document.getElementById("timeline-legend"), OUTCOMES.map(([status, label]) =>
    h("span", {class: "legend-item"}, swatch(status), `${STATUS_SYMBOLS[status]} ${label}`)),
    h("span", {class: "legend-item"}, h("span", {class: "wait-swatch", "aria-hidden": "true"}), "waiting for a slot"));
}

function niceStep(range) {
  for (const step of [0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600]) {
    if (range / step <= 10) return step;
  }
  return 7200;
}

function attemptBar(svg, task, a, x, y, ROW) {
  const x1 = x(at(a.started_at));
  const x2 = x(a.finished_at ? at(a.finished_at) : serverNow());
  const w = Math.max(3, x2 - x1);
  const label = `#${a.number} ${STATUS_SYMBOLS[a.status] || ""} ${duration(attemptDuration(a))}`;
  svg.appendChild(s("rect", {x: x1, y: y + 5, width: w, height: ROW - 10, rx: 4, class: `att att-${a.status}`,
                             fill: `url(#pat-${a.status})`, "data-attempt": `${task.key}#${a.number}`, "data-outcome": a.status},
    s("title", {}, `${task.key} attempt ${a.number}: ${a.status_label}, ${duration(attemptDuration(a))}${a.error ? "\n" + a.error : ""}`)));
  const textWidth = label.length * 6.6;
  if (w > textWidth + 12) {  // on a pill inside the bar, readable over any pattern
    svg.appendChild(s("rect", {x: x1 + 4, y: y + 8, width: textWidth + 4, height: ROW - 16, rx: 3, class: "att-pill"}));
    svg.appendChild(s("text", {x: x1 + 6, y: y + 19, class: "att-label"}, label));
  } else {
    svg.appendChild(s("text", {x: x1 + w + 5, y: y + 19, class: "att-label"}, label));
  }
}

export function renderTimeline(snap) {
  const container = document.getElementById("timeline");
  if (!snap.tasks.length) {
    replace(container, h("p", {class: "empty"}, "The timeline starts when the first task runs."));
    return;
  }
  const origin = at(snap.started_at) || at(snap.created_at);
  const shown = snap.tasks.filter((t) => t.attempts.length || t.waiting);
  let end = snap.finished_at ? at(snap.finished_at) : serverNow();
  for (const t of snap.tasks) for (const a of t.attempts) end = Math.max(end, a.finished_at ? at(a.finished_at) : serverNow());
  const span = Math.max(1, (end - origin) / 1000, snap.terminal ? 0 : snap.estimated_duration_sec || 0);
  const LABEL = 190, RIGHT = 24, ROW = 30, TOP = 28;
  const width = Math.max(720, container.clientWidth || 960);
  const plot = width - LABEL - RIGHT;
  const x = (ms) => LABEL + ((ms - origin) / 1000 / span) * plot;
  const ordered = [...snap.tasks].sort((a, b) => {
    const sa = a.attempts.length ? at(a.attempts[0].started_at) : Infinity;
    const sb = b.attempts.length ? at(b.attempts[0].started_at) : Infinity;
    return sa - sb || a.key.localeCompare(b.key, undefined, {numeric: true});
  });
  const height = TOP + ordered.length * ROW + 8;
  const svg = s("svg", {class: "gantt", width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
                        "aria-label": `Timeline of ${shown.length} tasks over ${duration(span)}`});
  const step = niceStep(span);
  for (let t = 0; t <= span + 1e-9; t += step) {
    const px = LABEL + (t / span) * plot;
    svg.appendChild(s("line", {x1: px, x2: px, y1: TOP - 6, y2: height - 4, class: "grid"}));
    svg.appendChild(s("text", {x: px, y: TOP - 12, class: "tick", "text-anchor": "middle"}, duration(t)));
  }
  ordered.forEach((task, i) => {
    const y = TOP + i * ROW;
    svg.appendChild(s("rect", {x: 0, y, width, height: ROW, class: i % 2 ? "row-odd" : "row-even"}));
    svg.appendChild(s("text", {x: 8, y: y + 19, class: "row-label"}, `${STATUS_SYMBOLS[task.status] || ""} ${task.key}`,
      s("tspan", {class: "row-pool"}, ` ${task.pool}`)));
    if (task.waiting && task.ready_at) {
      const x1 = x(at(task.ready_at)), x2 = x(serverNow());
      svg.appendChild(s("line", {x1, x2: Math.max(x1 + 2, x2), y1: y + 15, y2: y + 15, class: "wait"},
        s("title", {}, `${task.key} waiting (${task.status_label}) since ${time(task.ready_at)}`)));
    }
    task.attempts.forEach((a) => attemptBar(svg, task, a, x, y, ROW));
  });
  if (!snap.terminal && snap.started_at) {
    const px = x(serverNow());
    svg.appendChild(s("line", {x1: px, x2: px, y1: TOP - 6, y2: height - 4, class: "now"}));
  }
  replace(container, svg);
}

export function renderCompare(snap) {
  const bars = [
    ["Actual (wall clock)", executionDuration(snap), snap.terminal ? "actual" : "actual running"],
    ["Parallel estimate", snap.estimated_duration_sec, "estimate"],
    ["Serial estimate", snap.serial_estimate_sec, "serial"],
  ].filter(([, value]) => value !== null && value !== undefined);
  const container = document.getElementById("compare");
  if (!bars.length) {
    replace(container, h("p", {class: "muted"}, "Estimates appear once the plan is made."));
    return;
  }
  const max = Math.max(...bars.map(([, v]) => v), 0.001);
  const saved = snap.saved_vs_serial;
  const verdict = saved === null ? null
    : saved >= 0 ? `${Math.round(saved * 100)}% faster than the serial estimate`
      : `${Math.round(-saved * 100)}% slower than the serial estimate`;
  replace(container, h("div", {class: "compare"}, bars.map(([label, value, cls]) => h("div", {class: "compare-row"},
    h("span", {class: "compare-label"}, label),
    h("span", {class: "compare-track"},
      h("span", {class: `compare-bar compare-${cls.split(" ")[0]}`, "data-width": (100 * value / max).toFixed(1)})),
    h("span", {class: "compare-value num"}, duration(value))))),
  verdict ? h("p", {class: saved < 0 ? "verdict verdict-slower" : "verdict"}, verdict) : null);
  container.querySelectorAll(".compare-bar").forEach((el) => { el.style.width = `${el.dataset.width}%`; });
}
