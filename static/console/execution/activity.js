/* The Activity tab: the event log, newest first, each event described from its own payload. */

const {h, replace, duration, usd, tokens, time} = Console;

const MAX_ITEMS = 500;

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
    case "execution.planned":
      return `${(p.tasks || []).length} tasks, ${p.mode} mode, estimate ${duration(p.estimated_duration_sec)} ` +
             `vs serial ${duration(p.serial_estimate_sec)}`;
    case "execution.contract_checked":
      return `${p.passed} of ${p.checks} contract checks pass${(p.fixes || []).length ? "; fixes: " + p.fixes.join(", ") : ""}`;
    case "execution.integration":
      return p.ran ? `gate ${p.ok ? "passed" : "failed"}: ${p.command} (exit ${p.exit_code}; ${p.passed} passed, ${p.failed} failed)`
                   : `gate not run: ${p.reason || ""}`;
    case "execution.reopened": return `fix round for the ${p.reason}: ${(p.tasks || []).join(", ")}`;
    case "execution.finished":
      return `${p.status}${p.duration_sec ? " in " + duration(p.duration_sec) : ""}${p.cost_usd ? ", " + usd(p.cost_usd) : ""}`;
    default: return Object.keys(p).length ? JSON.stringify(p).slice(0, 160) : "";
  }
}

function item(event) {
  return h("li", {class: "activity-item", "data-seq": event.seq},
    h("span", {class: "activity-seq mono"}, `#${event.seq}`),
    h("span", {class: "activity-time"}, time(event.at)),
    h("span", {class: "activity-type"}, event.type),
    h("span", {class: "activity-task"}, event.task ? h("span", {class: "chip"}, event.task) : null),
    h("span", {class: "activity-text"}, describe(event)));
}

/* The events the page was served with, oldest first. */
export function showActivity(events) {
  replace(document.getElementById("activity"), events.slice(-MAX_ITEMS).reverse().map(item));
}

export function addActivity(event) {
  const list = document.getElementById("activity");
  list.insertBefore(item(event), list.firstChild);
  while (list.children.length > MAX_ITEMS) list.lastChild.remove();
}
