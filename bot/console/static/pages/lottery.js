/* 抽奖: the lotteries and a form to create one (title, keyword, prizes, deadline, eligibility); one lottery's
 * entrants, draw now, cancel, redraw an unclaimed prize (with a reason), the rounds, and the published proof
 * (commitment, seed, entrant-list hash, winners) with its verification, recomputed by the server as
 * `qunbot lottery verify` does.
 * API: GET/POST /console/api/lotteries, GET /console/api/lotteries/ID, GET …/ID/entrants,
 * POST …/ID/draw, POST …/ID/cancel, POST …/ID/redraw. */
(function () {
  const {api, h, t} = Console;
  let flash = null;  // a message to show once, after the page is drawn again

  function groupName(g) { return g.name || g.external_id; }
  function statusBadge(status) { return h("span", {class: "badge lottery-" + status}, t("lottery.status_" + status)); }
  function prizesText(prizes) { return prizes.map((p) => `${p.name}×${p.stock}`).join("、"); }

  // -- the list and the create form ------------------------------------------------------------------------

  async function list(root, ctx) {
    const p = ctx.params;
    const query = new URLSearchParams({limit: 50});
    if (p.group) query.set("group", p.group);
    if (p.status) query.set("status", p.status);
    const [data, groupData] = await Promise.all([
      api("GET", "/console/api/lotteries?" + query),
      api("GET", "/console/api/groups?per_page=200"),
    ]);
    const groups = groupData.groups.map((r) => r.group).filter((g) => !g.dismissed);
    const groupFilter = h("select", {"aria-label": t("lottery.group_filter"),
                                     onchange: (e) => Console.go({...p, group: e.target.value})},
      h("option", {value: ""}, t("lottery.all_groups")),
      groups.map((g) => h("option", {value: g.id, selected: String(p.group) === String(g.id)}, groupName(g))));
    const statusFilter = h("select", {"aria-label": t("lottery.status_filter"),
                                      onchange: (e) => Console.go({...p, status: e.target.value})},
      h("option", {value: ""}, t("lottery.all_states")),
      ["open", "drawing", "drawn", "cancelled"].map((s) => h("option", {value: s, selected: p.status === s}, t("lottery.status_" + s))));
    root.append(h("div", {class: "toolbar"}, groupFilter, statusFilter));
    if (ctx.me.can_write && groups.length) root.append(createForm(groups, p.group));
    root.append(Console.table([
      {label: t("lottery.col_id"), value: (l) => "#" + l.id},
      {label: t("lottery.col_title"), value: (l) => h("a", {href: "?lottery=" + l.id, class: "lottery-link",
        onclick: (e) => { e.preventDefault(); Console.go({lottery: l.id}); }}, l.title)},
      {label: t("lottery.col_group"), value: (l) => groupName(l.group)},
      {label: t("lottery.col_status"), value: (l) => statusBadge(l.status)},
      {label: t("lottery.col_deadline"), value: (l) => l.deadline_local},
      {label: t("lottery.col_entrants"), value: (l) => String(l.entrant_count), cls: "num"},
      {label: t("lottery.col_prizes"), value: (l) => prizesText(l.prizes), cls: "wrap"},
      {label: t("lottery.col_keyword"), value: (l) => l.keyword},
    ], data.lotteries.map((l) => Object.assign(l, {__attrs: {"data-lottery-id": l.id}})), {id: "lottery-table"}));
  }

  function prizeRow(name, stock) {
    const row = h("div", {class: "prize-row"},
      h("input", {name: "prize_name", value: name || "", placeholder: t("lottery.prize_name"), maxlength: 32,
                  "aria-label": t("lottery.prize_name")}),
      h("input", {name: "prize_stock", type: "number", min: 1, value: stock || 1, "aria-label": t("lottery.prize_stock")}),
      h("button", {type: "button", class: "link danger", onclick: () => row.remove(), "aria-label": t("lottery.prize_remove")}, "✕"));
    return row;
  }

  function createForm(groups, selected) {
    const prizes = h("div", {class: "prizes", id: "lottery-prizes"}, prizeRow(t("lottery.prize_example"), 1));
    const picker = h("input", {type: "datetime-local", "aria-label": t("lottery.pick_deadline")});
    const form = h("form", {class: "card form", id: "lottery-form"},
      h("h2", {}, t("lottery.create_title")),
      h("label", {"data-field": "group_id"}, t("lottery.field_group"), h("select", {name: "group_id"},
        groups.map((g) => h("option", {value: g.id, selected: String(selected) === String(g.id)}, groupName(g))))),
      h("label", {"data-field": "title"}, t("lottery.field_title"), h("input", {name: "title", maxlength: 64, required: true})),
      h("fieldset", {"data-field": "prizes"}, h("legend", {}, t("lottery.field_prizes")), prizes,
        h("button", {type: "button", id: "add-prize", onclick: () => prizes.append(prizeRow("", 1))}, t("lottery.add_prize")),
        h("small", {class: "hint"}, t("lottery.prizes_hint"))),
      h("label", {"data-field": "deadline"}, t("lottery.field_deadline"),
        h("input", {name: "deadline", maxlength: 64, required: true, placeholder: "2026-12-01 20:00 / 明天 20:00 / 30分钟后"}),
        picker, h("small", {class: "hint"}, t("lottery.deadline_hint"))),
      h("label", {"data-field": "keyword"}, t("lottery.field_keyword"), h("input", {name: "keyword", maxlength: 32,
        placeholder: t("lottery.keyword_placeholder")})),
      h("label", {"data-field": "min_days"}, t("lottery.field_min_days"), h("input", {name: "min_days", type: "number", min: 0, value: 0})),
      h("label", {class: "check"}, h("input", {type: "checkbox", name: "exclude_admins"}), " " + t("lottery.field_exclude_admins")),
      h("div", {class: "form-actions"}, h("button", {type: "submit", class: "primary", id: "lottery-create"}, t("lottery.create"))));
    picker.addEventListener("change", () => {
      if (picker.value) form.elements.deadline.value = picker.value.replace("T", " ");
    });
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const f = form.elements;
      const body = {
        group_id: Number(f.group_id.value), title: f.title.value, deadline: f.deadline.value.trim(),
        keyword: f.keyword.value.trim() || null, min_days: Number(f.min_days.value || 0),
        exclude_admins: f.exclude_admins.checked,
        prizes: [...prizes.querySelectorAll(".prize-row")].map((row) => ({
          name: row.querySelector("[name=prize_name]").value.trim(),
          stock: Number(row.querySelector("[name=prize_stock]").value || 1)})).filter((x) => x.name),
      };
      for (const bad of form.querySelectorAll(".invalid")) bad.classList.remove("invalid");
      const button = form.querySelector("#lottery-create");
      button.disabled = true;
      try {
        const made = await api("POST", "/console/api/lotteries", body);
        Console.go({lottery: made.id});
      } catch (err) {
        const box = err.field && form.querySelector(`[data-field="${err.field}"]`);
        if (box) box.classList.add("invalid");
        Console.message(form, err.message, "error");
        button.disabled = false;
      }
    });
    return form;
  }

  // -- one lottery -------------------------------------------------------------------------------------------

  async function detail(root, ctx) {
    const id = ctx.params.lottery;
    const page = Number(ctx.params.page || 1);
    const [l, people] = await Promise.all([
      api("GET", "/console/api/lotteries/" + encodeURIComponent(id)),
      api("GET", `/console/api/lotteries/${encodeURIComponent(id)}/entrants?per_page=50&page=${page}`),
    ]);
    root.append(h("p", {}, h("a", {href: "/console/lottery", onclick: (e) => { e.preventDefault(); Console.go({}); }}, "← " + t("common.back"))));
    root.append(h("h2", {id: "lottery-title"}, `#${l.id} ${l.title} `, statusBadge(l.status)));
    if (flash) {
      root.append(h("p", {class: "message ok", id: "lottery-flash", role: "status"}, flash));
      flash = null;
    }
    root.append(h("div", {class: "kpis small"},
      [[t("lottery.col_entrants"), l.entrant_count, "entrants"], [t("lottery.col_deadline"), l.deadline_local, "deadline"],
       [t("lottery.col_keyword"), l.keyword, "keyword"], [t("lottery.col_group"), groupName(l.group), "group"]].map(([label, value, key]) =>
        h("div", {class: "kpi", "data-kpi": key}, h("span", {class: "kpi-value"}, String(value)), h("span", {class: "kpi-label"}, label)))));
    const conditions = [];
    if (l.min_days) conditions.push(t("lottery.min_days_note", {days: l.min_days}));
    if (l.exclude_admins) conditions.push(t("lottery.no_admins_note"));
    root.append(h("p", {class: "hint"}, t("lottery.how_to_join", {keyword: l.keyword, timezone: l.timezone}),
      conditions.length ? " " + conditions.join("；") : ""));

    if (l.can_write && l.status === "open") {
      const actions = h("div", {class: "toolbar", id: "lottery-actions"},
        h("button", {type: "button", class: "primary", id: "draw-btn", onclick: async () => {
          if (!confirm(t("lottery.confirm_draw", {title: l.title, count: l.entrant_count}))) return;
          await act("draw");
        }}, t("lottery.draw_now")),
        h("button", {type: "button", class: "danger", id: "cancel-btn", onclick: async () => {
          if (!confirm(t("lottery.confirm_cancel", {title: l.title}))) return;
          await act("cancel");
        }}, t("lottery.cancel")));
      async function act(what) {
        for (const b of actions.querySelectorAll("button")) b.disabled = true;
        try {
          await api("POST", `/console/api/lotteries/${l.id}/${what}`);
          ctx.rerender();
        } catch (err) {
          Console.message(actions, err.message, "error");
          for (const b of actions.querySelectorAll("button")) b.disabled = false;
        }
      }
      root.append(actions);
    }

    root.append(h("section", {class: "card"}, h("h3", {}, t("lottery.prizes_title")),
      Console.table([
        {label: t("lottery.prize_name"), value: (p) => p.name},
        {label: t("lottery.prize_stock"), value: (p) => String(p.stock), cls: "num"},
        {label: t("lottery.prize_points"), value: (p) => p.points ? String(p.points) : ""},
      ], l.prizes, {id: "prizes-table"})));

    if (l.status === "drawn") {
      const points = new Set(l.prizes.filter((p) => p.points).map((p) => p.name));
      const redrawable = (w) => l.can_write && !w.forfeited && !points.has(w.prize);
      const section = h("section", {class: "card", id: "winners"}, h("h3", {}, t("lottery.winners_title")));
      const columns = [
        {label: t("lottery.prize_name"), value: (w) => `${w.prize} #${w.slot + 1}`},
        {label: t("lottery.col_winner"), value: (w) => `${w.name} (${w.user})`},
        {label: t("lottery.col_pick"), value: (w) => String(w.pick), cls: "num"},
        {label: t("lottery.col_note"), value: (w) => w.forfeited ? t("lottery.forfeited", {reason: w.forfeit_reason || ""})
          : w.replaces_pick !== null ? t("lottery.replaces", {pick: w.replaces_pick}) : ""},
      ];
      if (l.can_write) {
        columns.push({label: "", value: (w) => redrawable(w) ? h("button", {type: "button", class: "link redraw-btn",
          onclick: () => openRedraw(section, l, w, ctx)}, t("lottery.redraw")) : ""});
      }
      section.append(Console.table(columns, l.winners.map((w) => Object.assign(w, {__attrs: {"data-user": w.user,
        "data-pick": w.pick, class: w.forfeited ? "forfeited" : null}})), {id: "winners-table"}));
      root.append(section);
    }
    if (l.rounds.length) {
      root.append(h("section", {class: "card"}, h("h3", {}, t("lottery.rounds_title")),
        Console.table([
          {label: t("lottery.col_round"), value: (r) => String(r.number + 1), cls: "num"},
          {label: t("lottery.col_kind"), value: (r) => t("lottery.kind_" + r.kind)},
          {label: t("lottery.col_picks"), value: (r) => r.picks > 1 ? `${r.first_pick}–${r.first_pick + r.picks - 1}` : String(r.first_pick)},
          {label: t("lottery.col_actor"), value: (r) => r.actor},
          {label: t("lottery.col_reason"), value: (r) => r.reason, cls: "wrap"},
          {label: t("lottery.col_at"), value: (r) => Console.fmtTime(r.at, l.timezone)},
        ], l.rounds, {id: "rounds-table"})));
    }

    const proof = l.proof;
    const rows = [
      ["commitment", t("lottery.proof_commitment"), proof.commitment],
      ["seed", t("lottery.proof_seed"), proof.seed || t("lottery.seed_secret")],
      ["entrants_hash", t("lottery.proof_entrants_hash"), proof.entrants_hash || t("lottery.not_yet")],
      ["entrant_count", t("lottery.proof_entrant_count"), String(proof.entrant_count)],
    ];
    const v = l.verification;
    const verdict = v === null ? h("p", {class: "hint", id: "verification"}, t("lottery.verify_after_draw"))
      : v.ok ? h("p", {class: "message ok", id: "verification", "data-ok": "1"}, "✔ " + t("lottery.verified", {picks: v.picks, count: proof.entrant_count}))
        : h("div", {class: "message error", id: "verification", "data-ok": "0"}, "✘ " + t("lottery.not_verified"),
          h("ul", {}, v.problems.map((x) => h("li", {}, x))));
    root.append(h("section", {class: "card", id: "proof"}, h("h3", {}, t("lottery.proof_title")),
      h("dl", {class: "proof"}, rows.flatMap(([key, label, value]) => [h("dt", {}, label), h("dd", {"data-proof": key}, h("code", {}, value))])),
      verdict, h("p", {class: "hint"}, t("lottery.verify_hint", {id: l.id}))));

    root.append(h("section", {class: "card"}, h("h3", {}, t("lottery.entrants_title", {total: people.total})),
      Console.table([
        {label: t("lottery.col_name"), value: (e) => e.name},
        {label: t("lottery.col_user"), value: (e) => e.user},
        {label: t("lottery.col_joined"), value: (e) => Console.fmtTime(e.joined_at, l.timezone)},
      ], people.entrants, {id: "entrants-table"}),
      Console.pager(people.total, people.page, people.per_page, (n) => Console.go({lottery: l.id, page: n}))));
  }

  // The redraw form under the winners: the reason (prefilled 未领奖), then the server forfeits the winner and
  // gives the prize to the next pick of the same seeded shuffle; the page shows the new proof, verified again.
  function openRedraw(section, l, w, ctx) {
    const old = section.querySelector("#redraw-form");
    if (old) old.remove();
    const form = h("form", {class: "card form", id: "redraw-form"},
      h("h3", {}, t("lottery.redraw_title", {prize: w.prize, name: `${w.name} (${w.user})`})),
      h("p", {class: "hint"}, t("lottery.redraw_hint")),
      h("label", {"data-field": "reason"}, t("lottery.redraw_reason"),
        h("input", {name: "reason", value: t("lottery.redraw_default_reason"), maxlength: 255, required: true})),
      h("div", {class: "form-actions"},
        h("button", {type: "submit", class: "primary", id: "redraw-confirm"}, t("lottery.redraw_confirm")),
        h("button", {type: "button", onclick: () => form.remove()}, t("lottery.redraw_cancel"))));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const reason = form.elements.reason.value.trim();
      const button = form.querySelector("#redraw-confirm");
      button.disabled = true;
      try {
        const fresh = await api("POST", `/console/api/lotteries/${l.id}/redraw`, {prize: w.prize, winner: w.user, reason});
        const now = fresh.winners.find((x) => x.replaces_pick === w.pick);
        flash = t("lottery.redrawn", {name: w.name, prize: w.prize, new: now ? `${now.name} (${now.user})` : ""});
        ctx.rerender();
      } catch (err) {
        Console.message(form, err.message, "error");
        button.disabled = false;
      }
    });
    section.append(form);
    form.elements.reason.focus();
  }

  Console.page("lottery", async (root, ctx) => (ctx.params.lottery ? detail(root, ctx) : list(root, ctx)));
})();
