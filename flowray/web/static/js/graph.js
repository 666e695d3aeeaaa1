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
    this.shown = new Map(); // key -> the status its button shows
    this.boxes = new Map(); // job id -> {box, statusEl, countEl, list, cells}
    this.shape = "";
    this.selected = null;
    // One listener for every cell's button (a run may have thousands).
    this.root.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-key]");
      if (button && this.cells.get(button.dataset.key) === button) this.select(button.dataset.key);
    });
    this.resize = new ResizeObserver(() => this.edges());
    this.resize.observe(this.root);
  }

  // The graph of the jobs the state has now. New cells of the jobs already drawn are added to
  // their boxes; the whole graph is built anew only when the jobs or their needs change (a
  // run's events bring a matrix job's cells in a few batches: redrawing 1,000 buttons for each
  // cost more than all the rest of the page).
  build(state) {
    const groups = jobGroups(state);
    const shape = JSON.stringify([...groups.values()].map((g) => [g.id, g.name, g.needs,
      Boolean(g.cells.length > 1 || g.cells[0].matrix)]));
    if (shape === this.shape) {
      this.grow(state, groups);
      return;
    }
    this.shape = shape;
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
    this.shown.clear();
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
    const countEl = matrix ? h("span", { class: "muted small" }, ` ${group.cells.length} cells`)
      : null;
    const head = matrix
      ? h("div", { class: "job-head" }, h("span", { class: "job-name" }, group.name), statusEl,
        countEl)
      : h("div", { class: "job-head" }, this.cellButton(group.cells[0], group.name, true),
        statusEl);
    const list = matrix ? h("div", { class: "cells", role: "list",
      "aria-label": `Cells of ${group.name}` }) : null;
    if (list) this.addCells(list, group.cells);
    const box = h("section", { class: `jobbox s-${status}`, dataset: { job: group.id },
      "aria-label": `Job ${group.name}` }, head,
    group.needs.length ? h("div", { class: "needs small muted" },
      `needs ${group.needs.join(", ")}`) : null, list);
    this.boxes.set(group.id, { box, statusEl, countEl, list, cells: group.cells });
    return box;
  }

  addCells(list, cells) {
    const fragment = document.createDocumentFragment();
    for (const cell of cells) {
      const item = document.createElement("span");
      item.setAttribute("role", "listitem");
      item.append(this.cellButton(cell));
      fragment.append(item);
    }
    list.append(fragment);
  }

  // The same jobs as drawn: new cells added to their boxes, the others' statuses brought up to
  // date (build is called instead of update when a batch brings new jobs).
  grow(state, groups) {
    const changed = [];
    for (const [id, group] of groups) {
      const entry = this.boxes.get(id);
      if (!entry) continue;
      const known = entry.cells.length;
      for (let i = 0; i < known; i++) {
        const cell = group.cells[i];
        if (this.shown.get(cell.key) !== cell.status) changed.push(cell.key);
      }
      if (group.cells.length > known) {
        if (entry.list) this.addCells(entry.list, group.cells.slice(known));
        if (entry.countEl) entry.countEl.textContent = ` ${group.cells.length} cells`;
      }
      entry.cells = group.cells;
      this.boxStatus(entry);
    }
    this.groups = groups;
    if (changed.length) this.update(state, changed);
    if (this.selected) this.select(this.selected, { quiet: true });
    requestAnimationFrame(() => this.edges());
  }

  boxStatus(entry) {
    const status = groupStatus(entry.cells);
    if (entry.statusEl.textContent === status) return;
    entry.box.className = `jobbox s-${status}`;
    entry.statusEl.className = `status s-${status}`;
    entry.statusEl.textContent = status;
  }

  cellButton(cell, text, wide = false) {
    const label = cell.matrix ? matrixLabel(cell.matrix) : cell.name;
    const aria = `${cell.key}${label !== cell.name ? ` ${label}` : ""}: ${cell.status}`;
    const button = document.createElement("button");
    button.type = "button";
    button.className = `${wide ? "job-button" : "cell"} s-${cell.status}`;
    button.title = `${cell.key}${label !== cell.name ? ` (${label})` : ""}: ${cell.status}`;
    button.setAttribute("aria-label", aria);
    button.dataset.key = cell.key;
    button.textContent = text || cell.key.slice(cell.id.length + 1) || cell.key;
    this.cells.set(cell.key, button);
    this.shown.set(cell.key, cell.status);
    return button;
  }

  update(state, keys) {
    const touched = new Set();
    for (const key of keys) {
      const job = state.jobs.get(key);
      const button = this.cells.get(key);
      if (!job || !button) continue;
      this.shown.set(key, job.status);
      button.className = button.className.replace(/\bs-\S+/, `s-${job.status}`);
      const label = job.matrix ? matrixLabel(job.matrix) : job.name;
      button.setAttribute("aria-label",
        `${job.key}${label !== job.name ? ` ${label}` : ""}: ${job.status}`);
      button.title = button.getAttribute("aria-label");
      touched.add(job.id);
    }
    for (const id of touched) {
      const entry = this.boxes.get(id);
      if (entry) this.boxStatus(entry);
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
