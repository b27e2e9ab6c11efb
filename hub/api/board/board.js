// The dispatch hit board: open hot-list hits, most urgent first, each with its plate crop and the list
// entry to verify against it, and the three dispositions. It talks to the hub's API only (same origin),
// with the session token in this tab's sessionStorage and the workstation's device key in localStorage.
// Data from the hub is only ever set as text (never as HTML), and crops are fetched with the session's
// headers into blob URLs, so no plate reaches a URL, the history or a log.
"use strict";

const API = "/api/v1";
const POLL_MS = Number(document.documentElement.dataset.pollMs || 3000);
const BELL_MAX_PRIORITY = Number(document.documentElement.dataset.bellMaxPriority || 1);
const KEY_STORE = "alpr.deviceKey";
const TOKEN_STORE = "alpr.token";

const $ = (id) => document.getElementById(id);
const shown = new Map(); // hit_id -> {element, cropUrl}
let firstLoad = true;
let timer = null;
let audio = null;

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function headers(json = false) {
  const h = {"X-Device-Key": localStorage.getItem(KEY_STORE) || ""};
  const token = sessionStorage.getItem(TOKEN_STORE);
  if (token) h["Authorization"] = "Bearer " + token;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

async function detail(response) {
  try {
    const body = await response.json();
    return typeof body.detail === "string" ? body.detail : "the hub refused the request (" + response.status + ")";
  } catch (e) {
    return "the hub answered " + response.status;
  }
}

// --- log-in ---------------------------------------------------------------------------------------

function showLogin(message) {
  stopPolling();
  sessionStorage.removeItem(TOKEN_STORE);
  for (const id of [...shown.keys()]) removeHit(id);
  firstLoad = true;
  $("board").hidden = true;
  $("logout").hidden = true;
  $("mute-label").hidden = true;
  $("who").textContent = "";
  $("login").hidden = false;
  $("device-key").value = localStorage.getItem(KEY_STORE) || "";
  setStatus(message || "", Boolean(message));
}

async function logIn(event) {
  event.preventDefault();
  localStorage.setItem(KEY_STORE, $("device-key").value.trim());
  const body = {username: $("username").value.trim(), password: $("password").value, totp: $("totp").value.trim()};
  $("password").value = "";
  $("totp").value = "";
  let response;
  try {
    response = await fetch(API + "/auth/login", {method: "POST", headers: headers(true), body: JSON.stringify(body)});
  } catch (e) {
    setStatus("The hub cannot be reached.", true);
    return;
  }
  if (!response.ok) {
    setStatus("Log-in refused: " + (await detail(response)), true);
    return;
  }
  sessionStorage.setItem(TOKEN_STORE, (await response.json()).token);
  sessionStorage.setItem("alpr.user", body.username);
  startBoard();
}

async function logOut() {
  try {
    await fetch(API + "/auth/logout", {method: "POST", headers: headers()});
  } finally {
    showLogin("Logged out.");
  }
}

// --- the board ------------------------------------------------------------------------------------

function startBoard() {
  $("login").hidden = true;
  $("board").hidden = false;
  $("logout").hidden = false;
  $("mute-label").hidden = false;
  $("mute-floor").textContent = String(BELL_MAX_PRIORITY + 1);
  $("who").textContent = sessionStorage.getItem("alpr.user") || "";
  setStatus("Connecting...");
  poll();
}

function stopPolling() {
  if (timer !== null) clearTimeout(timer);
  timer = null;
}

async function poll() {
  stopPolling();
  let response;
  try {
    response = await fetch(API + "/hits?limit=200", {headers: headers(), cache: "no-store"});
  } catch (e) {
    setStatus("The hub cannot be reached; retrying. The hits below may be out of date.", true);
    timer = setTimeout(poll, POLL_MS);
    return;
  }
  if (response.status === 401) {
    showLogin("Your session has ended: " + (await detail(response)));
    return;
  }
  if (!response.ok) {
    setStatus("The hub refused the hit list: " + (await detail(response)), true);
    timer = setTimeout(poll, POLL_MS);
    return;
  }
  render(await response.json());
  setStatus("Updated " + new Date().toLocaleTimeString() + ".");
  timer = setTimeout(poll, POLL_MS);
}

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

function text(root, selector, value) {
  root.querySelector(selector).textContent = value;
}

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
  const seen = new Date(read.seen_utc);
  text(li, ".seen", seen.toISOString().replace(".000Z", "Z") + " (" + seen.toLocaleString() + " here)");
  const place = read.latitude !== null && read.longitude !== null
    ? read.latitude.toFixed(5) + ", " + read.longitude.toFixed(5) + (read.direction ? ", heading " + read.direction : "")
    : "position unknown";
  text(li, ".where", place);
  text(li, ".camera", read.node + " / " + read.camera);
  li.querySelector("form").addEventListener("submit", (event) => dispose(event, hit.hit_id));
  li.addEventListener("click", () => li.classList.remove("new")); // seen: the flag has done its work
  return li;
}

async function loadCrop(hit, entry) {
  const img = entry.element.querySelector("img");
  const none = entry.element.querySelector(".no-crop");
  if (!hit.crop_url) {
    img.hidden = true;
    none.hidden = false;
    return;
  }
  try {
    const response = await fetch(hit.crop_url, {headers: headers(), cache: "no-store"});
    if (!response.ok) throw new Error(await detail(response));
    if (!shown.has(hit.hit_id)) return; // disposed of while loading
    entry.cropUrl = URL.createObjectURL(await response.blob());
    img.src = entry.cropUrl;
  } catch (e) {
    img.hidden = true;
    none.hidden = false;
    none.textContent = "crop not available: " + e.message;
  }
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
  const body = {disposition: choice, notes: notes || null};
  let response;
  try {
    response = await fetch(API + "/hits/" + hitId + "/disposition",
      {method: "POST", headers: headers(true), body: JSON.stringify(body)});
  } catch (e) {
    error.textContent = "The hub cannot be reached: nothing was recorded. Try again.";
    return;
  }
  if (response.status === 401) {
    showLogin("Your session has ended: " + (await detail(response)));
  } else if (response.status === 409) {
    removeHit(hitId);
    setStatus("Hit " + hitId + " was already dispositioned by someone else.");
  } else if (!response.ok) {
    error.textContent = "Not recorded: " + (await detail(response));
  } else {
    removeHit(hitId);
    setStatus("Hit " + hitId + " marked " + choice.replace("_", " ") + ".");
  }
  $("empty").hidden = shown.size > 0;
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", logIn);
  $("logout").addEventListener("click", logOut);
  if (sessionStorage.getItem(TOKEN_STORE)) startBoard();
  else showLogin();
});
