// The runs: filtered by flow, status and trigger, newest first, paged, and kept up to date.
import { api, enc } from "./api.js";
import { ago, badge, clear, duration, h, keepFocus, when } from "./dom.js";

const REFRESH_MS = 2000;
const STATUSES = ["", "queued", "running", "success", "failure", "cancelled", "skipped"];
const TRIGGERS = ["", "manual", "schedule", "webhook", "flow"];

export async function runsView(root, _params, query) {
  const { flows } = await api("/flows");
  const filters = { flow: query.get("flow") || "", status: query.get("status") || "",
    trigger: query.get("trigger") || "" };
  let before = query.get("before") || "";

  // A filter applies in place (the list reloads from its first page, the address follows), so
  // the focus stays on the menu that was changed.
  const select = (name, label, options) => {
    const el = h("select", { name, id: `filter-${name}` }, options.map((o) =>
      h("option", { value: o, selected: o === filters[name] }, o || `any ${name}`)));
    el.addEventListener("change", () => {
      filters[name] = el.value;
      before = "";
      const params = new URLSearchParams(Object.entries(filters).filter(([, v]) => v));
      history.replaceState(null, "", `/runs${params.toString() ? "?" + params : ""}`);
      restart();
    });
    return h("div", { class: "field inline" }, h("label", { for: el.id }, label), el);
  };
  const flowNames = ["", ...flows.map((f) => f.name)];
  if (filters.flow && !flowNames.includes(filters.flow)) flowNames.push(filters.flow);
  root.append(h("div", { class: "bar" }, h("h1", null, "Runs")),
    h("form", { class: "filters", role: "search", "aria-label": "Filter runs",
      onsubmit: (e) => e.preventDefault() },
    select("flow", "Flow", flowNames), select("status", "Status", STATUSES),
    select("trigger", "Trigger", TRIGGERS)));

  const body = h("tbody");
  const pager = h("nav", { class: "pager", "aria-label": "Pages" });
  const live = h("p", { class: "muted small", role: "status" });
  root.append(h("div", { class: "table-wrap" }, h("table", { class: "list" },
    h("caption", { class: "sr-only" }, "Runs"),
    h("thead", null, h("tr", null, ["Run", "Flow", "Status", "Trigger", "Created", "Took"]
      .map((t) => h("th", { scope: "col" }, t)))), body)), pager, live);

  let timer = 0;
  let stopped = false;
  let asked = 0;
  async function load() {
    const ticket = ++asked;
    const params = new URLSearchParams(Object.entries(filters).filter(([, v]) => v));
    params.set("limit", "50");
    if (before) params.set("before", before);
    const page = await api(`/runs?${params}`);
    if (stopped || ticket !== asked) return;
    // Redrawn every 2 s: a keyboard user's focus on a link in the list stays where it was.
    keepFocus(body, () => {
      clear(body);
      if (!page.runs.length) {
        body.append(h("tr", null, h("td", { colspan: 6, class: "muted" }, "No runs.")));
      }
      for (const run of page.runs) {
        body.append(h("tr", { dataset: { run: run.id } },
          h("th", { scope: "row" }, h("a", { href: `/runs/${enc(run.id)}`,
            "data-focus": `run ${run.id}`, "aria-label": `${run.flow} ` +
              (run.number ? `#${run.number}` : run.id) },
          run.number ? `#${run.number}` : run.id), " ",
          run.number ? h("span", { class: "muted small mono run-id" }, run.id) : null),
          h("td", null, h("a", { href: `/flows/${enc(run.flow)}`, "data-focus": `flow ${run.id}` },
            run.flow), h("span", { class: "muted small" }, ` v${run.version}`)),
          h("td", null, badge(run.status)),
          h("td", null, run.trigger),
          h("td", null, h("time", { title: when(run.created),
            datetime: new Date(run.created * 1000).toISOString() }, ago(run.created))),
          h("td", { class: "num" }, duration(run.started, run.ended))));
      }
    });
    clear(pager);
    if (before) {
      const params2 = new URLSearchParams(Object.entries(filters).filter(([, v]) => v));
      pager.append(h("a", { href: `/runs${params2.toString() ? "?" + params2 : ""}` }, "Newest"));
    }
    if (page.next) {
      const params3 = new URLSearchParams(Object.entries(filters).filter(([, v]) => v));
      params3.set("before", page.next);
      pager.append(h("a", { href: `/runs?${params3}` }, "Older runs"));
    }
    live.textContent = before ? "" : "Updates by itself.";
  }

  async function tick() {
    if (stopped) return;
    if (!document.hidden) {
      try {
        await load();
      } catch {
        live.textContent = "Not updating: the service does not answer; trying again.";
      }
    }
    if (!stopped && !before) timer = setTimeout(tick, REFRESH_MS);
  }

  async function restart() {
    clearTimeout(timer);
    try {
      await load();
    } catch (err) {
      live.textContent = `Not updated: ${err.message}`;
    }
    clearTimeout(timer);
    if (!stopped && !before) timer = setTimeout(tick, REFRESH_MS);
  }

  await load();
  if (!before) timer = setTimeout(tick, REFRESH_MS);
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
