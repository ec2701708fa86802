/* 活动 (read only): the campaigns with their phases on a time line and the countdown to the key date; one
 * campaign's posts, lotteries, reminders and review summary. Campaigns are made with `qunbot campaign add`.
 * API: GET /console/api/campaigns, GET /console/api/campaigns/ID?group=. */
(function () {
  const {api, h, t} = Console;

  function countdown(c) {
    if (c.days_left > 0) return t("campaigns.days_left", {days: c.days_left, name: c.key_name});
    if (c.days_left === 0) return t("campaigns.key_today", {name: c.key_name});
    return t("campaigns.key_past", {days: -c.days_left, name: c.key_name});
  }

  function stateText(c) {
    if (c.state === "during" && c.phase_label) return t("campaigns.in_phase", {phase: c.phase_label});
    return t("campaigns.state_" + c.state);
  }

  function targetsText(c) {
    if (c.target_kind === "groups") return c.groups.map((g) => g.name || g.external_id).join("、");
    const where = c.target_channel ? t("campaigns.on_channel", {channel: c.target_channel}) : "";
    return (c.target_kind === "tag" ? t("campaigns.target_tag", {tag: c.target_tag}) : t("campaigns.target_all")) + where +
      t("campaigns.groups_now", {count: c.groups.length});
  }

  // Positions are set through the CSSOM: the page's CSP allows no inline style attributes.
  function place(node, left, width) {
    node.style.left = left + "%";
    if (width !== undefined) node.style.width = width + "%";
    return node;
  }

  // The phases as a bar over the campaign's days, today marked.
  function timeline(c) {
    const day = 86400000;
    const start = Date.parse(c.first_day), end = Date.parse(c.last_day) + day;
    const pct = (d) => Math.max(0, Math.min(100, (d - start) / (end - start) * 100));
    const bar = h("div", {class: "timeline", role: "img", "aria-label": c.phases.map((p) => `${p.label} ${p.first}~${p.last}`).join("；")},
      c.phases.map((p) => place(h("div", {class: "tl-phase tl-" + p.phase + (p.current ? " current" : ""),
        title: `${p.label} ${p.first} ~ ${p.last}`}, p.label),
        pct(Date.parse(p.first)), pct(Date.parse(p.last) + day) - pct(Date.parse(p.first)))));
    const today = Date.parse(c.today);
    if (today >= start && today < end) bar.append(place(h("div", {class: "tl-today", title: c.today}), pct(today + day / 2)));
    return bar;
  }

  async function list(root, ctx) {
    const removed = ctx.params.removed === "1";
    const data = await api("GET", "/console/api/campaigns" + (removed ? "?removed=true" : ""));
    root.append(h("div", {class: "toolbar"},
      h("span", {class: "hint"}, t("campaigns.read_only_hint")),
      h("label", {class: "inline"}, h("input", {type: "checkbox", checked: removed,
        onchange: (e) => Console.go({removed: e.target.checked ? 1 : ""})}), " " + t("campaigns.show_removed"))));
    if (!data.campaigns.length) {
      root.append(h("section", {class: "card empty-state", id: "no-campaigns"}, h("p", {}, t("campaigns.empty")),
        h("pre", {}, "qunbot campaign add 双十一 --title 双十一大促 --key-date 2026-11-11 \\\n  --phase 预热=11-01..11-07 --phase 爆发=11-08..11-11 --all")));
      return;
    }
    for (const c of data.campaigns) {
      root.append(h("section", {class: "card campaign", "data-campaign-id": c.id},
        h("h2", {}, h("a", {href: "?campaign=" + c.id, class: "campaign-link",
          onclick: (e) => { e.preventDefault(); Console.go({campaign: c.id}); }}, `${c.title}`),
          h("span", {class: "hint"}, ` ${c.name} · ${c.timezone}`), " ", h("span", {class: "badge state-" + c.state}, stateText(c))),
        h("p", {class: "countdown"}, countdown(c), h("span", {class: "hint"}, ` · ${c.key_date}`)),
        timeline(c),
        h("p", {class: "hint"}, t("campaigns.targets") + "：" + targetsText(c) + (c.owner ? " · " + t("campaigns.owner", {owner: c.owner}) : ""))));
    }
  }

  function figuresRow(label, f) {
    return {label, sent: f.sent, late: f.late, failed: f.failed, skipped: f.skipped, pending: f.pending};
  }

  async function detail(root, ctx) {
    const query = new URLSearchParams();
    if (ctx.params.group) query.set("group", ctx.params.group);
    const c = await api("GET", `/console/api/campaigns/${encodeURIComponent(ctx.params.campaign)}?${query}`);
    const s = c.summary;
    root.append(h("p", {}, h("a", {href: "/console/campaigns", onclick: (e) => { e.preventDefault(); Console.go({}); }}, "← " + t("common.back"))));
    root.append(h("h2", {id: "campaign-title"}, `${c.title} `, h("span", {class: "badge state-" + c.state}, stateText(c))));
    root.append(h("p", {class: "countdown", id: "countdown"}, countdown(c), h("span", {class: "hint"}, ` · ${c.key_date}（${c.timezone}）`)));
    root.append(timeline(c));
    root.append(h("p", {class: "hint"}, t("campaigns.targets") + "：" + targetsText(c)));
    const scope = h("select", {"aria-label": t("campaigns.summary_scope"), id: "summary-scope",
                               onchange: (e) => Console.go({campaign: c.id, group: e.target.value})},
      ctx.me.role === "group_admin" ? null : h("option", {value: ""}, t("campaigns.all_groups")),
      c.groups.map((g) => h("option", {value: g.id, selected: s.group && s.group.id === g.id}, g.name || g.external_id)));
    const change = s.checkins_change;
    root.append(h("section", {class: "card", id: "campaign-summary"},
      h("h3", {}, t("campaigns.summary_title"), " ", scope),
      h("div", {class: "kpis small"},
        [["posts", s.posts], ["runs", s.runs], ["sent", s.total.sent], ["late", s.total.late], ["failed", s.total.failed],
         ["skipped", s.total.skipped], ["entrants", s.entrants], ["winners", s.winners],
         ["checkins_change", change === "n/a" ? "—" : change]].map(([key, value]) =>
          h("div", {class: "kpi", "data-kpi": key}, h("span", {class: "kpi-value"}, String(value)),
            h("span", {class: "kpi-label"}, t("campaigns.kpi_" + key))))),
      Console.table([
        {label: t("campaigns.col_phase"), value: (r) => r.label},
        {label: t("campaigns.col_sent"), value: (r) => String(r.sent), cls: "num"},
        {label: t("campaigns.col_late"), value: (r) => String(r.late), cls: "num"},
        {label: t("campaigns.col_failed"), value: (r) => String(r.failed), cls: "num"},
        {label: t("campaigns.col_skipped"), value: (r) => String(r.skipped), cls: "num"},
        {label: t("campaigns.col_pending"), value: (r) => String(r.pending), cls: "num"},
      ], s.by_phase.map((p) => figuresRow(p.label || t("campaigns.no_phase"), p.figures)), {id: "phase-figures"}),
      Console.table([
        {label: t("campaigns.col_window"), value: (r) => r.label},
        {label: t("campaigns.col_days"), value: (r) => `${r.w.first} ~ ${r.w.last}（${r.w.days}）`},
        {label: t("campaigns.col_checkins"), value: (r) => `${r.w.checkins}（${r.w.checkins_per_day}/${t("campaigns.per_day")}）`, cls: "num"},
        {label: t("campaigns.col_checkin_members"), value: (r) => String(r.w.checkin_members), cls: "num"},
        {label: t("campaigns.col_active"), value: (r) => String(r.w.active_members), cls: "num"},
        {label: t("campaigns.col_messages"), value: (r) => String(r.w.messages), cls: "num"},
      ], [{label: t("campaigns.before"), w: s.before}, ...(s.during ? [{label: t("campaigns.during"), w: s.during}] : [])],
      {id: "window-figures"})));

    root.append(h("section", {class: "card"}, h("h3", {}, t("campaigns.posts_title")),
      Console.table([
        {label: t("campaigns.col_post"), value: (p) => h("a", {href: "/console/push?runs=" + p.id}, "#" + p.id)},
        {label: t("campaigns.col_phase"), value: (p) => p.phase_label || t("campaigns.all_phases")},
        {label: t("campaigns.col_schedule"), value: (p) => p.schedule_text || p.schedule},
        {label: t("campaigns.col_state"), value: (p) => t("push.state_" + p.state)},
        {label: t("campaigns.col_next"), value: (p) => p.next_run_local ? `${p.next_run_local}（${p.timezone}）` : "—"},
        {label: t("campaigns.col_content"), value: (p) => p.content, cls: "wrap"},
      ], c.posts, {id: "campaign-posts"})));
    root.append(h("section", {class: "card"}, h("h3", {}, t("campaigns.lotteries_title")),
      Console.table([
        {label: t("campaigns.col_lottery"), value: (l) => h("a", {href: "/console/lottery?lottery=" + l.id}, `#${l.id} ${l.title}`)},
        {label: t("campaigns.col_group"), value: (l) => l.group},
        {label: t("campaigns.col_state"), value: (l) => t("lottery.status_" + l.status)},
        {label: t("campaigns.kpi_entrants"), value: (l) => String(l.entrants), cls: "num"},
        {label: t("campaigns.kpi_winners"), value: (l) => String(l.winners), cls: "num"},
      ], s.lotteries, {id: "campaign-lotteries"})));
    if (ctx.me.role !== "group_admin") {
      root.append(h("section", {class: "card"}, h("h3", {}, t("campaigns.reminders_title")),
        Console.table([
          {label: t("campaigns.col_milestone"), value: (r) => r.milestone},
          {label: t("campaigns.col_due"), value: (r) => Console.fmtTime(r.due_at)},
          {label: t("campaigns.col_to"), value: (r) => r.channel ? `${r.channel}:${r.target}` : "—"},
          {label: t("campaigns.col_state"), value: (r) => r.status},
          {label: t("campaigns.col_reason"), value: (r) => r.reason, cls: "wrap"},
        ], c.reminders, {id: "campaign-reminders"})));
    }
  }

  Console.page("campaigns", async (root, ctx) => (ctx.params.campaign ? detail(root, ctx) : list(root, ctx)));
})();
