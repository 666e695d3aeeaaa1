// A sweep: a matrix job's cells side by side (matrix values, status, duration, outputs) as a
// sortable table, a plot of a chosen numeric output against a chosen matrix axis, and a CSV.
import { api, enc } from "./api.js";
import { badge, clear, download, h, show } from "./dom.js";
import { follow, isTerminal, RunState } from "./runstate.js";

export async function sweepView(root, [runId], query) {
  const summary = await api(`/runs/${enc(runId)}`);
  const state = new RunState(runId);
  root.append(h("div", { class: "bar" },
    h("h1", null, "Sweep of ", h("a", { href: `/runs/${enc(runId)}` },
      `${summary.flow}${summary.number ? ` #${summary.number}` : ""}`))));
  const controls = h("div", { class: "filters" });
  const plotHolder = h("figure", { class: "plot" });
  const tableHolder = h("div", { class: "table-wrap" });
  root.append(controls, plotHolder, tableHolder);

  let jobId = query.get("job") || "";
  let sortKey = "key";
  let sortDir = 1;
  let plotOutput = "";
  let plotAxis = "";
  let uPlotModule = null;
  let chart = null;

  function cells() {
    const matrixJobs = [...new Set([...state.jobs.values()].filter((j) => j.matrix)
      .map((j) => j.id))];
    if (!jobId || !matrixJobs.includes(jobId)) jobId = matrixJobs[0] || "";
    return { matrixJobs, list: [...state.jobs.values()].filter((j) => j.id === jobId) };
  }

  function columns(list) {
    const axes = [];
    const outputs = [];
    for (const cell of list) {
      for (const k of Object.keys(cell.matrix || {})) if (!axes.includes(k)) axes.push(k);
      for (const k of Object.keys(cell.outputs || {})) if (!outputs.includes(k)) outputs.push(k);
    }
    return { axes, outputs };
  }

  function value(cell, key) {
    if (key === "key") return cell.key;
    if (key === "status") return cell.status;
    if (key === "duration") return cell.started ? (cell.ended || Date.now() / 1000) - cell.started
      : null;
    if (key.startsWith("m:")) return (cell.matrix || {})[key.slice(2)];
    if (key.startsWith("o:")) return (cell.outputs || {})[key.slice(2)];
    return null;
  }

  function numeric(v) {
    if (typeof v === "number") return v;
    if (typeof v === "string" && v.trim() !== "" && !Number.isNaN(Number(v))) return Number(v);
    return null;
  }

  function compare(a, b) {
    const na = numeric(a);
    const nb = numeric(b);
    if (na !== null && nb !== null) return na - nb;
    if (a === null || a === undefined) return 1;
    if (b === null || b === undefined) return -1;
    return show(a).localeCompare(show(b), undefined, { numeric: true });
  }

  // What the table shows now: the signature of everything its shape depends on, its rows by
  // cell key, and the order they are in. A change of a cell's status, duration or outputs is
  // written into its row; the table is built anew only when its shape changes (columns, cells,
  // sorting, the job or the plot's choices), as a 1,000-row table costs the page ~100 ms.
  let shown = null;

  function render(keys) {
    const { matrixJobs, list } = cells();
    const { axes, outputs } = columns(list);
    const numericOutputs = outputs.filter((o) => list.some((c) => numeric(c.outputs[o]) !== null));
    if (!numericOutputs.includes(plotOutput)) plotOutput = numericOutputs[0] || "";
    if (!axes.includes(plotAxis)) plotAxis = axes[0] || "";
    const signature = JSON.stringify([jobId, matrixJobs, list.length, axes, outputs,
      numericOutputs, plotOutput, plotAxis, sortKey, sortDir,
      !matrixJobs.length && state.lastSeq > 0]); // the last: which "no matrix job" message
    if (!shown || shown.signature !== signature || !keys) {
      build({ matrixJobs, list, axes, outputs, numericOutputs, signature });
      return;
    }
    let changed = false;
    for (const cell of list) {
      // A running cell's duration grows: it is written again with every change, as before.
      if (keys.has(cell.key) || (cell.started && !cell.ended)) {
        fill(shown.rows.get(cell.key), cell, outputs);
        changed = changed || keys.has(cell.key);
      }
    }
    if (!changed) return;
    if (!(sortKey === "key" || sortKey.startsWith("m:"))) { // else the order cannot change
      const sorted = order(list);
      if (sorted.some((cell, i) => cell !== shown.order[i])) {
        shown.body.append(...sorted.map((cell) => shown.rows.get(cell.key).tr));
        shown.order = sorted;
      }
    }
    plot(list);
  }

  function draw() {
    render(null);
  }

  function order(list) {
    const empty = (v) => v === null || v === undefined || v === "";
    return [...list].sort((a, b) => {
      const va = value(a, sortKey);
      const vb = value(b, sortKey);
      if (empty(va) || empty(vb)) return empty(va) - empty(vb); // cells without one: last
      return sortDir * compare(va, vb);
    });
  }

  // A row's cells that change as the cell runs: its status, its duration and its outputs.
  function fill(row, cell, outputs) {
    if (row.status !== cell.status) {
      row.status = cell.status;
      const status = cell.status || "queued";
      row.badge.className = `status s-${status}`;
      row.badge.textContent = status;
    }
    row.took.textContent = cell.started ? `${value(cell, "duration").toFixed(1)} s` : "";
    outputs.forEach((o, i) => {
      const text = show(cell.outputs[o]);
      if (row.outputs[i].textContent !== text) row.outputs[i].textContent = text;
    });
  }

  function row(cell, axes, outputs) {
    const tr = document.createElement("tr");
    const head = document.createElement("th");
    head.scope = "row";
    const link = document.createElement("a");
    link.href = `/runs/${enc(runId)}`;
    link.textContent = cell.key;
    head.append(link);
    tr.append(head);
    for (const a of axes) {
      const td = document.createElement("td");
      td.textContent = show((cell.matrix || {})[a]);
      tr.append(td);
    }
    const statusTd = document.createElement("td");
    const badgeEl = badge(cell.status);
    statusTd.append(badgeEl);
    const took = document.createElement("td");
    took.className = "num";
    tr.append(statusTd, took);
    const outputTds = outputs.map(() => {
      const td = document.createElement("td");
      td.className = "num mono";
      tr.append(td);
      return td;
    });
    const made = { tr, badge: badgeEl, status: cell.status, took, outputs: outputTds };
    fill(made, cell, outputs);
    return made;
  }

  function build({ matrixJobs, list, axes, outputs, numericOutputs, signature }) {
    shown = null;
    clear(controls);
    if (!matrixJobs.length) {
      clear(tableHolder).append(h("p", { class: "muted" }, state.lastSeq
        ? "This run has no matrix job." : "Waiting for the run's jobs…"));
      shown = { signature, rows: new Map(), order: [], body: null };
      return;
    }
    const pick = (id, label, options, current, set) => {
      const el = h("select", { id }, options.map((o) => h("option", { value: o,
        selected: o === current }, o)));
      el.addEventListener("change", () => {
        set(el.value);
        draw();
      });
      return h("div", { class: "field inline" }, h("label", { for: id }, label), el);
    };
    if (matrixJobs.length > 1) {
      controls.append(pick("sweep-job", "Job", matrixJobs, jobId, (v) => { jobId = v; }));
    }
    if (numericOutputs.length) {
      controls.append(pick("sweep-output", "Plot output", numericOutputs, plotOutput,
        (v) => { plotOutput = v; }));
    }
    if (axes.length) {
      controls.append(pick("sweep-axis", "against axis", axes, plotAxis,
        (v) => { plotAxis = v; }));
    }
    // The CSV is made when asked for, from the cells as they are then.
    controls.append(h("button", { type: "button", onclick: () => {
      const now = cells().list;
      const cols = columns(now);
      download(`${summary.flow}-${runId.slice(0, 8)}-${jobId}.csv`,
        csv(now, cols.axes, cols.outputs));
    } }, "Download CSV"));

    const cols = [["key", "Cell"], ...axes.map((a) => [`m:${a}`, a]), ["status", "Status"],
      ["duration", "Took"], ...outputs.map((o) => [`o:${o}`, o])];
    const sorted = order(list);
    const head = h("tr", null, cols.map(([key, title]) => h("th", { scope: "col",
      "aria-sort": key === sortKey ? (sortDir > 0 ? "ascending" : "descending") : "none",
      class: key.startsWith("o:") ? "output-col" : null },
    h("button", { type: "button", class: "sort", onclick: () => {
      sortDir = key === sortKey ? -sortDir : 1;
      sortKey = key;
      draw();
    } }, title, key === sortKey ? (sortDir > 0 ? " ▲" : " ▼") : ""))));
    const rows = new Map();
    const body = document.createElement("tbody");
    const fragment = document.createDocumentFragment();
    for (const cell of sorted) {
      const made = row(cell, axes, outputs);
      rows.set(cell.key, made);
      fragment.append(made.tr);
    }
    body.append(fragment);
    clear(tableHolder).append(h("table", { class: "list sweep" },
      h("caption", null, `${list.length} cells of ${jobId}`), h("thead", null, head), body));
    shown = { signature, rows, order: sorted, body };
    plot(list);
  }

  async function plot(list) {
    if (!plotOutput || !plotAxis) {
      clear(plotHolder).append(h("figcaption", { class: "muted" },
        "No numeric output to plot yet."));
      if (chart) chart.destroy();
      chart = null;
      return;
    }
    if (!uPlotModule) {
      if (!document.querySelector("link[data-uplot]")) {
        document.head.append(h("link", { rel: "stylesheet", href: "/static/vendor/uplot.css",
          "data-uplot": "1" }));
      }
      uPlotModule = (await import("../vendor/plot.js")).default;
    }
    const points = list.map((c) => [(c.matrix || {})[plotAxis], numeric(c.outputs[plotOutput])])
      .filter(([, y]) => y !== null);
    const allNumeric = points.every(([x]) => numeric(x) !== null);
    const categories = allNumeric ? [] : [...new Set(points.map(([x]) => show(x)))]
      .sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
    const xy = points.map(([x, y]) => [allNumeric ? numeric(x) : categories.indexOf(show(x)), y])
      .sort((a, b) => a[0] - b[0]);
    const width = Math.max(280, Math.min(plotHolder.clientWidth || 800, 900));
    const options = {
      width, height: 280,
      title: `${plotOutput} by ${plotAxis}`,
      scales: { x: { time: false } },
      legend: { show: false },
      series: [{ label: plotAxis }, { label: plotOutput, stroke: "#2563eb", width: 0,
        points: { show: true, size: 8, fill: "#2563eb" } }],
      axes: [{ label: plotAxis, values: allNumeric ? undefined
        : (_u, ticks) => ticks.map((t) => (Number.isInteger(t) ? categories[t] ?? "" : "")) },
      { label: plotOutput }],
    };
    const data = [xy.map((p) => p[0]), xy.map((p) => p[1])];
    if (chart) chart.destroy();
    clear(plotHolder);
    const canvasHolder = h("div", { role: "img",
      "aria-label": `${plotOutput} against ${plotAxis} for ${xy.length} cells` });
    plotHolder.append(canvasHolder, h("figcaption", { class: "muted small" },
      `${plotOutput} of each cell against its ${plotAxis}.`));
    chart = new uPlotModule(options, data, canvasHolder);
  }

  // A run that had ended when the page opened sends its whole history at once: the table is
  // drawn when all of it is in (or after a while without the end, should it not come), not
  // once for the cells queued and again for them finished, each time 1,000 rows.
  let holding = isTerminal(summary.status);
  let held = false; // a change came while holding
  const release = holding ? setTimeout(() => {
    holding = false;
    if (held) {
      held = false;
      render(null);
    }
  }, 1500) : 0;
  // The sweep shows no log: the stream leaves the lines out.
  const follower = follow(state, (batch) => {
    if (holding && !state.finished) {
      held = true;
      return;
    }
    if (held) {
      held = false;
      render(null);
    } else if (batch.fresh || batch.jobs.size || batch.run) render(batch.jobs);
  }, { logs: false });
  draw();
  return () => {
    clearTimeout(release);
    follower.stop();
    if (chart) chart.destroy();
  };
}

function csv(list, axes, outputs) {
  const quote = (v) => {
    let text = show(v);
    // A cell a spreadsheet would run as a formula is kept as text (outputs come from steps).
    if (/^[=+\-@\t\r]/.test(text) && Number.isNaN(Number(text))) text = `'${text}`;
    return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
  };
  const rows = [["cell", ...axes, "status", "duration_s", ...outputs]];
  for (const cell of list) {
    rows.push([cell.key, ...axes.map((a) => (cell.matrix || {})[a]), cell.status,
      cell.started && cell.ended ? (cell.ended - cell.started).toFixed(3) : "",
      ...outputs.map((o) => cell.outputs[o])]);
  }
  return rows.map((r) => r.map(quote).join(",")).join("\n") + "\n";
}
