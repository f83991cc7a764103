/* The Tasks tab: one expandable row per task with its attempts, output files (contents fetched
   when first opened) and findings. Which rows are open survives every re-render. */

import {attemptDuration, taskDuration} from "./clock.js";

const {h, replace, badge, duration, usd, tokens, time} = Console;

const openTasks = new Set();
const openFiles = new Set();
const fileContents = new Map();  // "task@finished_at" → {path: content}
const openTranscripts = new Set();  // "task#number"
const transcripts = new Map();  // "task#number" → the attempt's JSON (refetched while it runs)
const shownTranscripts = new Map();  // "task#number" → the element showing it, while open
let filesUrl = "";
const LONG_OUTPUT_LINES = 12;

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

/* An attempt's conversation: what the model said, each tool call and its result (run outputs in
   monospace, collapsed when long). Fetched when opened; refetched on each snapshot while it runs. */
async function loadTranscript(task, attempt, container) {
  const id = `${task.key}#${attempt.number}`;
  if (!transcripts.has(id) || attempt.status === "running") {
    const response = await fetch(`${filesUrl}${encodeURIComponent(task.key)}/attempts/${attempt.number}.json`,
                                 {credentials: "same-origin"});
    if (!response.ok) {
      replace(container, h("p", {class: "muted"}, "Could not load the transcript."));
      return;
    }
    transcripts.set(id, await response.json());
  }
  replace(container, transcriptView(transcripts.get(id)));
}

function toolOutput(text) {
  const long = text.split("\n").length > LONG_OUTPUT_LINES;
  const pre = h("pre", {class: "code tool-output"}, text);
  return long ? h("details", {}, h("summary", {class: "small"}, `output (${text.split("\n").length} lines)`), pre) : pre;
}

/* A run's result is the JSON {exit_code, output, duration_sec, timed_out}: shown as its exit code and output. */
function runResult(content) {
  let run;
  try {
    run = JSON.parse(content);
  } catch {
    return toolOutput(content);
  }
  const outcome = run.timed_out ? "timed out" : `exit ${run.exit_code}`;
  return h("div", {class: run.exit_code === 0 ? "small" : "error-text small", "data-exit-code": run.exit_code},
    `${outcome} · ${duration(run.duration_sec)}`, toolOutput(run.output));
}

function callText(call) {
  if (call.arguments === null) return `${call.name}(<not JSON> ${call.raw || ""})`;
  const args = Object.entries(call.arguments).map(([key, value]) => {
    const shown = typeof value === "string" && value.length > 80 ? `${value.slice(0, 80)}… (${value.length} chars)` : value;
    return `${key}=${JSON.stringify(shown)}`;
  });
  return `${call.name}(${args.join(", ")})`;
}

function transcriptView(data) {
  if (!data.turns.length) return h("p", {class: "muted"}, "No turn recorded yet.");
  return h("ol", {class: "transcript"}, data.turns.map((turn) => h("li", {class: "turn", "data-turn": turn.number},
    h("div", {class: "muted small"},
      `Turn ${turn.number} · ${duration(turn.duration_sec)} · ${tokens(turn.tokens_in)} / ${tokens(turn.tokens_out)} tok · ${usd(turn.cost_usd, 4)}`),
    turn.text ? h("p", {class: "turn-text"}, turn.text) : null,
    turn.tool_calls.map((call, index) => {
      const result = turn.tool_results[index];
      return h("div", {class: "tool-call"},
        h("div", {class: "mono small"}, `→ ${callText(call)}`),
        !result ? null
          : call.name === "run" && !result.is_error ? runResult(result.content)
          : h("div", {class: result.is_error ? "error-text small" : "small"},
            result.content.includes("\n") ? toolOutput(result.content) : result.content));
    }))));
}

function transcriptsBlock(task) {
  if (!task.attempts.length) return null;
  return h("div", {class: "task-block"}, h("h4", {}, "Transcripts"), task.attempts.map((attempt) => {
    const id = `${task.key}#${attempt.number}`;
    const body = h("div", {class: "transcript-body"}, "Loading…");
    const details = h("details", {open: openTranscripts.has(id), "data-transcript": id},
      h("summary", {}, `Attempt ${attempt.number} · ${attempt.status_label || attempt.status}`), body);
    details.addEventListener("toggle", () => {
      if (details.open) {
        openTranscripts.add(id);
        loadTranscript(task, attempt, body);
      } else {
        openTranscripts.delete(id);
      }
    });
    if (details.open) loadTranscript(task, attempt, body);
    shownTranscripts.set(id, {details, body});
    return details;
  }));
}

/* A turn event for a running task: refetch the transcripts of its running attempts that are open. */
export function refreshTranscripts(task) {
  for (const attempt of task.attempts) {
    const shown = shownTranscripts.get(`${task.key}#${attempt.number}`);
    if (attempt.status === "running" && shown && shown.details.open && shown.details.isConnected) {
      loadTranscript(task, attempt, shown.body);
    }
  }
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
      task.tests ? h("p", {class: "small"}, `Tests: ${task.tests.passed} passed, ${task.tests.failed} failed`) : null,
      transcriptsBlock(task), filesList(task), findingsList(task)));
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
