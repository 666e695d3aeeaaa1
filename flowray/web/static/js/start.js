// The start form, built from the flow's manual inputs (triggers.manual): one control per type,
// defaults filled in, required ones marked, each field checked before anything is sent.
import { api, can, enc, session } from "./api.js";
import { go } from "./app.js";
import { errorBox, field, h, setFieldError } from "./dom.js";

const INT = /^[+-]?[0-9]+$/;
const FLOAT = /^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$/;

export async function startView(root, [name]) {
  const flow = await api(`/flows/${enc(name)}`);
  root.append(h("h1", null, "Start ", h("a", { href: `/flows/${enc(name)}` }, name)));
  if (!can(flow.start_role)) {
    root.append(errorBox(`Starting ${name} needs the role ${flow.start_role}; this sign-in ` +
      `has the role ${session.role}.`));
    return;
  }
  const controls = [];
  const form = h("form", { class: "card", novalidate: true, "aria-label": `Start ${name}` });
  const names = Object.keys(flow.inputs);
  if (!names.length) form.append(h("p", { class: "muted" }, "This flow takes no inputs."));
  for (const key of names) {
    const spec = flow.inputs[key];
    const control = makeControl(key, spec);
    controls.push({ key, spec, control });
    const label = [key, spec.required ? h("span", { class: "req", "aria-hidden": "true" }, " *")
      : null, h("span", { class: "muted small" }, ` ${spec.type || "string"}`)];
    if (spec.required) control.setAttribute("aria-required", "true");
    form.append(field(label, control, { hint: spec.description || null, id: `input-${key}` }));
    control.addEventListener(spec.type === "boolean" ? "change" : "input",
      () => setFieldError(control, ""));
    control.addEventListener("blur", () => setFieldError(control, problem(key, spec, control)));
  }
  const formError = h("p", { class: "error", role: "alert", hidden: true });
  const submit = h("button", { type: "submit", class: "primary" }, "Start run");
  form.append(formError, submit);
  let sending = false;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (sending) return;
    formError.hidden = true;
    const inputs = {};
    let first = null;
    for (const { key, spec, control } of controls) {
      const why = problem(key, spec, control);
      setFieldError(control, why);
      if (why) first = first || control;
      else {
        const value = valueOf(spec, control);
        if (value !== undefined) inputs[key] = value;
      }
    }
    if (first) {
      first.focus();
      return;
    }
    // Busy, not disabled: a disabled button loses the keyboard focus.
    sending = true;
    submit.setAttribute("aria-disabled", "true");
    try {
      const answer = await api(`/flows/${enc(name)}/runs`, { method: "POST", body: { inputs } });
      go(`/runs/${enc(answer.id)}`);
    } catch (err) {
      const named = /input '([^']+)'/.exec(err.message);
      const target = named && controls.find((c) => c.key === named[1]);
      if (target) {
        setFieldError(target.control, err.message);
        target.control.focus();
      } else {
        formError.textContent = `Not started: ${err.message}`;
        formError.hidden = false;
      }
    } finally {
      sending = false;
      submit.removeAttribute("aria-disabled");
    }
  });
  root.append(form);
}

function makeControl(key, spec) {
  const type = spec.type || "string";
  const given = spec.default;
  const shown = given === null || given === undefined ? ""
    : typeof given === "string" ? given : JSON.stringify(given, null, type === "object" ? 2 : 0);
  if (type === "boolean") {
    return h("input", { type: "checkbox", name: key,
      checked: given === true || String(given).toLowerCase() === "true" });
  }
  if (type === "array" || type === "object") {
    return h("textarea", { name: key, rows: 4, spellcheck: "false",
      placeholder: type === "array" ? "[1, 2]" : '{"key": "value"}' }, shown);
  }
  const attrs = { type: "text", name: key, value: shown, spellcheck: "false",
    autocomplete: "off" };
  if (type === "integer") attrs.inputmode = "numeric";
  if (type === "float") attrs.inputmode = "decimal";
  return h("input", attrs);
}

function problem(key, spec, control) {
  const type = spec.type || "string";
  if (type === "boolean") return "";
  const text = control.value.trim();
  if (!text) return spec.required ? `${key} is required.` : "";
  if (type === "integer" && !INT.test(text)) return `${key} must be a whole number.`;
  if (type === "float" && !FLOAT.test(text)) return `${key} must be a number, such as 0.001.`;
  if (type === "array" || type === "object") {
    let value;
    try {
      value = JSON.parse(text);
    } catch {
      return `${key} must be JSON.`;
    }
    if (type === "array" && !Array.isArray(value)) return `${key} must be a JSON array.`;
    if (type === "object" && (value === null || typeof value !== "object" || Array.isArray(value))) {
      return `${key} must be a JSON object.`;
    }
  }
  return "";
}

function valueOf(spec, control) {
  const type = spec.type || "string";
  if (type === "boolean") return control.checked;
  const text = control.value.trim();
  if (!text) return undefined;
  if (type === "integer") return Number.isSafeInteger(Number(text)) ? Number(text) : text;
  if (type === "float") return Number(text);
  if (type === "array" || type === "object") return JSON.parse(text);
  return control.value;
}
