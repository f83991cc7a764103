/* The server's clock on this page: bars and durations of running work grow between snapshots. */

let offset = 0;

/* Every snapshot carries the server's `now`; align to it. */
export function syncClock(snapshot) {
  offset = Date.parse(snapshot.now) - Date.now();
}

export const serverNow = () => Date.now() + offset;

export const at = (iso) => (iso ? Date.parse(iso) : null);

/* Seconds from `startIso` to `endIso`, or to now while it has no end. */
export function span(startIso, endIso) {
  if (!startIso) return null;
  const end = endIso ? at(endIso) : serverNow();
  return Math.max(0, (end - at(startIso)) / 1000);
}

export const attemptDuration = (attempt) => span(attempt.started_at, attempt.finished_at);

export const taskDuration = (task) => task.attempts.reduce((sum, a) => sum + attemptDuration(a), 0);

/* The execution's wall clock: the server's figure once finished, the running clock before. */
export function executionDuration(snap) {
  if (snap.finished_at && snap.duration_sec !== null && snap.duration_sec !== undefined) return snap.duration_sec;
  return span(snap.started_at, snap.finished_at);
}
