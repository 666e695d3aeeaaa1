// flowray's code editor: CodeMirror 6 set up for flow YAML, bundled by build.mjs into
// flowray/web/static/vendor/editor.js (one ES module, nothing fetched at run time).
//
// The page imports it as:
//   import { createEditor, createDiffView } from "/static/vendor/editor.js";
//
// createEditor(parent, { doc, label, onChange, readOnly }) -> handle
//   handle.view                the EditorView (for anything not wrapped here)
//   handle.getText()           the document as a string
//   handle.setText(text)       replaces the document (a fresh state: undo history and
//                              diagnostics are cleared; onChange is NOT called, the caller
//                              knows the text it set)
//   handle.setDiagnostics(list)  list: [{ line, col, message, severity }], 1-based as flowray
//                              reports them; out-of-range lines and columns are clamped
//   handle.goTo(line, col)     cursor there, scrolled into view, editor focused
//   handle.focus(), handle.destroy()
//   onChange(text) is called after every change the user makes to the document.
//
// createDiffView(parent, { a, b, label }) -> { view, destroy() }
//   a read-only unified diff of a (before) against b (after).

import { basicSetup } from "codemirror";
import { EditorView, keymap } from "@codemirror/view";
import { EditorState, Annotation } from "@codemirror/state";
import { syntaxTree } from "@codemirror/language";
import { indentWithTab } from "@codemirror/commands";
import { yaml } from "@codemirror/lang-yaml";
import { lintGutter, setDiagnostics as lintDiagnostics } from "@codemirror/lint";
import { unifiedMergeView } from "@codemirror/merge";

const MONO = 'ui-monospace, SFMono-Regular, "SF Mono", Menlo, Consolas, "Liberation Mono", monospace';

// A light theme for a light page: white background, dark text, a visible focus ring (the
// default dotted outline is hard to see), gutters a shade off white.
const lightTheme = EditorView.theme(
  {
    "&": {
      height: "100%",
      fontSize: "13px",
      color: "#1f2328",
      backgroundColor: "#ffffff",
      border: "1px solid #d0d7de",
      borderRadius: "4px",
    },
    "&.cm-focused": { outline: "2px solid #0969da", outlineOffset: "-1px" },
    ".cm-scroller": { fontFamily: MONO, lineHeight: "1.5" },
    ".cm-content": { caretColor: "#1f2328" },
    ".cm-gutters": {
      backgroundColor: "#f6f8fa",
      color: "#57606a",
      borderRight: "1px solid #d0d7de",
    },
    ".cm-activeLine": { backgroundColor: "#f3f6fa" },
    ".cm-activeLineGutter": { backgroundColor: "#e7ecf2", color: "#1f2328" },
    "&.cm-focused .cm-selectionBackground, .cm-selectionBackground, ::selection": {
      backgroundColor: "#cde4ff",
    },
    ".cm-tooltip": { fontFamily: "system-ui, sans-serif", fontSize: "13px" },
    ".cm-panels": { fontFamily: "system-ui, sans-serif", fontSize: "13px" },
  },
  { dark: false },
);

// Marks the transactions setDiagnostics/goTo make so they are not mistaken for edits.
const programmatic = Annotation.define();

function commonExtensions(label) {
  return [
    basicSetup,
    keymap.of([indentWithTab]),
    yaml(),
    lightTheme,
    EditorView.contentAttributes.of({ "aria-label": label }),
  ];
}

function toInt(value, fallback) {
  const n = Math.floor(Number(value));
  return Number.isFinite(n) ? n : fallback;
}

// The document line for a 1-based line number, clamped into the document.
function lineAt(doc, line) {
  const n = Math.min(Math.max(toInt(line, 1), 1), doc.lines);
  return doc.line(n);
}

// The end of the token at `pos` on `line`: the syntax tree's node there when it lies on this
// line (a key, a scalar, a quoted string), else the run of non-space characters from `pos`.
function tokenEnd(state, line, pos) {
  const node = syntaxTree(state).resolveInner(pos, 1);
  if (node.from <= pos && node.to > pos && node.to <= line.to && node.from >= line.from) {
    return node.to;
  }
  const rest = line.text.slice(pos - line.from);
  const word = /^\S+/.exec(rest);
  return word ? pos + word[0].length : pos;
}

// One flowray diagnostic as a lint range: from the column to the end of the token there, or
// the whole line (without its indentation) when the column is 0, past the line's end, or on
// blank space.
function toRange(state, diag) {
  const line = lineAt(state.doc, diag.line);
  const col = toInt(diag.col, 0);
  if (col >= 1 && col <= line.length) {
    const pos = line.from + col - 1;
    const end = tokenEnd(state, line, pos);
    if (end > pos) return { from: pos, to: end };
  }
  const indent = /^\s*/.exec(line.text)[0].length;
  return { from: line.from + indent, to: line.to };
}

const SEVERITIES = new Set(["error", "warning", "info", "hint"]);

function toLint(state, diag) {
  const { from, to } = toRange(state, diag);
  const severity = SEVERITIES.has(diag.severity) ? diag.severity : "error";
  return { from, to, severity, message: String(diag.message ?? ""), source: "flowray" };
}

// parent: an element. Returns a handle (see the top of this file).
export function createEditor(
  parent,
  { doc = "", label = "Flow YAML", onChange = (_text) => {}, readOnly = false } = {},
) {
  const extensions = [
    // Before basicSetup so that its markers sit left of the line numbers.
    lintGutter(),
    commonExtensions(label),
    EditorState.readOnly.of(readOnly),
    EditorView.updateListener.of((update) => {
      if (!update.docChanged) return;
      if (update.transactions.every((tr) => tr.annotation(programmatic))) return;
      onChange(update.state.doc.toString());
    }),
  ];
  const stateFor = (text) => EditorState.create({ doc: String(text ?? ""), extensions });
  const view = new EditorView({ parent, state: stateFor(doc) });

  return {
    view,
    getText() {
      return view.state.doc.toString();
    },
    setText(text) {
      view.setState(stateFor(text));
    },
    setDiagnostics(list) {
      const diagnostics = (list ?? []).map((d) => toLint(view.state, d));
      const spec = lintDiagnostics(view.state, diagnostics);
      view.dispatch({ ...spec, annotations: programmatic.of(true) });
    },
    goTo(line, col) {
      const target = lineAt(view.state.doc, line);
      const offset = Math.min(Math.max(toInt(col, 1) - 1, 0), target.length);
      const pos = target.from + offset;
      view.dispatch({
        selection: { anchor: pos },
        effects: EditorView.scrollIntoView(pos, { y: "center" }),
        annotations: programmatic.of(true),
      });
      view.focus();
    },
    focus() {
      view.focus();
    },
    destroy() {
      view.destroy();
    },
  };
}

// A read-only unified diff: `b` shown with `a`'s removed lines above the lines that replace
// them; long unchanged stretches are collapsed (a click opens them).
export function createDiffView(parent, { a, b, label = "Changes" }) {
  const view = new EditorView({
    parent,
    state: EditorState.create({
      doc: String(b ?? ""),
      extensions: [
        commonExtensions(label),
        EditorState.readOnly.of(true),
        unifiedMergeView({
          original: String(a ?? ""),
          mergeControls: false,
          gutter: true,
          highlightChanges: true,
          collapseUnchanged: { margin: 3, minSize: 4 },
        }),
      ],
    }),
  });
  return {
    view,
    destroy() {
      view.destroy();
    },
  };
}
