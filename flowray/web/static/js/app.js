// The page: who is signed in, the navigation, and which view an address shows.
import { api, ApiError, can, onSignedOut, session, setSession } from "./api.js";
import { clear, errorBox, field, h, setTitle, toast } from "./dom.js";

const main = document.getElementById("main");
let dispose = null;
let rendering = 0;
// Whether the next view is the user's move to another one (a link, a form's answer, back or
// forward): then the focus goes to the top of the new view, as after a page load, instead of
// staying on an element that is gone.
let moved = false;

const routes = [
  [/^\/sign-in$/, () => signInView],
  [/^\/(?:flows)?$/, async () => (await import("./flows.js")).flowsView],
  [/^\/flows\/new$/, async () => (await import("./editor-page.js")).newFlowView],
  [/^\/flows\/([^/]+)\/start$/, async () => (await import("./start.js")).startView],
  [/^\/flows\/([^/]+)$/, async () => (await import("./editor-page.js")).flowView],
  [/^\/runs$/, async () => (await import("./runs.js")).runsView],
  [/^\/runs\/([^/]+)\/sweep$/, async () => (await import("./sweep.js")).sweepView],
  [/^\/runs\/([^/]+)$/, async () => (await import("./run.js")).runView],
  [/^\/secrets$/, async () => (await import("./settings.js")).secretsView],
  [/^\/variables$/, async () => (await import("./settings.js")).variablesView],
];

export function go(path, { replace = false } = {}) {
  if (replace) history.replaceState(null, "", path);
  else history.pushState(null, "", path);
  moved = true;
  render();
}

// A view that could not be shown: a heading that says so, and the service's reason.
function failed(message) {
  setTitle("Not shown");
  return [h("h1", null, "Cannot show this page"), errorBox(message)];
}

// After a move, the focus goes to the new view (unless the view put it somewhere itself, as
// the sign-in form does), and the tab's title follows the view's heading.
function settle() {
  const heading = main.querySelector("h1");
  if (heading && document.title === "flowray") setTitle(heading.textContent);
  if (!moved) return;
  moved = false;
  if (!main.contains(document.activeElement)) main.focus({ preventScroll: true });
}

async function render() {
  const ticket = ++rendering;
  if (dispose) {
    try { dispose(); } catch { /* a view's cleanup never stops the next view */ }
    dispose = null;
  }
  const path = location.pathname;
  if (path !== "/sign-in" && !session.role) {
    try {
      setSession(await api("/session"));
    } catch (err) {
      if (ticket !== rendering) return;
      if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
        go(`/sign-in?next=${encodeURIComponent(path + location.search)}`, { replace: true });
        return;
      }
      clear(main).append(...failed(err.message));
      settle();
      return;
    }
  }
  showWho();
  for (const [pattern, load] of routes) {
    const match = pattern.exec(path);
    if (!match) continue;
    const params = match.slice(1).map(decodeURIComponent);
    try {
      const view = await load();
      if (ticket !== rendering) return;
      clear(main);
      markNav(path);
      setTitle("");
      const cleanup = await view(main, params, new URLSearchParams(location.search));
      if (ticket !== rendering) {
        if (typeof cleanup === "function") cleanup();
        return;
      }
      dispose = typeof cleanup === "function" ? cleanup : null;
    } catch (err) {
      if (ticket !== rendering) return;
      if (err instanceof ApiError && err.status === 401) return;
      clear(main).append(...failed(err.message || String(err)));
    }
    settle();
    return;
  }
  clear(main).append(h("h1", null, "Not found"),
    h("p", null, "No page at this address. ", h("a", { href: "/flows" }, "See the flows.")));
  settle();
}

function markNav(path) {
  for (const link of document.querySelectorAll("#nav a")) {
    const current = path === link.getAttribute("href") ||
      path.startsWith(link.getAttribute("href") + "/") ||
      (path === "/" && link.dataset.nav === "flows");
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

function showWho() {
  const signedIn = Boolean(session.role);
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("who").hidden = !signedIn;
  document.getElementById("who-name").textContent = session.name;
  document.getElementById("who-role").textContent = session.role;
  for (const link of document.querySelectorAll("#nav [data-role]")) {
    link.hidden = !can(link.dataset.role);
  }
}

function signInView(root, _params, query) {
  const token = h("input", { type: "password", name: "token", autocomplete: "current-password",
    required: true, spellcheck: "false" });
  const error = h("p", { class: "error", role: "alert", hidden: true });
  const form = h("form", { class: "card narrow", "aria-labelledby": "sign-in-title" },
    h("h1", { id: "sign-in-title" }, "Sign in"),
    h("p", { class: "muted" }, "Sign in with a flowray token (", h("code", null,
      "flowray token create"), "; the first admin token is in the service's data dir, in ",
    h("code", null, "admin-token"), ")."),
    field("Token", token),
    error,
    h("button", { type: "submit", class: "primary" }, "Sign in"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    try {
      setSession(await api("/session", { method: "POST", body: { token: token.value } }));
      go(nextAddress(query.get("next")), { replace: true });
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
      token.focus();
    }
  });
  root.append(form);
  token.focus();
}

// Where to go after signing in: an address of this page only (never another origin, not the
// sign-in again).
function nextAddress(next) {
  try {
    const url = new URL(next || "/flows", location.origin);
    if (url.origin === location.origin && url.pathname !== "/sign-in") {
      return url.pathname + url.search;
    }
  } catch {
    /* not an address */
  }
  return "/flows";
}

document.getElementById("sign-out").addEventListener("click", async () => {
  try {
    await api("/session", { method: "DELETE" });
  } catch (err) {
    toast(err.message, "bad");
  }
  setSession(null);
  showWho();
  go("/sign-in", { replace: true });
});

onSignedOut(() => {
  if (location.pathname === "/sign-in") return;
  setSession(null);
  showWho();
  go(`/sign-in?next=${encodeURIComponent(location.pathname + location.search)}`,
    { replace: true });
});

// The skip link moves the focus past the header, to the view, without changing the address or
// drawing the view again.
document.querySelector(".skip").addEventListener("click", (event) => {
  event.preventDefault();
  main.focus();
});

// Links inside the page change the view without loading the document again.
document.addEventListener("click", (event) => {
  if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey ||
      event.shiftKey || event.altKey) return;
  const link = event.target.closest("a[href]");
  if (!link || link.hasAttribute("download") || link.target) return;
  const url = new URL(link.href, location.href);
  if (url.origin !== location.origin || url.pathname.startsWith("/api/") ||
      url.pathname.startsWith("/static/")) return;
  event.preventDefault();
  go(url.pathname + url.search);
  main.focus({ preventScroll: true });
});

window.addEventListener("popstate", () => {
  moved = true;
  render();
});
render();
