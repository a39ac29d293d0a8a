"use strict";
// Shared helpers: DOM building (text only, never HTML from data), API calls with the CSRF token.
const stemd = (() => {
  let csrf = null;
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  async function session() {
    if (csrf === null) csrf = (await (await fetch("/api/session")).json()).csrf;
    return csrf;
  }
  async function get(path) {
    const answer = await fetch(path, {headers: {accept: "application/json"}});
    if (answer.status === 401) { location.href = "/login"; throw new Error("logged out"); }
    if (!answer.ok) throw new Error((await answer.json()).detail || answer.statusText);
    return answer.json();
  }
  async function post(path) {
    const answer = await fetch(path, {method: "POST", headers: {"x-csrf-token": await session()}});
    const body = await answer.json().catch(() => ({}));
    if (!answer.ok) throw new Error(body.detail || answer.statusText);
    return body;
  }
  function size(bytes) {
    if (bytes === null || bytes === undefined) return "?";
    const units = ["B", "KB", "MB", "GB", "TB"];
    let value = bytes, unit = 0;
    while (value >= 1000 && unit < units.length - 1) { value /= 1000; unit++; }
    return `${value.toFixed(value < 10 && unit ? 1 : 0)} ${units[unit]}`;
  }
  function basename(path) { return (path || "").split(/[\\/]/).pop(); }
  function bar(job) {
    const pct = job.state === "done" ? 100 : (job.progress || 0);
    return el("div", {class: "bar", role: "progressbar", "aria-valuenow": pct, "aria-valuemin": 0,
                      "aria-valuemax": 100, dataset: {state: job.state}},
              el("span", {style: `width:${pct}%`}));
  }
  function setBar(node, job) {
    const pct = job.state === "done" ? 100 : (job.progress || 0);
    node.dataset.state = job.state;
    node.setAttribute("aria-valuenow", pct);
    node.firstChild.style.width = `${pct}%`;
  }
  function events(onEvent) {
    const source = new EventSource("/api/events");
    for (const kind of ["queued", "started", "progress", "done", "failed", "canceled", "paused"]) {
      source.addEventListener(kind, (message) => onEvent(kind, JSON.parse(message.data)));
    }
    return source;
  }
  return {el, get, post, session, size, basename, bar, setBar, events};
})();
