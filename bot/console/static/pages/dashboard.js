/* 数据概览: today's figures, 30-day charts (overall or one group), the most active groups, and the first
 * steps when there is nothing yet. API: GET /console/api/dashboard?group=ID, GET /console/api/groups. */
Console.page("dashboard", async (root, ctx) => {
  const {api, h, t} = Console;
  const query = new URLSearchParams();
  if (ctx.params.group) query.set("group", ctx.params.group);
  const [data, groups] = await Promise.all([
    api("GET", "/console/api/dashboard?" + query),
    api("GET", "/console/api/groups?per_page=200"),
  ]);
  const s = data.series;
  const last = (values) => values[values.length - 1] || 0;

  const select = h("select", {id: "scope-select", "aria-label": t("dashboard.scope"),
                              onchange: (e) => Console.go({group: e.target.value})},
    h("option", {value: ""}, t("dashboard.scope_all")),
    groups.groups.filter((g) => !g.group.direct || g.members).map((g) =>
      h("option", {value: g.group.id, selected: data.group && data.group.id === g.group.id},
        (g.group.name || g.group.external_id) + (g.group.direct ? "（" + t("groups.direct") + "）" : ""))));
  root.append(h("div", {class: "toolbar"},
    h("label", {}, t("dashboard.scope") + " ", select),
    h("span", {class: "muted"}, t("dashboard.window", {days: data.days.length, timezone: data.timezone}))));

  const kpis = [
    ["kpi_groups", data.totals.groups], ["kpi_members", data.totals.members], ["kpi_active", last(s.active)],
    ["kpi_joins", last(s.joins)], ["kpi_leaves", last(s.leaves)], ["kpi_checkins", last(s.checkins)],
    ["kpi_faq", `${last(s.faq_answered)} / ${last(s.faq_unanswered)}`],
  ];
  root.append(h("div", {class: "kpis"}, kpis.map(([key, value]) =>
    h("div", {class: "kpi", "data-kpi": key}, h("span", {class: "kpi-value"}, String(value)),
      h("span", {class: "kpi-label"}, t("dashboard." + key))))));

  if (data.empty) {
    const steps = [
      ctx.me.simulator_url
        ? h("li", {}, h("a", {href: ctx.me.simulator_url, target: "_blank", rel: "noopener"}, t("dashboard.empty_simulator")))
        : h("li", {}, t("dashboard.empty_simulator_off")),
      h("li", {}, h("a", {href: "/console/faq"}, t("dashboard.empty_faq"))),
      h("li", {}, h("a", {href: "/console/push?new=1"}, t("dashboard.empty_push"))),
    ];
    root.append(h("section", {class: "card empty-state", id: "empty-state"},
      h("h2", {}, t("dashboard.empty_title")), h("ol", {}, steps), h("p", {class: "muted"}, t("dashboard.empty_more"))));
    return;
  }

  const charts = h("div", {class: "charts"});
  root.append(charts);
  function card(id, title) {
    const box = h("div", {class: "chart-box"});
    charts.append(h("section", {class: "card", id}, h("h2", {}, title), box));
    return box;
  }
  const C = QChart.COLORS;
  QChart.line(card("chart-active", t("dashboard.chart_active")), {labels: data.days, title: t("dashboard.chart_active"),
    series: [{name: t("dashboard.series_active"), values: s.active, color: C[0]}]});
  QChart.bars(card("chart-joins", t("dashboard.chart_joins")), {labels: data.days, title: t("dashboard.chart_joins"),
    series: [{name: t("dashboard.series_joins"), values: s.joins, color: C[2]},
             {name: t("dashboard.series_leaves"), values: s.leaves, color: C[1]}]});
  QChart.bars(card("chart-checkins", t("dashboard.chart_checkins")), {labels: data.days, title: t("dashboard.chart_checkins"),
    series: [{name: t("dashboard.series_checkins"), values: s.checkins, color: C[3]}]});
  QChart.bars(card("chart-faq", t("dashboard.chart_faq")), {labels: data.days, title: t("dashboard.chart_faq"), stacked: true,
    series: [{name: t("dashboard.series_answered"), values: s.faq_answered, color: C[2]},
             {name: t("dashboard.series_unanswered"), values: s.faq_unanswered, color: C[1]}]});

  if (data.top_groups.length) {
    root.append(h("section", {class: "card"}, h("h2", {}, t("dashboard.top_title")),
      Console.table([
        {label: t("dashboard.top_group"), value: (r) => h("a", {href: "/console?group=" + r.group.id,
          onclick: (e) => { e.preventDefault(); Console.go({group: r.group.id}); }}, r.group.name || r.group.external_id)},
        {label: t("dashboard.top_active"), value: (r) => String(r.active), cls: "num"},
      ], data.top_groups)));
  }
});
