/* Pools: per-pool load and durations, refetched when the console websocket reports activity
   (coalesced to one request a second) and every few seconds regardless. */
"use strict";

(() => {
  const {h, replace, readJSON, urls, duration, ago, LiveSocket, Refresher} = Console;
  const links = urls();
  const container = document.getElementById("pools");

  function meter(label, value, max, cls) {
    const share = max ? Math.min(100, Math.round((100 * value) / max)) : 0;
    return h("div", {class: "meter"},
      h("div", {class: "meter-head"}, h("span", {}, label), h("span", {class: "num"}, `${value} / ${max}`)),
      h("div", {class: "progress", role: "progressbar", "aria-label": label, "aria-valuenow": share, "aria-valuemin": 0,
                "aria-valuemax": 100}, h("div", {class: `progress-fill ${cls}`, "data-width": share})));
  }

  function metric(label, value, note) {
    return h("div", {class: "pool-metric"}, h("div", {class: "stat-label"}, label), h("div", {class: "pool-metric-value"}, value),
      note ? h("div", {class: "stat-detail"}, note) : null);
  }

  function render(pools) {
    if (!pools.length) {
      replace(container, h("p", {class: "empty card"}, "No pools configured. Run python manage.py load_config."));
      return;
    }
    replace(container, pools.map((pool) => h("section", {class: "card pool", "data-pool": pool.name},
      h("header", {class: "pool-head"},
        h("h2", {}, pool.name),
        pool.enabled ? h("span", {class: "badge badge-succeeded"}, h("span", {class: "badge-symbol", "aria-hidden": "true"}, "✓"), "enabled")
                     : h("span", {class: "badge badge-cancelled"}, h("span", {class: "badge-symbol", "aria-hidden": "true"}, "■"), "disabled"),
        h("span", {class: "pool-model"}, h("span", {}, "model ", h("strong", {}, pool.model || "none")),
          h("span", {class: pool.provider === "offline" ? "chip chip-warn" : "chip",
                     title: pool.provider_note || `${pool.provider} provider`}, pool.provider))),
      meter("Running", pool.running, pool.max_concurrent, "progress-running"),
      h("div", {class: "pool-metrics"},
        metric("Queue length", String(pool.queue_length), `${pool.ready} ready · ${pool.queued} queued`),
        metric("p50 duration", duration(pool.p50_sec), pool.samples ? `of ${pool.samples} recent` : "no data yet"),
        metric("p95 duration", duration(pool.p95_sec), `timeout ${pool.timeout_sec}s`),
        metric("Retries", String(pool.retries), `max ${pool.max_retries} per task`),
        metric("Dead tasks", String(pool.dead), pool.blocked ? `${pool.blocked} blocked` : "none blocked"),
        metric("Succeeded", String(pool.succeeded), pool.last_activity ? `last start ${ago(pool.last_activity)}` : "idle")))));
    container.querySelectorAll(".progress-fill").forEach((el) => { el.style.width = `${el.dataset.width}%`; });
  }

  render(readJSON("pools-data"));
  const refresher = new Refresher(() => links.json, (data) => render(data.pools), {minGapMs: 1000});
  new LiveSocket(() => links.ws, {
    onOpen: () => refresher.request(),
    onMessage: (message) => { if (message.kind === "event") refresher.request(); },
  });
  setInterval(() => refresher.request(), 5000);
})();
