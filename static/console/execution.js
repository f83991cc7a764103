/* One execution, live.

   State = the server's snapshot (as of its `last_seq`) plus the events after it. The websocket
   delivers events in seq order from the page's last seq (the consumer replays from the database
   after a reconnect or a dropped message); each event patches the state at once and asks for a
   fresh snapshot (coalesced), so what is shown is always the database's truth, a moment late at
   worst, never stale. A seq gap on the page asks the server to resume from the last seq seen. */
"use strict";

(() => {
  const {h, s, replace, readJSON, urls, badge, duration, usd, tokens, time, LiveSocket, Refresher} = Console;
  const links = urls();
  const TERMINAL_TASK = new Set(["succeeded", "dead", "blocked", "cancelled"]);

  let snap = readJSON("execution-data");
  const feed = readJSON("activity-data");
  let feedSeq = feed.length ? feed[feed.length - 1].seq : snap.last_seq;
  let stateSeq = snap.last_seq;
  let clockOffset = Date.parse(snap.now) - Date.now();
  const openTasks = new Set();

  const serverNow = () => Date.now() + clockOffset;
  const at = (iso) => (iso ? Date.parse(iso) : null);
  const taskByKey = (key, state = snap) => state.tasks.find((t) => t.key === key);

  /* ------------------------------------------------------------------ event patches */

  const TASK_STATUS_BY_EVENT = {
    "task.ready": "ready", "task.queued": "queued", "task.started": "running", "task.succeeded": "succeeded",
    "task.failed": "failed", "task.retrying": "ready", "task.dead": "dead", "task.blocked": "blocked",
    "task.cancelled": "cancelled", "task.retry_requested": null,
  };

  /* What an event changes, applied to a state (the shown one, or a snapshot older than it). */
  function applyEvent(state, event) {
    const p = event.payload || {};
    if (event.type === "task.created" && !taskByKey(event.task, state)) {
      state.tasks.push({key: event.task, pool: p.pool || "", kind: p.kind || "plan", description: p.description || "",
                       status: (p.blocked_by || []).length ? "pending" : "ready", blocked_by: p.blocked_by || [],
                       soft_deps: [], progress: 0, attempts: [], files: [], findings: [], summary: "", error: "",
                       tokens_in: 0, tokens_out: 0, cost_usd: "0"});
    }
    const task = event.task && taskByKey(event.task, state);
    if (task && event.type in TASK_STATUS_BY_EVENT) {
      task.status = TASK_STATUS_BY_EVENT[event.type] || p.status || task.status;
      const last = task.attempts[task.attempts.length - 1];
      if (event.type === "task.started") {
        task.progress = 0;
        task.attempts.push({number: p.attempt, status: "running", started_at: event.at, finished_at: null,
                            worker: p.worker || "", error: "", tokens_in: 0, tokens_out: 0, cost_usd: "0"});
      } else if ((event.type === "task.succeeded" || event.type === "task.failed") && last && last.status === "running") {
        last.status = event.type === "task.succeeded" ? "succeeded" : (p.outcome || "failed");
        last.finished_at = event.at;
        last.error = p.error || "";
      }
      if (event.type === "task.succeeded") task.progress = 100;
    }
    if (event.type === "execution.planned" || event.type === "execution.retrying") state.status = "executing";
    if (event.type === "execution.aggregating") state.status = "aggregating";
    if (event.type === "execution.finished") {
      state.status = p.status || state.status;
      state.terminal = true;
      state.can_cancel = false;
      state.finished_at = event.at;
    }
  }

  function onEvent(event) {
    if (event.seq <= feedSeq) return;  // a replay overlapping what we have
    if (event.seq > feedSeq + 1) {
      socket.send({resume: feedSeq});  // a gap: the server replays from the database
      return;
    }
    feedSeq = event.seq;
    feed.push(event);
    if (feed.length > 500) feed.splice(0, feed.length - 500);
    prependActivity(event);
    if (event.seq > stateSeq) {
      applyEvent(snap, event);
      stateSeq = event.seq;
      render();
    }
    refresher.request();
  }

  function onSnapshot(data) {
    // A snapshot read before events we already applied: replay them on top, never step back.
    for (const event of feed) {
      if (event.seq > data.last_seq && event.seq <= stateSeq) applyEvent(data, event);
    }
    const newer = Math.max(stateSeq, data.last_seq);
    snap = data;
    stateSeq = newer;
    clockOffset = Date.parse(data.now) - Date.now();
    render();
  }

  function onProgress(progress) {
    const task = taskByKey(progress.task);
    if (!task || task.status !== "running") return;
    task.progress = Math.max(task.progress || 0, progress.progress);
    document.querySelectorAll(`[data-progress-task="${CSS.escape(task.key)}"]`).forEach((el) => {
      el.style.width = `${task.progress}%`;
      el.parentElement.setAttribute("aria-valuenow", task.progress);
    });
  }

  /* ------------------------------------------------------------------ header, stats */

  function executionDuration() {
    if (!snap.started_at) return null;
    const end = snap.finished_at ? at(snap.finished_at) : serverNow();
    return Math.max(0, (end - at(snap.started_at)) / 1000);
  }

  function renderHeader() {
    replace(document.getElementById("exec-status"), badge(snap.status, "badge-lg"));
    document.getElementById("cancel-form").hidden = !snap.can_cancel || snap.terminal;
    document.getElementById("retry-form").hidden = !snap.can_retry;
    const routing = [];
    if (snap.mode) routing.push(`${snap.mode} mode`);
    if (snap.routing_reason) routing.push(snap.routing_reason);
    if (snap.plan_source) routing.push(`${snap.plan_source} plan`);
    if (snap.provider) routing.push(`PM: ${snap.provider}`);
    document.getElementById("routing").textContent = routing.join(" · ");
  }

  function stat(label, value, detail, extra) {
    return h("div", {class: `stat ${extra || ""}`}, h("div", {class: "stat-label"}, label),
      h("div", {class: "stat-value"}, value), detail ? h("div", {class: "stat-detail"}, detail) : null);
  }

  function renderStats() {
    const total = snap.tasks.length;
    const count = (status) => snap.tasks.filter((t) => t.status === status).length;
    const done = count("succeeded");
    const lost = count("dead") + count("blocked");
    const running = count("running");
    const elapsed = executionDuration();
    const estimate = snap.estimated_duration_sec;
    const resolved = snap.conflicts.filter((c) => c.status === "resolved").length;
    const cost = [`fee ${usd(snap.fee_usd)}`];
    if (Number(snap.refund_usd) > 0) cost.push(`refund ${usd(snap.refund_usd)}`);
    if (snap.budget_usd) cost.push(`budget ${usd(snap.budget_usd)}`);
    const progressBar = h("div", {class: "progress", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100,
                                  "aria-valuenow": total ? Math.round(100 * done / total) : 0},
      h("div", {class: `progress-fill progress-${snap.status}`, "data-width": total ? Math.round(100 * done / total) : 0}));
    const breakdown = [running ? `${running} running` : null, lost ? `${lost} dead/blocked` : null,
                       count("cancelled") ? `${count("cancelled")} cancelled` : null].filter(Boolean).join(" · ");
    const waiting = snap.terminal ? "no tasks" : "waiting for the plan";
    replace(document.getElementById("stats"),
      stat("Tasks", total ? `${done}/${total}` : "—",
           [progressBar, h("span", {}, breakdown || (!total ? waiting : done === total ? "all succeeded" : "in progress"))]),
      stat("Duration", duration(elapsed),
           estimate ? `estimate ${duration(estimate)} · serial ${duration(snap.serial_estimate_sec)}` : "not started"),
      stat("Cost", usd(snap.cost_usd), cost.join(" · ")),
      stat("Tokens", tokens(snap.tokens_in + snap.tokens_out), `${tokens(snap.tokens_in)} in · ${tokens(snap.tokens_out)} out`),
      stat("Conflicts", snap.conflicts.length ? `${resolved}/${snap.conflicts.length}` : "0",
           snap.conflicts.length ? "resolved" : "none detected"),
      stat("Quality", snap.quality_score === null ? "—" : snap.quality_score.toFixed(2),
           snap.terminal ? "share of work delivered" : "when finished"));
    document.querySelectorAll("#stats .progress-fill").forEach((el) => { el.style.width = `${el.dataset.width}%`; });
  }

  /* ------------------------------------------------------------------ tasks */

  function attemptDuration(a) {
    const end = a.finished_at ? at(a.finished_at) : serverNow();
    return Math.max(0, (end - at(a.started_at)) / 1000);
  }

  function taskDuration(task) {
    return task.attempts.reduce((sum, a) => sum + attemptDuration(a), 0);
  }

  function attemptsTable(task) {
    if (!task.attempts.length) return h("p", {class: "muted"}, "No attempt yet.");
    return h("table", {class: "table table-compact"},
      h("thead", {}, h("tr", {}, ["#", "Outcome", "Started", "Duration", "Worker", "Model", "Tokens in/out", "Cost", "Error"]
        .map((label) => h("th", {scope: "col"}, label)))),
      h("tbody", {}, task.attempts.map((a) => h("tr", {},
        h("td", {}, String(a.number)), h("td", {}, badge(a.status)), h("td", {}, time(a.started_at)),
        h("td", {class: "num"}, duration(attemptDuration(a))), h("td", {class: "mono small"}, a.worker || "—"),
        h("td", {class: "small"}, a.model || "—"), h("td", {class: "num"}, `${tokens(a.tokens_in)} / ${tokens(a.tokens_out)}`),
        h("td", {class: "num"}, usd(a.cost_usd, 4)), h("td", {class: "error-text small"}, a.error || "")))));
  }

  const fileContents = new Map();  // "task@finished_at" → {path: content}, fetched when first opened
  const openFiles = new Set();

  async function loadFiles(task) {
    const cacheKey = `${task.key}@${task.finished_at}`;
    if (!fileContents.has(cacheKey)) {
      const response = await fetch(`${links.tasks}${encodeURIComponent(task.key)}/files.json`, {credentials: "same-origin"});
      if (!response.ok) return null;
      const data = await response.json();
      fileContents.set(cacheKey, Object.fromEntries(data.files.map((f) => [f.path, f.content])));
    }
    return fileContents.get(cacheKey);
  }

  function filesList(task) {
    if (!task.files.length) return null;
    const cached = fileContents.get(`${task.key}@${task.finished_at}`);
    return h("div", {class: "task-block"}, h("h4", {}, `Files (${task.files.length})`),
      h("ul", {class: "files"}, task.files.map((f) => {
        const id = `${task.key}:${f.path}`;
        const code = h("pre", {class: "code", "data-file": f.path}, cached ? cached[f.path] : "Loading…");
        const details = h("details", {open: openFiles.has(id)},
          h("summary", {}, h("span", {class: "mono"}, f.path), h("span", {class: "muted small"}, ` · ${f.lines} lines`)),
          code);
        const fill = async () => {
          const contents = await loadFiles(task);
          code.textContent = contents ? contents[f.path] ?? "" : "Could not load the file.";
        };
        details.addEventListener("toggle", () => {
          if (details.open) {
            openFiles.add(id);
            if (!cached) fill();
          } else {
            openFiles.delete(id);
          }
        });
        if (details.open && !cached) fill();
        return h("li", {}, details);
      })));
  }

  function findingsList(task) {
    if (!task.findings.length) return null;
    return h("div", {class: "task-block"}, h("h4", {}, `Findings (${task.findings.length})`),
      h("ul", {class: "findings"}, task.findings.map((f) => h("li", {},
        h("span", {class: `sev sev-${f.severity}`}, f.severity), " ", h("strong", {}, f.title || ""),
        f.file ? h("span", {class: "mono small"}, ` ${f.file}${f.line ? ":" + f.line : ""}`) : null,
        f.resolved ? h("span", {class: "badge badge-resolved"}, "✓ resolved") : null,
        f.recommendation ? h("div", {class: "muted small"}, f.recommendation) : null))));
  }

  function renderTasks() {
    const container = document.getElementById("tasks");
    if (!snap.tasks.length) {
      replace(container, h("p", {class: "empty"}, snap.status === "planning" ? "The PM is planning this request…" : "No tasks."));
      return;
    }
    replace(container, h("div", {class: "task-list"}, snap.tasks.map((task) => {
      const details = h("details", {class: "task", "data-task": task.key, "data-task-status": task.status,
                                    open: openTasks.has(task.key)},
        h("summary", {class: "task-summary"},
          badge(task.status),
          h("span", {class: "task-key mono"}, task.key),
          h("span", {class: "chip"}, task.pool),
          task.kind !== "plan" ? h("span", {class: "chip chip-kind"}, task.kind) : null,
          h("span", {class: "task-desc"}, task.description),
          h("span", {class: "task-meta"},
            task.status === "running"
              ? h("span", {class: "progress progress-inline", role: "progressbar", "aria-valuenow": task.progress,
                           "aria-valuemin": 0, "aria-valuemax": 100, "aria-label": `${task.key} progress`},
                  h("span", {class: "progress-fill progress-running", "data-progress-task": task.key, "data-width": task.progress}))
              : null,
            h("span", {}, `${task.attempts.length} attempt${task.attempts.length === 1 ? "" : "s"}`),
            h("span", {}, duration(task.attempts.length ? taskDuration(task) : null)),
            h("span", {}, `${tokens(task.tokens_in + task.tokens_out)} tok`),
            h("span", {}, usd(task.cost_usd, 4)))),
        h("div", {class: "task-body"},
          h("p", {}, task.description),
          h("dl", {class: "kv"},
            h("dt", {}, "Depends on"), h("dd", {}, task.blocked_by.length ? task.blocked_by.join(", ") : "nothing"),
            task.soft_deps && task.soft_deps.length ? [h("dt", {}, "Soft deps"), h("dd", {}, task.soft_deps.join(", "))] : null,
            h("dt", {}, "Retries"), h("dd", {}, `${task.failed_attempts || 0} of ${task.max_retries ?? "—"}`),
            h("dt", {}, "Timeout"), h("dd", {}, task.timeout_sec ? `${task.timeout_sec}s` : "—")),
          task.error ? h("div", {class: "task-error", role: "note"}, h("strong", {}, "Error: "), task.error) : null,
          task.summary ? h("div", {class: "task-block"}, h("h4", {}, "Output summary"), h("p", {}, task.summary)) : null,
          h("div", {class: "task-block"}, h("h4", {}, "Attempts"), attemptsTable(task)),
          filesList(task), findingsList(task)));
      details.addEventListener("toggle", () => (details.open ? openTasks.add(task.key) : openTasks.delete(task.key)));
      return details;
    })));
    container.querySelectorAll(".progress-fill").forEach((el) => { el.style.width = `${el.dataset.width}%`; });
  }

  /* ------------------------------------------------------------------ DAG */

  function depths() {
    const keys = new Set(snap.tasks.map((t) => t.key));
    const memo = new Map();
    const depth = (task, seen = new Set()) => {
      if (memo.has(task.key)) return memo.get(task.key);
      if (seen.has(task.key)) return 0;  // never for a validated plan; guards the drawing anyway
      seen.add(task.key);
      const parents = task.blocked_by.filter((k) => keys.has(k)).map((k) => depth(taskByKey(k), seen));
      const value = parents.length ? Math.max(...parents) + 1 : 0;
      memo.set(task.key, value);
      return value;
    };
    snap.tasks.forEach((t) => depth(t));
    return memo;
  }

  function truncate(text, n) {
    return text.length > n ? text.slice(0, n - 1) + "…" : text;
  }

  function renderDag() {
    const container = document.getElementById("dag");
    if (!snap.tasks.length) {
      replace(container, h("p", {class: "empty"}, "The graph appears once the PM has planned the request."));
      return;
    }
    const W = 216, H = 74, GX = 70, GY = 18, PAD = 44;
    const depth = depths();
    const layers = [];
    snap.tasks.forEach((t) => (layers[depth.get(t.key)] ||= []).push(t));
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
    const rows = Math.max(...layers.map((l) => l.length));
    const width = PAD * 2 + layers.length * W + (layers.length - 1) * GX;
    const height = PAD * 2 + rows * H + (rows - 1) * GY;
    const svg = s("svg", {class: "dag", width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
                          "aria-label": `Task graph: ${snap.tasks.length} tasks in ${layers.length} layers`},
      s("defs", {}, s("marker", {id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7,
                                 orient: "auto-start-reverse"}, s("path", {d: "M0,0 L10,5 L0,10 z", class: "arrow-head"}))));
    const edge = (from, to, soft) => {
      const a = pos.get(from), b = pos.get(to);
      if (!a || !b) return null;
      let d;
      if (b.x > a.x) {  // forward: right side of the dependency to the left side of the task
        const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x - 2, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
        d = `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`;
      } else {  // a soft dependency inside one layer: an arc on the left
        const x1 = a.x, y1 = a.y + H / 2, x2 = b.x - 2, y2 = b.y + H / 2, bulge = Math.min(40, 12 + Math.abs(y2 - y1) / 4);
        d = `M${x1},${y1} C${x1 - bulge},${y1} ${x2 - bulge},${y2} ${x2},${y2}`;
      }
      return s("path", {d, class: soft ? "edge edge-soft" : "edge", "marker-end": "url(#arrow)"});
    };
    snap.tasks.forEach((t) => {
      t.blocked_by.forEach((dep) => svg.appendChild(edge(dep, t.key, false) || s("g", {})));
      (t.soft_deps || []).forEach((dep) => svg.appendChild(edge(dep, t.key, true) || s("g", {})));
    });
    snap.tasks.forEach((t) => {
      const p = pos.get(t.key);
      const symbol = Console.STATUS_SYMBOLS[t.status] || "•";
      const node = s("g", {class: `node node-${t.status}`, transform: `translate(${p.x},${p.y})`, tabindex: 0,
                           role: "button", "data-node": t.key, "aria-label": `${t.key} ${t.pool}: ${t.status}`},
        s("title", {}, `${t.key} (${t.pool}) — ${t.status}\n${t.description}`),
        s("rect", {class: "node-box", width: W, height: H, rx: 8}),
        s("rect", {class: "node-band", width: 6, height: H, rx: 3}),
        s("text", {class: "node-title", x: 16, y: 22}, `${t.key}`, s("tspan", {class: "node-pool"}, `  ${t.pool}${t.kind !== "plan" ? " · " + t.kind : ""}`)),
        s("text", {class: "node-desc", x: 16, y: 42}, truncate(t.description, 30)),
        s("text", {class: "node-status", x: 16, y: 62}, `${symbol} ${t.status}${t.attempts.length > 1 ? ` · ${t.attempts.length} attempts` : ""}`));
      if (t.status === "running") {
        node.appendChild(s("rect", {class: "node-progress-track", x: 120, y: 55, width: 84, height: 6, rx: 3}));
        node.appendChild(s("rect", {class: "node-progress", x: 120, y: 55, width: Math.round(84 * (t.progress || 0) / 100), height: 6, rx: 3}));
      }
      const open = () => showTask(t.key);
      node.addEventListener("click", open);
      node.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); open(); } });
      svg.appendChild(node);
    });
    replace(container, svg);
  }

  function showTask(key) {
    openTasks.add(key);
    selectTab("tasks");
    renderTasks();
    const el = document.querySelector(`[data-task="${CSS.escape(key)}"]`);
    if (el) el.scrollIntoView({block: "center"});
  }

  /* ------------------------------------------------------------------ timeline */

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

  function installPatterns() {
    // One copy of the patterns per page (ids must be unique); an SVG of no size, not display:none,
    // so the browser still paints what references it.
    document.body.appendChild(s("svg", {class: "pattern-defs", width: 0, height: 0, "aria-hidden": "true", focusable: "false"},
      patternDefs()));
  }

  function renderLegend() {
    const swatch = (status) => s("svg", {width: 28, height: 14, class: "swatch", "aria-hidden": "true"},
      s("rect", {width: 28, height: 14, rx: 3, class: `att att-${status}`, fill: `url(#pat-${status})`}));
    replace(document.getElementById("timeline-legend"), OUTCOMES.map(([status, label]) =>
      h("span", {class: "legend-item"}, swatch(status), `${Console.STATUS_SYMBOLS[status]} ${label}`)),
      h("span", {class: "legend-item"}, h("span", {class: "wait-swatch", "aria-hidden": "true"}), "waiting for a slot"));
  }

  function niceStep(range) {
    for (const step of [0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600]) {
      if (range / step <= 10) return step;
    }
    return 7200;
  }

  function renderTimeline() {
    const container = document.getElementById("timeline");
    const origin = at(snap.started_at) || at(snap.created_at);
    const withAttempts = snap.tasks.filter((t) => t.attempts.length || t.status === "ready" || t.status === "queued");
    if (!snap.tasks.length) {
      replace(container, h("p", {class: "empty"}, "The timeline starts when the first task runs."));
      return;
    }
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
                          "aria-label": `Timeline of ${withAttempts.length} tasks over ${duration(span)}`});
    const step = niceStep(span);
    for (let t = 0; t <= span + 1e-9; t += step) {
      const px = LABEL + (t / span) * plot;
      svg.appendChild(s("line", {x1: px, x2: px, y1: TOP - 6, y2: height - 4, class: "grid"}));
      svg.appendChild(s("text", {x: px, y: TOP - 12, class: "tick", "text-anchor": "middle"}, duration(t)));
    }
    ordered.forEach((task, i) => {
      const y = TOP + i * ROW;
      svg.appendChild(s("rect", {x: 0, y, width, height: ROW, class: i % 2 ? "row-odd" : "row-even"}));
      svg.appendChild(s("text", {x: 8, y: y + 19, class: "row-label"}, `${Console.STATUS_SYMBOLS[task.status] || ""} ${task.key}`,
        s("tspan", {class: "row-pool"}, ` ${task.pool}`)));
      if ((task.status === "ready" || task.status === "queued") && task.ready_at) {
        const x1 = x(at(task.ready_at)), x2 = x(serverNow());
        svg.appendChild(s("line", {x1, x2: Math.max(x1 + 2, x2), y1: y + 15, y2: y + 15, class: "wait"},
          s("title", {}, `${task.key} waiting (${task.status}) since ${time(task.ready_at)}`)));
      }
      task.attempts.forEach((a) => {
        const x1 = x(at(a.started_at));
        const x2 = x(a.finished_at ? at(a.finished_at) : serverNow());
        const w = Math.max(3, x2 - x1);
        const label = `#${a.number} ${Console.STATUS_SYMBOLS[a.status] || ""} ${duration(attemptDuration(a))}`;
        svg.appendChild(s("rect", {x: x1, y: y + 5, width: w, height: ROW - 10, rx: 4, class: `att att-${a.status}`,
                                   fill: `url(#pat-${a.status})`, "data-attempt": `${task.key}#${a.number}`, "data-outcome": a.status},
          s("title", {}, `${task.key} attempt ${a.number}: ${a.status}, ${duration(attemptDuration(a))}${a.error ? "\n" + a.error : ""}`)));
        const textWidth = label.length * 6.6;
        if (w > textWidth + 12) {  // on a pill inside the bar, readable over any pattern
          svg.appendChild(s("rect", {x: x1 + 4, y: y + 8, width: textWidth + 4, height: ROW - 16, rx: 3, class: "att-pill"}));
          svg.appendChild(s("text", {x: x1 + 6, y: y + 19, class: "att-label"}, label));
        } else {
          svg.appendChild(s("text", {x: x1 + w + 5, y: y + 19, class: "att-label"}, label));
        }
      });
    });
    if (!snap.terminal && snap.started_at) {
      const px = x(serverNow());
      svg.appendChild(s("line", {x1: px, x2: px, y1: TOP - 6, y2: height - 4, class: "now"}));
    }
    replace(container, svg);
  }

  function renderCompare() {
    const actual = executionDuration();
    const bars = [
      ["Actual (wall clock)", actual, snap.terminal ? "actual" : "actual running"],
      ["Parallel estimate", snap.estimated_duration_sec, "estimate"],
      ["Serial estimate", snap.serial_estimate_sec, "serial"],
    ].filter(([, value]) => value !== null && value !== undefined);
    const container = document.getElementById("compare");
    if (!bars.length) {
      replace(container, h("p", {class: "muted"}, "Estimates appear once the plan is made."));
      return;
    }
    const max = Math.max(...bars.map(([, v]) => v), 0.001);
    let verdict = null;
    let slower = false;
    if (["completed", "partial"].includes(snap.status) && actual && snap.serial_estimate_sec) {
      const saved = 1 - actual / snap.serial_estimate_sec;
      slower = saved < 0;
      verdict = saved >= 0 ? `${Math.round(saved * 100)}% faster than the serial estimate`
                           : `${Math.round(-saved * 100)}% slower than the serial estimate`;
    }
    replace(container, h("div", {class: "compare"}, bars.map(([label, value, cls]) => h("div", {class: "compare-row"},
      h("span", {class: "compare-label"}, label),
      h("span", {class: "compare-track"}, h("span", {class: `compare-bar compare-${cls.split(" ")[0]}`, "data-width": (100 * value / max).toFixed(1)})),
      h("span", {class: "compare-value num"}, duration(value))))), verdict ? h("p", {class: slower ? "verdict verdict-slower" : "verdict"}, verdict) : null);
    container.querySelectorAll(".compare-bar").forEach((el) => { el.style.width = `${el.dataset.width}%`; });
  }

  /* ------------------------------------------------------------------ conflicts, response, activity */

  function renderConflicts() {
    document.getElementById("conflict-count").textContent = snap.conflicts.length ? String(snap.conflicts.length) : "";
    const container = document.getElementById("conflicts");
    if (!snap.conflicts.length) {
      replace(container, h("p", {class: "empty"}, "No conflicts detected between task results."));
      return;
    }
    replace(container, h("table", {class: "table"},
      h("thead", {}, h("tr", {}, ["Kind", "Between", "Description", "Status", "Resolution", "Rounds"].map((l) => h("th", {scope: "col"}, l)))),
      h("tbody", {}, snap.conflicts.map((c) => h("tr", {},
        h("td", {}, h("span", {class: "chip"}, c.kind)), h("td", {class: "mono small"}, c.between.join(" vs ")),
        h("td", {}, c.description), h("td", {}, badge(c.status)), h("td", {}, c.resolution || "—"),
        h("td", {class: "num"}, String(c.rounds)))))));
  }

  function renderResponse() {
    const container = document.getElementById("final-response");
    if (snap.final_response_html) {
      // Rendered and sanitized on the server (markdown-it without raw HTML, then nh3); the
      // page's Content-Security-Policy forbids inline script on top.
      container.innerHTML = snap.final_response_html;
    } else {
      replace(container, h("p", {class: "empty"}, snap.terminal ? "No final response." : "The PM's answer appears here when the execution finishes."));
    }
  }

  function describe(event) {
    const p = event.payload || {};
    switch (event.type) {
      case "task.started": return `attempt ${p.attempt} on ${p.worker || "a worker"}`;
      case "task.succeeded": return `${duration(p.duration_sec)}, ${tokens(p.tokens)} tokens${p.summary ? " — " + p.summary : ""}`;
      case "task.failed": return `${p.outcome || "failed"} after ${duration(p.duration_sec)}: ${p.error || ""}`;
      case "task.retrying": return `retry ${p.retry} of ${p.of}${p.backoff_sec ? ` in ${duration(p.backoff_sec)}` : ""}`;
      case "task.dead": return `after ${p.attempts} attempts: ${p.error || ""}`;
      case "task.blocked": return `needs ${(p.needs || []).join(", ")}`;
      case "task.queued": return `on pool ${p.pool}`;
      case "execution.planned": return `${(p.tasks || []).length} tasks, ${p.mode} mode, estimate ${duration(p.estimated_duration_sec)} vs serial ${duration(p.serial_estimate_sec)}`;
      case "execution.finished": return `${p.status}${p.duration_sec ? " in " + duration(p.duration_sec) : ""}${p.cost_usd ? ", " + usd(p.cost_usd) : ""}`;
      default: return Object.keys(p).length ? JSON.stringify(p).slice(0, 160) : "";
    }
  }

  function activityItem(event) {
    return h("li", {class: "activity-item", "data-seq": event.seq},
      h("span", {class: "activity-seq mono"}, `#${event.seq}`),
      h("span", {class: "activity-time"}, time(event.at)),
      h("span", {class: "activity-type"}, event.type),
      h("span", {class: "activity-task"}, event.task ? h("span", {class: "chip"}, event.task) : null),
      h("span", {class: "activity-text"}, describe(event)));
  }

  function renderActivity() {
    replace(document.getElementById("activity"), [...feed].reverse().map(activityItem));
  }

  function prependActivity(event) {
    const list = document.getElementById("activity");
    list.insertBefore(activityItem(event), list.firstChild);
    while (list.children.length > 500) list.lastChild.remove();
  }

  /* ------------------------------------------------------------------ tabs, render, live */

  const TABS = ["tasks", "dag", "timeline", "conflicts", "response", "activity"];

  function selectTab(name) {
    if (!TABS.includes(name)) name = "tasks";
    for (const tab of TABS) {
      const button = document.getElementById(`tab-${tab}`);
      button.setAttribute("aria-selected", String(tab === name));
      button.tabIndex = tab === name ? 0 : -1;
      document.getElementById(`panel-${tab}`).hidden = tab !== name;
    }
    if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
    if (name === "timeline") renderTimeline();  // needs the panel's width
  }

  document.querySelectorAll("[role=tab]").forEach((button) => {
    button.addEventListener("click", () => selectTab(button.dataset.tab));
    button.addEventListener("keydown", (e) => {
      const i = TABS.indexOf(button.dataset.tab);
      const next = e.key === "ArrowRight" ? TABS[(i + 1) % TABS.length] : e.key === "ArrowLeft" ? TABS[(i + TABS.length - 1) % TABS.length] : null;
      if (next) { selectTab(next); document.getElementById(`tab-${next}`).focus(); }
    });
  });

  function render() {
    document.body.dataset.executionStatus = snap.status;
    renderHeader();
    renderStats();
    renderTasks();
    renderDag();
    renderTimeline();
    renderCompare();
    renderConflicts();
    renderResponse();
  }

  const refresher = new Refresher(() => links.json, onSnapshot);
  const socket = new LiveSocket(() => `${links.ws}?after=${feedSeq}`, {
    onMessage: (message) => {
      if (message.kind === "event") onEvent(message.event);
      else if (message.kind === "progress") onProgress(message.progress);
      else if (message.kind === "synced") refresher.request();  // after a (re)connect: anything else changed?
    },
  });

  installPatterns();
  renderLegend();
  selectTab(location.hash.slice(1));
  render();
  renderActivity();
  // Running bars and clocks grow between events.
  setInterval(() => {
    if (!snap.terminal) {
      renderStats();
      renderTimeline();
      renderCompare();
    }
  }, 1000);
  window.addEventListener("resize", () => renderTimeline());
})();
