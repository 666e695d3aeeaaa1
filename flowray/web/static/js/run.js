// A run: its job graph, the chosen job's steps, outputs, test results, artifacts and the
// chosen step's log, all live from the run's event stream; cancel and rerun.
import { api, can, enc, session, withCsrf } from "./api.js";
import { go } from "./app.js";
import { badge, clear, duration, h, put, show, toast, when } from "./dom.js";
import { Graph } from "./graph.js";
import { LogView } from "./logview.js";
import { follow, isTerminal, matrixLabel, RunState } from "./runstate.js";

export async function runView(root, [runId]) {
  let summary = await api(`/runs/${enc(runId)}`);
  const state = new RunState(runId);
  // A run that has ended: its events without the log lines, and each shown step's log read
  // from its file (a 100,000-line log is one request, not 100,000 events).
  const streamed = !isTerminal(summary.status);
  const header = h("div", { class: "run-head" });
  const notices = h("div", { class: "notices" });
  const graphHolder = h("div", { class: "graph-wrap" });
  const panel = h("section", { class: "job-panel", "aria-label": "Job", "aria-live": "off" });
  const logHolder = h("div", { class: "log-holder" });
  root.append(header, notices,
    h("h2", { class: "sr-only" }, "Jobs"), graphHolder,
    h("div", { class: "run-detail" }, panel, logHolder));

  let selectedJob = null;
  let selectedStep = null;
  let stepChosen = false;
  const logs = new LogView(logHolder);
  logs.root.hidden = true;
  const graph = new Graph(graphHolder, { onSelect: (key) => {
    selectedJob = key;
    selectedStep = null;
    stepChosen = false;
    drawPanel();
  } });

  function status() {
    if (isTerminal(summary.status)) return summary.status;
    if (state.finished) return state.run.status;
    if (state.lastSeq) return state.run.status === "queued" ? "running" : state.run.status;
    return summary.status;
  }

  function drawHeader() {
    const s = status();
    const inputs = Object.entries(summary.inputs || {});
    const hasMatrix = [...state.jobs.values()].some((j) => j.matrix);
    const failed = [...state.jobs.values()].some((j) => j.status === "failure" ||
      j.status === "cancelled");
    put(clear(header),
      h("div", { class: "bar" },
        h("h1", null, h("a", { href: `/flows/${enc(summary.flow)}` }, summary.flow), " ",
          summary.number ? `#${summary.number}` : "", " ", badge(s)),
        h("div", { class: "actions" },
          hasMatrix ? h("a", { class: "button", href: `/runs/${enc(runId)}/sweep` }, "Sweep")
            : null,
          can("runner") && !isTerminal(s) ? h("button", { type: "button", class: "danger",
            onclick: cancel }, "Cancel run") : null,
          can("runner") && isTerminal(s) && failed ? h("button", { type: "button",
            onclick: () => rerun({ failed: true }) }, "Rerun failed jobs") : null)),
      h("dl", { class: "facts" },
        fact("Run", h("span", { class: "mono" }, runId)),
        fact("Trigger", summary.trigger),
        fact("Flow version", `v${summary.version}`),
        summary.rerun_of ? fact("Rerun of", h("a", { href: `/runs/${enc(summary.rerun_of)}` },
          summary.rerun_of.slice(0, 8))) : null,
        fact("Created", when(summary.created)),
        fact("Took", duration(state.run.started || summary.started,
          state.run.ended || summary.ended || (isTerminal(s) ? summary.ended : null))),
        summary.reason ? fact("Why", summary.reason) : null,
        inputs.length ? fact("Inputs", h("span", null, inputs.map(([k, v]) =>
          h("code", { class: "chip" }, `${k}=${show(v)}`)))) : null));
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
    return jobs.find((j) => j.status === "running") || jobs.find((j) => j.status === "failure") ||
      jobs[0] || null;
  }

  function drawPanel() {
    const job = pickJob();
    clear(panel);
    if (!job) {
      panel.append(h("p", { class: "muted" }, isTerminal(status()) ? "This run has no jobs."
        : "Waiting for the run to start…"));
      return;
    }
    if (!selectedJob) graph.select(job.key, { quiet: true });
    if (!stepChosen) {
      const running = job.steps.find((s) => s.status === "running");
      const failed = [...job.steps].reverse().find((s) => s.status === "failure");
      selectedStep = (running || failed || job.steps[job.steps.length - 1] || {}).index ?? null;
    }
    const matrix = matrixLabel(job.matrix);
    const reruns = can("runner") && isTerminal(status());
    put(panel,
      h("div", { class: "bar" },
        h("h2", null, job.key, " ", badge(job.status)),
        reruns ? h("button", { type: "button", onclick: () => rerun({ jobs: [job.key] }) },
          job.matrix ? "Rerun this cell" : "Rerun this job") : null),
      h("dl", { class: "facts" },
        matrix ? fact("Matrix", matrix) : null,
        fact("Node", job.node || (job.status === "queued" ? "not placed yet" : "")),
        fact("GPUs", job.gpus && job.gpus.length ? job.gpus.join(", ") : "none"),
        job.attempt > 1 ? fact("Attempt", String(job.attempt)) : null,
        fact("Took", duration(job.started, job.ended))),
      job.error ? h("p", { class: "error" }, job.error) : null,
      job.warnings.length ? h("ul", { class: "warnings" }, job.warnings.map((w) =>
        h("li", null, w))) : null);
    if (job.steps.length) {
      panel.append(h("h3", null, "Steps"), h("ol", { class: "steps" }, job.steps.map((step) =>
        h("li", null, h("button", { type: "button", class: `step s-${step.status}`,
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
            ? ` (exit ${step.exit_code})` : "") +
          (step.started ? ` · ${duration(step.started, step.ended)}` : "")),
        step.error ? h("span", { class: "error small block" }, step.error) : null)))));
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
            href: withCsrf(`/api/v1/runs/${enc(runId)}/artifacts/${enc(parts[1])}/` +
              parts.slice(2).map(enc).join("/")) }, file));
        })));
    }
    drawLog(job);
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
      lines.fetched = true;
      readLog(job.key, selectedStep, lines);
    }
    if (logs.lines !== lines) {
      logs.show(lines, `Log: ${job.key} · ${step.name}`,
        withCsrf(`/api/v1/runs/${enc(runId)}/logs/${enc(job.key)}/${selectedStep}`));
    } else logs.grown();
  }

  // A finished run's logs: its step's log file, read once (the event stream leaves them out).
  async function readLog(key, index, lines) {
    try {
      const answer = await fetch(`/api/v1/runs/${enc(runId)}/logs/${enc(key)}/${index}`,
        { credentials: "same-origin", headers: { "X-Flowray-CSRF": session.csrf } });
      if (!answer.ok) return;
      const text = await answer.text();
      const read = text.endsWith("\n") ? text.slice(0, -1) : text;
      if (read) for (const line of read.split("\n")) lines.push(["stdout", line]);
      if (logs.lines === lines) logs.grown();
    } catch {
      /* the log stays empty; the whole-log link says more */
    }
  }

  async function cancel() {
    try {
      await api(`/runs/${enc(runId)}/cancel`, { method: "POST" });
      toast("Cancelling the run.");
    } catch (err) {
      toast(err.message, "bad");
    }
  }

  async function rerun(body) {
    try {
      const answer = await api(`/runs/${enc(runId)}/rerun`, { method: "POST", body });
      toast("A new run is queued.");
      go(`/runs/${enc(answer.id)}`);
    } catch (err) {
      toast(err.message, "bad");
    }
  }

  drawHeader();
  drawPanel();
  const follower = follow(state, async (batch) => {
    if (batch.fresh) graph.build(state);
    else if (batch.jobs.size) graph.update(state, batch.jobs);
    const job = pickJob();
    if (batch.fresh || (job && batch.jobs.has(job.key)) || !job) drawPanel();
    else if (job && selectedStep !== null && batch.logs.has(`${job.key}#${selectedStep}`)) {
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
  const ticker = setInterval(() => {
    if (!isTerminal(status())) drawHeader();
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

function testResults(reports) {
  const cases = reports.cases || [];
  const section = h("section", { class: "tests", "aria-label": "Test results" },
    h("h3", null, "Test results"),
    h("p", null, `${reports.tests} tests: ${reports.passed ?? ""} passed, ` +
      `${reports.failures} failed, ${reports.errors} errors, ${reports.skipped} skipped` +
      (reports.cases_omitted ? ` (${reports.cases_omitted} not listed)` : "")));
  if (cases.length) {
    section.append(h("table", { class: "list tests-table" },
      h("thead", null, h("tr", null, ["Test", "Result", "Time"].map((t) =>
        h("th", { scope: "col" }, t)))),
      h("tbody", null, cases.map((c) => h("tr", { class: `t-${c.status}` },
        h("td", null, h("span", { class: "mono" },
          c.classname ? `${c.classname}.${c.name}` : c.name),
        c.message ? h("div", { class: "error small" }, c.message) : null,
        c.text ? h("details", null, h("summary", null, "Details"),
          h("pre", { class: "mono small" }, c.text)) : null),
        h("td", null, badge(c.status === "passed" ? "success" : c.status === "skipped"
          ? "skipped" : "failure"), " ", c.status),
        h("td", { class: "num" }, c.time !== null && c.time !== undefined
          ? `${c.time.toFixed(2)} s` : ""))))));
  }
  return section;
}
