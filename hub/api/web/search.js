// The investigators' search: a purpose (case number) and criteria, results with their plate crops,
// and one read's details with its context image. Every call goes through the API, which checks the
// purpose and records the search, each read and each image opened. Results are cleared when the
// session ends. Log-in and the API calls: common.js.
"use strict";

const $ = (id) => document.getElementById(id);
let current = null; // {purpose, query}: the search on screen, for paging and images
let blobs = [];

function start() {
  AlprSession.setStatus("");
}

function stop() {
  clearResults();
  current = null;
  $("query").reset();
}

function clearResults() {
  for (const url of blobs) URL.revokeObjectURL(url);
  blobs = [];
  $("results").querySelector("tbody").replaceChildren();
  for (const id of ["results", "pages", "detail"]) $(id).hidden = true;
  $("summary").textContent = "";
}

// datetime-local (this computer's time zone) to an ISO time in UTC, or null.
function utc(value) {
  return value ? new Date(value).toISOString() : null;
}

function buildQuery() {
  const query = {};
  const plate = $("plate").value.trim();
  if (plate) query[$("plate-mode").value] = plate;
  const from = utc($("from").value);
  const to = utc($("to").value);
  if (from) query.from_utc = from;
  if (to) query.to_utc = to;
  const lat = $("lat").value.trim();
  const lon = $("lon").value.trim();
  if (lat || lon) {
    query.near = {latitude: Number(lat), longitude: Number(lon), radius_m: Number($("radius").value || 500)};
  }
  for (const key of ["node", "camera"]) {
    const value = $(key).value.trim();
    if (value) query[key] = value;
  }
  return query;
}

async function search(event) {
  event.preventDefault();
  current = {purpose: $("purpose").value.trim(), query: {...buildQuery(), page: 1}};
  await run();
}

async function run() {
  clearResults();
  $("summary").textContent = "Searching...";
  let response;
  try {
    response = await AlprSession.call("/search", {method: "POST", body: JSON.stringify(current)});
  } catch (e) {
    if (e.message !== "session ended") $("summary").textContent = "The hub cannot be reached.";
    return;
  }
  if (!response.ok) {
    $("summary").textContent = "";
    AlprSession.setStatus("Search refused: " + (await AlprSession.detail(response)), true);
    return;
  }
  AlprSession.setStatus("");
  show(await response.json());
}

function show(found) {
  const pages = Math.max(1, Math.ceil(found.total / found.page_size));
  $("summary").textContent = found.total === 0 ? "No reads match." : found.total + " reads match.";
  const body = $("results").querySelector("tbody");
  for (const read of found.results) body.appendChild(row(read));
  $("results").hidden = found.results.length === 0;
  $("pages").hidden = pages < 2;
  $("page-of").textContent = "page " + found.page + " of " + pages;
  $("prev").disabled = found.page <= 1;
  $("next").disabled = found.page >= pages;
}

async function image(url, img, problem) {
  const blob = await AlprPages.showImage(url, img, problem, "?purpose=" + encodeURIComponent(current.purpose));
  if (blob) blobs.push(blob);
}

function row(read) {
  const tr = $("row-template").content.firstElementChild.cloneNode(true);
  tr.dataset.readId = read.read_id;
  const text = AlprPages.setText;
  text(tr, ".plate", read.plate);
  text(tr, ".seen", AlprPages.when(read.seen_utc));
  text(tr, ".where", AlprPages.where(read));
  text(tr, ".camera", read.node + " / " + read.camera);
  text(tr, ".confidence", read.confidence.toFixed(2));
  image(read.crop_url, tr.querySelector("img"), tr.querySelector(".no-crop"));
  tr.querySelector(".open").addEventListener("click", () => details(read.read_id));
  return tr;
}

async function details(readId) {
  let response;
  try {
    response = await AlprSession.call("/reads/" + encodeURIComponent(readId) + "?purpose=" + encodeURIComponent(current.purpose));
  } catch (e) {
    if (e.message !== "session ended") AlprSession.setStatus("The hub cannot be reached.", true);
    return;
  }
  if (!response.ok) {
    AlprSession.setStatus("Refused: " + (await AlprSession.detail(response)), true);
    return;
  }
  const read = await response.json();
  $("d-plate").textContent = read.plate;
  $("d-candidates").textContent = read.candidates.length
    ? read.candidates.map((c) => c.text + " (" + c.confidence.toFixed(2) + ")").join(", ") : "-";
  $("d-seen").textContent = AlprPages.when(read.seen_utc);
  $("d-span").textContent = read.first_seen_utc + " / " + read.last_seen_utc;
  $("d-time").textContent = read.time_source + (read.clock_suspect ? " (clock suspect)" : "");
  $("d-where").textContent = AlprPages.where(read);
  $("d-camera").textContent = read.node + " / " + read.camera;
  $("d-hits").textContent = read.hits.length
    ? read.hits.map((h) => "hit " + h.hit_id + ": " + h.match_type + ", " + h.disposition).join("; ") : "none";
  $("d-corrections").textContent = read.corrections.length ? read.corrections.length + " (see the API)" : "none";
  $("d-no-context").hidden = true;
  image(read.context_url, $("d-context"), $("d-no-context"));
  $("detail").hidden = false;
}

function turn(delta) {
  current.query.page += delta;
  run();
}

document.addEventListener("DOMContentLoaded", () => {
  $("query").addEventListener("submit", search);
  $("prev").addEventListener("click", () => turn(-1));
  $("next").addEventListener("click", () => turn(1));
  $("d-close").addEventListener("click", () => { $("detail").hidden = true; });
});
AlprSession.init(start, stop);
