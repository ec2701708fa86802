/* 活动: the campaigns with their phases on a time line and the countdown to the key date; one campaign's posts
 * (put scheduled posts into it, move them between phases, take them out), lotteries, reminders and review
 * summary; the create / edit form with a live preview (the countdown on its days, the milestone reminders and
 * what an edit does to them, its posts' next runs and content under the dates being typed).
 * API: GET/POST /console/api/campaigns, GET/PUT/DELETE /console/api/campaigns/ID,
 * PUT/DELETE /console/api/campaigns/ID/posts/POST, POST /console/api/campaigns/preview. */
(function () {
  const {api, h, t} = Console;
  const PHASES = [["warmup", "预热"], ["burst", "爆发"], ["longtail", "长尾"], ["review", "复盘"]];
  const PREVIEW_DELAY = 350;

  function groupName(g) { return g.name || g.external_id; }

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
    if (c.target_kind === "groups") return c.groups.map(groupName).join("、");
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

  function back() {
    return h("p", {}, h("a", {href: "/console/campaigns", onclick: (e) => { e.preventDefault(); Console.go({}); }}, "← " + t("common.back")));
  }

  // -- the list ------------------------------------------------------------------------------------------

  async function list(root, ctx) {
    const removed = ctx.params.removed === "1";
    const data = await api("GET", "/console/api/campaigns" + (removed ? "?removed=true" : ""));
    root.append(h("div", {class: "toolbar"},
      data.can_create ? h("button", {type: "button", class: "primary", id: "campaign-new",
                                     onclick: () => Console.go({new: 1})}, t("campaigns.new")) : null,
      h("span", {class: "hint"}, t("campaigns.hint")),
      h("label", {class: "inline"}, h("input", {type: "checkbox", checked: removed,
        onchange: (e) => Console.go({removed: e.target.checked ? 1 : ""})}), " " + t("campaigns.show_removed"))));
    if (ctx.params.removed_id) Console.message(root, t("campaigns.removed", {id: ctx.params.removed_id}), "ok");
    if (!data.campaigns.length) {
      root.append(h("section", {class: "card empty-state", id: "no-campaigns"}, h("p", {}, t("campaigns.empty")),
        h("pre", {}, "qunbot campaign add --name d11 --title 双十一大促 --key-date 2026-11-11 --all \\\n  --phase 预热=2026-11-01..11-07 --phase 爆发=2026-11-08..11-11")));
      return;
    }
    for (const c of data.campaigns) {
      root.append(h("section", {class: "card campaign", "data-campaign-id": c.id},
        h("h2", {}, h("a", {href: "?campaign=" + c.id, class: "campaign-link",
          onclick: (e) => { e.preventDefault(); Console.go({campaign: c.id}); }}, `${c.title}`),
          h("span", {class: "hint"}, ` ${c.name} · ${c.timezone}`), " ", h("span", {class: "badge state-" + c.state}, stateText(c)),
          c.from_config ? h("span", {class: "badge"}, t("campaigns.from_config")) : null),
        h("p", {class: "countdown"}, countdown(c), h("span", {class: "hint"}, ` · ${c.key_date}`)),
        timeline(c),
        h("p", {class: "hint"}, t("campaigns.targets") + "：" + targetsText(c) + (c.owner ? " · " + t("campaigns.owner", {owner: c.owner}) : ""))));
    }
  }

  // -- one campaign --------------------------------------------------------------------------------------

  function figuresRow(label, f) {
    return {label, sent: f.sent, late: f.late, failed: f.failed, skipped: f.skipped, pending: f.pending};
  }

  function phaseSelect(c, value, attrs) {
    return h("select", attrs || {},
      h("option", {value: "", selected: !value}, t("campaigns.all_phases")),
      c.phases.map((p) => h("option", {value: p.phase, selected: value === p.phase}, p.label)));
  }

  async function detail(root, ctx) {
    const query = new URLSearchParams();
    if (ctx.params.group) query.set("group", ctx.params.group);
    const c = await api("GET", `/console/api/campaigns/${encodeURIComponent(ctx.params.campaign)}?${query}`);
    const s = c.summary;
    const live = c.state !== "removed";
    root.append(back());
    if (ctx.params.saved) Console.message(root, t("campaigns.saved"), "ok");
    root.append(h("h2", {id: "campaign-title"}, `${c.title} `, h("span", {class: "badge state-" + c.state}, stateText(c)),
      c.from_config ? h("span", {class: "badge"}, " " + t("campaigns.from_config")) : null));
    const actions = h("div", {class: "toolbar"},
      c.can_write && !c.from_config ? h("button", {type: "button", id: "campaign-edit",
        onclick: () => Console.go({edit: c.id})}, t("campaigns.edit")) : null,
      c.can_write ? h("button", {type: "button", class: "danger", id: "campaign-remove", onclick: async () => {
        if (!confirm(t("campaigns.confirm_remove", {title: c.title}))) return;
        try {
          await api("DELETE", "/console/api/campaigns/" + c.id);
          Console.go({removed_id: c.id});
        } catch (err) { Console.message(root, err.message, "error"); }
      }}, t("campaigns.remove")) : null,
      c.from_config ? h("span", {class: "hint"}, t("campaigns.config_hint")) : null);
    if (actions.childNodes.length) root.append(actions);
    root.append(h("p", {class: "countdown", id: "countdown"}, countdown(c), h("span", {class: "hint"}, ` · ${c.key_date}（${c.timezone}）`)));
    root.append(timeline(c));
    root.append(h("p", {class: "hint"}, t("campaigns.targets") + "：" + targetsText(c)));
    const scope = h("select", {"aria-label": t("campaigns.summary_scope"), id: "summary-scope",
                               onchange: (e) => Console.go({campaign: c.id, group: e.target.value})},
      ctx.me.role === "group_admin" ? null : h("option", {value: ""}, t("campaigns.all_groups")),
      c.groups.map((g) => h("option", {value: g.id, selected: s.group && s.group.id === g.id}, groupName(g))));
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

    const postsCard = h("section", {class: "card", id: "campaign-posts-card"}, h("h3", {}, t("campaigns.posts_title")));
    async function postAction(method, postId, body) {
      try {
        await api(method, `/console/api/campaigns/${c.id}/posts/${postId}`, body);
        Console.go({campaign: c.id, group: ctx.params.group || ""}, true);
      } catch (err) { Console.message(postsCard, err.message, "error"); }
    }
    postsCard.append(Console.table([
      {label: t("campaigns.col_post"), value: (p) => h("a", {href: "/console/push?runs=" + p.id}, "#" + p.id)},
      {label: t("campaigns.col_phase"), value: (p) => live && p.can_write && p.state !== "removed"
        ? phaseSelect(c, p.phase, {class: "post-phase", "aria-label": t("campaigns.col_phase"),
                                   onchange: (e) => postAction("PUT", p.id, {phase: e.target.value || null})})
        : (p.phase_label || t("campaigns.all_phases"))},
      {label: t("campaigns.col_schedule"), value: (p) => p.schedule_text || p.schedule},
      {label: t("campaigns.col_state"), value: (p) => t("push.state_" + p.state)},
      {label: t("campaigns.col_next"), value: (p) => p.next_run_local ? `${p.next_run_local}（${p.timezone}）` : "—", cls: "next-run"},
      {label: t("campaigns.col_content"), value: (p) => p.content, cls: "wrap"},
      {label: "", value: (p) => live && p.can_write && p.state !== "removed" ? h("button", {type: "button", class: "link danger post-detach",
        onclick: () => postAction("DELETE", p.id)}, t("campaigns.detach")) : null},
    ], c.posts.map((p) => Object.assign(p, {__attrs: {"data-post-id": p.id}})), {id: "campaign-posts"}));
    if (live && ctx.me.can_write && c.phases.length) {
      const listing = await api("GET", "/console/api/push/posts");
      const free = listing.posts.filter((p) => p.can_write && p.campaign_id === null && p.state !== "removed");
      const pick = h("select", {id: "attach-post", "aria-label": t("campaigns.attach_post")},
        free.map((p) => h("option", {value: p.id}, `#${p.id} ${p.schedule_text}｜${p.content.slice(0, 30)}`)));
      const phase = phaseSelect(c, "", {id: "attach-phase", "aria-label": t("campaigns.col_phase")});
      postsCard.append(free.length ? h("div", {class: "toolbar", id: "attach-form"},
        h("span", {}, t("campaigns.attach_post")), pick, phase,
        h("button", {type: "button", id: "attach-save",
                     onclick: () => postAction("PUT", pick.value, {phase: phase.value || null})}, t("campaigns.attach")),
        h("span", {class: "hint"}, t("campaigns.attach_hint")))
        : h("p", {class: "hint", id: "attach-none"}, t("campaigns.attach_none")));
    }
    root.append(postsCard);
    root.append(h("section", {class: "card"}, h("h3", {}, t("campaigns.lotteries_title")),
      Console.table([
        {label: t("campaigns.col_lottery"), value: (l) => h("a", {href: "/console/lottery?lottery=" + l.id}, `#${l.id} ${l.title}`)},
        {label: t("campaigns.col_group"), value: (l) => l.group},
        {label: t("campaigns.col_state"), value: (l) => t("lottery.status_" + l.status)},
        {label: t("campaigns.kpi_entrants"), value: (l) => String(l.entrants), cls: "num"},
        {label: t("campaigns.kpi_winners"), value: (l) => String(l.winners), cls: "num"},
      ], s.lotteries, {id: "campaign-lotteries"})));
    if (ctx.me.role !== "group_admin" || c.can_write) {
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

  // -- the form with its live preview --------------------------------------------------------------------

  async function editor(root, ctx) {
    const editId = ctx.params.edit;
    const [c, groupData, listing] = await Promise.all([
      editId ? api("GET", "/console/api/campaigns/" + encodeURIComponent(editId)) : null,
      api("GET", "/console/api/groups?per_page=200"),
      api("GET", "/console/api/campaigns"),
    ]);
    const groups = groupData.groups.map((r) => r.group).filter((g) => !g.dismissed && !g.direct);
    const broad = listing.can_target_broadly;
    const x = c || {name: "", title: "", timezone: listing.timezone, key_date: "", key_name: "", phases: [], dates: [],
                    target_kind: "groups", groups: [], target_tag: "", target_channel: "", owner: "", ops_users: [],
                    reminder_target: null, reminder_days: null};
    const chosen = new Set(x.target_kind === "groups" ? x.groups.map((g) => g.id) : []);
    const phaseOf = Object.fromEntries(x.phases.map((p) => [p.phase, p]));

    root.append(back());
    root.append(h("h2", {id: "campaign-form-title"}, c ? t("campaigns.edit_title", {title: c.title}) : t("campaigns.new_title")));

    function field(name, label, control, hint) {
      return h("label", {"data-field": name}, label, control, hint ? h("small", {class: "hint"}, hint) : null,
        h("small", {class: "field-error", "data-error-for": name}));
    }
    const form = h("form", {id: "campaign-form", class: "card form"},
      field("name", t("campaigns.field_name"), h("input", {name: "name", value: x.name, maxlength: 64, required: true,
                                                           autocomplete: "off", placeholder: "d11"}), t("campaigns.name_hint")),
      field("title", t("campaigns.field_title"), h("input", {name: "title", value: x.title, maxlength: 128, required: true,
                                                             placeholder: "双十一大促"})),
      field("key_date", t("campaigns.field_key_date"), h("input", {name: "key_date", type: "date", value: x.key_date, required: true})),
      field("key_name", t("campaigns.field_key_name"), h("input", {name: "key_name", value: x.key_name, maxlength: 32,
                                                                   placeholder: "开售"}), t("campaigns.key_name_hint")),
      h("fieldset", {id: "campaign-phases"}, h("legend", {}, t("campaigns.field_phases")),
        PHASES.map(([key, label]) => h("div", {class: "phase-row", "data-phase": key},
          h("label", {class: "check"}, h("input", {type: "checkbox", name: "phase_on", value: key, checked: Boolean(phaseOf[key])}), " " + label),
          h("input", {type: "date", name: "phase_first", "data-phase": key, value: phaseOf[key] ? phaseOf[key].first : "",
                      "aria-label": t("campaigns.phase_first", {phase: label})}),
          h("span", {}, "~"),
          h("input", {type: "date", name: "phase_last", "data-phase": key, value: phaseOf[key] ? phaseOf[key].last : "",
                      "aria-label": t("campaigns.phase_last", {phase: label})}))),
        h("small", {class: "hint"}, t("campaigns.phases_hint")),
        h("small", {class: "field-error", "data-error-for": "phases"})),
      field("dates", t("campaigns.field_dates"), h("textarea", {name: "dates", rows: 2, placeholder: "直播 2026-11-10"},
        x.dates.map((d) => `${d.name} ${d.day}`).join("\n")), t("campaigns.dates_hint")),
      field("timezone", t("campaigns.field_timezone"), h("input", {name: "timezone", value: x.timezone, maxlength: 64})),
      ...Console.targetFields({x, groups, chosen, broad, field, prefix: "campaign",
                               label: t("campaigns.field_target"), legend: t("campaigns.field_groups")}),
      field("owner", t("campaigns.field_owner"), h("input", {name: "owner", value: x.owner, maxlength: 128})),
      field("ops_users", t("campaigns.field_ops"), h("input", {name: "ops_users", value: x.ops_users.join(","), maxlength: 500}),
        t("campaigns.ops_hint")),
      field("reminder_target", t("campaigns.field_remind_to"), h("input", {name: "reminder_target", value: x.reminder_target || "",
                                                                           maxlength: 160, placeholder: "robot:ops"}), t("campaigns.remind_to_hint")),
      field("reminder_days", t("campaigns.field_remind_days"), h("input", {name: "reminder_days",
        value: x.reminder_days === null ? "" : x.reminder_days.join(","), maxlength: 64, placeholder: "7,3,1"}), t("campaigns.remind_days_hint")),
      field("sample", t("campaigns.field_sample"), h("input", {name: "sample", value: t("campaigns.sample_default"), maxlength: 500}),
        t("campaigns.sample_hint")),
      h("div", {class: "form-actions"},
        h("button", {type: "submit", class: "primary", id: "campaign-save"}, c ? t("common.save") : t("campaigns.create")),
        h("button", {type: "button", onclick: () => Console.go(c ? {campaign: c.id} : {})}, t("push.cancel"))));

    const preview = h("aside", {class: "card preview-pane", id: "campaign-preview", "aria-live": "polite"},
      h("h3", {}, t("campaigns.preview_title")),
      h("p", {class: "countdown", id: "preview-countdown"}),
      h("p", {class: "hint", id: "preview-phase-now"}),
      h("div", {id: "preview-timeline"}),
      h("h4", {}, t("campaigns.preview_samples")),
      h("div", {id: "preview-samples"}),
      h("h4", {}, t("campaigns.preview_posts")),
      h("div", {id: "preview-posts"}),
      h("h4", {}, t("campaigns.preview_milestones")),
      h("div", {id: "preview-milestones"}),
      h("ul", {class: "problems", id: "preview-problems"}));
    root.append(h("div", {class: "editor"}, form, preview));

    function body() {
      const f = form.elements;
      const phases = [];
      for (const [key] of PHASES) {
        const on = form.querySelector(`input[name=phase_on][value=${key}]`).checked;
        const first = form.querySelector(`input[name=phase_first][data-phase=${key}]`).value;
        const last = form.querySelector(`input[name=phase_last][data-phase=${key}]`).value;
        if (on || first) phases.push({phase: key, first, last: last || null});
      }
      const dates = f.dates.value.split("\n").map((line) => line.trim()).filter(Boolean).map((line) => {
        const parts = line.split(/[\s=＝:：]+/);
        return {name: parts[0] || "", day: parts.slice(1).join("") || ""};
      });
      const days = f.reminder_days.value.trim();
      return {
        name: f.name.value.trim(), title: f.title.value.trim(), timezone: f.timezone.value.trim() || null,
        key_date: f.key_date.value, key_name: f.key_name.value.trim() || null, phases, dates,
        target_kind: f.target_kind.value,
        group_ids: [...form.querySelectorAll("input[name=group_ids]:checked")].map((el) => Number(el.value)),
        tag: f.tag.value.trim() || null, channel: f.channel.value || null, owner: f.owner.value.trim() || null,
        ops_users: f.ops_users.value.split(/[,，\s]+/).map((u) => u.trim()).filter(Boolean),
        reminder_target: f.reminder_target.value.trim() || null,
        reminder_days: days === "" ? null : days.split(/[,，、\s]+/).filter(Boolean).map((d) => (/^\d+$/.test(d) ? Number(d) : -1)),
      };
    }
    function showTargets() {
      const kind = form.elements.target_kind.value;
      for (const box of form.querySelectorAll("[data-for]")) {
        const want = box.dataset.for;
        box.hidden = want === "broad" ? kind === "groups" : want !== kind;
      }
    }
    function showProblems(problems) {
      for (const slot of form.querySelectorAll(".field-error")) slot.textContent = "";
      for (const problem of problems) {
        const slot = form.querySelector(`[data-error-for="${problem.field}"]`);
        if (slot && !slot.textContent) slot.textContent = problem.message;
      }
      preview.querySelector("#preview-problems").replaceChildren(...problems.map((p) => h("li", {}, p.message)));
    }
    let sequence = 0;
    let timer = null;
    let touched = Boolean(c);
    async function runPreview() {
      const mine = ++sequence;
      const b = body();
      if (b.reminder_days && b.reminder_days.includes(-1)) b.reminder_days = null;
      b.campaign_id = c ? c.id : null;
      b.sample = form.elements.sample.value || null;
      let out;
      try {
        out = await api("POST", "/console/api/campaigns/preview", b);
      } catch (err) {
        if (mine === sequence) showProblems([{field: err.field || "name", message: err.message}]);
        return;
      }
      if (mine !== sequence) return;  // an older answer arriving after a newer one
      showProblems(touched ? out.problems : []);
      const k = out.campaign;
      preview.querySelector("#preview-countdown").textContent = k ? k.countdown : t("campaigns.preview_incomplete");
      preview.querySelector("#preview-phase-now").textContent = k ? t("campaigns.preview_now", {phase: k.phase_now}) : "";
      preview.querySelector("#preview-timeline").replaceChildren(...(k && k.phases.length ? [timeline(k)] : []));
      preview.querySelector("#preview-samples").replaceChildren(Console.table([
        {label: t("campaigns.col_day"), value: (r) => `${r.day} ${r.label}`},
        {label: "{days_left}", value: (r) => String(r.days_left), cls: "num"},
        {label: t("campaigns.col_sample"), value: (r) => r.text, cls: "wrap"},
      ], out.samples.map((r) => Object.assign(r, {__attrs: {"data-day": r.day}})), {id: "preview-samples-table"}));
      preview.querySelector("#preview-posts").replaceChildren(...(out.posts.length ? out.posts.map((p) => h("div", {class: "preview-post", "data-post-id": p.id},
        h("p", {}, h("strong", {}, `#${p.id} `), `${p.phase_label || t("campaigns.all_phases")} · ${p.schedule}`),
        h("ol", {}, p.next_runs.length ? p.next_runs.map((r) => h("li", {"data-at": r.at}, r.local))
          : [h("li", {class: "hint"}, t("campaigns.preview_no_runs"))]),
        p.content !== null ? h("pre", {}, p.content) : null)) : [h("p", {class: "hint"}, c ? t("campaigns.preview_no_posts") : t("campaigns.preview_posts_later"))]));
      preview.querySelector("#preview-milestones").replaceChildren(Console.table([
        {label: t("campaigns.col_milestone"), value: (m) => m.label},
        {label: t("campaigns.col_due"), value: (m) => m.local},
        {label: t("campaigns.col_state"), value: (m) => h("span", {class: "badge ms-" + m.status}, m.status_text)},
      ], out.milestones.map((m) => Object.assign(m, {__attrs: {"data-milestone": m.key, "data-status": m.status}})), {id: "preview-milestones-table"}));
      preview.dataset.ready = String(mine);
    }
    function schedulePreview() {
      touched = true;
      clearTimeout(timer);
      timer = setTimeout(runPreview, PREVIEW_DELAY);
    }
    form.addEventListener("input", schedulePreview);
    form.addEventListener("change", () => { showTargets(); schedulePreview(); });
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const b = body();
      if (b.reminder_days && b.reminder_days.includes(-1)) {
        showProblems([{field: "reminder_days", message: t("campaigns.remind_days_bad")}]);
        return;
      }
      const button = form.querySelector("#campaign-save");
      button.disabled = true;
      try {
        const saved = c ? (await api("PUT", "/console/api/campaigns/" + c.id, b)).campaign
          : await api("POST", "/console/api/campaigns", b);
        Console.go({campaign: saved.id, saved: 1});
      } catch (err) {
        showProblems([{field: err.field || "name", message: err.message}]);
        Console.message(form, err.message, "error");
        button.disabled = false;
      }
    });
    showTargets();
    await runPreview();
  }

  Console.page("campaigns", async (root, ctx) => {
    if (ctx.params.new || ctx.params.edit) return editor(root, ctx);
    if (ctx.params.campaign) return detail(root, ctx);
    return list(root, ctx);
  });
})();
