/* 成员: search members, and a member's profile (groups, points, level, streak, activity, joins and leaves,
 * ledger, invites). API: GET /console/api/members, GET /console/api/members/ID. */
(function () {
  const {api, h, t} = Console;
  const groupName = (g) => (g.name || g.external_id) + (g.direct ? "（" + t("groups.direct") + "）" : "");
  const memberName = (m) => m.name || m.external_id;
  const kind = (k) => (k ? t("members.kind_" + k) : "");
  const scene = (value) => { if (!value) return ""; const k = t("members.scene_" + value); return k.startsWith("members.") ? value : k; };

  async function list(root, ctx) {
    const page = Number(ctx.params.page || 1);
    const q = ctx.params.q || "";
    const group = ctx.params.group || "";
    const query = new URLSearchParams({page, per_page: 50});
    if (q) query.set("q", q);
    if (group) query.set("group", group);
    const data = await api("GET", "/console/api/members?" + query);
    const input = h("input", {type: "search", name: "q", value: q, placeholder: t("members.search_placeholder"),
                              "aria-label": t("common.search")});
    root.append(h("form", {class: "toolbar", onsubmit: (e) => { e.preventDefault(); Console.go({q: input.value, group, page: 1}); }},
      input, h("button", {type: "submit"}, t("common.search")),
      group ? h("button", {type: "button", class: "link", onclick: () => Console.go({q})}, t("audit.clear") + " #" + group) : null));
    root.append(Console.table([
      {label: t("members.col_name"), value: (r) => h("a", {href: "?member=" + r.member.id, class: "member-link",
        onclick: (e) => { e.preventDefault(); Console.go({member: r.member.id}); }}, memberName(r.member))},
      {label: t("members.col_id"), value: (r) => r.member.external_id},
      {label: t("members.col_channel"), value: (r) => r.member.channel + (r.member.kind ? " · " + kind(r.member.kind) : "")},
      {label: t("members.col_groups"), value: (r) => String(r.groups), cls: "num"},
      {label: t("members.col_last_active"), value: (r) => Console.fmtTime(r.last_active)},
    ], data.members, {id: "members-table"}));
    root.append(Console.pager(data.total, data.page, data.per_page, (n) => Console.go({q, group, page: n})));
  }

  async function profile(root, ctx) {
    const p = await api("GET", "/console/api/members/" + encodeURIComponent(ctx.params.member));
    root.append(h("p", {}, h("a", {href: "/console/members", onclick: (e) => { e.preventDefault(); Console.go({}); }},
      "← " + t("common.back"))));
    root.append(h("h2", {id: "profile-title"}, t("members.profile_title", {name: memberName(p.member)})));
    root.append(h("p", {class: "muted"}, `${p.member.channel} · ${p.member.external_id}` + (p.member.kind ? " · " + kind(p.member.kind) : "")));
    root.append(h("section", {class: "card"}, h("h3", {}, t("members.groups_title")), Console.table([
      {label: t("members.col_group"), value: (r) => groupName(r.group)},
      {label: t("members.col_balance"), value: (r) => String(r.balance), cls: "num"},
      {label: t("members.col_level"), value: (r) => r.level},
      {label: t("members.col_streak"), value: (r) => String(r.streak), cls: "num"},
      {label: t("members.col_active30"), value: (r) => String(r.active_days_30), cls: "num"},
      {label: t("members.col_last_active"), value: (r) => Console.fmtTime(r.last_active)},
    ], p.standings, {id: "standings-table"})));
    root.append(h("section", {class: "card"}, h("h3", {}, t("members.stays_title")), Console.table([
      {label: t("members.col_group"), value: (r) => groupName(r.group)},
      {label: t("members.col_joined"), value: (r) => Console.fmtTime(r.joined_at)},
      {label: t("members.col_join_scene"), value: (r) => scene(r.join_scene)},
      {label: t("members.col_inviter"), value: (r) => (r.inviter ? memberName(r.inviter) : "")},
      {label: t("members.col_left"), value: (r) => (r.left_at ? Console.fmtTime(r.left_at) : t("members.still_in"))},
      {label: t("members.col_leave_scene"), value: (r) => scene(r.leave_scene)},
    ], p.stays, {id: "stays-table"})));
    root.append(h("section", {class: "card"}, h("h3", {}, t("members.ledger_title")), Console.table([
      {label: t("members.col_at"), value: (r) => Console.fmtTime(r.at)},
      {label: t("members.col_group"), value: (r) => groupName(r.group)},
      {label: t("members.col_delta"), value: (r) => (r.delta > 0 ? "+" : "") + r.delta, cls: "num"},
      {label: t("members.col_kind"), value: (r) => { const k = t("members.ledger_" + r.kind); return k.startsWith("members.") ? r.kind : k; }},
      {label: t("members.col_reason"), value: (r) => r.reason},
    ], p.ledger, {id: "ledger-table"})));
    root.append(h("section", {class: "card"}, h("h3", {}, t("members.invites_title")), Console.table([
      {label: t("members.col_invited"), value: (r) => h("a", {href: "?member=" + r.member.id,
        onclick: (e) => { e.preventDefault(); Console.go({member: r.member.id}); }}, memberName(r.member))},
      {label: t("members.col_group"), value: (r) => groupName(r.group)},
      {label: t("members.col_joined"), value: (r) => Console.fmtTime(r.joined_at)},
    ], p.invites, {id: "invites-table"})));
  }

  Console.page("members", async (root, ctx) => (ctx.params.member ? profile(root, ctx) : list(root, ctx)));
})();
