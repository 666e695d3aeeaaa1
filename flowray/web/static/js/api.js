// The page's only way to the service: its HTTP API under /api/v1, with the session cookie
// (HttpOnly: this script never sees it) and, for every change, the session's CSRF value.

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body || {};
  }
}

const ROLES = ["viewer", "runner", "admin"];

export const session = { name: "", role: "", csrf: "" };
let signedOut = () => {};

export function onSignedOut(fn) {
  signedOut = fn;
}

export function setSession(answer) {
  session.name = answer ? answer.name : "";
  session.role = answer ? answer.role : "";
  session.csrf = answer ? answer.csrf : "";
}

export function can(needed) {
  return ROLES.indexOf(session.role) >= ROLES.indexOf(needed) && session.role !== "";
}

export async function api(path, { method = "GET", body, headers = {}, signal } = {}) {
  const options = { method, headers: { ...headers }, credentials: "same-origin", signal };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  if (method !== "GET" && method !== "HEAD") options.headers["X-Flowray-CSRF"] = session.csrf;
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
    if (answer.status === 401 && path !== "/session") signedOut();
    throw new ApiError(answer.status, message, data);
  }
  return data;
}

export const enc = encodeURIComponent;
