// A step's log: only the lines in sight are in the page (a 100,000-line log scrolls as a short
// one), with ANSI colours, a search that moves between matches, and following the end while
// the step prints.
import { ansiPieces, plain } from "./ansi.js";
import { h } from "./dom.js";

const ROW = 18; // px: one line (the CSS's line-height of .log-rows)
const EXTRA = 30; // lines drawn above and below the visible ones

export class LogView {
  constructor(parent) {
    this.lines = [];
    this.query = "";
    this.matches = [];
    this.current = -1;
    this.follow = true;
    this.search = h("input", { type: "search", id: "log-search", placeholder: "Search the log",
      "aria-label": "Search the log", spellcheck: "false" });
    this.count = h("span", { class: "muted small", role: "status", "aria-live": "polite" });
    const prev = h("button", { type: "button", "aria-label": "Previous match" }, "↑");
    const next = h("button", { type: "button", "aria-label": "Next match" }, "↓");
    this.followBox = h("input", { type: "checkbox", id: "log-follow", checked: true });
    this.title = h("h3", { class: "log-title" });
    this.download = h("a", { class: "small", hidden: true }, "Whole log");
    this.viewport = h("div", { class: "log", tabindex: "0", role: "region",
      "aria-label": "Log" });
    this.spacer = h("div", { class: "log-spacer" });
    this.rows = h("div", { class: "log-rows" });
    // Said in place of the lines while there are none (an empty log is not a broken one).
    this.empty = h("p", { class: "log-empty", hidden: true });
    this.emptyText = "";
    this.viewport.append(this.spacer, this.rows, this.empty);
    this.root = h("section", { class: "logview", "aria-label": "Step log" },
      h("div", { class: "bar log-bar" }, this.title,
        h("div", { class: "log-tools" }, this.search, prev, next, this.count,
          h("label", { for: "log-follow", class: "small" }, this.followBox, " Follow"),
          this.download)),
      this.viewport);
    parent.append(this.root);
    this.search.addEventListener("input", () => this.find(this.search.value));
    this.search.addEventListener("keydown", (e) => {
      if (e.key === "Enter") {
        e.preventDefault();
        this.step(e.shiftKey ? -1 : 1);
      }
    });
    prev.addEventListener("click", () => this.step(-1));
    next.addEventListener("click", () => this.step(1));
    this.followBox.addEventListener("change", () => {
      this.follow = this.followBox.checked;
      if (this.follow) this.toEnd();
    });
    this.viewport.addEventListener("scroll", () => {
      const atEnd = this.viewport.scrollTop + this.viewport.clientHeight >=
        this.viewport.scrollHeight - ROW * 2;
      if (!atEnd && this.follow && this.userScrolled) {
        this.follow = false;
        this.followBox.checked = false;
      }
      this.userScrolled = true;
      this.draw();
    });
    this.resize = new ResizeObserver(() => this.draw());
    this.resize.observe(this.viewport);
  }

  show(lines, title, downloadUrl, { empty = "" } = {}) {
    this.lines = lines;
    this.emptyText = empty;
    this.title.textContent = title;
    if (downloadUrl) {
      this.download.href = downloadUrl;
      this.download.hidden = false;
    } else this.download.hidden = true;
    this.follow = true;
    this.followBox.checked = true;
    this.find(this.query);
    this.grown();
  }

  // What to say while the log has no line: "Nothing printed yet.", "Loading the log…".
  setEmpty(text) {
    this.emptyText = text;
    this.showEmpty();
  }

  showEmpty() {
    this.empty.textContent = this.emptyText;
    this.empty.hidden = this.lines.length > 0 || !this.emptyText;
  }

  grown() {
    this.showEmpty();
    this.spacer.style.height = `${Math.max(this.lines.length, 1) * ROW}px`;
    if (this.query) this.extendMatches();
    if (this.follow) this.toEnd();
    else this.draw();
  }

  toEnd() {
    this.userScrolled = false;
    this.viewport.scrollTop = this.viewport.scrollHeight;
    this.draw();
  }

  draw() {
    const top = this.viewport.scrollTop;
    const height = this.viewport.clientHeight || 400;
    const first = Math.max(0, Math.floor(top / ROW) - EXTRA);
    const last = Math.min(this.lines.length, Math.ceil((top + height) / ROW) + EXTRA);
    if (first === this.drawnFirst && last === this.drawnLast && !this.dirty) return;
    this.drawnFirst = first;
    this.drawnLast = last;
    this.dirty = false;
    const fragment = document.createDocumentFragment();
    const mark = this.current >= 0 ? this.matches[this.current] : -1;
    const q = this.query.toLowerCase();
    for (let i = first; i < last; i++) {
      const [stream, line] = this.lines[i];
      const row = document.createElement("div");
      row.className = `log-line${stream === "stderr" ? " err" : ""}${i === mark ? " current" : ""}`;
      row.style.top = `${i * ROW}px`;
      const number = document.createElement("span");
      number.className = "ln";
      number.textContent = String(i + 1);
      row.append(number);
      if (q && plain(line).toLowerCase().includes(q)) row.append(highlighted(plain(line), q));
      else {
        for (const [text, style] of ansiPieces(line)) {
          if (!style) {
            row.append(text);
            continue;
          }
          const span = document.createElement("span");
          span.className = style.cls.join(" ");
          Object.assign(span.style, style.css);
          span.textContent = text;
          row.append(span);
        }
      }
      fragment.append(row);
    }
    this.rows.replaceChildren(fragment);
  }

  find(query) {
    this.query = query;
    this.matches = [];
    this.current = -1;
    this.searched = 0;
    this.extendMatches();
    if (this.matches.length) this.step(1);
    else {
      this.dirty = true;
      this.draw();
    }
  }

  extendMatches() {
    const q = this.query.toLowerCase();
    if (!q) {
      this.count.textContent = "";
      return;
    }
    for (let i = this.searched || 0; i < this.lines.length; i++) {
      if (plain(this.lines[i][1]).toLowerCase().includes(q)) this.matches.push(i);
    }
    this.searched = this.lines.length;
    this.count.textContent = this.matches.length
      ? `${this.current + 1} of ${this.matches.length}` : "no match";
  }

  step(direction) {
    if (!this.matches.length) return;
    this.current = (this.current + direction + this.matches.length) % this.matches.length;
    this.count.textContent = `${this.current + 1} of ${this.matches.length}`;
    this.follow = false;
    this.followBox.checked = false;
    const line = this.matches[this.current];
    this.userScrolled = false;
    this.viewport.scrollTop = Math.max(0, line * ROW - this.viewport.clientHeight / 2);
    this.dirty = true;
    this.draw();
  }

  destroy() {
    this.resize.disconnect();
    this.root.remove();
  }
}

function highlighted(text, q) {
  // Matched on the text itself (case-insensitive), so that a letter whose lower case is
  // longer or shorter never shifts the mark.
  const span = document.createElement("span");
  const pattern = new RegExp(q.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"), "giu");
  let at = 0;
  for (const match of text.matchAll(pattern)) {
    if (!match[0]) break;
    span.append(text.slice(at, match.index));
    const mark = document.createElement("mark");
    mark.textContent = match[0];
    span.append(mark);
    at = match.index + match[0].length;
  }
  span.append(text.slice(at));
  return span;
}
