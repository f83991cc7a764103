/* The Conflicts tab and its count on the tab: each conflict with its evidence (the contract
   checks' file, line, what was found and what the contract expects) or the failing gate's output. */

const {h, replace, badge} = Console;

function evidence(c) {
  if (c.evidence && c.evidence.length) {
    return h("ul", {class: "evidence small", "data-evidence": c.kind}, c.evidence.map((e) => h("li", {},
      h("span", {class: "mono"}, e.file ? `${e.file}${e.line ? ":" + e.line : ""}` : "the project"), " — ",
      h("span", {}, `found ${e.found}`), h("br", {}),
      h("span", {class: "muted"}, `expected ${e.expected}`))));
  }
  if (c.gate) {
    return h("details", {class: "small"},
      h("summary", {}, `\`${c.gate.command}\` exited ${c.gate.exit_code} (${c.gate.failed} failed, ${c.gate.passed} passed)`),
      h("pre", {class: "code tool-output", "data-gate-output": ""}, c.gate.output_tail || ""));
  }
  return null;
}

export function renderConflicts(snap) {
  document.getElementById("conflict-count").textContent = snap.conflicts.length ? String(snap.conflicts.length) : "";
  const container = document.getElementById("conflicts");
  if (!snap.conflicts.length) {
    replace(container, h("p", {class: "empty"}, "No conflicts detected between task results."));
    return;
  }
  replace(container, h("table", {class: "table"},
    h("thead", {}, h("tr", {}, ["Kind", "Between", "Description", "Status", "Resolution", "Rounds"]
      .map((l) => h("th", {scope: "col"}, l)))),
    h("tbody", {}, snap.conflicts.map((c) => h("tr", {"data-conflict-status": c.status, "data-conflict-kind": c.kind},
      h("td", {}, h("span", {class: "chip"}, c.kind)), h("td", {class: "mono small"}, c.between.join(" vs ")),
      h("td", {}, c.description, evidence(c)), h("td", {}, badge(c.status, "", c.status_label)),
      h("td", {}, c.resolution || "—"), h("td", {class: "num"}, String(c.rounds)))))));
}
