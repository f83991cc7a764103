/* The page head: the execution's status, the actions the server says this viewer may take, and
   how the request was routed. */

const {replace, badge} = Console;

export function renderHeader(snap) {
  replace(document.getElementById("exec-status"), badge(snap.status, "badge-lg", snap.status_label));
  // The forms exist only for viewers allowed to change executions (the template leaves them out).
  const cancel = document.getElementById("cancel-form");
  const retry = document.getElementById("retry-form");
  if (cancel) cancel.hidden = !snap.can_cancel;
  if (retry) retry.hidden = !snap.can_retry;
  // The approval panel is served with the page of an execution awaiting approval; a plan that
  // arrives while the page is open needs the page served again, and a decided one hides it.
  const approval = document.getElementById("approval-panel");
  if (approval) approval.hidden = !snap.awaiting_approval;
  else if (snap.awaiting_approval) window.location.reload();
  const routing = [];
  if (snap.mode) routing.push(`${snap.mode} mode`);
  if (snap.routing_reason) routing.push(snap.routing_reason);
  if (snap.plan_source) routing.push(`${snap.plan_source} plan`);
  if (snap.provider) routing.push(`PM: ${snap.provider}`);
  document.getElementById("routing").textContent = routing.join(" · ");
}
