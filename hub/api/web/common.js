// Shared by the hub's pages (the dispatch hit board, the investigators' search). AlprSession: the
// log-in form, the session token in this tab's sessionStorage, the workstation's device key in localStorage, and the
// headers every API call carries. A page calls AlprSession.init(onStart, onStop): onStart once a session
// exists, onStop when it ends (log-out, expiry: a 401), where the page clears every ALPR datum it shows.
"use strict";

const AlprSession = (() => {
  const API = "/api/v1";
  const KEY_STORE = "alpr.deviceKey";
  const TOKEN_STORE = "alpr.token";
  const USER_STORE = "alpr.user";
  const $ = (id) => document.getElementById(id);
  let started = null;
  let stopped = null;

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

  // The hub's reason for a refusal (its messages never echo the request's data).
  async function detail(response) {
    try {
      const body = await response.json();
      if (typeof body.detail === "string") return body.detail;
      if (Array.isArray(body.detail)) return body.detail.map((p) => p.loc.slice(1).join(".") + ": " + p.msg).join("; ");
    } catch (e) {
      // not JSON: fall through
    }
    return "the hub answered " + response.status;
  }

  // fetch() against the API with the session's headers; a 401 ends the session on the page.
  async function call(path, options = {}) {
    const response = await fetch(API + path, {cache: "no-store", ...options, headers: headers(Boolean(options.body))});
    if (response.status === 401) {
      end("Your session has ended: " + (await detail(response)));
      throw new Error("session ended");
    }
    return response;
  }

  function end(message) {
    sessionStorage.removeItem(TOKEN_STORE);
    if (stopped) stopped();
    for (const id of ["app", "logout"]) $(id).hidden = true;
    $("who").textContent = "";
    $("login").hidden = false;
    $("device-key").value = localStorage.getItem(KEY_STORE) || "";
    setStatus(message || "", Boolean(message));
  }

  function begin() {
    $("login").hidden = true;
    for (const id of ["app", "logout"]) $(id).hidden = false;
    $("who").textContent = sessionStorage.getItem(USER_STORE) || "";
    started();
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
    sessionStorage.setItem(USER_STORE, body.username);
    setStatus("");
    begin();
  }

  async function logOut() {
    try {
      await fetch(API + "/auth/logout", {method: "POST", headers: headers()});
    } finally {
      end("Logged out.");
    }
  }

  function init(onStart, onStop) {
    started = onStart;
    stopped = onStop;
    document.addEventListener("DOMContentLoaded", () => {
      $("login").addEventListener("submit", logIn);
      $("logout").addEventListener("click", logOut);
      if (sessionStorage.getItem(TOKEN_STORE)) begin();
      else end();
    });
  }

  return {API, call, detail, end, headers, init, setStatus};
})();

// Display helpers shared by the pages; every value ends up as text, never as HTML.
const AlprPages = (() => {
  function setText(root, selector, value) {
    root.querySelector(selector).textContent = value;
  }

  function when(iso) {
    const seen = new Date(iso);
    return seen.toISOString().replace(".000Z", "Z") + " (" + seen.toLocaleString() + " here)";
  }

  function where(read) {
    if (read.latitude === null || read.longitude === null) return "position unknown";
    const heading = read.direction && read.direction !== "unknown" ? ", heading " + read.direction : "";
    return read.latitude.toFixed(5) + ", " + read.longitude.toFixed(5) + heading;
  }

  // The API's image at `url` (as the API gives it: /api/v1/..., plus `query`) shown in `img` through a
  // blob: URL, which it returns for the caller to revoke; null, with the reason in `problem`, if none.
  async function showImage(url, img, problem, query = "") {
    let reason = "no image stored";
    if (url) {
      try {
        const response = await AlprSession.call(url.slice(AlprSession.API.length) + query);
        if (!response.ok) throw new Error(await AlprSession.detail(response));
        const blob = URL.createObjectURL(await response.blob());
        img.src = blob;
        img.hidden = false;
        return blob;
      } catch (e) {
        reason = "image not available: " + e.message;
      }
    }
    img.hidden = true;
    problem.hidden = false;
    problem.textContent = reason;
    return null;
  }

  return {setText, showImage, when, where};
})();
