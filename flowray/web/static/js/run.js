// A run: its job graph, the chosen job's steps, outputs, test results, artifacts and the
// chosen step's log, all live from the run's event stream; cancel and rerun.
import { api, can, enc, session, withCsrf } from "./api.js";
import { go } from "./app.js";
import { badge, clear, duration, h, keepFocus, put, setTitle, show, toast, when } from "./dom.js";
import { Graph } from "./graph.js";
import { LogView } from "./logview.js";
import { follow, isTerminal, matrixLabel, RunState } from "./runstate.js";

const GOING = new Set(["running", "retrying"]);

export async function runView(root, [runId], query) {
  let summary = await api(`/runs/${enc(runId)}`);
  const state = new RunState(runId);
  // A run that has ended: its events without the log lines, and each shown step's log read
  // from its file (a 100,000-line log is one request, not 100,000 events).
  const streamed = !isTerminal(summary.status);
  const header = h("div", { class: "run-head" });
  const notices = h("div", { class: "notices" });
  const graphHolder = h("div", { class: "graph-wrap", hidden: true });
  const panel = h("section", { class: "job-panel", "aria-label": "Job", "aria-live": "off" });
  const logHolder = h("div", { class: "log-holder" });
  root.append(header, notices,
    h("h2", { class: "sr-only" }, "Jobs"), graphHolder,
    h("div", { class: "run-detail" }, panel, logHolder));

  // A job or cell named in the address (?job=train.3, as the sweep's links give) is shown
  // first; choosing another one puts it in the address, so the view can be shared.
  let selectedJob = query && query.get("job") ? query.get("job") : null;
  let selectedStep = null;
  let stepChosen = false;
  // The job the page chose itself, kept while it runs or after it failed, so that the panel
  // and its log do not jump from cell to cell with every event.
  let autoKey = null;
  let shownKey = null;
  let cancelling = false;
  // Elements whose text counts the time while the run goes on: [element, () => text], the
  // header's and the panel's.
  let headerClock = null;
  let panelClocks = [];
  const logs = new LogView(logHolder);
  logs.root.hidden = true;
  const graph = new Graph(graphHolder, { onSelect: (key) => {
    selectedJob = key;
    selectedStep = null;
    stepChosen = false;
    history.replaceState(null, "", `/runs/${enc(runId)}?job=${enc(key)}`);
    drawPanel();
  } });

  function status() {
    if (isTerminal(summary.status)) return summary.status;
    if (state.finished) return state.run.status;
    if (state.lastSeq) return state.run.status === "queued" ? "running" : state.run.status;
    return summary.status;
  }

  function runTook() {
    const started = state.run.started || summary.started;
    const ended = state.run.ended || summary.ended;
    if (!started) return isTerminal(status()) ? "did not start" : "not started yet";
    return duration(started, ended);
  }

  function drawHeader() {
    const s = status();
    const inputs = Object.entries(summary.inputs || {});
    const hasMatrix = [...state.jobs.values()].some((j) => j.matrix);
    const failed = [...state.jobs.values()].some((j) => j.status === "failure" ||
      j.status === "cancelled");
    const number = summary.number ? `#${summary.number}` : "";
    setTitle(`${summary.flow} ${number} ${s}`);
    const took = h("dd", null, runTook());
    headerClock = isTerminal(s) ? null : [took, runTook];
    const heading = h("h1", { tabindex: "-1" },
      h("a", { href: `/flows/${enc(summary.flow)}` }, summary.flow), " ", number, " ", badge(s));
    // Redrawn as events come: a keyboard user's focus stays on its button, or goes to the
    // heading when the button has gone (Cancel run, once the run has ended).
    keepFocus(header, () => put(clear(header),
      h("div", { class: "bar" }, heading,
        h("div", { class: "actions" },
          hasMatrix ? h("a", { class: "button", href: `/runs/${enc(runId)}/sweep`,
            "data-focus": "sweep" }, "Sweep") : null,
          can("runner") && !isTerminal(s) ? h("button", { type: "button", class: "danger",
            "data-focus": "cancel", "aria-disabled": cancelling ? "true" : null,
            onclick: cancel }, cancelling ? "Cancelling…" : "Cancel run") : null,
          can("runner") && isTerminal(s) && failed ? h("button", { type: "button",
            "data-focus": "rerun-failed", onclick: () => rerun({ failed: true }) },
          "Rerun failed jobs") : null)),
      h("dl", { class: "facts" },
        fact("Run", h("span", { class: "mono" }, runId)),
        fact("Trigger", summary.trigger),
        fact("Flow version", `v${summary.version}`),
        summary.rerun_of ? fact("Rerun of", h("a", { href: `/runs/${enc(summary.rerun_of)}`,
          class: "mono", "data-focus": "rerun-of" }, summary.rerun_of)) : null,
        fact("Created", when(summary.created)),
        [h("dt", null, "Took"), took],
        summary.reason ? fact("Why", summary.reason) : null,
        inputs.length ? fact("Inputs", h("span", null, inputs.map(([k, v]) =>
          h("code", { class: "chip" }, `${k}=${show(v)}`)))) : null)), () => heading);
  }

  function drawNotices() {
    clear(notices);
    for (const message of state.notices.slice(-5)) {
      notices.append(h("p", { class: "note" }, message));
    }
  }

  function pickJob() {
    if (selectedJob && state.jobs.has(selectedJob)) return state.jobs.get(selectedJob);
    const jobs = [...state.jobs.values()];
    const kept = streamed && autoKey ? state.jobs.get(autoKey) : null;
    if (kept && (GOING.has(kept.status) || kept.status === "failure")) return kept;
    const next = jobs.find((j) => GOING.has(j.status)) ||
      jobs.find((j) => j.status === "failure") || kept || jobs[0] || null;
    autoKey = next ? next.key : null;
    return next;
  }

  function drawPanel() {
    const job = pickJob();
    shownKey = job ? job.key : null;
    graphHolder.hidden = state.jobs.size === 0;
    panelClocks = [];
    const title = h("h2", { tabindex: "-1" });
    keepFocus(panel, () => {
      clear(panel);
      if (!job) {
        const s = status();
        panel.append(h("p", { class: "muted" }, isTerminal(s)
          ? (state.finished ? "This run ended before any of its jobs started."
            : "Reading the run's jobs…")
          : s === "queued" ? "Waiting for the run to start…" : "Waiting for its first job…"));
        return;
      }
      fillPanel(job, title);
    }, () => title);
    if (job) drawLog(job);
    else logs.root.hidden = true;
  }

  function fillPanel(job, title) {
    if (graph.selected !== job.key) graph.select(job.key, { quiet: true });
    if (!stepChosen) {
      const running = job.steps.find((s) => s.status === "running");
      const failed = [...job.steps].reverse().find((s) => s.status === "failure");
      selectedStep = (running || failed || job.steps[job.steps.length - 1] || {}).index ?? null;
    }
    const matrix = matrixLabel(job.matrix);
    const reruns = can("runner") && isTerminal(status());
    const took = h("dd", null, duration(job.started, job.ended));
    if (job.started && !job.ended) {
      panelClocks.push([took, () => duration(job.started, job.ended)]);
    }
    put(title, job.key, " ", badge(job.status));
    put(panel,
      h("div", { class: "bar" }, title,
        reruns ? h("button", { type: "button", "data-focus": "rerun-job",
          onclick: () => rerun({ jobs: [job.key] }) },
        job.matrix ? "Rerun this cell" : "Rerun this job") : null),
      h("dl", { class: "facts" },
        !job.matrix && job.name && job.name !== job.key ? fact("Name", job.name) : null,
        matrix ? fact("Matrix", matrix) : null,
        fact("Node", job.node || (job.status === "queued" ? "not placed yet" : "")),
        fact("GPUs", job.gpus && job.gpus.length ? job.gpus.join(", ") : "none"),
        job.attempt > 1 ? fact("Attempt", String(job.attempt)) : null,
        [h("dt", null, "Took"), took]),
      job.error ? h("p", { class: "error" }, job.error) : null,
      job.warnings.length ? h("ul", { class: "warnings", "aria-label": "Warnings" },
        job.warnings.map((w) => h("li", null, w))) : null);
    if (job.steps.length) {
      panel.append(h("h3", null, "Steps"), h("ol", { class: "steps" }, job.steps.map((step) => {
        const clock = h("span", null, step.started
          ? ` · ${duration(step.started, step.ended)}` : "");
        if (step.started && !step.ended && step.status === "running") {
          panelClocks.push([clock, () => ` · ${duration(step.started, step.ended)}`]);
        }
        return h("li", null, h("button", { type: "button", class: `step s-${step.status}`,
          "data-focus": `step ${step.index}`,
          "aria-pressed": step.index === selectedStep ? "true" : "false",
          onclick: () => {
            selectedStep = step.index;
            stepChosen = true;
            drawPanel();
          } },
        h("span", { class: `dot s-${step.status}`, "aria-hidden": "true" }),
        h("span", { class: "step-name" }, step.name), " ",
        h("span", { class: "muted small" }, `${step.status}` +
          (step.exit_code !== null && step.exit_code !== undefined
            ? ` (exit ${step.exit_code})` : ""), clock),
        step.error ? h("span", { class: "error small block" }, step.error) : null));
      })));
    }
    const outputs = Object.entries(job.outputs || {});
    if (outputs.length) {
      panel.append(h("h3", null, "Outputs"), h("table", { class: "kv" },
        h("tbody", null, outputs.map(([k, v]) => h("tr", null, h("th", { scope: "row" }, k),
          h("td", { class: "mono" }, show(v)))))));
    }
    if (job.reports) panel.append(testResults(job.reports));
    if (job.artifacts.length) {
      panel.append(h("h3", null, "Artifacts"), h("ul", { class: "artifacts" },
        job.artifacts.map((rel) => {
          const parts = rel.split("/");
          const file = parts.slice(2).join("/");
          return h("li", null, h("a", { download: parts[parts.length - 1],
            "data-focus": `artifact ${rel}`,
            href: withCsrf(`/api/v1/runs/${enc(runId)}/artifacts/${enc(parts[1])}/` +
              parts.slice(2).map(enc).join("/")) }, file));
        })));
    }
  }

  function emptyLog(step, lines) {
    if (lines.failed) return `The log could not be read: ${lines.failed}`;
    if (!streamed && lines.fetched !== "done") return "Reading the log…";
    if (step.status === "queued") return "This step has not started.";
    if (GOING.has(step.status)) return "Nothing printed yet.";
    return "This step printed nothing.";
  }

  function drawLog(job) {
    if (selectedStep === null || !job.steps[selectedStep]) {
      logs.root.hidden = true;
      return;
    }
    logs.root.hidden = false;
    const key = `${job.key}#${selectedStep}`;
    let lines = state.logs.get(key);
    if (!lines) {
      lines = [];
      state.logs.set(key, lines);
    }
    const step = job.steps[selectedStep];
    if (!streamed && !lines.fetched) {
      lines.fetched = "reading";
      readLog(job.key, selectedStep, lines, step);
    }
    if (logs.lines !== lines) {
      logs.show(lines, `Log: ${job.key} · ${step.name}`,
        withCsrf(`/api/v1/runs/${enc(runId)}/logs/${enc(job.key)}/${selectedStep}`),
        { empty: emptyLog(step, lines) });
    } else {
      logs.setEmpty(emptyLog(step, lines));
      logs.grown();
    }
  }

  // A finished run's logs: its step's log file, read once (the event stream leaves them out).
  async function readLog(key, index, lines, step) {
    try {
      const answer = await fetch(`/api/v1/runs/${enc(runId)}/logs/${enc(key)}/${index}`,
        { credentials: "same-origin", headers: { "X-Flowray-CSRF": session.csrf } });
      if (answer.ok) {
        const text = await answer.text();
        const read = text.endsWith("\n") ? text.slice(0, -1) : text;
        if (read) for (const line of read.split("\n")) lines.push(["stdout", line]);
      } else if (answer.status !== 404) {
        lines.failed = `${answer.status} ${answer.statusText}`;
      }
    } catch {
      lines.failed = "the service does not answer";
    }
    lines.fetched = "done";
    if (logs.lines === lines) {
      logs.setEmpty(emptyLog(step, lines));
      logs.grown();
    }
  }

  async function cancel() {
    if (cancelling) return;
    cancelling = true;
    drawHeader();
    try {
      await api(`/runs/${enc(runId)}/cancel`, { method: "POST" });
      toast("Cancelling the run.");
    } catch (err) {
      cancelling = false;
      drawHeader();
      toast(`Not cancelled: ${err.message}`, "bad");
    }
  }

  async function rerun(body) {
    try {
      const answer = await api(`/runs/${enc(runId)}/rerun`, { method: "POST", body });
      toast("A new run is queued.");
      go(`/runs/${enc(answer.id)}`);
    } catch (err) {
      toast(`Not rerun: ${err.message}`, "bad");
    }
  }

  drawHeader();
  drawPanel();
  const follower = follow(state, async (batch) => {
    if (batch.fresh) graph.build(state);
    else if (batch.jobs.size) graph.update(state, batch.jobs);
    const job = pickJob();
    const ended = batch.run && state.finished;
    if (batch.fresh || ended || !job || job.key !== shownKey || batch.jobs.has(job.key)) {
      drawPanel();
    } else if (selectedStep !== null && batch.logs.has(`${job.key}#${selectedStep}`)) {
      logs.grown();
    }
    if (batch.run || batch.fresh) {
      drawNotices();
      if (state.finished) {
        try {
          summary = await api(`/runs/${enc(runId)}`);
        } catch {
          /* the header keeps what the events said */
        }
      }
      drawHeader();
    }
  }, { logs: streamed });
  // The times of what is still going on count up, without drawing the rest again.
  const ticker = setInterval(() => {
    for (const [el, text] of headerClock ? [headerClock, ...panelClocks] : panelClocks) {
      el.textContent = text();
    }
  }, 1000);
  return () => {
    follower.stop();
    clearInterval(ticker);
    graph.destroy();
    logs.destroy();
  };
}

function fact(term, value) {
  return [h("dt", null, term), h("dd", null, value)];
}

const CASE_STATUS = { passed: "success", skipped: "skipped" };

function testResults(reports) {
  const cases = reports.cases || [];
  const section = h("section", { class: "tests", "aria-label": "Test results" },
    h("h3", null, "Test results"),
    h("p", null, `${reports.tests} tests: ${reports.passed ?? ""} passed, ` +
      `${reports.failures} failed, ${reports.errors} errors, ${reports.skipped} skipped` +
      (reports.cases_omitted ? ` (${reports.cases_omitted} not listed)` : "")));
  if (cases.length) {
    section.append(h("div", { class: "table-wrap" }, h("table", { class: "list tests-table" },
      h("thead", null, h("tr", null, ["Test", "Result", "Time"].map((t) =>
        h("th", { scope: "col" }, t)))),
      h("tbody", null, cases.map((c) => h("tr", { class: `t-${c.status}` },
        h("td", null, h("span", { class: "mono test-name" },
          c.classname ? `${c.classname}.${c.name}` : c.name),
        c.message ? h("div", { class: c.status === "skipped" ? "muted small" : "error small" },
          c.message) : null,
        c.text ? h("details", null, h("summary", null, "Details"),
          h("pre", { class: "mono small" }, c.text)) : null),
        h("td", null, h("span", { class: `status s-${CASE_STATUS[c.status] || "failure"}` },
          c.status)),
        h("td", { class: "num" }, c.time !== null && c.time !== undefined
          ? `${c.time.toFixed(2)} s` : "")))))));
  }
  return section;
}
