/* The Contract & gate tab: the plan's contract (endpoints, tables, which task owns which paths),
   how many of its checks pass on the merged tree, and the integration gate's last run. */

const {h, replace, badge} = Console;

function fields(shape) {
  const names = Object.keys(shape || {});
  return names.length ? names.map((n) => `${n}: ${shape[n]}`).join(", ") : "—";
}

function endpoints(contract) {
  if (!contract.endpoints || !contract.endpoints.length) return h("p", {class: "empty"}, "No endpoints declared.");
  return h("table", {class: "table", "data-contract": "endpoints"},
    h("thead", {}, h("tr", {}, ["Method", "Path", "Request", "Response"].map((l) => h("th", {scope: "col"}, l)))),
    h("tbody", {}, contract.endpoints.map((e) => h("tr", {},
      h("td", {}, h("span", {class: "chip"}, e.method)), h("td", {class: "mono"}, e.path),
      h("td", {class: "small"}, fields(e.request)), h("td", {class: "small"}, fields(e.response))))));
}

function tables(contract) {
  if (!contract.tables || !contract.tables.length) return h("p", {class: "empty"}, "No tables declared.");
  return h("table", {class: "table", "data-contract": "tables"},
    h("thead", {}, h("tr", {}, ["Table", "Columns"].map((l) => h("th", {scope: "col"}, l)))),
    h("tbody", {}, contract.tables.map((t) => h("tr", {},
      h("td", {class: "mono"}, t.name), h("td", {class: "small mono"}, fields(t.columns))))));
}

function ownership(contract) {
  const owners = Object.keys(contract.ownership || {});
  if (!owners.length) return h("p", {class: "empty"}, "Every task may write anywhere.");
  return h("table", {class: "table", "data-contract": "ownership"},
    h("thead", {}, h("tr", {}, ["Task", "Writes only under"].map((l) => h("th", {scope: "col"}, l)))),
    h("tbody", {}, owners.map((task) => h("tr", {},
      h("td", {class: "mono"}, task), h("td", {class: "mono small"}, contract.ownership[task].join(", "))))));
}

function checks(report) {
  if (!report || report.checks == null) return h("p", {class: "muted small"}, "The merged project has not been checked yet.");
  if (!report.checks) {
    return h("p", {class: "muted small", "data-contract-checks": ""}, "Nothing to check: the contract declares no endpoints or tables.");
  }
  const counts = Object.entries(report.counts || {}).map(([k, v]) => `${v} ${k.replace("_", " ")}`).join(", ");
  // What the checks say of themselves: code they could not follow, mismatches the project had before.
  const notes = (report.notes || []).map((note) => h("li", {}, note));
  return [
    h("p", {class: "small", "data-contract-checks": ""},
      badge(report.failed ? "unresolved" : "resolved", "", report.failed ? "mismatches" : "agrees"),
      ` ${report.passed} of ${report.checks} checks pass `, h("span", {class: "muted"}, `(read: ${counts})`)),
    notes.length ? h("ul", {class: "muted small", "data-contract-notes": ""}, notes) : null,
  ];
}

function gate(run) {
  if (!run || !Object.keys(run).length) return h("p", {class: "muted small"}, "The gate runs once every task is done.");
  if (!run.ran) {
    return h("p", {class: "small", "data-gate": "not-run"},
      badge("cancelled", "", "not run"), " ", run.reason || "", " — the merged project is not verified by its tests.");
  }
  return h("div", {"data-gate": run.ok ? "passed" : "failed"},
    h("p", {class: "small"}, badge(run.ok ? "resolved" : "unresolved", "", run.ok ? "passed" : "failed"), " ",
      h("span", {class: "mono"}, run.command), ` — exit ${run.exit_code}, ${run.passed} passed, ${run.failed} failed`,
      run.duration_sec != null ? `, ${run.duration_sec.toFixed(1)}s` : ""),
    h("details", {open: !run.ok}, h("summary", {class: "small"}, "output"),
      h("pre", {class: "code tool-output"}, run.output_tail || "(no output)")));
}

export function renderContract(snap) {
  const contract = snap.contract || {};
  replace(document.getElementById("contract"),
    h("h3", {class: "subhead"}, "Endpoints"), endpoints(contract),
    h("h3", {class: "subhead"}, "Tables"), tables(contract),
    h("h3", {class: "subhead"}, "Ownership"), ownership(contract),
    h("h3", {class: "subhead"}, "Checks of the merged project"), checks(snap.contract_checks),
    h("h3", {class: "subhead"}, "Integration gate"), gate(snap.integration));
}
