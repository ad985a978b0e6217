// The dashboard's core: the token (session storage only, sent as an Authorization header, never in a URL),
// calls to the /v1 API, reading server-sent events with fetch, sign-in, and the hash router over the pages.
"use strict";

const TOKEN_KEY = "replaybank.token";
const WRITE_SCOPES = ["write", "admin"];
const READ_SCOPES = ["read", "write", "admin"];

class ApiError extends Error {
  constructor(status, message, field) {
    super(field ? `${message} (${field})` : message);
    this.status = status;
  }
}

class SignedOut extends Error {}

// The signed-in token's name and scopes, from GET /v1/whoami.
const session = { token: null, name: null, scopes: [], get canWrite() { return this.scopes.some((s) => WRITE_SCOPES.includes(s)); } };

// Build an element: h("a", {href: "#/x", class: "y"}, "text", child...). Text is never parsed as HTML.
function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

async function api(path, { method = "GET", json, signal, raw = false, accept } = {}) {
  const headers = { Authorization: `Bearer ${session.token}` };
  if (json !== undefined) headers["Content-Type"] = "application/json";
  if (accept) headers.Accept = accept;
  const response = await fetch(path, { method, headers, signal, body: json === undefined ? undefined : JSON.stringify(json) });
  if (response.status === 401) {
    signOut("The token is unknown or has been revoked: sign in again.");
    throw new SignedOut();
  }
  if (!response.ok) {
    const body = await response.json().catch(() => null);
    const error = body && body.error;
    throw new ApiError(response.status, error ? error.message : `${response.status} ${response.statusText}`, error && error.field);
  }
  return raw ? response : response.json();
}

// GET a list page: {data, count, next}.
function listPage(path, params = {}) {
  const query = new URLSearchParams(Object.entries(params).filter(([, value]) => value !== undefined && value !== null && value !== ""));
  return api(query.toString() ? `${path}?${query}` : path);
}

// Every page of a list, up to `most` items (for charts over a dataset's versions or its policies).
async function allPages(path, params = {}, most = 2000) {
  const items = [];
  let cursor;
  do {
    const page = await listPage(path, { ...params, limit: 500, cursor });
    items.push(...page.data);
    cursor = page.next;
  } while (cursor && items.length < most);
  return items;
}

// Server-sent events over fetch, so the Authorization header goes along (EventSource cannot send one).
async function followEvents(path, onEvent, signal) {
  const response = await api(path, { raw: true, signal, accept: "text/event-stream" });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = { event: "message", data: [] };
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue;  // a comment: the keep-alive
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const content = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") event.data.push(content);
        else event[field] = content;
      }
      if (event.data.length) onEvent({ ...event, data: event.data.join("\n") });
    }
  }
}

// Fetch a file with the header, then hand the browser a blob to save: a plain link could not authenticate.
async function download(path, filename) {
  const response = await api(path, { raw: true });
  const url = URL.createObjectURL(await response.blob());
  const link = h("a", { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  session.token = null;
  session.scopes = [];
  showSignIn(message);
}

function showSignIn(message) {
  stopLive();
  document.getElementById("whoami").replaceChildren();
  document.getElementById("nav").hidden = true;
  const input = h("input", { type: "password", id: "token", name: "token", autocomplete: "off", placeholder: "rb_…", required: true });
  const form = h(
    "form", { id: "sign-in", class: "card", onsubmit: (event) => { event.preventDefault(); signIn(input.value.trim()); } },
    h("h2", {}, "Sign in"),
    h("p", {}, "Paste a token with the read or write scope (", h("code", {}, "replaybank token create NAME --scope read"), ", or the admin token)."),
    h("label", { for: "token" }, "Token"), input,
    h("button", { type: "submit" }, "Sign in"),
    message ? h("p", { class: "error", id: "sign-in-error" }, message) : "",
  );
  document.getElementById("page").replaceChildren(form);
  input.focus();
}

async function signIn(token) {
  session.token = token;
  let self;
  try {
    self = await api("/v1/whoami");
  } catch (error) {
    if (!(error instanceof SignedOut)) signOut(`Could not sign in: ${error.message}`);
    return;
  }
  if (!self.scopes.some((scope) => READ_SCOPES.includes(scope))) {
    signOut(`"${self.name}" is a worker token: it runs jobs and cannot sign in. Use a read or write token.`);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  session.name = self.name;
  session.scopes = self.scopes;
  document.getElementById("nav").hidden = false;
  document.getElementById("whoami").replaceChildren(
    h("span", { id: "token-name" }, `${self.name} (${self.scopes.join(", ")})`),
    h("button", { type: "button", onclick: () => signOut("Signed out.") }, "Sign out"),
  );
  if (!location.hash || location.hash === "#/") location.hash = "#/datasets";
  else route();
}

// What a page started that outlives its drawing (the job event stream) stops when the page changes.
let live = new AbortController();

function stopLive() {
  live.abort();
  live = new AbortController();
}

const ROUTES = [
  [/^#\/datasets$/, () => Pages.datasets()],
  [/^#\/datasets\/([^/]+)$/, (name) => Pages.dataset(name)],
  [/^#\/datasets\/([^/]+)\/versions\/([^/]+)$/, (name, version) => Pages.version(name, version)],
  [/^#\/jobs$/, () => Pages.jobs()],
  [/^#\/jobs\/([^/]+)$/, (id) => Pages.job(id, live.signal)],
  [/^#\/policies$/, () => Pages.policies()],
  [/^#\/policies\/([^/]+)$/, (id) => Pages.policy(id)],
  [/^#\/sweeps$/, () => Pages.sweeps()],
  [/^#\/sweeps\/([^/]+)$/, (id) => Pages.sweep(id)],
];

let shown = 0;  // the latest navigation: an older page still loading must not replace a newer one

async function route() {
  if (!session.token) return;
  stopLive();
  const navigation = ++shown;
  const page = document.getElementById("page");
  for (const link of document.querySelectorAll("#nav a")) link.classList.toggle("current", location.hash.startsWith(link.getAttribute("href")));
  const match = ROUTES.map(([pattern, render]) => [location.hash.match(pattern), render]).find(([found]) => found);
  if (!match) {
    location.hash = "#/datasets";
    return;
  }
  const [found, render] = match;
  delete page.dataset.ready;
  page.replaceChildren(h("p", { class: "loading" }, "Loading…"));
  try {
    const content = await render(...found.slice(1).map(decodeURIComponent));
    if (navigation !== shown) return;
    page.replaceChildren(content);
    page.dataset.ready = location.hash;
  } catch (error) {
    if (error instanceof SignedOut || navigation !== shown) return;
    page.replaceChildren(h("p", { class: "error", id: "page-error" }, error.message));
  }
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", () => {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) signIn(token);
  else showSignIn();
});
