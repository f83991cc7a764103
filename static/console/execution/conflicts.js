/* The Conflicts tab and its count on the tab. */

const {h, replace, badge} = Console;

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
    h("tbody", {}, snap.conflicts.map((c) => h("tr", {"data-conflict-status": c.status},
      h("td", {}, h("span", {class: "chip"}, c.kind)), h("td", {class: "mono small"}, c.between.join(" vs ")),
      h("td", {}, c.description), h("td", {}, badge(c.status, "", c.status_label)), h("td", {}, c.resolution || "—"),
      h("td", {class: "num"}, String(c.rounds)))))));
}
