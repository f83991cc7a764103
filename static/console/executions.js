/* The executions list: rows from the server's snapshot, refetched (coalesced) whenever the
   console websocket reports an event, and after every reconnect, so no row stays stale. */
"use strict";

(() => {
  const {h, replace, readJSON, urls, badge, duration, usd, ago, time, LiveSocket, Refresher} = Console;
  const body = document.getElementById("executions-body");
  const empty = document.getElementById("executions-empty");
  const links = urls();
  const progressByExecution = new Map();  // execution id → {task: percent} from progress ticks

  function progressCell(row) {
    const total = row.tasks_total || 0;
    const ticks = progressByExecution.get(row.id) || {};
    const running = Object.values(ticks).reduce((sum, p) => sum + p / 100, 0);
    const share = total ? Math.min(1, (row.tasks_done + (row.terminal ? 0 : running)) / total) : 0;
    const label = total ? `${row.tasks_done}/${total} tasks` : (row.planning ? "planning…" : "no tasks");
    return h("td", {class: "col-progress"},
      h("div", {class: "progress", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100,
                "aria-valuenow": Math.round(share * 100), "aria-label": label},
        h("div", {class: `progress-fill progress-${row.status}`, "data-width": Math.round(share * 100)})),
      h("span", {class: "progress-label"}, label,
        row.tasks_running ? h("span", {class: "muted"}, ` · ${row.tasks_running} running`) : null,
        row.tasks_lost ? h("span", {class: "warn-text"}, ` · ${row.tasks_lost} dead/blocked`) : null));
  }

  function render(rows) {
    replace(body, rows.map((row) => h("tr", {"data-execution": row.id, "data-status": row.status},
      h("td", {},
        h("a", {class: "row-title", href: `${links.detail}${row.id}/`}, row.project || row.message || row.id),
        h("div", {class: "row-sub"}, h("span", {class: "mono"}, row.id), ` · ${row.client}`)),
      h("td", {}, badge(row.status, "", row.status_label)),
      h("td", {}, row.mode || "—"),
      progressCell(row),
      h("td", {class: "num"}, duration(row.duration_sec)),
      h("td", {class: "num"}, usd(row.cost_usd)),
      h("td", {class: "num"}, row.conflicts_total
        ? h("span", {title: "resolved / detected"}, `${row.conflicts_resolved}/${row.conflicts_total}`,
            h("span", {class: "sr-only"}, " resolved"))
        : h("span", {class: "muted"}, "0")),
      h("td", {class: "num", title: time(row.created_at)}, ago(row.created_at)))));
    // Widths set through CSSOM: the CSP forbids inline style attributes.
    body.querySelectorAll(".progress-fill").forEach((el) => { el.style.width = `${el.dataset.width}%`; });
    empty.hidden = rows.length > 0;
    document.getElementById("executions-table").hidden = rows.length === 0;
  }

  let rows = readJSON("executions-data");
  render(rows);
  const refresher = new Refresher(() => links.json + location.search, (data) => {
    rows = data.rows;
    for (const id of progressByExecution.keys()) {
      if (!rows.some((r) => r.id === id && !r.terminal)) progressByExecution.delete(id);
    }
    render(rows);
  }, {minGapMs: 400});

  new LiveSocket(() => links.ws, {
    onOpen: () => refresher.request(),  // anything missed while disconnected
    onMessage: (message) => {
      if (message.kind === "event") {
        const event = message.event;
        const ticks = progressByExecution.get(event.execution_id);
        if (ticks && event.task && event.type !== "task.started") delete ticks[event.task];
        refresher.request();
      } else if (message.kind === "progress" && message.progress.execution_id) {
        const p = message.progress;
        if (!progressByExecution.has(p.execution_id)) progressByExecution.set(p.execution_id, {});
        progressByExecution.get(p.execution_id)[p.task] = p.progress;
        const row = rows.find((r) => r.id === p.execution_id);
        if (row) render(rows);
      }
    },
  });
  // Durations of running executions and "x min ago" move on without events.
  setInterval(() => (rows.some((r) => !r.terminal) ? refresher.request() : render(rows)), 5000);
})();
