/* The summary cards: tasks, wall clock, costs, tokens, conflicts, quality. Every count comes
   computed in the snapshot; only the running clock moves here. */

import {executionDuration} from "./clock.js";

const {h, replace, duration, usd, tokens} = Console;

function stat(label, value, detail, name) {
  return h("div", {class: "stat", "data-stat": name}, h("div", {class: "stat-label"}, label),
    h("div", {class: "stat-value"}, value), detail ? h("div", {class: "stat-detail"}, detail) : null);
}

function tasksCard(snap) {
  const c = snap.task_counts;
  const bar = h("div", {class: "progress", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100,
                        "aria-valuenow": snap.progress_pct},
    h("div", {class: `progress-fill progress-${snap.status}`, "data-width": snap.progress_pct}));
  const breakdown = [c.running ? `${c.running} running` : null,
                     c.dead_or_blocked ? `${c.dead_or_blocked} dead/blocked` : null,
                     c.cancelled ? `${c.cancelled} cancelled` : null].filter(Boolean).join(" · ");
  let note = breakdown;
  if (!note && !c.total) note = snap.terminal ? "no tasks" : "waiting for the plan";
  if (!note) note = c.succeeded === c.total ? "all succeeded" : "in progress";
  return stat("Tasks", c.total ? `${c.succeeded}/${c.total}` : "—", [bar, h("span", {}, note)], "tasks");
}

function costCard(snap) {
  const parts = [`fee ${usd(snap.fee_usd)}`];
  if (Number(snap.refund_usd) > 0) parts.push(`refund ${usd(snap.refund_usd)}`);
  if (snap.budget_usd) parts.push(`budget ${usd(snap.budget_usd)}`);
  return stat("Cost", usd(snap.cost_usd), parts.join(" · "), "cost");
}

export function renderSummary(snap) {
  const estimate = snap.estimated_duration_sec;
  const conflicts = snap.conflicts.length;
  replace(document.getElementById("stats"),
    tasksCard(snap),
    stat("Duration", duration(executionDuration(snap)),
         estimate ? `estimate ${duration(estimate)} · serial ${duration(snap.serial_estimate_sec)}` : "not started",
         "duration"),
    costCard(snap),
    stat("Tokens", tokens(snap.tokens_in + snap.tokens_out),
         `${tokens(snap.tokens_in)} in · ${tokens(snap.tokens_out)} out`, "tokens"),
    stat("Conflicts", conflicts ? `${snap.conflicts_resolved}/${conflicts}` : "0",
         conflicts ? "resolved" : "none detected", "conflicts"),
    stat("Quality", snap.quality_score === null ? "—" : snap.quality_score.toFixed(2),
         snap.terminal ? "delivery × findings × checks × tests" : "when finished", "quality"));
  document.querySelectorAll("#stats .progress-fill").forEach((el) => { el.style.width = `${el.dataset.width}%`; });
}
