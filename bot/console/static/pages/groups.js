/* 群管理: the groups with today's figures, and one group's settings (welcome, timezone, FAQ scope).
 * API: GET /console/api/groups, GET /console/api/groups/ID, PATCH /console/api/groups/ID/settings. */
(function () {
  const {api, h, t} = Console;
  const ZONES = ["Asia/Shanghai", "Asia/Hong_Kong", "Asia/Taipei", "Asia/Singapore", "Asia/Tokyo", "Asia/Seoul",
                 "Europe/London", "Europe/Berlin", "America/New_York", "America/Los_Angeles", "UTC"];

  function groupName(g) {
    return (g.name || g.external_id) + (g.direct ? "（" + t("groups.direct") + "）" : "") +
      (g.dismissed ? "（" + t("groups.dismissed") + "）" : "");
  }

  async function list(root, ctx) {
    const page = Number(ctx.params.page || 1);
    const q = ctx.params.q || "";
    const query = new URLSearchParams({page, per_page: 50});
    if (q) query.set("q", q);
    const data = await api("GET", "/console/api/groups?" + query);
    const input = h("input", {type: "search", name: "q", value: q, placeholder: t("groups.search_placeholder"),
                              "aria-label": t("common.search")});
    root.append(h("form", {class: "toolbar", onsubmit: (e) => { e.preventDefault(); Console.go({q: input.value, page: 1}); }},
      input, h("button", {type: "submit"}, t("common.search"))));
    root.append(Console.table([
      {label: t("groups.col_name"), value: (r) => h("a", {href: "?group=" + r.group.id, class: "group-link",
        onclick: (e) => { e.preventDefault(); Console.go({group: r.group.id}); }}, groupName(r.group))},
      {label: t("groups.col_channel"), value: (r) => r.group.channel},
      {label: t("groups.col_members"), value: (r) => String(r.members), cls: "num"},
      {label: t("groups.col_active"), value: (r) => String(r.active_today), cls: "num"},
      {label: t("groups.col_checkin_rate"), value: (r) => Console.fmtPercent(r.checkin_rate), cls: "num"},
      {label: "", value: (r) => h("span", {class: "actions"},
        h("a", {href: "/console/members?group=" + r.group.id}, t("groups.members_link")),
        h("a", {href: "/console/audit?group=" + r.group.id}, t("groups.audit_link")))},
    ], data.groups.map((r) => Object.assign(r, {__attrs: {"data-group-id": r.group.id}})), {id: "groups-table"}));
    root.append(Console.pager(data.total, data.page, data.per_page, (n) => Console.go({q, page: n})));
  }

  async function settings(root, ctx) {
    const id = ctx.params.group;
    const data = await api("GET", "/console/api/groups/" + encodeURIComponent(id));
    const g = data.summary.group, st = data.settings;
    root.append(h("p", {}, h("a", {href: "/console/groups", onclick: (e) => { e.preventDefault(); Console.go({}); }},
      "← " + t("common.back"))));
    root.append(h("h2", {id: "settings-title"}, t("groups.settings_title", {name: groupName(g)})));
    root.append(h("div", {class: "kpis small"},
      [[t("groups.col_members"), data.summary.members], [t("groups.col_active"), data.summary.active_today],
       [t("groups.col_checkin_rate"), Console.fmtPercent(data.summary.checkin_rate)]].map(([label, value]) =>
        h("div", {class: "kpi"}, h("span", {class: "kpi-value"}, String(value)), h("span", {class: "kpi-label"}, label)))));

    const disabled = !data.can_write;
    const enabledValue = st.welcome_enabled === null ? "" : String(st.welcome_enabled);
    const state = st.welcome_enabled_effective ? t("groups.welcome_on") : t("groups.welcome_off");
    const form = h("form", {id: "settings-form", class: "card form"},
      disabled ? h("p", {class: "message info"}, t("common.read_only_note")) : null,
      h("label", {}, t("groups.welcome_enabled"),
        h("select", {name: "welcome_enabled", disabled},
          h("option", {value: "", selected: enabledValue === ""}, t("groups.welcome_default", {state})),
          h("option", {value: "true", selected: enabledValue === "true"}, t("groups.welcome_on")),
          h("option", {value: "false", selected: enabledValue === "false"}, t("groups.welcome_off")))),
      h("label", {}, t("groups.welcome_text"),
        h("textarea", {name: "welcome_text", rows: 4, maxlength: 2000, disabled}, st.welcome_text || ""),
        h("small", {class: "hint"}, t("groups.welcome_text_hint"))),
      h("label", {}, t("groups.welcome_rules"),
        h("textarea", {name: "welcome_rules", rows: 2, maxlength: 2000, disabled}, st.welcome_rules || ""),
        h("small", {class: "hint"}, t("groups.welcome_rules_hint"))),
      h("div", {class: "preview"}, h("span", {class: "hint"}, t("groups.preview")),
        h("pre", {id: "welcome-preview"}, st.welcome_preview)),
      h("label", {}, t("groups.timezone"),
        h("input", {name: "timezone", value: st.timezone || "", list: "zones", maxlength: 64, disabled,
                    placeholder: st.default_timezone}),
        h("datalist", {id: "zones"}, ZONES.map((z) => h("option", {value: z}))),
        h("small", {class: "hint"}, t("groups.timezone_hint", {zone: st.default_timezone}))),
      h("label", {}, t("groups.faq_scope"),
        h("select", {name: "faq_scope", disabled}, ["all", "group", "global", "off"].map((scope) =>
          h("option", {value: scope, selected: st.faq_scope === scope}, t("groups.scope_" + scope))))),
      h("div", {class: "form-actions"}, h("button", {type: "submit", class: "primary", disabled, id: "settings-save"},
        t("common.save"))));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const f = form.elements;
      const body = {
        welcome_enabled: f.welcome_enabled.value === "" ? null : f.welcome_enabled.value === "true",
        welcome_text: f.welcome_text.value, welcome_rules: f.welcome_rules.value,
        timezone: f.timezone.value.trim(), faq_scope: f.faq_scope.value,
      };
      const button = f["settings-save"] || form.querySelector("button[type=submit]");
      button.disabled = true;
      button.textContent = t("common.saving");
      try {
        const fresh = await api("PATCH", "/console/api/groups/" + encodeURIComponent(id) + "/settings", body);
        form.querySelector("#welcome-preview").textContent = fresh.settings.welcome_preview;
        Console.message(form, t("common.saved"), "ok");
      } catch (err) {
        Console.message(form, err.message, "error");
      }
      button.disabled = false;
      button.textContent = t("common.save");
    });
    root.append(form);
    if (!g.direct) root.append(await pushLimits(id));
  }

  // 定时消息 limits of the group: quiet hours, daily cap, tags (the same settings as 定时 免打扰 / 定时 上限).
  async function pushLimits(id) {
    const path = "/console/api/groups/" + encodeURIComponent(id) + "/push-settings";
    const st = await api("GET", path);
    const disabled = !st.can_write;
    const form = h("form", {id: "push-limits-form", class: "card form"},
      h("h2", {}, t("groups.push_title")),
      h("label", {}, t("groups.quiet_hours"),
        h("input", {name: "quiet_hours", value: st.quiet_hours === null ? "" : st.quiet_hours || "关闭", maxlength: 32, disabled,
                    placeholder: t("groups.default_value", {value: st.default_quiet_hours || t("groups.none")})}),
        h("small", {class: "hint"}, t("groups.quiet_hours_hint", {zone: st.timezone}))),
      h("label", {}, t("groups.daily_cap"),
        h("input", {name: "daily_cap", type: "number", min: 0, max: st.max_daily_cap, disabled,
                    value: st.daily_cap === null ? "" : st.daily_cap,
                    placeholder: t("groups.default_value", {value: st.default_daily_cap || t("groups.no_cap")})}),
        h("small", {class: "hint"}, t("groups.daily_cap_hint"))),
      h("label", {}, t("groups.tags"),
        h("input", {name: "tags", value: st.tags.join(", "), disabled: disabled || !st.can_tag}),
        h("small", {class: "hint"}, t("groups.tags_hint"))),
      h("p", {class: "hint", id: "push-effective"}, t("groups.push_effective", {
        quiet: st.effective_quiet_hours || t("groups.none"), cap: st.effective_daily_cap || t("groups.no_cap")})),
      h("div", {class: "form-actions"},
        h("button", {type: "submit", class: "primary", disabled, id: "push-limits-save"}, t("common.save")),
        h("a", {href: "/console/push?new=1&group=" + encodeURIComponent(id)}, t("groups.new_push"))));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const f = form.elements;
      const body = {
        quiet_hours: f.quiet_hours.value.trim() === "" ? null : f.quiet_hours.value.trim(),
        daily_cap: f.daily_cap.value === "" ? null : Number(f.daily_cap.value),
      };
      if (st.can_tag) body.tags = f.tags.value.split(/[,，\s]+/).map((x) => x.trim()).filter(Boolean);
      try {
        const fresh = await api("PATCH", path, body);
        form.querySelector("#push-effective").textContent = t("groups.push_effective", {
          quiet: fresh.effective_quiet_hours || t("groups.none"), cap: fresh.effective_daily_cap || t("groups.no_cap")});
        Console.message(form, t("common.saved"), "ok");
      } catch (err) {
        Console.message(form, err.message, "error");
      }
    });
    return form;
  }

  Console.page("groups", async (root, ctx) => (ctx.params.group ? settings(root, ctx) : list(root, ctx)));
})();
