// The job graph: a column per depth of `needs`, each job a box (its matrix cells as small
// buttons inside it), edges drawn between the boxes. Statuses change in place as events come.
import { h } from "./dom.js";
import { groupStatus, jobGroups, matrixLabel } from "./runstate.js";

const SVG = "http://www.w3.org/2000/svg";

export class Graph {
  constructor(parent, { onSelect }) {
    this.onSelect = onSelect;
    this.root = h("div", { class: "graph", role: "group", "aria-label": "Job graph" });
    this.svg = document.createElementNS(SVG, "svg");
    this.svg.setAttribute("class", "edges");
    this.svg.setAttribute("aria-hidden", "true");
    this.columns = h("div", { class: "graph-cols" });
    this.root.append(this.svg, this.columns);
    parent.append(this.root);
    this.cells = new Map(); // key -> button
    this.boxes = new Map(); // job id -> {box, status, cells}
    this.selected = null;
    this.resize = new ResizeObserver(() => this.edges());
    this.resize.observe(this.root);
  }

  build(state) {
    const groups = jobGroups(state);
    const depth = new Map();
    const depthOf = (id, seen = new Set()) => {
      if (depth.has(id)) return depth.get(id);
      if (seen.has(id)) return 0;
      seen.add(id);
      const group = groups.get(id);
      const d = group && group.needs.length
        ? 1 + Math.max(...group.needs.map((n) => (groups.has(n) ? depthOf(n, seen) : -1))) : 0;
      depth.set(id, d);
      return d;
    };
    const columns = [];
    for (const id of groups.keys()) {
      const d = depthOf(id);
      (columns[d] = columns[d] || []).push(groups.get(id));
    }
    this.cells.clear();
    this.boxes.clear();
    const cols = columns.map((groupsAt) => h("div", { class: "graph-col" },
      groupsAt.map((group) => this.box(group))));
    this.columns.replaceChildren(...cols);
    this.groups = groups;
    if (this.selected) this.select(this.selected, { quiet: true });
    requestAnimationFrame(() => this.edges());
  }

  box(group) {
    const status = groupStatus(group.cells);
    const matrix = group.cells.length > 1 || group.cells[0].matrix;
    const statusEl = h("span", { class: `status s-${status}` }, status);
    const head = matrix
      ? h("div", { class: "job-head" }, h("span", { class: "job-name" }, group.name), statusEl,
        h("span", { class: "muted small" }, ` ${group.cells.length} cells`))
      : h("div", { class: "job-head" }, this.cellButton(group.cells[0], group.name, true),
        statusEl);
    const box = h("section", { class: `jobbox s-${status}`, dataset: { job: group.id },
      "aria-label": `Job ${group.name}` }, head,
    group.needs.length ? h("div", { class: "needs small muted" },
      `needs ${group.needs.join(", ")}`) : null,
    matrix ? h("div", { class: "cells", role: "list", "aria-label": `Cells of ${group.name}` },
      group.cells.map((cell) => h("span", { role: "listitem" }, this.cellButton(cell)))) : null);
    this.boxes.set(group.id, { box, statusEl, cells: group.cells });
    return box;
  }

  cellButton(cell, text, wide = false) {
    const label = cell.matrix ? matrixLabel(cell.matrix) : cell.name;
    const button = h("button", { type: "button",
      class: `${wide ? "job-button" : "cell"} s-${cell.status}`,
      title: `${cell.key}${label !== cell.name ? ` (${label})` : ""}: ${cell.status}`,
      "aria-label": `${cell.key}${label !== cell.name ? ` ${label}` : ""}: ${cell.status}`,
      dataset: { key: cell.key },
      onclick: () => this.select(cell.key) },
    text || cell.key.slice(cell.id.length + 1) || cell.key);
    this.cells.set(cell.key, button);
    return button;
  }

  update(state, keys) {
    const touched = new Set();
    for (const key of keys) {
      const job = state.jobs.get(key);
      const button = this.cells.get(key);
      if (!job || !button) continue;
      button.className = button.className.replace(/\bs-\S+/, `s-${job.status}`);
      const label = job.matrix ? matrixLabel(job.matrix) : job.name;
      button.setAttribute("aria-label",
        `${job.key}${label !== job.name ? ` ${label}` : ""}: ${job.status}`);
      button.title = button.getAttribute("aria-label");
      touched.add(job.id);
    }
    for (const id of touched) {
      const entry = this.boxes.get(id);
      if (!entry) continue;
      const status = groupStatus(entry.cells);
      entry.box.className = `jobbox s-${status}`;
      entry.statusEl.className = `status s-${status}`;
      entry.statusEl.textContent = status;
    }
  }

  select(key, { quiet = false } = {}) {
    if (this.selected && this.cells.get(this.selected)) {
      this.cells.get(this.selected).removeAttribute("aria-pressed");
    }
    this.selected = key;
    const button = this.cells.get(key);
    if (button) button.setAttribute("aria-pressed", "true");
    if (!quiet) this.onSelect(key);
  }

  edges() {
    if (!this.groups) return;
    const base = this.root.getBoundingClientRect();
    this.svg.setAttribute("width", String(this.root.scrollWidth));
    this.svg.setAttribute("height", String(this.root.scrollHeight));
    const paths = [];
    for (const [id, group] of this.groups) {
      const to = this.boxes.get(id);
      if (!to) continue;
      const b = to.box.getBoundingClientRect();
      for (const need of group.needs) {
        const from = this.boxes.get(need);
        if (!from) continue;
        const a = from.box.getBoundingClientRect();
        const stacked = b.left < a.right; // one column under the other (a narrow screen)
        const x1 = (stacked ? a.left + a.width / 2 : a.right) - base.left + this.root.scrollLeft;
        const y1 = (stacked ? a.bottom : a.top + a.height / 2) - base.top;
        const x2 = (stacked ? b.left + b.width / 2 : b.left) - base.left + this.root.scrollLeft;
        const y2 = (stacked ? b.top : b.top + b.height / 2) - base.top;
        const path = document.createElementNS(SVG, "path");
        const d = stacked
          ? `M${x1},${y1} C${x1},${(y1 + y2) / 2} ${x2},${(y1 + y2) / 2} ${x2},${y2}`
          : `M${x1},${y1} C${(x1 + x2) / 2},${y1} ${(x1 + x2) / 2},${y2} ${x2},${y2}`;
        path.setAttribute("d", d);
        paths.push(path);
      }
    }
    this.svg.replaceChildren(...paths);
  }

  destroy() {
    this.resize.disconnect();
  }
}
