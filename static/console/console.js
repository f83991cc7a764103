/* Shared helpers of the console pages: DOM building without innerHTML, formatting, status badges,
   a reconnecting websocket, and a coalescing refresher. No build step, no dependencies. */
"use strict";

const Console = (() => {
  const SVG_NS = "http://www.w3.org/2000/svg";

  /* Build an element; strings become text nodes (never parsed as HTML). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }

  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }

  function setAttrs(el, attrs) {
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") el.setAttribute("class", value);
      else if (key === "text") el.textContent = value;
      else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else el.setAttribute(key, value === true ? "" : String(value));
    }
  }

  function append(el, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }

  function replace(el, ...children) {
    el.replaceChildren();
    append(el, children);
  }

  function readJSON(id) {
    return JSON.parse(document.getElementById(id).textContent);
  }

  function urls() {
    return document.getElementById("urls").dataset;
  }

  /* Status words always come with a symbol, so no state is told by colour alone. */
  const STATUS_SYMBOLS = {
    pending: "○", ready: "◌", queued: "⋯", running: "▶", succeeded: "✓", failed: "✗", dead: "✖",
    blocked: "⊘", cancelled: "■", expired: "⊗", lost: "?",
    planning: "✎", awaiting_approval: "⏸", executing: "▶", aggregating: "⇶", completed: "✓", partial: "◐", budget_exceeded: "$",
    detected: "!", resolving: "↻", resolved: "✓", unresolved: "!",
  };

  /* `label`: the words the server gave the status (the value itself when it gave none). */
  function badge(status, extra, label) {
    return h("span", {class: `badge badge-${status}${extra ? " " + extra : ""}`, "data-status": status},
      h("span", {class: "badge-symbol", "aria-hidden": "true"}, STATUS_SYMBOLS[status] || "•"),
      label || status.replace("_", " "));
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
    if (seconds < 10) return `${seconds.toFixed(1)}s`;
    if (seconds < 90) return `${Math.round(seconds)}s`;
    const minutes = Math.floor(seconds / 60);
    if (minutes < 90) return `${minutes}m ${String(Math.round(seconds % 60)).padStart(2, "0")}s`;
    return `${Math.floor(minutes / 60)}h ${String(minutes % 60).padStart(2, "0")}m`;
  }

  function usd(value, digits = 2) {
    const n = Number(value || 0);
    if (n > 0 && n < 0.01 && digits === 2) return `$${n.toFixed(4)}`;
    return `$${n.toFixed(digits)}`;
  }

  function tokens(n) {
    if (!n) return "0";
    if (n < 1000) return String(n);
    if (n < 1e6) return `${(n / 1000).toFixed(n < 10000 ? 1 : 0)}K`;
    return `${(n / 1e6).toFixed(1)}M`;
  }

  function time(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    const today = new Date();
    const hm = d.toLocaleTimeString([], {hour: "2-digit", minute: "2-digit", second: "2-digit"});
    return d.toDateString() === today.toDateString() ? hm : `${d.toLocaleDateString()} ${hm}`;
  }

  function ago(iso) {
    if (!iso) return "—";
    const seconds = (Date.now() - new Date(iso).getTime()) / 1000;
    if (seconds < 60) return "just now";
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
    if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
    return new Date(iso).toLocaleDateString();
  }

  /* The header's live indicator. */
  function setLive(state, text) {
    const el = document.getElementById("live-indicator");
    if (!el) return;
    el.hidden = false;
    el.dataset.state = state;
    el.querySelector(".live-text").textContent = text;
  }

  /* A websocket that reconnects with backoff. `url()` is called on every (re)connect, so a page
     can put its last seq into the query string. */
  class LiveSocket {
    constructor(url, {onMessage, onOpen}) {
      this.url = url;
      this.onMessage = onMessage;
      this.onOpen = onOpen || (() => {});
      this.delay = 500;
      this.connect();
    }

    connect() {
      const scheme = location.protocol === "https:" ? "wss" : "ws";
      setLive("connecting", "Connecting…");
      this.ws = new WebSocket(`${scheme}://${location.host}${this.url()}`);
      this.ws.onopen = () => {
        this.delay = 500;
        setLive("live", "Live");
        this.onOpen();
      };
      this.ws.onmessage = (message) => this.onMessage(JSON.parse(message.data));
      this.ws.onclose = (event) => {
        if (event.code === 4403) {
          setLive("offline", "Signed out");
          return;
        }
        setLive("offline", "Reconnecting…");
        setTimeout(() => this.connect(), this.delay);
        this.delay = Math.min(this.delay * 2, 5000);
      };
    }

    send(data) {
      if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(data));
    }
  }

  /* Fetch JSON at most once at a time: a request while one is in flight runs once more after it. */
  class Refresher {
    constructor(url, onData, {minGapMs = 250} = {}) {
      this.url = url;
      this.onData = onData;
      this.minGapMs = minGapMs;
      this.inFlight = false;
      this.again = false;
      this.last = 0;
    }

    request() {
      if (this.inFlight) {
        this.again = true;
        return;
      }
      this.inFlight = true;
      const wait = Math.max(0, this.last + this.minGapMs - Date.now());
      setTimeout(() => this.run(), wait);
    }

    async run() {
      this.last = Date.now();
      let retryDelay = 0;
      try {
        const response = await fetch(this.url(), {headers: {Accept: "application/json"}, credentials: "same-origin"});
        if (response.redirected || response.status === 401 || response.status === 403) {
          location.reload();  // the session ended: the server sends us to the login page
          return;
        }
        if (response.ok) this.onData(await response.json());
        else throw new Error(`HTTP ${response.status}`);
      } catch (error) {
        this.again = true;  // the server is away for a moment: try again shortly
        retryDelay = 1000;
      } finally {
        this.inFlight = false;
        if (this.again) {
          this.again = false;
          setTimeout(() => this.request(), retryDelay);
        }
      }
    }
  }

  /* Ask before submitting a form that has data-confirm. */
  document.addEventListener("submit", (event) => {
    const question = event.target.dataset && event.target.dataset.confirm;
    if (question && !window.confirm(question)) event.preventDefault();
  });

  return {h, s, replace, readJSON, urls, badge, duration, usd, tokens, time, ago, LiveSocket, Refresher,
          STATUS_SYMBOLS};
})();
