// A flow's editor: YAML with highlighting, its problems marked at their line as one types
// (the service's POST /validate, debounced), saving as a new version, older versions to look
// at and to diff with.
import { api, ApiError, can, enc } from "./api.js";
import { go } from "./app.js";
import { clear, errorBox, field, h, setFieldError, toast, when } from "./dom.js";

const VALIDATE_AFTER_MS = 300;

const TEMPLATE = `# A new flow: jobs run in parallel unless \`needs\` orders them.
name: new-flow
triggers:
  manual:
    inputs:
      greeting:
        type: string
        default: hello
        description: what to say
jobs:
  hello:
    steps:
      - name: Say it
        env:
          GREETING: \${{ inputs.greeting }}
        run: echo "$GREETING from flowray"
`;

function loadEditor() {
  return import("../vendor/editor.js");
}

export async function newFlowView(root) {
  if (!can("admin")) {
    root.append(errorBox("Only an admin token can write flows."));
    return null;
  }
  const name = h("input", { type: "text", required: true, spellcheck: "false",
    autocomplete: "off", pattern: "[^/\\\\]+", maxlength: "200" });
  root.append(h("h1", null, "New flow"), field("Flow name", name,
    { hint: "Its address and the name its runs carry; no '/'." }));
  return editorView(root, { text: TEMPLATE, path: "flow.yaml", editable: true,
    nameInput: name });
}

export async function flowView(root, [name], query) {
  const version = query.get("version");
  const flow = await api(`/flows/${enc(name)}` + (version ? `?version=${enc(version)}` : ""));
  const old = flow.version !== flow.current;
  root.append(h("div", { class: "bar" },
    h("h1", null, flow.name, " ", h("span", { class: "muted" }, `v${flow.version}`)),
    h("div", { class: "actions" },
      can(flow.start_role || "runner") ? h("a", { class: "button",
        href: `/flows/${enc(name)}/start` }, "Start run") : null,
      h("a", { class: "button", href: `/runs?flow=${enc(name)}` }, "Runs"))));
  if (old) {
    root.append(h("p", { class: "note", role: "note" },
      `This is version ${flow.version}, saved ${when(flow.created)}; the current one is ` +
      `version ${flow.current}. `, h("a", { href: `/flows/${enc(name)}` }, "Edit the current one"),
      can("admin") ? ". Saving this one makes it the newest version." : "."));
  }
  if (flow.files.length) {
    root.append(h("p", { class: "muted" }, "Local actions kept with it: ",
      flow.files.map((file, i) => [i ? ", " : "", h("code", null, file)]),
      can("admin") ? " (saving here keeps them)." : "."));
  }
  if (!can("admin")) {
    root.append(h("p", { class: "muted small" }, "Read-only: saving a flow needs an admin token."));
  }
  return editorView(root, { name, text: flow.text, path: flow.path, editable: can("admin"),
    versions: flow.versions, version: flow.version, current: flow.current });
}

async function editorView(root, options) {
  const { editable } = options;
  const status = h("p", { class: "muted", role: "status", "aria-live": "polite" }, "Checking…");
  const problems = h("ul", { class: "problems", "aria-label": "Problems" });
  const holder = h("div", { class: "editor", id: "flow-editor" });
  const save = editable ? h("button", { type: "button", class: "primary" }, "Save") : null;
  const side = h("aside", { class: "versions", "aria-label": "Versions" });
  const diffHolder = h("section", { class: "diff", "aria-label": "Differences", hidden: true });
  root.append(h("div", { class: "edit-grid" },
    h("div", { class: "edit-main" }, holder,
      h("div", { class: "bar" }, status, save),
      problems, diffHolder),
    side));

  const { createEditor, createDiffView } = await loadEditor();
  let timer = 0;
  let asked = 0;
  let diff = null;
  const editor = createEditor(holder, {
    doc: options.text, label: "Flow YAML", readOnly: !editable,
    onChange: () => {
      clearTimeout(timer);
      status.textContent = "Checking…";
      timer = setTimeout(check, VALIDATE_AFTER_MS);
    },
  });

  if (!editable) editor.view.contentDOM.setAttribute("aria-readonly", "true");
  if (options.nameInput) {
    // The flow's name: line follows the name field (the service refuses a flow whose
    // name: differs from the name it is saved under).
    options.nameInput.addEventListener("input", () => {
      const value = options.nameInput.value.trim();
      const shown = /^[A-Za-z0-9_.-]+$/.test(value) ? value : JSON.stringify(value);
      const text = editor.getText();
      const next = text.replace(/^name:.*$/m, `name: ${value ? shown : "new-flow"}`);
      if (next !== text) {
        editor.setText(next);
        clearTimeout(timer);
        timer = setTimeout(check, VALIDATE_AFTER_MS);
      }
    });
  }

  async function check() {
    const ticket = ++asked;
    try {
      const body = { text: editor.getText(), path: options.path || "flow.yaml" };
      if (options.name) Object.assign(body, { flow: options.name, version: options.version });
      const { diagnostics } = await api("/validate", { method: "POST", body });
      if (ticket === asked) showProblems(diagnostics);
    } catch (err) {
      if (ticket === asked) status.textContent = `Not checked: ${err.message}`;
    }
  }

  function showProblems(diagnostics) {
    editor.setDiagnostics(diagnostics);
    clear(problems);
    const errors = diagnostics.filter((d) => d.severity === "error").length;
    const warnings = diagnostics.length - errors;
    status.textContent = diagnostics.length
      ? `${errors} error${errors === 1 ? "" : "s"}, ${warnings} warning${warnings === 1 ? "" : "s"}`
      : "No problems.";
    status.className = errors ? "bad" : "muted";
    for (const d of diagnostics) {
      problems.append(h("li", { class: `problem ${d.severity}` },
        h("button", { type: "button", class: "link",
          onclick: () => editor.goTo(d.line, d.col) },
        h("span", { class: "where" }, `${d.line}:${d.col}`), " ",
        h("span", { class: "sev" }, d.severity), " ",
        d.path ? h("code", null, d.path) : null, " ", d.message)));
    }
  }

  function showDiff(oldText, label) {
    if (diff) diff.destroy();
    clear(diffHolder);
    diffHolder.hidden = false;
    const close = h("button", { type: "button" }, "Close");
    diffHolder.append(h("div", { class: "bar" }, h("h2", null, label), close));
    const body = h("div", { class: "diff-view" });
    diffHolder.append(body);
    diff = createDiffView(body, { a: oldText, b: editor.getText(), label });
    close.addEventListener("click", () => {
      diff.destroy();
      diff = null;
      diffHolder.hidden = true;
    });
    diffHolder.scrollIntoView({ block: "nearest" });
  }

  if (options.versions) {
    side.append(h("h2", null, "Versions"));
    side.append(h("ul", null, options.versions.map((v) => h("li", null,
      v.version === options.version ? h("strong", null, `v${v.version}`)
        : h("a", { href: `/flows/${enc(options.name)}?version=${v.version}` }, `v${v.version}`),
      v.version === options.current ? " (current)" : "",
      h("span", { class: "muted" }, ` ${when(v.created)}`), " ",
      v.version !== options.version ? h("button", { type: "button", class: "link",
        "aria-label": `Compare version ${v.version} with the text here`,
        onclick: async () => {
          const older = await api(`/flows/${enc(options.name)}?version=${v.version}`);
          showDiff(older.text, `Version ${v.version} → the text here`);
        } }, "diff") : null))));
  }

  if (save) {
    let saving = false;
    save.addEventListener("click", async () => {
      if (saving) return;
      let name = options.name;
      if (options.nameInput) {
        name = options.nameInput.value.trim();
        const wrong = !name ? "A flow needs a name."
          : /[/\\]/.test(name) ? "A flow name cannot contain / or \\." : "";
        setFieldError(options.nameInput, wrong);
        if (wrong) {
          options.nameInput.focus();
          return;
        }
        const taken = await api(`/flows/${enc(name)}`).then(() => true, () => false);
        if (taken) {
          setFieldError(options.nameInput, `A flow named ${name} exists already: open it ` +
            "from the flows to change it.");
          options.nameInput.focus();
          return;
        }
      }
      // Busy, not disabled: a disabled button loses the keyboard focus.
      saving = true;
      save.setAttribute("aria-disabled", "true");
      status.textContent = "Saving…";
      try {
        const answer = await api(`/flows/${enc(name)}`, { method: "PUT",
          body: { text: editor.getText(), path: options.path || "flow.yaml",
            keep_files: !options.nameInput,
            base_version: options.nameInput ? undefined : options.version } });
        const warned = answer.warnings ? answer.warnings.length : 0;
        toast(`Saved ${name} as version ${answer.version}` + (warned
          ? `, with ${warned} warning${warned === 1 ? "" : "s"}.` : "."));
        go(`/flows/${enc(name)}`);
      } catch (err) {
        if (err instanceof ApiError && err.body && err.body.diagnostics) {
          showProblems(err.body.diagnostics);
          status.textContent = `Not saved: ${err.message}`;
        } else if (options.nameInput && err instanceof ApiError && err.status === 422) {
          setFieldError(options.nameInput, err.message);
          status.textContent = "Not saved: see the flow name.";
          options.nameInput.focus();
        } else {
          status.textContent = `Not saved: ${err.message}`;
          status.className = "bad";
          toast(`Not saved: ${err.message}`, "bad");
        }
      } finally {
        saving = false;
        save.removeAttribute("aria-disabled");
      }
    });
  }

  check();
  return () => {
    clearTimeout(timer);
    if (diff) diff.destroy();
    editor.destroy();
  };
}
