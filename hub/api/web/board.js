// The dispatch hit board: open hot-list hits, most urgent first, each with its plate crop and the list
// entry to verify against it, and the three dispositions. Data from the hub is only ever set as text
// (never as HTML), and crops are fetched with the session's headers into blob URLs, so no plate reaches
// a URL, the history or a log. Log-in and the API calls: session.js.
"use strict";

const POLL_MS = Number(document.documentElement.dataset.pollMs || 3000);
const BELL_MAX_PRIORITY = Number(document.documentElement.dataset.bellMaxPriority || 1);

const $ = (id) => document.getElementById(id);
const shown = new Map(); // hit_id -> {element, cropUrl}
let firstLoad = true;
let shownVersion = null; // the open hits' version on screen
let timer = null;
let audio = null;

function start() {
  $("mute-label").hidden = false;
  $("mute-floor").textContent = String(BELL_MAX_PRIORITY + 1);
  AlprSession.setStatus("Connecting...");
  poll();
}

function stop() {
  if (timer !== null) clearTimeout(timer);
  timer = null;
  for (const id of [...shown.keys()]) removeHit(id);
  firstLoad = true;
  shownVersion = null;
  $("mute-label").hidden = true;
  document.title = "Hit board";
}

// Every POLL_MS the board asks for the open hits' version (a count and ids: no ALPR information, not
// logged); only when it moves does it fetch the hits themselves, an access the hub logs. So the access
// log records what a dispatcher was shown, not one entry every few seconds per open board.
async function poll() {
  timer = null;
  try {
    const state = await AlprSession.call("/hits/state");
    if (!state.ok) throw new Refused(await AlprSession.detail(state));
    const version = (await state.json()).version;
    if (version !== shownVersion) {
      const response = await AlprSession.call("/hits?limit=200");
      if (!response.ok) throw new Refused(await AlprSession.detail(response));
      render(await response.json());
      shownVersion = version;
    }
    AlprSession.setStatus("Updated " + new Date().toLocaleTimeString() + ".");
  } catch (e) {
    if (e.message === "session ended") return;
    AlprSession.setStatus(e instanceof Refused ? "The hub refused the hit list: " + e.message
      : "The hub cannot be reached; retrying. The hits below may be out of date.", true);
  }
  timer = setTimeout(poll, POLL_MS);
}

class Refused extends Error {}

function render(hits) {
  const open = new Set(hits.map((h) => h.hit_id));
  for (const id of [...shown.keys()]) if (!open.has(id)) removeHit(id);
  const fresh = [];
  const list = $("hits");
  hits.forEach((hit, position) => {
    let entry = shown.get(hit.hit_id);
    if (!entry) {
      entry = {element: buildHit(hit), cropUrl: null};
      shown.set(hit.hit_id, entry);
      loadCrop(hit, entry);
      if (!firstLoad) fresh.push(hit);
    }
    // Keep the server's order (priority, then newest) without rebuilding cards a dispatcher is typing in.
    if (list.children[position] !== entry.element) list.insertBefore(entry.element, list.children[position] || null);
  });
  $("empty").hidden = hits.length > 0;
  document.title = hits.length ? "(" + hits.length + ") Hit board" : "Hit board";
  if (fresh.length) alertFor(fresh);
  firstLoad = false;
}

const text = AlprPages.setText;

function buildHit(hit) {
  const li = $("hit-template").content.firstElementChild.cloneNode(true);
  const read = hit.read;
  const entry = hit.entry;
  li.dataset.hitId = String(hit.hit_id);
  li.dataset.priority = String(entry.priority);
  li.classList.add(entry.priority <= BELL_MAX_PRIORITY ? "urgent" : "routine");
  text(li, ".priority", "P" + entry.priority);
  text(li, ".plate", read.plate);
  text(li, ".list", hit.list_name);
  text(li, ".entry", entry.plate + (entry.state ? " (" + entry.state + ")" : " (any state)"));
  text(li, ".category", entry.category || "-");
  text(li, ".notes", entry.notes || "-");
  text(li, ".match", hit.match_type + (hit.matched_text !== read.plate ? " on " + hit.matched_text : ""));
  text(li, ".seen", AlprPages.when(read.seen_utc));
  text(li, ".where", AlprPages.where(read));
  text(li, ".camera", read.node + " / " + read.camera);
  li.querySelector("form").addEventListener("submit", (event) => dispose(event, hit.hit_id));
  li.addEventListener("click", () => li.classList.remove("new")); // seen: the flag has done its work
  return li;
}

async function loadCrop(hit, entry) {
  const url = await AlprPages.showImage(hit.crop_url, entry.element.querySelector("img"),
    entry.element.querySelector(".no-crop"));
  if (url && !shown.has(hit.hit_id)) URL.revokeObjectURL(url); // disposed of while loading
  else entry.cropUrl = url;
}

function removeHit(id) {
  const entry = shown.get(id);
  if (!entry) return;
  if (entry.cropUrl) URL.revokeObjectURL(entry.cropUrl);
  entry.element.remove();
  shown.delete(id);
}

// --- alerts ---------------------------------------------------------------------------------------

function alertFor(fresh) {
  for (const hit of fresh) shown.get(hit.hit_id).element.classList.add("new");
  // Urgent lists always sound; the rest only while not muted (a dispatcher can quiet routine lists).
  const audible = fresh.some((h) => h.entry.priority <= BELL_MAX_PRIORITY) || !$("mute").checked;
  if (!audible) return;
  document.body.dataset.alerts = String(Number(document.body.dataset.alerts || 0) + 1);
  ring();
}

function ring() {
  try {
    audio = audio || new AudioContext();
    const tone = audio.createOscillator();
    const gain = audio.createGain();
    tone.frequency.value = 880;
    gain.gain.value = 0.2;
    tone.connect(gain).connect(audio.destination);
    tone.start();
    tone.stop(audio.currentTime + 0.6);
  } catch (e) {
    // No audio device: the highlighted card and the title still show the hit.
  }
}

// --- dispositions ---------------------------------------------------------------------------------

async function dispose(event, hitId) {
  event.preventDefault();
  const form = event.target;
  const choice = event.submitter ? event.submitter.value : "";
  const error = form.querySelector(".error");
  error.textContent = "";
  if (choice === "confirmed" && !form.querySelector(".verified").checked) {
    error.textContent = "Compare the plate and state with the crop, and tick the box, before confirming.";
    return;
  }
  const notes = form.querySelector(".dispose-notes").value.trim();
  let response;
  try {
    response = await AlprSession.call("/hits/" + hitId + "/disposition",
      {method: "POST", body: JSON.stringify({disposition: choice, notes: notes || null})});
  } catch (e) {
    if (e.message !== "session ended") error.textContent = "The hub cannot be reached: nothing was recorded. Try again.";
    return;
  }
  if (response.status === 409) {
    removeHit(hitId);
    AlprSession.setStatus("Hit " + hitId + " was already dispositioned by someone else.");
  } else if (!response.ok) {
    error.textContent = "Not recorded: " + (await AlprSession.detail(response));
  } else {
    removeHit(hitId);
    AlprSession.setStatus("Hit " + hitId + " marked " + choice.replace("_", " ") + ".");
  }
  $("empty").hidden = shown.size > 0;
}

AlprSession.init(start, stop);
