"use strict";
// A job's page: its state, the original and each stem to play, the manifest, downloads.
const {el, get, post, size, basename, bar} = stemd;
const jobId = Number(location.pathname.split("/").pop());
let shown = null;

function summary(job) {
  document.title = `stemd: ${basename(job.input)}`;
  document.getElementById("title").textContent = `${basename(job.input)} · job ${job.id} · ${job.state}`;
  const actions = [];
  if (job.state === "queued" || job.state === "running") actions.push(["Cancel", "cancel"]);
  if (job.state === "failed" || job.state === "canceled") actions.push(["Retry", "retry"]);
  document.getElementById("actions").replaceChildren(...actions.map(([label, kind]) =>
    el("button", {type: "button", onclick: () => post(`/api/jobs/${job.id}/${kind}`).then(load, (e) => alert(e.message))}, label)));
  document.getElementById("summary").replaceChildren(...[
    el("div", {class: "row", id: `job-${job.id}`, dataset: {state: job.state}},
      el("span", {class: `state ${job.state}`}, job.state), el("span", {class: "name"}, job.input), bar(job)),
    el("div", {class: "dim"}, `profile ${job.profile} · attempts ${job.attempts} · device ${job.device || "–"} · ` +
       `queued ${job.created_at || "–"} · finished ${job.finished_at || "–"}`),
    job.error ? el("p", {class: "reason"}, job.error) : null].filter(Boolean));
}

function player(label, src, download) {
  return el("div", {class: "stem"}, el("strong", {}, label),
    el("audio", {controls: true, preload: "none", src, "data-stem": label}),
    download ? el("a", {class: "button", href: download, download: ""}, "download") : el("span"));
}

async function files(job) {
  const node = document.getElementById("stems");
  const original = player("original", `/api/jobs/${job.id}/input`, null);
  original.querySelector("audio").addEventListener("error", () => original.remove());
  if (job.state !== "done") { node.replaceChildren(original, el("p", {class: "empty"}, "The stems appear here when the job is done.")); return; }
  const data = await get(`/api/jobs/${job.id}/files`);
  const stems = data.files.filter((f) => f.audio).map((f) =>
    player(f.name.replace(/\.[^.]+$/, ""), `/api/jobs/${job.id}/files/${encodeURIComponent(f.name)}`,
           `/api/jobs/${job.id}/files/${encodeURIComponent(f.name)}`));
  node.replaceChildren(original, ...stems,
    el("p", {}, el("a", {class: "button", id: "zip", href: `/api/jobs/${job.id}/archive.zip`, download: ""},
                   `Download everything (zip, ${size(data.files.reduce((t, f) => t + f.size, 0))})`),
       " ", el("a", {href: `/api/jobs/${job.id}/files/manifest.json`}, "manifest.json")));
  const manifest = document.getElementById("manifest");
  manifest.classList.remove("empty");
  manifest.textContent = JSON.stringify(data.manifest, null, 2);
}

async function load() {
  const job = await get(`/api/jobs/${jobId}`);
  summary(job);
  if (shown !== job.state) { shown = job.state; await files(job); }
}

stemd.events((kind, data) => {
  if (data.id !== jobId) return;
  if (kind === "progress") { summary(data); return; }
  load();
});
load().catch((e) => { document.getElementById("summary").textContent = e.message; });
