// The flows: each with its triggers, last run and next scheduled fire.
import { api, can, enc } from "./api.js";
import { ago, badge, h, when } from "./dom.js";

export async function flowsView(root) {
  const { flows } = await api("/flows");
  root.append(h("div", { class: "bar" },
    h("h1", null, "Flows"),
    can("admin") ? h("a", { class: "button primary", href: "/flows/new" }, "New flow") : null));
  if (!flows.length) {
    root.append(h("p", { class: "muted" }, "No flows yet. ",
      can("admin") ? h("a", { href: "/flows/new" }, "Write one") : "An admin can write one",
      " or push one with flowray flow push FILE."));
    return;
  }
  const rows = flows.map((flow) => h("tr", null,
    h("th", { scope: "row" }, h("a", { href: `/flows/${enc(flow.name)}` }, flow.name)),
    h("td", { class: "num" }, `v${flow.version}`),
    h("td", null, (flow.triggers.length ? flow.triggers : ["manual"])
      .map((t) => h("span", { class: "chip" }, t))),
    h("td", null, flow.last_run
      ? [badge(flow.last_run.status), " ",
        h("a", { href: `/runs/${enc(flow.last_run.id)}` }, ago(flow.last_run.created))]
      : h("span", { class: "muted" }, "never run")),
    h("td", null, flow.next_fire
      ? h("time", { datetime: new Date(flow.next_fire * 1000).toISOString(),
        title: when(flow.next_fire) }, ago(flow.next_fire)) : ""),
    h("td", { class: "actions" },
      can("runner") ? h("a", { class: "button", href: `/flows/${enc(flow.name)}/start`,
        "aria-label": `Start ${flow.name}` }, "Start") : null,
      h("a", { class: "button", href: `/runs?flow=${enc(flow.name)}`,
        "aria-label": `Runs of ${flow.name}` }, "Runs"))));
  root.append(h("div", { class: "table-wrap" }, h("table", { class: "list" },
    h("caption", { class: "sr-only" }, "Flows"),
    h("thead", null, h("tr", null, ["Flow", "Version", "Triggers", "Last run", "Next fire", ""]
      .map((title) => h("th", { scope: "col" }, title || h("span", { class: "sr-only" },
        "Actions"))))),
    h("tbody", null, rows))));
}
