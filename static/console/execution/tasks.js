/* The Tasks tab: one expandable row per task with its attempts, output files (contents fetched
   when first opened) and findings. Which rows are open survives every re-render. */

import {attemptDuration, taskDuration} from "./clock.js";

const {h, replace, badge, duration, usd, tokens, time} = Console;

const openTasks = new Set();
const openFiles = new Set();
const fileContents = new Map();  // "task@finished_at" → {path: content}
let filesUrl = "";

export function setFilesUrl(url) {
  filesUrl = url;
}

export function openTask(key) {
  openTasks.add(key);
}

function attemptsTable(task) {
  if (!task.attempts.length) return h("p", {class: "muted"}, "No attempt yet.");
  return h("table", {class: "table table-compact"},
    h("thead", {}, h("tr", {}, ["#", "Outcome", "Started", "Duration", "Worker", "Model", "Tokens in/out", "Cost", "Error"]
      .map((label) => h("th", {scope: "col"}, label)))),
    h("tbody", {}, task.attempts.map((a) => h("tr", {},
      h("td", {}, String(a.number)), h("td", {}, badge(a.status, "", a.status_label)), h("td", {}, time(a.started_at)),
      h("td", {class: "num"}, duration(attemptDuration(a))), h("td", {class: "mono small"}, a.worker || "—"),
      h("td", {class: "small"}, a.model || "—"), h("td", {class: "num"}, `${tokens(a.tokens_in)} / ${tokens(a.tokens_out)}`),
      h("td", {class: "num"}, usd(a.cost_usd, 4)), h("td", {class: "error-text small"}, a.error || "")))));
}

async function loadFiles(task) {
  const cacheKey = `${task.key}@${task.finished_at}`;
  if (!fileContents.has(cacheKey)) {
    const response = await fetch(`${filesUrl}${encodeURIComponent(task.key)}/files.json`, {credentials: "same-origin"});
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

function progressBar(task) {
  return h("span", {class: "progress progress-inline", role: "progressbar", "aria-valuenow": task.progress,
                    "aria-valuemin": 0, "aria-valuemax": 100, "aria-label": `${task.key} progress`},
    h("span", {class: "progress-fill progress-running", "data-progress-task": task.key, "data-width": task.progress}));
}

function taskRow(task) {
  const details = h("details", {class: "task", "data-task": task.key, "data-task-status": task.status,
                                open: openTasks.has(task.key)},
    h("summary", {class: "task-summary"},
      badge(task.status, "", task.status_label),
      h("span", {class: "task-key mono"}, task.key),
      h("span", {class: "chip"}, task.pool),
      task.kind !== "plan" ? h("span", {class: "chip chip-kind"}, task.kind) : null,
      h("span", {class: "task-desc"}, task.description),
      h("span", {class: "task-meta"},
        task.running ? progressBar(task) : null,
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
}

export function renderTasks(snap) {
  const container = document.getElementById("tasks");
  if (!snap.tasks.length) {
    replace(container, h("p", {class: "empty"}, snap.planning ? "The PM is planning this request…" : "No tasks."));
    return;
  }
  replace(container, h("div", {class: "task-list"}, snap.tasks.map(taskRow)));
  container.querySelectorAll(".progress-fill").forEach((el) => { el.style.width = `${el.dataset.width}%`; });
}

/* A progress tick between snapshots: widen the task's bars, nothing else. */
export function showProgress(key, percent) {
  document.querySelectorAll(`[data-progress-task="${CSS.escape(key)}"]`).forEach((el) => {
    el.style.width = `${percent}%`;
    el.parentElement.setAttribute("aria-valuenow", percent);
  });
}
