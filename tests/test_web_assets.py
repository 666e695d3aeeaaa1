"""The web page's committed third-party assets (flowray/web/static/vendor/, built by web/):
they exist, say whose code they hold and under which licence, fetch nothing from elsewhere,
export the editor API the page uses, and work in a real headless Chromium.

No node is needed: the bundles are committed. The browser checks need Debian's chromium
(/usr/bin/chromium) and Python Playwright; without them they are skipped, saying which is missing.
"""

from __future__ import annotations

import contextlib
import http.server
import importlib.util
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Page

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "flowray" / "web" / "static" / "vendor"
LOCK = ROOT / "web" / "package-lock.json"
BUNDLES = ("editor.js", "plot.js", "uplot.css")
CHROMIUM = Path("/usr/bin/chromium")

# The packages the brief names (and the parsers they stand on): each must be in a bundle.
REQUIRED = {
    "codemirror",
    "@codemirror/view",
    "@codemirror/state",
    "@codemirror/language",
    "@codemirror/commands",
    "@codemirror/search",
    "@codemirror/autocomplete",
    "@codemirror/lang-yaml",
    "@codemirror/lint",
    "@codemirror/merge",
    "@lezer/common",
    "@lezer/highlight",
    "@lezer/lr",
    "@lezer/yaml",
    "uplot",
}


def lock_runtime_packages() -> dict[str, str]:
    """name -> version of every package package-lock.json installs for the bundles (not
    esbuild and its binaries, which the lockfile marks ``dev``)."""
    lock = json.loads(LOCK.read_text())
    out: dict[str, str] = {}
    for key, info in lock["packages"].items():
        if key and not info.get("dev", False):
            out[key.rsplit("node_modules/", 1)[1]] = info["version"]
    return out


def license_sections() -> tuple[dict[str, dict[str, str]], list[str]]:
    """LICENSES.txt read back: name -> its fields and licence ``text``; and the packages it
    says were installed but tree-shaken out of every bundle."""
    blocks = (VENDOR / "LICENSES.txt").read_text().split("=" * 78 + "\n")
    sections: dict[str, dict[str, str]] = {}
    unbundled: list[str] = []
    for block in blocks[1:]:
        if block.startswith("Installed for the bundles but not in them"):
            names = (line.strip() for line in block.splitlines()[1:])
            unbundled = [n for n in names if n and n != "(none)"]
            continue
        head, _, text = block.partition("\n\n")
        fields = dict(line.split(": ", 1) for line in head.splitlines())
        fields["text"] = text.strip()
        sections[fields["Package"]] = fields
    return sections, unbundled


def test_vendor_files_exist() -> None:
    for name in (*BUNDLES, "LICENSES.txt"):
        path = VENDOR / name
        assert path.is_file(), f"{path} is missing: run web/build.sh"
        assert path.stat().st_size > 500, f"{path} is nearly empty"


def test_licenses_name_every_bundled_package_with_its_text() -> None:
    sections, unbundled = license_sections()
    runtime = lock_runtime_packages()
    # Every package the lockfile installs for the bundles is accounted for: in a bundle with
    # its licence, or named as tree-shaken away; and nothing is listed that is not locked.
    assert sorted(set(sections) | set(unbundled)) == sorted(runtime)
    assert not set(sections) & set(unbundled)
    assert set(sections) >= REQUIRED, f"not in any bundle: {sorted(REQUIRED - set(sections))}"
    for name, fields in sections.items():
        assert fields["Version"] == runtime[name], name
        assert fields["License"] == "MIT", name
        assert fields["Bundled in"], name
        # The text of the package's LICENSE file, copyright line and all.
        text = fields["text"]
        assert re.search(r"copyright", text, re.IGNORECASE), name
        assert "Permission is hereby granted, free of charge" in text, name
    assert sections["uplot"]["Bundled in"] == "plot.js, uplot.css"
    assert sections["@codemirror/view"]["Bundled in"] == "editor.js"


# What a bundle would need to load anything from another host: an import of a URL (static or
# dynamic), a fetch/XHR/beacon/worker, a stylesheet link or a CSS @import/url() to a URL.
# URLs in licence comments and documentation strings are not loads and are not matched.
REMOTE_LOADS = [
    re.compile(r"""\bimport\s*\(\s*[`'"]\s*(?:https?:)?//"""),
    re.compile(r"""\b(?:import|from)\s*[`'"]\s*(?:https?:)?//"""),
    re.compile(r"""\bfetch\s*\("""),
    re.compile(r"""\bXMLHttpRequest\b"""),
    re.compile(r"""\bsendBeacon\b"""),
    re.compile(r"""\bimportScripts\s*\("""),
    re.compile(r"""\bnew\s+(?:Shared)?Worker\s*\("""),
    re.compile(r"""<link\b[^>]*\bhref\s*=\s*\\?[`'"]?\s*(?:https?:)?//""", re.IGNORECASE),
    re.compile(r"""@import\s+(?:url\()?\s*[`'"]?\s*(?:https?:)?//""", re.IGNORECASE),
    re.compile(r"""\burl\(\s*[`'"]?\s*(?:https?:)?//""", re.IGNORECASE),
]


def test_bundles_load_nothing_from_elsewhere() -> None:
    for name in BUNDLES:
        text = (VENDOR / name).read_text()
        found = [m.group(0) for rx in REMOTE_LOADS for m in rx.finditer(text)]
        assert found == [], f"{name} would load from elsewhere: {found}"


def module_exports(text: str) -> set[str]:
    """The names an esbuild ES module exports: its ``export{a as b, ...}`` statements."""
    names: set[str] = set()
    for body in re.findall(r"\bexport\s*\{([^}]*)\}", text):
        for item in body.split(","):
            names.add(item.strip().split(" as ")[-1].strip())
    return names - {""}


def test_editor_and_plot_export_their_api() -> None:
    assert module_exports((VENDOR / "editor.js").read_text()) == {"createEditor", "createDiffView"}
    assert module_exports((VENDOR / "plot.js").read_text()) == {"default", "uPlot"}


# ----------------------------------------------------------------------------- in Chromium

# The page the browser tests load: the vendor modules, imported the way flowray's page does,
# handed to the tests on `window.vendor`. A button after the editor to check the editor
# lets keyboard users leave it (Escape, then Tab).
TEST_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>vendor test</title>
<link rel="stylesheet" href="/vendor/uplot.css"></head>
<body style="font-family: system-ui, sans-serif">
<div id="editor" style="height: 240px"></div><button id="after">after</button>
<div id="diff" style="height: 240px"></div>
<div id="plot"></div>
<script type="module">
import { createEditor, createDiffView } from "/vendor/editor.js";
import uPlot, { uPlot as named } from "/vendor/plot.js";
window.vendor = { createEditor, createDiffView, uPlot, named, changes: [] };
document.body.dataset.ready = "yes";
</script></body></html>
"""

FLOW = "name: demo\njobs:\n  build:\n    runs-on: local\n    steps:\n      - run: echo hi\n"


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves TEST_PAGE at / and the vendor folder at /vendor/; remembers what was asked."""

    requested: list[str]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, directory=str(VENDOR), **kwargs)

    def do_GET(self) -> None:
        self.requested.append(self.path)
        if self.path == "/":
            body = TEST_PAGE.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if not self.path.startswith("/vendor/"):
            self.send_error(404)
            return
        self.path = self.path.removeprefix("/vendor")
        super().do_GET()

    def guess_type(self, path: Any) -> str:
        # ES modules must come as JavaScript whatever the machine's mime.types says.
        return "text/javascript" if str(path).endswith(".js") else super().guess_type(path)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the requests are checked, not logged


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server on a free port in a thread: its base URL and the paths asked of it."""
    requested: list[str] = []
    handler = type("Handler", (_Handler,), {"requested": requested})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", requested
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture(scope="module")
def browser_page(server: tuple[str, list[str]]) -> Iterator[tuple[Page, list[str], list[str]]]:
    """The test page loaded in headless Chromium; the requests that tried to leave the test
    server (refused) and the page's errors, for the tests to check stay empty."""
    if not CHROMIUM.exists():
        pytest.skip(f"browser checks skipped: {CHROMIUM} not found (Debian's chromium package)")
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("browser checks skipped: Python Playwright is not installed (pip install playwright)")
    from playwright.sync_api import Route, sync_playwright

    base, _ = server
    elsewhere: list[str] = []
    errors: list[str] = []

    def only_local(route: Route) -> None:
        # Nothing may load from another host: the page must work offline.
        if route.request.url.startswith(base + "/"):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"],
        )
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            # No wall-clock bound on waits: pytest-timeout ends a test that hangs.
            page.set_default_timeout(0)
            page.route("**/*", only_local)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.goto(base + "/")
            page.wait_for_selector("body[data-ready=yes]", state="attached")
            yield page, elsewhere, errors
        finally:
            browser.close()


@pytest.fixture
def page(browser_page: tuple[Page, list[str], list[str]]) -> Iterator[Page]:
    """The loaded page, its editors removed after each test, no error or outside request."""
    pg, elsewhere, errors = browser_page
    yield pg
    pg.evaluate("""() => {
        for (const h of window.handles ?? []) h.destroy();
        window.handles = [];
        for (const id of ["editor", "diff", "plot"]) document.getElementById(id).replaceChildren();
    }""")
    assert elsewhere == []
    assert errors == []


def make_editor(page: Page, doc: str, **options: Any) -> None:
    """createEditor in #editor with ``doc``; the handle is window.ed, changes go to
    window.vendor.changes."""
    page.evaluate(
        """([doc, options]) => {
            window.vendor.changes = [];
            window.ed = window.vendor.createEditor(document.getElementById("editor"), {
                doc, ...options, onChange: (text) => window.vendor.changes.push(text) });
            (window.handles ??= []).push(window.ed);
        }""",
        [doc, options],
    )


# The lint marks in the editor: which line (1-based, among the rendered lines) each is on,
# its text, and the gutter markers.
MARKS = """() => {
    const lines = [...document.querySelectorAll("#editor .cm-content > .cm-line")];
    const ranges = [...document.querySelectorAll("#editor .cm-lintRange, #editor .cm-lintPoint")];
    return {
        ranges: ranges.map((el) => ({
            line: lines.indexOf(el.closest(".cm-line")) + 1,
            text: el.textContent,
            cls: [...el.classList].filter((c) => c.startsWith("cm-lint")).sort().join(" "),
        })),
        gutter: [...document.querySelectorAll("#editor .cm-lint-marker")].map((el) => el.className),
    };
}"""


def test_diagnostics_are_marked_at_their_place_and_removed(page: Page) -> None:
    make_editor(page, FLOW)
    page.evaluate("""() => window.ed.setDiagnostics(
        [{line: 2, col: 3, message: "bad", severity: "error"}])""")
    marks = page.evaluate(MARKS)
    # Line 2 is "jobs:": from col 3 to the end of the token there ("jobs", the key).
    assert marks["ranges"] == [{"line": 2, "text": "bs", "cls": "cm-lintRange cm-lintRange-error"}]
    assert marks["gutter"] == ["cm-lint-marker cm-lint-marker-error"]
    assert page.evaluate("() => window.vendor.changes") == []  # not an edit

    page.evaluate("() => window.ed.setDiagnostics([])")
    assert page.evaluate(MARKS) == {"ranges": [], "gutter": []}


def test_diagnostics_out_of_range_are_clamped(page: Page) -> None:
    make_editor(page, FLOW)
    page.evaluate("""() => window.ed.setDiagnostics([
        {line: 4, col: 5, message: "a key", severity: "warning"},
        {line: 3, col: 0, message: "no column", severity: "error"},
        {line: 6, col: 400, message: "past the line's end", severity: "error"},
        {line: 99, col: 1, message: "past the document's end", severity: "error"},
    ])""")
    ranges = page.evaluate(MARKS)["ranges"]
    assert sorted((r["line"], r["text"], r["cls"]) for r in ranges) == [
        # "runs-on" is one token (a '-' does not end it).
        (3, "build:", "cm-lintRange cm-lintRange-error"),
        (4, "runs-on", "cm-lintRange cm-lintRange-warning"),
        (6, "- run: echo hi", "cm-lintRange cm-lintRange-error"),
        # Line 7 is the empty line after the last newline: a point mark.
        (7, "", "cm-lintPoint cm-lintPoint-error"),
    ]


def test_editing_undo_and_onchange(page: Page) -> None:
    make_editor(page, "name: demo\n", label="Flow YAML for demo")
    assert page.get_attribute("#editor .cm-content", "aria-label") == "Flow YAML for demo"
    page.evaluate("() => window.ed.goTo(1, 11)")  # the end of line 1, focused
    page.keyboard.type("x")
    assert page.evaluate("() => window.ed.getText()") == "name: demox\n"
    assert page.evaluate("() => window.vendor.changes") == ["name: demox\n"]
    page.keyboard.press("Control+z")
    assert page.evaluate("() => window.ed.getText()") == "name: demo\n"

    # setText is not an edit: no onChange, and undo does not go back past it.
    page.evaluate("() => window.ed.setText('a: 1\\nb: 2\\n')")
    assert page.evaluate("() => window.ed.getText()") == "a: 1\nb: 2\n"
    assert page.evaluate("() => window.vendor.changes") == ["name: demox\n", "name: demo\n"]
    page.evaluate("() => window.ed.focus()")
    page.keyboard.press("Control+z")
    assert page.evaluate("() => window.ed.getText()") == "a: 1\nb: 2\n"


def test_goto_moves_the_cursor_and_focuses(page: Page) -> None:
    make_editor(page, FLOW + "".join(f"k{i}: {i}\n" for i in range(200)))
    page.evaluate("() => window.ed.goTo(150, 3)")
    where = page.evaluate("""() => {
        const v = window.ed.view, head = v.state.selection.main.head, line = v.state.doc.lineAt(head);
        const box = v.coordsAtPos(head), frame = v.scrollDOM.getBoundingClientRect();
        return { line: line.number, col: head - line.from + 1, focused: v.hasFocus,
                 visible: box !== null && box.top >= frame.top && box.bottom <= frame.bottom };
    }""")
    assert where == {"line": 150, "col": 3, "focused": True, "visible": True}
    page.evaluate("() => window.ed.goTo(1000, -4)")  # clamped: the last line's start
    assert page.evaluate("() => window.ed.view.state.selection.main.head") == len(FLOW) + sum(
        len(f"k{i}: {i}\n") for i in range(200))


def test_tab_indents_and_escape_tab_leaves(page: Page) -> None:
    make_editor(page, "a: 1\n")
    page.evaluate("() => window.ed.goTo(1, 1)")
    page.keyboard.press("Tab")
    assert page.evaluate("() => window.ed.getText()") == "  a: 1\n"
    page.keyboard.press("Escape")
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.id") == "after"


def test_search_panel_yaml_highlighting_and_read_only(page: Page) -> None:
    make_editor(page, FLOW, readOnly=True)
    page.evaluate("() => window.ed.focus()")
    page.keyboard.press("Control+f")
    page.wait_for_selector("#editor .cm-search input[name=search]")
    # YAML highlighting: each key is its own span, drawn in another colour than the text.
    keys = page.evaluate("""() => [...document.querySelectorAll("#editor .cm-content > .cm-line")]
        .flatMap((line) => [...line.querySelectorAll("span")]
            .filter((el) => getComputedStyle(el).color !== getComputedStyle(line).color)
            .map((el) => el.textContent))""")
    assert keys == ["name", "jobs", "build", "runs-on", "steps", "run"]
    font = page.evaluate("""() => {
        const s = getComputedStyle(document.querySelector("#editor .cm-scroller"));
        return [s.fontSize, s.fontFamily.includes("monospace")];
    }""")
    assert font == ["13px", True]
    page.evaluate("() => window.ed.goTo(1, 1)")
    page.keyboard.type("zz")
    assert page.evaluate("() => window.ed.getText()") == FLOW


def test_diff_view_shows_deleted_and_inserted_lines(page: Page) -> None:
    page.evaluate("""() => {
        const a = "name: demo\\njobs:\\n  build:\\n    runs-on: local\\n";
        const b = "name: demo\\njobs:\\n  build:\\n    runs-on: ray\\n    timeout: 5\\n";
        (window.handles ??= []).push(
            window.vendor.createDiffView(document.getElementById("diff"), { a, b }));
    }""")
    seen = page.evaluate("""() => ({
        label: document.querySelector("#diff .cm-content").getAttribute("aria-label"),
        deleted: [...document.querySelectorAll("#diff .cm-deletedChunk .cm-deletedLine")]
            .map((el) => el.textContent),
        inserted: [...document.querySelectorAll("#diff .cm-content > .cm-changedLine")]
            .map((el) => el.textContent),
        buttons: document.querySelectorAll("#diff .cm-chunkButtons").length,
    })""")
    assert seen == {
        "label": "Changes",
        "deleted": ["    runs-on: local"],
        "inserted": ["    runs-on: ray", "    timeout: 5"],
        "buttons": 0,  # read-only: no accept/reject
    }


def test_uplot_draws_a_canvas(page: Page) -> None:
    drawn = page.evaluate("""async () => {
        const { uPlot, named } = window.vendor;
        const plot = new uPlot({ width: 400, height: 200, series: [{}, { stroke: "red" }] },
                               [[1, 2, 3, 4], [3, 1, 4, 1]], document.getElementById("plot"));
        // uPlot draws in a microtask after construction: let a frame pass.
        await new Promise((resolve) => requestAnimationFrame(resolve));
        const canvas = document.querySelector("#plot .uplot canvas");
        // Some pixel of the canvas is not blank: the line was drawn.
        const ctx = canvas.getContext("2d");
        const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
        let inked = 0;
        for (let i = 3; i < px.length; i += 4) if (px[i] !== 0) inked++;
        // uplot.css makes its boxes border-box (a browser's default is content-box).
        const box = getComputedStyle(document.querySelector("#plot .uplot")).boxSizing;
        const out = { same: named === uPlot, width: canvas.width, inked: inked > 100, box };
        plot.destroy();
        return out;
    }""")
    assert drawn["same"] is True
    assert drawn["width"] > 0
    assert drawn["inked"] is True
    assert drawn["box"] == "border-box"  # uplot.css reached the page


def test_only_the_vendor_files_were_requested(
    page: Page, server: tuple[str, list[str]]
) -> None:
    _, requested = server
    # favicon: Chromium asks on its own; everything else is the page and its three assets.
    with contextlib.suppress(ValueError):
        requested.remove("/favicon.ico")
    assert sorted(set(requested)) == ["/", "/vendor/editor.js", "/vendor/plot.js", "/vendor/uplot.css"]
