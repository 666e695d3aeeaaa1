// The page's only way to the service: its HTTP API under /api/v1, with the session cookie
// (HttpOnly: this script never sees it) and, with every request, the session's CSRF value.

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body || {};
  }
}

const ROLES = ["viewer", "runner", "admin"];

// The session's CSRF value comes only in the sign-in's answer and is kept in this origin's
// storage: other servers on this host get the cookie (browsers send it to every port) but
// never this value, and the service wants both.
const CSRF_KEY = "flowray-csrf";

function stored() {
  try {
    return localStorage.getItem(CSRF_KEY) || "";
  } catch {
    return "";
  }
}

export const session = { name: "", role: "", csrf: stored() };
let signedOut = () => {};

export function onSignedOut(fn) {
  signedOut = fn;
}

export function setSession(answer) {
  session.name = answer ? answer.name : "";
  session.role = answer ? answer.role : "";
  const mine = session.csrf;
  if (answer && answer.csrf) session.csrf = answer.csrf;
  if (!answer) session.csrf = "";
  try {
    if (answer && answer.csrf) localStorage.setItem(CSRF_KEY, answer.csrf);
    // Only this tab's own value is forgotten: another tab's newer sign-in stays.
    if (!answer && stored() === mine) localStorage.removeItem(CSRF_KEY);
  } catch {
    /* storage refused: the value lives as long as the page */
  }
}

// An address the browser asks for without headers (an event stream, a download link).
export function withCsrf(path) {
  return `${path}${path.includes("?") ? "&" : "?"}csrf=${encodeURIComponent(session.csrf)}`;
}

export function can(needed) {
  return ROLES.indexOf(session.role) >= ROLES.indexOf(needed) && session.role !== "";
}

export async function api(path, { method = "GET", body, headers = {}, signal, again = false }
  = {}) {
  const options = { method, headers: { ...headers }, credentials: "same-origin", signal };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  if (session.csrf) options.headers["X-Flowray-CSRF"] = session.csrf;
  let answer;
  try {
    answer = await fetch("/api/v1" + path, options);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "the service does not answer (is it running?)");
  }
  if (answer.status === 204) return null;
  let data = null;
  try {
    data = await answer.json();
  } catch {
    data = null;
  }
  if (!answer.ok) {
    const message = (data && data.error) || `${answer.status} ${answer.statusText}`;
    // Signed in again in another tab: the browser holds that sign-in's cookie, and its CSRF
    // value is in this origin's storage; take it and ask once more.
    const latest = stored();
    if (answer.status === 403 && /X-Flowray-CSRF/.test(message) && !again && latest &&
        latest !== session.csrf) {
      session.csrf = latest;
      return api(path, { method, body, headers, signal, again: true });
    }
    if ((answer.status === 401 || (answer.status === 403 && /X-Flowray-CSRF/.test(message))) &&
        path !== "/session") signedOut();
    throw new ApiError(answer.status, message, data);
  }
  return data;
}

export const enc = encodeURIComponent;
