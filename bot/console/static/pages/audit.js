/* 操作日志: every admin action from chat, the CLI and the console, newest first, with filters and paging.
 * API: GET /console/api/audit?group=&source=&actor=&q=&before=. */
Console.page("audit", async (root, ctx) => {
  const {api, h, t} = Console;
  const p = ctx.params;
  const query = new URLSearchParams({limit: 50});
  for (const key of ["group", "source", "actor", "q"]) if (p[key]) query.set(key, p[key]);
  const [data, group] = await Promise.all([
    api("GET", "/console/api/audit?" + query),
    p.group ? api("GET", "/console/api/groups/" + encodeURIComponent(p.group)) : Promise.resolve(null),
  ]);
  const source = h("select", {name: "source", "aria-label": t("audit.filter_source")},
    h("option", {value: ""}, t("audit.filter_source") + "：" + t("common.all")),
    ["chat", "cli", "console", "config"].map((s) => h("option", {value: s, selected: p.source === s}, t("audit.source_" + s))));
  const actor = h("input", {name: "actor", value: p.actor || "", placeholder: t("audit.filter_actor"), "aria-label": t("audit.filter_actor")});
  const text = h("input", {type: "search", name: "q", value: p.q || "", placeholder: t("audit.filter_text"), "aria-label": t("audit.filter_text")});
  root.append(h("form", {class: "toolbar", onsubmit: (e) => {
    e.preventDefault();
    Console.go({group: p.group, source: source.value, actor: actor.value.trim(), q: text.value.trim()});
  }}, source, actor, text, h("button", {type: "submit"}, t("common.search"))));
  if (group) {
    const g = group.summary.group;
    root.append(h("p", {class: "filter"}, t("audit.group_filter", {name: g.name || g.external_id}), " ",
      h("button", {type: "button", class: "link", onclick: () => Console.go({source: p.source, actor: p.actor, q: p.q})}, t("audit.clear"))));
  }
  const label = (prefix, value) => { const k = t(prefix + value); return k.startsWith("audit.") ? value : k; };
  const columns = [
    {label: t("audit.col_at"), value: (e) => Console.fmtTime(e.at)},
    {label: t("audit.col_source"), value: (e) => label("audit.source_", e.source)},
    {label: t("audit.col_where"), value: (e) => (e.group ? `${e.channel}:${e.group}` : e.channel)},
    {label: t("audit.col_actor"), value: (e) => e.actor},
    {label: t("audit.col_command"), value: (e) => (e.command + " " + e.args).trim(), cls: "wrap"},
    {label: t("audit.col_result"), value: (e) => h("span", {class: "result " + e.result}, label("audit.result_", e.result))},
    {label: t("audit.col_detail"), value: (e) => e.detail, cls: "wrap"},
  ];
  const wrap = Console.table(columns, data.entries, {id: "audit-table"});
  root.append(wrap);
  let before = data.next_before;
  const more = h("button", {type: "button", id: "audit-more", hidden: !before, onclick: async () => {
    query.set("before", before);
    const next = await api("GET", "/console/api/audit?" + query);
    const tbody = wrap.querySelector("tbody");
    const extra = Console.table(columns, next.entries).querySelectorAll("tbody tr");
    extra.forEach((row) => tbody.appendChild(row));
    before = next.next_before;
    more.hidden = !before;
  }}, t("common.load_more"));
  root.append(more);
});
