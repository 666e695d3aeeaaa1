// Small helpers to build the page's elements: text always goes in as text (never HTML), so
// nothing a flow, a log or an input holds can become markup.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") el.className = value;
      else if (key === "text") el.textContent = value;
      else if (key.startsWith("on") && typeof value === "function") {
        el.addEventListener(key.slice(2), value);
      } else if (key === "dataset") Object.assign(el.dataset, value);
      else if (key === "style" && typeof value === "object") Object.assign(el.style, value);
      else if (value === true) el.setAttribute(key, "");
      else el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function when(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const date = new Date(seconds * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

// How long ago (or in how long) a moment is, to the unit that matters at that distance
// ("12 s ago", "4 min ago", "3 h 5 min ago", "in 2 d 4 h"): a list of runs or flows reads at a
// glance, and the exact time is in the element's title.
export function ago(seconds) {
  if (!seconds) return "";
  const delta = Date.now() / 1000 - seconds;
  const text = roughly(Math.abs(delta));
  return delta < 0 ? `in ${text}` : `${text} ago`;
}

function roughly(seconds) {
  if (seconds < 60) return `${Math.max(0, Math.floor(seconds))} s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m} min`;
  return span(seconds).replace(/ 0 (min|h)$/, "");
}

export function span(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m} min ${Math.round(seconds % 60)} s`;
  const hours = Math.floor(m / 60);
  if (hours < 48) return `${hours} h ${m % 60} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

export function duration(started, ended) {
  if (!started) return "";
  return span((ended || Date.now() / 1000) - started);
}

export function badge(status) {
  return h("span", { class: `status s-${status || "queued"}` }, status || "queued");
}

export function show(value) {
  if (value === null || value === undefined) return "";
  return typeof value === "string" ? value : JSON.stringify(value);
}

let toastTimer = 0;
export function toast(message, kind = "info") {
  const el = document.getElementById("toast");
  el.textContent = message;
  el.className = `visible ${kind}`;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.className = ""; }, 5000);
}

export function errorBox(message) {
  return h("p", { class: "error", role: "alert" }, message);
}

// The browser tab's title: the view's own name first (what a tab strip and a screen reader's
// window list show), then the product.
export function setTitle(text) {
  const name = String(text || "").replace(/\s+/g, " ").trim();
  document.title = name ? `${name} · flowray` : "flowray";
}

// Rebuild `container` with `rebuild()` without losing the keyboard focus: when the focus was
// on an element inside it that carries data-focus, the element with the same data-focus in
// the new content gets it back (a live view redrawn under a keyboard user's feet would
// otherwise drop the focus to the page's start). Returns what rebuild() returned.
// When that element is gone (a Cancel button once the run has ended), `fallback()` names the
// element that gets the focus instead.
export function keepFocus(container, rebuild, fallback = null) {
  const active = document.activeElement;
  const inside = active && active !== container && container.contains(active);
  const key = inside ? active.getAttribute("data-focus") : null;
  const result = rebuild();
  if (inside && !container.contains(active)) {
    const again = key === null ? null : [...container.querySelectorAll("[data-focus]")]
      .find((el) => el.getAttribute("data-focus") === key);
    const target = again || (fallback ? fallback() : null);
    if (target) target.focus({ preventScroll: true });
  }
  return result;
}

// A labelled field: the label's text, the control, a hint and a place for its error.
export function field(label, control, { hint, id } = {}) {
  const controlId = id || control.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  control.id = controlId;
  const error = h("span", { class: "field-error", id: `${controlId}-error`, role: "alert" });
  control.setAttribute("aria-describedby", `${controlId}-error` +
    (hint ? ` ${controlId}-hint` : ""));
  return h("div", { class: "field" },
    h("label", { for: controlId }, label),
    control,
    hint ? h("span", { class: "hint", id: `${controlId}-hint` }, hint) : null,
    error);
}

export function setFieldError(control, message) {
  const error = document.getElementById(`${control.id}-error`);
  if (error) error.textContent = message || "";
  if (message) control.setAttribute("aria-invalid", "true");
  else control.removeAttribute("aria-invalid");
}

export function download(name, text, type = "text/csv") {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = h("a", { href: url, download: name, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

// el.append(...) for children that may be null (left out), as h() takes them.
export function put(el, ...children) {
  append(el, children);
  return el;
}
