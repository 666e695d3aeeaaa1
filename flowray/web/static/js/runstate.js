// A run as its event stream tells it (SPEC "Events"), kept up to date from the service's
// Server-Sent Events. Events are applied once each, in seq order: a reconnect resumes after
// the last one seen (Last-Event-ID) and repeats are dropped, so no line is lost or shown
// twice.

import { api, session } from "./api.js";

const TERMINAL = new Set(["success", "failure", "cancelled", "skipped"]);
export const isTerminal = (status) => TERMINAL.has(status);

export class RunState {
  constructor(id) {
    this.id = id;
    this.run = { status: "queued", flow: "", trigger: "", inputs: {}, started: null, ended: null };
    this.jobs = new Map(); // key -> job
    this.logs = new Map(); // "key#step" -> [[stream, line], ...]
    this.lastSeq = 0;
    this.finished = false;
    this.notices = [];
  }

  job(key) {
    let job = this.jobs.get(key);
    if (!job) {
      job = { key, id: key.split(".")[0], name: key, matrix: null, needs: [], status: "queued",
        node: "", host: "", gpus: null, attempt: 1, started: null, ended: null, outputs: {},
        reports: null, artifacts: [], steps: [], error: null, warnings: [], resources: {} };
      this.jobs.set(key, job);
    }
    return job;
  }

  step(job, index) {
    while (job.steps.length <= index) {
      job.steps.push({ index: job.steps.length, name: `step ${job.steps.length + 1}`,
        kind: "", status: "queued", exit_code: null, outputs: {}, started: null, ended: null,
        error: null });
    }
    return job.steps[index];
  }

  // Apply one event; returns what changed: "job" (a job's state), "new" (a new job), "log",
  // "run", or "" when the event was seen already.
  apply(ev) {
    if (ev.seq <= this.lastSeq) return "";
    this.lastSeq = ev.seq;
    const t = ev.type;
    if (t === "run.started") {
      Object.assign(this.run, { flow: ev.flow, trigger: ev.trigger, inputs: ev.inputs || {},
        started: ev.started || null, status: "running", backend: ev.backend });
      return "run";
    }
    if (t === "run.finished") {
      Object.assign(this.run, { status: ev.status, exit_code: ev.exit_code,
        ended: ev.ended || null, reason: ev.cancel_reason });
      this.finished = true;
      return "run";
    }
    if (t === "run.notice") {
      this.notices.push(ev.message);
      return "run";
    }
    if (!ev.job) return "";
    const fresh = !this.jobs.has(ev.job);
    const job = this.job(ev.job);
    if (t === "job.queued") {
      Object.assign(job, { id: ev.id || job.id, name: ev.name || ev.id || job.key,
        matrix: ev.matrix || null, needs: ev.needs || [], resources: ev.resources || {} });
    } else if (t === "job.started") {
      Object.assign(job, { status: "running", node: ev.node || "", host: ev.host || "",
        gpus: ev.gpus || null, attempt: ev.attempt || 1,
        started: job.started || ev.started || null });
      if ((ev.attempt || 1) > 1) job.steps = [];
    } else if (t === "job.retrying") {
      Object.assign(job, { status: "retrying", error: ev.error || null });
    } else if (t === "job.finished") {
      Object.assign(job, { status: ev.status, outputs: ev.outputs || {},
        reports: ev.reports || null, artifacts: ev.artifacts || [], error: ev.error || null,
        warnings: ev.warnings || [], ended: ev.ended || null,
        started: job.started || ev.started || null, node: ev.node || job.node });
      for (const s of ev.steps || []) {
        if (typeof s.index !== "number") continue;
        Object.assign(this.step(job, s.index), { name: s.name || undefined, status: s.status,
          exit_code: s.exit_code ?? null, outputs: s.outputs || {}, error: s.error || null,
          started: s.started || null, ended: s.ended || null, kind: s.kind || "" });
      }
    } else if (t === "step.started") {
      if (ev.rank) return "";
      Object.assign(this.step(job, ev.step), { name: ev.name, kind: ev.kind, status: "running",
        started: ev.started || null });
    } else if (t === "step.finished") {
      if (ev.rank) return "";
      Object.assign(this.step(job, ev.step), { status: ev.status, exit_code: ev.exit_code,
        outputs: ev.outputs || {}, error: ev.error || null, ended: ev.ended || null,
        name: ev.name || this.step(job, ev.step).name, kind: ev.kind || "" });
    } else if (t === "step.log") {
      const key = `${ev.job}#${ev.step}`;
      let lines = this.logs.get(key);
      if (!lines) {
        lines = [];
        this.logs.set(key, lines);
      }
      lines.push(ev.rank ? [ev.stream, `[rank ${ev.rank}] ${ev.line}`] : [ev.stream, ev.line]);
      if (fresh) return "new";
      return "log";
    }
    return fresh ? "new" : "job";
  }
}

// Follow a run's events; onChange({jobs: Set of keys, fresh: bool, logs: Set, run: bool}) is
// called at most once a frame, and paced by what it costs: after a call that took the page
// T ms (its script, then the browser's style and layout up to the next frame), the next one
// waits until T ms more have passed, so at least half of the main thread is left to take the
// events in. A burst (the replay of a long run's history: thousands of events in a second)
// then costs a few redraws instead of one a frame, each a 1,000-row table or graph; the
// run's end is drawn at once. Without logs, step.log events are left out (a finished run's
// logs are read from their files, one request each, when a step is shown). Returns a handle
// whose stop() stops following.
export function follow(state, onChange, { logs = true } = {}) {
  let controller = null;
  let reading = false;
  let stopped = false;
  let retry = 0;
  let pending = { jobs: new Set(), fresh: false, logs: new Set(), run: false };
  let scheduled = false;
  let timer = 0;
  let calm = 0; // performance.now() before which no onChange call starts (but the last one)

  function flush() {
    if (!scheduled || stopped) return;
    scheduled = false;
    const batch = pending;
    pending = { jobs: new Set(), fresh: false, logs: new Set(), run: false };
    const started = performance.now();
    calm = Infinity; // until measured: what comes meanwhile waits for the measure
    onChange(batch);
    // The next frame's callback runs after this frame's style and layout: their cost counts.
    requestAnimationFrame(() => {
      const now = performance.now();
      calm = now + (now - started);
      if (scheduled && !timer) {
        scheduled = false;
        schedule();
      }
    });
  }

  function schedule() {
    // The run's end is drawn at once, not after the pause a redraw waits for.
    if (scheduled && !(state.finished && timer)) return;
    clearTimeout(timer);
    timer = 0;
    scheduled = true;
    if (document.hidden) {
      timer = setTimeout(() => {
        timer = 0;
        flush();
      }, 250);
      return;
    }
    if (calm === Infinity && !state.finished) return; // the measuring frame schedules again
    const wait = state.finished ? 0 : calm - performance.now();
    if (wait > 1) {
      timer = setTimeout(() => {
        timer = 0;
        requestAnimationFrame(flush);
      }, wait);
    } else requestAnimationFrame(flush);
  }

  // One message of the stream (its "data:" lines; "id:", "retry:" and comments are not needed:
  // a reconnect resumes from the last seq applied).
  function take(block) {
    let data = null;
    for (const line of block.split("\n")) {
      if (!line.startsWith("data:")) continue;
      const value = line.charCodeAt(5) === 32 ? line.slice(6) : line.slice(5);
      data = data === null ? value : `${data}\n${value}`;
    }
    if (data === null) return;
    let ev;
    try {
      ev = JSON.parse(data);
    } catch {
      return;
    }
    retry = 0;
    const what = state.apply(ev);
    if (what === "new") pending.fresh = true;
    if (what === "log") pending.logs.add(`${ev.job}#${ev.step}`);
    if (what === "new" && ev.type === "step.log") pending.logs.add(`${ev.job}#${ev.step}`);
    if (what === "job" || what === "new") pending.jobs.add(ev.job);
    if (what === "run") pending.run = true;
    if (what || state.finished) schedule();
  }

  // The stream is read with fetch rather than EventSource: the browser hands an EventSource's
  // messages to the page one task each, and a long run's replay is thousands of them; read in
  // chunks, every message a chunk holds is applied in one go. Reconnecting does what
  // EventSource does: after the service's retry interval (1 s) when the connection broke or
  // ended before the run did, backing off after an HTTP error (say while the service
  // restarts), each time with Last-Event-ID: the last event applied.
  async function open() {
    if (stopped) return;
    controller = new AbortController();
    const headers = { Accept: "text/event-stream", "X-Flowray-CSRF": session.csrf };
    if (state.lastSeq) headers["Last-Event-ID"] = String(state.lastSeq);
    let refused = false;
    try {
      const answer = await fetch(`/api/v1/runs/${encodeURIComponent(state.id)}/events` +
        (logs ? "" : "?logs=false"), { credentials: "same-origin", headers, cache: "no-store",
        signal: controller.signal });
      if (!answer.ok || !answer.body) {
        refused = true;
        throw new Error(`${answer.status}`);
      }
      reading = true;
      const reader = answer.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done || stopped) break;
        buffer += decoder.decode(value, { stream: true });
        if (buffer.includes("\r")) buffer = buffer.replace(/\r\n?/g, "\n");
        const end = buffer.lastIndexOf("\n\n");
        if (end < 0) continue;
        const blocks = buffer.slice(0, end).split("\n\n");
        buffer = buffer.slice(end + 2);
        for (const block of blocks) take(block);
      }
    } catch {
      /* below: reconnect unless stopped or the run ended */
    }
    reading = false;
    if (stopped || state.finished) return;
    if (refused) {
      retry = Math.min(retry + 1, 10);
      // Refused, not cut: if the sign-in has ended, api() sends the page to sign in
      // again (and this view stops following); else try again.
      api("/runs?limit=1").then(() => setTimeout(open, 500 * retry),
        () => setTimeout(open, 2000 * retry));
    } else setTimeout(open, 1000);
    pending.run = true;
    schedule();
  }
  open();
  return {
    stop() {
      stopped = true;
      if (controller) controller.abort();
    },
    get connected() {
      return reading;
    },
  };
}

export function jobGroups(state) {
  // Jobs of the flow (matrix cells under their job), in the order they were queued.
  const groups = new Map();
  for (const job of state.jobs.values()) {
    let group = groups.get(job.id);
    if (!group) {
      group = { id: job.id, name: job.matrix ? job.id : job.name, needs: job.needs,
        cells: [] };
      groups.set(job.id, group);
    }
    group.cells.push(job);
  }
  return groups;
}

export function groupStatus(cells) {
  const seen = new Set(cells.map((c) => c.status));
  for (const s of ["running", "retrying", "failure", "cancelled", "queued"]) {
    if (seen.has(s)) return s;
  }
  if (seen.has("success")) return "success";
  return cells.length ? cells[0].status : "queued";
}

export function matrixLabel(matrix) {
  if (!matrix) return "";
  return Object.entries(matrix).map(([k, v]) =>
    `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`).join(", ");
}
