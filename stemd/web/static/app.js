"use strict";
// The dashboard: status and jobs from the API, kept live by Server-Sent Events.
const {el, get, post, size, basename, bar, setBar} = stemd;
const jobs = new Map();
let status = null;

function byId(id) { return document.getElementById(id); }
function fill(node, children, empty) {
  node.replaceChildren(...(children.length ? children : [el("p", {class: "empty"}, empty)]));
}
function act(label, path) {
  return el("button", {type: "button", onclick: async (event) => {
    event.target.disabled = true;
    try { await post(path); } catch (error) { alert(error.message); }
    setTimeout(refreshJobs, 1200);
  }}, label);
}
function link(job) { return el("a", {href: `/jobs/${job.id}`, title: job.input}, basename(job.input)); }

function renderQueue() {
  const waiting = (status && status.daemon && status.daemon.dispatcher.waiting) || {};
  const active = [...jobs.values()].filter((j) => j.state === "running" || j.state === "queued")
    .sort((a, b) => (a.state === "running" ? -1 : 0) - (b.state === "running" ? -1 : 0)
                    || b.priority - a.priority || a.id - b.id);
  fill(byId("queue"), active.map((job) => el("div", {class: "row job", id: `job-${job.id}`, dataset: {state: job.state}},
    el("span", {class: `state ${job.state}`}, job.state),
    el("span", {class: "name"}, link(job), " ",
       el("span", {class: "why"}, job.state === "queued" ? (waiting[job.id] || "waiting for a free slot")
                                                          : `${job.progress.toFixed(0)}% on ${job.device || "?"}`)),
    bar(job), act("Cancel", `/api/jobs/${job.id}/cancel`))), "Nothing is running or waiting.");
}

function renderResults() {
  const done = [...jobs.values()].filter((j) => j.state === "done").sort((a, b) => b.id - a.id).slice(0, 10);
  fill(byId("results"), done.map((job) => el("div", {class: "row job", id: `job-${job.id}`, dataset: {state: "done"}},
    el("span", {class: "state done"}, job.cached ? "cached" : "done"),
    el("span", {class: "name"}, link(job), " ", el("span", {class: "why"}, (job.finished_at || "").slice(11, 16))),
    bar(job),
    el("a", {class: "button", href: `/api/jobs/${job.id}/archive.zip`, download: ""}, "zip"))), "No results yet.");
}

function renderFailures() {
  const failed = [...jobs.values()].filter((j) => j.state === "failed" || j.state === "canceled")
    .sort((a, b) => b.id - a.id).slice(0, 10);
  fill(byId("failures"), failed.map((job) => el("div", {class: "row failure", id: `job-${job.id}`, dataset: {state: job.state}},
    el("span", {class: `state ${job.state}`}, job.state),
    el("span", {class: "name"}, link(job), el("div", {class: "reason"}, job.error || "")),
    act("Retry", `/api/jobs/${job.id}/retry`))), "No failures.");
}

function renderSlots() {
  const slots = (status && status.daemon && status.daemon.dispatcher.slots) || [];
  fill(byId("slots"), slots.map((slot) => {
    let job = slot.job !== null ? (jobs.get(slot.job) || {id: slot.job, input: `job ${slot.job}`, state: "running", progress: slot.progress}) : null;
    if (job && job.state !== "running") job = null;     // finished since the daemon's last status
    let where = slot.node ? `${slot.name} on node ${slot.node.id.slice(0, 12)}` : slot.name;   // cluster mode
    if (slot.kind === "gpu" && slot.device === "cpu") where += " (on the CPU: no CUDA device)";
    return el("div", {class: "slot"}, el("span", {class: "dev"}, where),
      job ? el("span", {class: "name"}, link(job)) : el("span", {class: "dim"}, slot.alive ? "idle, model loaded" : "idle"),
      job ? bar({state: "running", progress: slot.progress || 0}) : null,
      slot.rss ? el("span", {class: "dim"}, size(slot.rss)) : null);
  }), status && status.running ? "No slots." : "The daemon is not running.");
  const nodes = (status && status.daemon && status.daemon.dispatcher.nodes) || [];
  if (nodes.length) byId("slots").append(el("div", {class: "dim"}, "Cluster nodes:"),
    ...nodes.map((n) => el("div", {class: "node", "data-node": n.id},
      `${n.host} (${n.id.slice(0, 12)}, ${n.address}): ${n.state}; ${n.gpus} GPU, ${n.cpus} CPU; ` +
      (n.slots.length ? `slots ${n.slots.join(", ")}` : "no slots"))));
}

function renderDisk() {
  const disk = (status && status.disk) || {};
  const used = disk.cache_used || 0, max = disk.cache_max || 1;
  byId("disk").replaceChildren(
    el("div", {}, `Outbox: ${size(disk.outbox_free)} free · state folder: ${size(disk.state_free)} free`),
    el("div", {class: "dim"}, `Dispatch pauses below ${size(disk.min_free)} free.`),
    el("div", {}, `Stem cache: ${size(used)} of ${size(max)}`),
    el("div", {class: "meter"}, el("span", {style: `width:${Math.min(100, 100 * used / max).toFixed(1)}%`})));
}

function renderHealth() {
  const node = byId("health");
  if (!status || !status.running) { node.className = "health bad"; node.textContent = "the daemon is not running"; return; }
  const q = status.queue;
  node.className = `health ${status.daemon.healthy ? "ok" : "bad"}`;
  node.textContent = `${status.daemon.healthy ? "healthy" : "unhealthy (see the log)"} · ${q.running} running, ${q.queued} waiting, ${q.done} done, ${q.failed} failed`;
  const paused = status.daemon.dispatcher.paused;
  byId("paused").hidden = !paused;
  byId("paused").textContent = paused ? `Paused: ${paused}` : "";
}

function renderAll() { renderHealth(); renderQueue(); renderResults(); renderFailures(); renderSlots(); renderDisk(); }

async function refreshStatus() { try { status = await get("/api/status"); renderAll(); } catch (e) { console.warn(e); } }
async function refreshJobs() {
  try { for (const job of await get("/api/jobs?limit=200")) jobs.set(job.id, job); renderAll(); }
  catch (e) { console.warn(e); }
}

function chart(history) {
  const w = 720, h = 150, pad = 24, n = history.length, bw = (w - 2 * pad) / n;
  const top = Math.max(1, ...history.map((b) => b.done + b.failed));
  const rtfTop = Math.max(0.01, ...history.map((b) => b.rtf || 0));
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${h + 16}`);
  svg.setAttribute("width", "100%");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "jobs done per hour and real-time factor, last 24 hours");
  const add = (tag, attrs, text) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    svg.append(node); return node;
  };
  add("line", {x1: pad, y1: h, x2: w - pad, y2: h, stroke: "#444"});
  const points = [];
  history.forEach((b, i) => {
    const x = pad + i * bw, doneH = (h - 10) * b.done / top, failH = (h - 10) * b.failed / top;
    if (b.done) add("rect", {x: x + 1, y: h - doneH, width: bw - 2, height: doneH, fill: "#3ccf7a"}).append(
      Object.assign(document.createElementNS(ns, "title"), {textContent: `${b.done} done`}));
    if (b.failed) add("rect", {x: x + 1, y: h - doneH - failH, width: bw - 2, height: failH, fill: "#ff6b6b"});
    if (b.rtf !== null) {
      const y = h - (h - 10) * b.rtf / rtfTop;
      points.push(`${x + bw / 2},${y}`);
      add("circle", {cx: x + bw / 2, cy: y, r: 3, fill: "#3d7eff"}).append(
        Object.assign(document.createElementNS(ns, "title"), {textContent: `RTF ${b.rtf.toFixed(3)}`}));
    }
    if (i % 6 === 0) add("text", {x, y: h + 12}, new Date(b.hour * 1000).toTimeString().slice(0, 5));
  });
  if (points.length) add("polyline", {points: points.join(" "), fill: "none", stroke: "#3d7eff", "stroke-width": 2});
  add("text", {x: 2, y: 10}, `${top} jobs`);
  add("text", {x: w - pad - 150, y: 10}, `real-time factor up to ${rtfTop.toFixed(2)}`);
  byId("chart").replaceChildren(svg);
}
async function refreshChart() { try { chart(await get("/api/history")); } catch (e) { console.warn(e); } }

// -- uploads: drag and drop, or the file chooser -------------------------------------------
function upload(file) {
  const line = el("div", {class: "row"}, el("span", {class: "name"}, file.name), bar({state: "queued", progress: 0}));
  byId("uploads").append(line);
  const form = new FormData();
  form.append("profile", byId("profile").value);
  form.append("file", file, file.name);
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/api/jobs");
  stemd.session().then((token) => {
    xhr.setRequestHeader("x-csrf-token", token);
    xhr.upload.onprogress = (e) => e.lengthComputable && setBar(line.lastChild, {state: "running", progress: 100 * e.loaded / e.total});
    xhr.onload = () => {
      const body = JSON.parse(xhr.responseText || "{}");
      if (xhr.status === 201) { jobs.set(body.id, body); renderAll(); line.remove(); }
      else line.replaceChildren(el("span", {class: "name"}, file.name), el("span", {class: "reason"}, body.detail || xhr.statusText));
    };
    xhr.send(form);
  });
}
function setUpUploads() {
  const drop = byId("drop");
  ["dragenter", "dragover"].forEach((k) => drop.addEventListener(k, (e) => { e.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach((k) => drop.addEventListener(k, (e) => { e.preventDefault(); drop.classList.remove("over"); }));
  drop.addEventListener("drop", (e) => [...e.dataTransfer.files].forEach(upload));
  byId("file").addEventListener("change", (e) => { [...e.target.files].forEach(upload); e.target.value = ""; });
  get("/api/profiles").then((data) => byId("profile").replaceChildren(...Object.entries(data.profiles).map(([name, p]) =>
    el("option", {value: name, selected: name === data.default}, `${name} (${p.model}, ${p.two_stems ? "2 stems" : "all stems"}, ${p.format})`))));
}

function onEvent(kind, data) {
  if (kind === "paused") { if (status && status.daemon) status.daemon.dispatcher.paused = data.paused; renderHealth(); return; }
  const known = jobs.get(data.id);
  jobs.set(data.id, data);
  if (kind === "progress" && known && known.state === data.state) {
    const row = document.getElementById(`job-${data.id}`);
    if (row) { setBar(row.querySelector(".bar"), data); row.querySelector(".why").textContent = `${data.progress.toFixed(0)}% on ${data.device || "?"}`; }
  } else renderAll();
  if (kind !== "progress") {
    refreshStatus();
    setTimeout(refreshStatus, 1500);          // the daemon writes its status once a second
    if (kind === "done" || kind === "failed") refreshChart();
  }
}

document.getElementById("logout").addEventListener("submit", async (e) => {
  e.preventDefault();
  await post("/logout").catch(() => null);
  location.href = "/login";
});
setUpUploads();
refreshJobs().then(refreshStatus);
refreshChart();
stemd.events(onEvent);
setInterval(refreshStatus, 3000);
setInterval(refreshJobs, 20000);
setInterval(refreshChart, 60000);
