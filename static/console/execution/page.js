/* One execution, live: the server's snapshot rendered by the views of this folder.

   header.js   status, allowed actions, routing      summary.js   the summary cards (tasks, costs…)
   tasks.js    the task list with attempts and files graph.js     the DAG
   timeline.js the Gantt and the estimates            conflicts.js the conflicts panel
   response.js the final response                     activity.js  the event log
   live.js     events and snapshots from the server   clock.js     the server's clock
   contract.js the plan's contract, its checks and the integration gate */

import {addActivity, showActivity} from "./activity.js";
import {syncClock} from "./clock.js";
import {renderConflicts} from "./conflicts.js";
import {renderContract} from "./contract.js";
import {renderGraph} from "./graph.js";
import {renderHeader} from "./header.js";
import {followExecution} from "./live.js";
import {renderResponse} from "./response.js";
import {renderSummary} from "./summary.js";
import {installTabs, selectTab} from "./tabs.js";
import {openTask, refreshTranscripts, renderTasks, setFilesUrl, showProgress} from "./tasks.js";
import {installTimeline, renderCompare, renderTimeline} from "./timeline.js";

const links = Console.urls();
const served = Console.readJSON("activity-data");
let snap = Console.readJSON("execution-data");
const ticks = new Map();  // task key → progress from ticks newer than the snapshot

function withTicks(snapshot) {
  for (const task of snapshot.tasks) {
    if (!task.running) ticks.delete(task.key);
    else if (ticks.has(task.key)) task.progress = Math.max(task.progress, ticks.get(task.key));
  }
  return snapshot;
}

function showTask(key) {
  openTask(key);
  selectTab("tasks");
  renderTasks(snap);
  const el = document.querySelector(`[data-task="${CSS.escape(key)}"]`);
  if (el) el.scrollIntoView({block: "center"});
}

function render() {
  document.body.dataset.executionStatus = snap.status;
  renderHeader(snap);
  renderSummary(snap);
  renderTasks(snap);
  renderGraph(snap, showTask);
  renderTimeline(snap);
  renderCompare(snap);
  renderConflicts(snap);
  renderContract(snap);
  renderResponse(snap);
}

function onProgress(progress) {
  const task = snap.tasks.find((t) => t.key === progress.task);
  if (!task || !task.running) return;
  if (progress.turn !== undefined) {  // an agent finished a turn of its loop: its open transcript grows
    refreshTranscripts(task);
    return;
  }
  task.progress = Math.max(task.progress || 0, progress.progress);
  ticks.set(task.key, task.progress);
  showProgress(task.key, task.progress);
}

setFilesUrl(links.tasks);
syncClock(snap);
installTimeline();
installTabs((name) => { if (name === "timeline") renderTimeline(snap); });  // it needs the panel's width
render();
showActivity(served);
followExecution({
  socketUrl: links.ws,
  snapshotUrl: links.json,
  eventSeq: served.length ? served[served.length - 1].seq : snap.last_seq,
  snapshotSeq: snap.last_seq,
  onEvent: addActivity,
  onProgress,
  onSnapshot: (data) => {
    snap = withTicks(data);
    syncClock(snap);
    render();
  },
});
// Running bars and clocks grow between snapshots.
setInterval(() => {
  if (!snap.terminal) {
    renderSummary(snap);
    renderTimeline(snap);
    renderCompare(snap);
  }
}, 1000);
window.addEventListener("resize", () => renderTimeline(snap));
