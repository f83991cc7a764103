/* The DAG tab: tasks layered by dependency depth, hard dependencies solid, soft ones dashed. */

const {h, s, replace, STATUS_SYMBOLS} = Console;

const W = 216, H = 74, GX = 70, GY = 18, PAD = 44;

function depths(tasks) {
  const byKey = new Map(tasks.map((t) => [t.key, t]));
  const memo = new Map();
  const depth = (task, seen = new Set()) => {
    if (memo.has(task.key)) return memo.get(task.key);
    if (seen.has(task.key)) return 0;  // never for a validated plan; guards the drawing anyway
    seen.add(task.key);
    const parents = task.blocked_by.filter((k) => byKey.has(k)).map((k) => depth(byKey.get(k), seen));
    const value = parents.length ? Math.max(...parents) + 1 : 0;
    memo.set(task.key, value);
    return value;
  };
  tasks.forEach((t) => depth(t));
  return memo;
}

function truncate(text, n) {
  return text.length > n ? text.slice(0, n - 1) + "…" : text;
}

function layout(tasks) {
  const depth = depths(tasks);
  const layers = [];
  tasks.forEach((t) => (layers[depth.get(t.key)] ||= []).push(t));
  const pos = new Map();
  layers.forEach((layer, i) => {
    if (i > 0) {  // order by the parents' positions: fewer crossings
      const centre = (t) => {
        const ys = t.blocked_by.filter((k) => pos.has(k)).map((k) => pos.get(k).row);
        return ys.length ? ys.reduce((a, b) => a + b, 0) / ys.length : 0;
      };
      layer.sort((a, b) => centre(a) - centre(b));
    }
    layer.forEach((t, row) => pos.set(t.key, {x: PAD + i * (W + GX), y: PAD + row * (H + GY), row}));
  });
  return {layers, pos};
}

function edge(pos, from, to, soft) {
  const a = pos.get(from), b = pos.get(to);
  if (!a || !b) return s("g", {});
  let d;
  if (b.x > a.x) {  // forward: right side of the dependency to the left side of the task
    const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x - 2, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
    d = `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`;
  } else {  // a soft dependency inside one layer: an arc on the left
    const x1 = a.x, y1 = a.y + H / 2, x2 = b.x - 2, y2 = b.y + H / 2, bulge = Math.min(40, 12 + Math.abs(y2 - y1) / 4);
    d = `M${x1},${y1} C${x1 - bulge},${y1} ${x2 - bulge},${y2} ${x2},${y2}`;
  }
  return s("path", {d, class: soft ? "edge edge-soft" : "edge", "marker-end": "url(#arrow)"});
}

function node(t, p, onOpen) {
  const symbol = STATUS_SYMBOLS[t.status] || "•";
  const g = s("g", {class: `node node-${t.status}`, transform: `translate(${p.x},${p.y})`, tabindex: 0,
                    role: "button", "data-node": t.key, "aria-label": `${t.key} ${t.pool}: ${t.status_label}`},
    s("title", {}, `${t.key} (${t.pool}) — ${t.status_label}\n${t.description}`),
    s("rect", {class: "node-box", width: W, height: H, rx: 8}),
    s("rect", {class: "node-band", width: 6, height: H, rx: 3}),
    s("text", {class: "node-title", x: 16, y: 22}, `${t.key}`,
      s("tspan", {class: "node-pool"}, `  ${t.pool}${t.kind !== "plan" ? " · " + t.kind : ""}`)),
    s("text", {class: "node-desc", x: 16, y: 42}, truncate(t.description, 30)),
    s("text", {class: "node-status", x: 16, y: 62},
      `${symbol} ${t.status_label}${t.attempts.length > 1 ? ` · ${t.attempts.length} attempts` : ""}`));
  if (t.running) {
    g.appendChild(s("rect", {class: "node-progress-track", x: 120, y: 55, width: 84, height: 6, rx: 3}));
    g.appendChild(s("rect", {class: "node-progress", x: 120, y: 55, width: Math.round(84 * (t.progress || 0) / 100),
                             height: 6, rx: 3}));
  }
  const open = () => onOpen(t.key);
  g.addEventListener("click", open);
  g.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); open(); } });
  return g;
}

/* `onOpen(key)`: a node was activated (the page shows that task's details). */
export function renderGraph(snap, onOpen) {
  const container = document.getElementById("dag");
  if (!snap.tasks.length) {
    replace(container, h("p", {class: "empty"}, "The graph appears once the PM has planned the request."));
    return;
  }
  const {layers, pos} = layout(snap.tasks);
  const rows = Math.max(...layers.map((l) => l.length));
  const width = PAD * 2 + layers.length * W + (layers.length - 1) * GX;
  const height = PAD * 2 + rows * H + (rows - 1) * GY;
  const svg = s("svg", {class: "dag", width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
                        "aria-label": `Task graph: ${snap.tasks.length} tasks in ${layers.length} layers`},
    s("defs", {}, s("marker", {id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7,
                               orient: "auto-start-reverse"}, s("path", {d: "M0,0 L10,5 L0,10 z", class: "arrow-head"}))));
  snap.tasks.forEach((t) => {
    t.blocked_by.forEach((dep) => svg.appendChild(edge(pos, dep, t.key, false)));
    (t.soft_deps || []).forEach((dep) => svg.appendChild(edge(pos, dep, t.key, true)));
  });
  snap.tasks.forEach((t) => svg.appendChild(node(t, pos.get(t.key), onOpen)));
  replace(container, svg);
}
