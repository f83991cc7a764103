/* The tabs (ARIA tablist, arrow keys, the URL's #hash remembers the choice). */

const TABS = ["tasks", "dag", "timeline", "conflicts", "contract", "response", "activity"];
let onShow = () => {};

export function selectTab(name) {
  if (!TABS.includes(name)) name = "tasks";
  for (const tab of TABS) {
    const button = document.getElementById(`tab-${tab}`);
    button.setAttribute("aria-selected", String(tab === name));
    button.tabIndex = tab === name ? 0 : -1;
    document.getElementById(`panel-${tab}`).hidden = tab !== name;
  }
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
  onShow(name);
}

/* `shown(name)`: a tab became visible (a panel that measures itself redraws then). */
export function installTabs(shown) {
  onShow = shown;
  document.querySelectorAll("[role=tab]").forEach((button) => {
    button.addEventListener("click", () => selectTab(button.dataset.tab));
    button.addEventListener("keydown", (e) => {
      const i = TABS.indexOf(button.dataset.tab);
      const step = e.key === "ArrowRight" ? 1 : e.key === "ArrowLeft" ? TABS.length - 1 : 0;
      if (!step) return;
      const next = TABS[(i + step) % TABS.length];
      selectTab(next);
      document.getElementById(`tab-${next}`).focus();
    });
  });
  selectTab(location.hash.slice(1));
}
