// A run as its event stream tells it (SPEC "Events"), kept up to date from the service's
// Server-Sent Events. Events are applied once each, in seq order: a reconnect resumes after
// the last one seen (Last-Event-ID, or ?since= for a new stream) and repeats are dropped, so
// no line is lost or shown twice.

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
// called at most once a frame. Without logs, step.log events are left out (a finished run's
// logs are read from their files, one request each, when a step is shown). Returns a handle
// whose stop() stops following.
export function follow(state, onChange, { logs = true } = {}) {
  let source = null;
  let stopped = false;
  let retry = 0;
  let pending = { jobs: new Set(), fresh: false, logs: new Set(), run: false };
  let scheduled = false;

  function flush() {
    scheduled = false;
    const batch = pending;
    pending = { jobs: new Set(), fresh: false, logs: new Set(), run: false };
    onChange(batch);
  }

  function schedule() {
    if (scheduled) return;
    scheduled = true;
    if (document.hidden) setTimeout(flush, 250);
    else requestAnimationFrame(flush);
  }

  function open() {
    if (stopped) return;
    const query = new URLSearchParams();
    if (state.lastSeq) query.set("since", String(state.lastSeq));
    if (!logs) query.set("logs", "false");
    query.set("csrf", session.csrf);
    source = new EventSource(`/api/v1/runs/${encodeURIComponent(state.id)}/events?${query}`);
    source.onmessage = (message) => {
      let ev;
      try {
        ev = JSON.parse(message.data);
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
      if (what) schedule();
      if (state.finished) {
        source.close();
        schedule();
      }
    };
    source.onerror = () => {
      if (state.finished || stopped) {
        source.close();
        return;
      }
      // A stream the browser gave up on (an HTTP error, say while the service restarts)
      // is opened again from the last event seen; otherwise the browser reconnects by itself
      // with Last-Event-ID.
      if (source.readyState === EventSource.CLOSED) {
        retry = Math.min(retry + 1, 10);
        // Refused, not cut: if the sign-in has ended, api() sends the page to sign in
        // again (and this view stops following); else try again.
        api("/runs?limit=1").then(() => setTimeout(open, 500 * retry),
          () => setTimeout(open, 2000 * retry));
      }
      pending.run = true;
      schedule();
    };
  }
  open();
  return {
    stop() {
      stopped = true;
      if (source) source.close();
    },
    get connected() {
      return source !== null && source.readyState === EventSource.OPEN;
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
