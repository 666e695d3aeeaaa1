// Secrets and variables: set, list, delete. A secret's value goes to the service and never
// comes back: the service answers names and dates only.
import { api, can, enc } from "./api.js";
import { ago, clear, errorBox, field, h, keepFocus, setFieldError, toast, when } from "./dom.js";

const NAME = /^[A-Za-z_][A-Za-z0-9_]{0,199}$/;

export function secretsView(root) {
  return namedView(root, { noun: "secret", path: "/secrets", key: "secrets", secret: true });
}

export function variablesView(root) {
  return namedView(root, { noun: "variable", path: "/variables", key: "variables",
    secret: false });
}

async function namedView(root, { noun, path, key, secret }) {
  const title = secret ? "Secrets" : "Variables";
  const heading = h("h1", { tabindex: "-1" }, title);
  root.append(heading);
  if (secret && !can("admin")) {
    root.append(errorBox("Only an admin token can see and set secrets."));
    return;
  }
  root.append(h("p", { class: "muted" }, secret
    ? "Runs read them as secrets.NAME; their values are stored encrypted, masked in every " +
      "log and never shown again, here or anywhere."
    : "Runs read them as variables.NAME (a flow's own variables win). They are not secret."));
  const body = h("tbody");
  const table = h("div", { class: "table-wrap" }, h("table", { class: "list" },
    h("caption", { class: "sr-only" }, title),
    h("thead", null, h("tr", null, ["Name", secret ? null : "Value", "Updated", can("admin") ? "" : null]
      .filter((c) => c !== null).map((c) => h("th", { scope: "col" },
        c || h("span", { class: "sr-only" }, "Actions"))))), body));

  async function load() {
    const answer = await api(path);
    // A deleted row's button goes with its row: the focus goes to the heading, not the page's
    // start.
    keepFocus(body, () => fill(answer[key]), () => heading);
  }

  function fill(items) {
    clear(body);
    if (!items.length) {
      body.append(h("tr", null, h("td", { colspan: (secret ? 2 : 3) + (can("admin") ? 1 : 0),
        class: "muted" },
        `No ${noun}s yet.`)));
    }
    for (const item of items) {
      body.append(h("tr", null,
        h("th", { scope: "row", class: "mono" }, item.name),
        secret ? null : h("td", { class: "mono value" }, item.value),
        h("td", null, h("time", { title: when(item.updated) }, ago(item.updated))),
        can("admin") ? h("td", { class: "actions" }, h("button", { type: "button",
          class: "danger", "aria-label": `Delete ${noun} ${item.name}`,
          "data-focus": `delete ${item.name}`,
          onclick: async () => {
            if (!window.confirm(`Delete the ${noun} ${item.name}?`)) return;
            try {
              await api(`${path}/${enc(item.name)}`, { method: "DELETE" });
              toast(`Deleted ${item.name}.`);
              await load();
            } catch (err) {
              toast(err.message, "bad");
            }
          } }, "Delete")) : null));
    }
  }

  if (can("admin")) {
    const name = h("input", { type: "text", name: "name", required: true, spellcheck: "false",
      autocomplete: "off", maxlength: "200" });
    const value = secret
      ? h("input", { type: "password", name: "value", autocomplete: "new-password",
        spellcheck: "false" })
      : h("textarea", { name: "value", rows: 2, spellcheck: "false" });
    const form = h("form", { class: "card", "aria-label": `Set a ${noun}` },
      h("h2", null, `Set a ${noun}`),
      field("Name", name, { hint: "Letters, digits and _, not starting with a digit." }),
      field("Value", value, { hint: secret ? "Sent once to the service, never shown again."
        : null }),
      h("button", { type: "submit", class: "primary" }, `Save ${noun}`));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const problem = NAME.test(name.value) ? "" : "Letters, digits and _, not starting with " +
        "a digit.";
      setFieldError(name, problem);
      if (problem) {
        name.focus();
        return;
      }
      try {
        await api(`${path}/${enc(name.value)}`, { method: "PUT", body: { value: value.value } });
        toast(`Saved ${name.value}.`);
        value.value = "";
        name.value = "";
        await load();
      } catch (err) {
        setFieldError(value, err.message);
      }
    });
    root.append(form);
  }
  root.append(table);
  await load();
}
