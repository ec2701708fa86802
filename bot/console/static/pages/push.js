/* 定时消息: the posts (list, pause, resume, remove), the create / edit form with a live preview (the next run
 * times and the content as a chosen group gets it, asked of the server as the user types), and the runs with
 * each delivery's state and reason.
 * API: GET/POST /console/api/push/posts, GET/PUT/DELETE /console/api/push/posts/ID, POST …/ID/pause|resume,
 * POST /console/api/push/preview, GET /console/api/push/runs, GET /console/api/push/tags. */
(function () {
  const {api, h, t} = Console;
  const ZONES = ["Asia/Shanghai", "Asia/Hong_Kong", "Asia/Taipei", "Asia/Singapore", "Asia/Tokyo", "Asia/Seoul",
                 "Europe/London", "Europe/Berlin", "America/New_York", "America/Los_Angeles", "UTC"];
  const EXAMPLES = ["每天 9:00", "工作日 8:30", "每周一 10:00", "每2小时", "0 9 * * 1-5", "明天 9:00"];
  const KINDS = ["text", "markdown", "image", "news"];
  const PREVIEW_DELAY = 350;

  function groupName(g) { return g.name || g.external_id; }

  function targetsText(post) {
    if (post.target_kind === "groups") return post.groups.map(groupName).join("、") || "—";
    const where = post.target_channel ? t("push.on_channel", {channel: post.target_channel}) : "";
    return (post.target_kind === "tag" ? t("push.target_tag_of", {tag: post.target_tag}) : t("push.target_all")) + where;
  }

  function excerpt(text, size) {
    const flat = (text || "").split(/\s+/).join(" ");
    return flat.length <= size ? flat : flat.slice(0, size - 1) + "…";
  }

  function stateBadge(state) { return h("span", {class: "badge state-" + state}, t("push.state_" + state)); }

  // -- the list ----------------------------------------------------------------------------------------

  async function list(root, ctx) {
    const removed = ctx.params.removed === "1";
    const data = await api("GET", "/console/api/push/posts" + (removed ? "?removed=true" : ""));
    const bar = h("div", {class: "toolbar"},
      ctx.me.can_write ? h("button", {type: "button", class: "primary", id: "push-new",
                                      onclick: () => Console.go({new: 1})}, t("push.new")) : null,
      h("a", {href: "?runs=all", onclick: (e) => { e.preventDefault(); Console.go({runs: "all"}); }}, t("push.all_runs")),
      h("label", {class: "inline"}, h("input", {type: "checkbox", checked: removed,
        onchange: (e) => Console.go({removed: e.target.checked ? 1 : ""})}), " " + t("push.show_removed")));
    root.append(bar);
    if (ctx.params.saved) Console.message(root, t("push.saved", {id: ctx.params.saved}), "ok");
    async function act(post, action) {
      try {
        if (action === "remove") {
          if (!confirm(t("push.confirm_remove", {id: post.id}))) return;
          await api("DELETE", "/console/api/push/posts/" + post.id);
        } else {
          await api("POST", `/console/api/push/posts/${post.id}/${action}`);
        }
        ctx.rerender();
      } catch (err) { Console.message(root, err.message, "error"); }
    }
    root.append(Console.table([
      {label: t("push.col_id"), value: (x) => "#" + x.id + (x.name ? " " + x.name : "")},
      {label: t("push.col_state"), value: (x) => stateBadge(x.state)},
      {label: t("push.col_schedule"), value: (x) => h("div", {}, x.schedule_text || x.schedule,
        h("div", {class: "hint"}, x.timezone))},
      {label: t("push.col_targets"), value: (x) => targetsText(x)},
      {label: t("push.col_next"), value: (x) => x.next_runs.length ? x.next_runs[0].local + " " + x.next_runs[0].weekday : "—",
       cls: "next-run"},
      {label: t("push.col_content"), value: (x) => h("div", {}, h("span", {class: "badge"}, t("push.kind_" + x.kind)), " ",
        excerpt(x.content, 60)), cls: "wrap"},
      {label: "", value: (x) => h("span", {class: "actions"},
        x.can_write && x.source !== "config" ? h("a", {href: "?edit=" + x.id, class: "post-edit",
          onclick: (e) => { e.preventDefault(); Console.go({edit: x.id}); }}, t("push.edit")) : null,
        x.can_write && x.state === "on" ? h("button", {type: "button", class: "link post-pause", onclick: () => act(x, "pause")}, t("push.pause")) : null,
        x.can_write && x.state === "paused" ? h("button", {type: "button", class: "link post-resume", onclick: () => act(x, "resume")}, t("push.resume")) : null,
        h("a", {href: "?runs=" + x.id, class: "post-runs", onclick: (e) => { e.preventDefault(); Console.go({runs: x.id}); }}, t("push.runs")),
        x.can_write ? h("button", {type: "button", class: "link danger post-remove", onclick: () => act(x, "remove")}, t("push.remove")) : null)},
    ], data.posts.map((x) => Object.assign(x, {__attrs: {"data-post-id": x.id}})), {id: "push-table"}));
    if (!data.posts.length) root.append(h("p", {class: "hint"}, t("push.empty_hint")));
  }

  // -- the form with its live preview --------------------------------------------------------------------

  async function editor(root, ctx) {
    const editId = ctx.params.edit;
    const [post, groupData, tagData, listing] = await Promise.all([
      editId ? api("GET", "/console/api/push/posts/" + encodeURIComponent(editId)) : null,
      api("GET", "/console/api/groups?per_page=200"),
      api("GET", "/console/api/push/tags"),
      api("GET", "/console/api/push/posts"),
    ]);
    const groups = groupData.groups.map((r) => r.group).filter((g) => !g.dismissed && !g.direct);
    const broad = listing.can_target_broadly;
    const x = post || {name: "", schedule_text: "", timezone: listing.timezone, target_kind: "groups", groups: [],
                       target_tag: "", target_channel: "", kind: "text", content: "", payload: {}};
    const chosen = new Set(x.groups.map((g) => g.id));
    if (!post && ctx.params.group) chosen.add(Number(ctx.params.group));

    root.append(h("p", {}, h("a", {href: "/console/push", onclick: (e) => { e.preventDefault(); Console.go({}); }}, "← " + t("common.back"))));
    root.append(h("h2", {id: "push-form-title"}, post ? t("push.edit_title", {id: post.id}) : t("push.new_title")));

    function field(name, label, control, hint) {
      return h("label", {"data-field": name}, label, control, hint ? h("small", {class: "hint"}, hint) : null,
        h("small", {class: "field-error", "data-error-for": name}));
    }
    const form = h("form", {id: "push-form", class: "card form"},
      field("schedule", t("push.field_schedule"),
        h("input", {name: "schedule", value: x.schedule_text, maxlength: 128, required: true, autocomplete: "off",
                    placeholder: "每天 9:00"}),
        t("push.schedule_hint")),
      h("div", {class: "chips"}, EXAMPLES.map((ex) => h("button", {type: "button", class: "chip", onclick: () => {
        form.elements.schedule.value = ex; schedulePreview(); }}, ex))),
      field("timezone", t("push.field_timezone"),
        h("input", {name: "timezone", value: x.timezone, list: "push-zones", maxlength: 64}),
        t("push.timezone_hint", {zone: listing.timezone})),
      h("datalist", {id: "push-zones"}, ZONES.map((z) => h("option", {value: z}))),
      ...Console.targetFields({x, groups, chosen, broad, field, prefix: "push", label: t("push.field_target"),
                               legend: t("push.field_groups"),
                               tags: tagData.tags.map((tg) => tg.tag)}),
      field("kind", t("push.field_kind"), h("select", {name: "kind"}, KINDS.map((k) =>
        h("option", {value: k, selected: x.kind === k}, t("push.kind_" + k))))),
      field("content", t("push.field_content"),
        h("textarea", {name: "content", rows: 5, maxlength: 4000}, x.content),
        t("push.content_hint")),
      h("div", {"data-for": "payload"}, field("payload", t("push.field_payload"),
        h("textarea", {name: "payload", rows: 3, placeholder: '{"url": "https://…"}'},
          x.payload && Object.keys(x.payload).length ? JSON.stringify(x.payload) : ""), t("push.payload_hint"))),
      field("name", t("push.field_name"), h("input", {name: "name", value: x.name || "", maxlength: 64}), t("push.name_hint")),
      post ? null : h("label", {class: "check"}, h("input", {type: "checkbox", name: "enabled", checked: true}), " " + t("push.enabled_now")),
      h("div", {class: "form-actions"},
        h("button", {type: "submit", class: "primary", id: "push-save"}, post ? t("common.save") : t("push.create")),
        h("button", {type: "button", onclick: () => Console.go({})}, t("push.cancel"))));

    const previewGroup = h("select", {name: "preview_group", id: "preview-group", "aria-label": t("push.preview_for")},
      h("option", {value: ""}, t("push.preview_first_target")), groups.map((g) => h("option", {value: g.id}, groupName(g))));
    const preview = h("aside", {class: "card preview-pane", id: "push-preview", "aria-live": "polite"},
      h("h3", {}, t("push.preview_title")),
      h("p", {class: "hint", id: "preview-schedule"}),
      h("h4", {}, t("push.preview_runs")),
      h("ol", {id: "preview-runs"}),
      h("h4", {}, t("push.preview_content"), " ", previewGroup),
      h("pre", {id: "preview-content"}),
      h("div", {id: "preview-attachment"}),
      h("ul", {class: "problems", id: "preview-problems"}));
    root.append(h("div", {class: "editor"}, form, preview));

    function body() {
      const f = form.elements;
      let payload = null;
      const raw = ["image", "news"].includes(f.kind.value) ? f.payload.value.trim() : "";
      if (raw) {
        try { payload = JSON.parse(raw); } catch (err) { payload = undefined; }
      }
      return {
        name: f.name.value.trim() || null, schedule: f.schedule.value, timezone: f.timezone.value.trim() || null,
        target_kind: f.target_kind.value,
        group_ids: [...form.querySelectorAll("input[name=group_ids]:checked")].map((c) => Number(c.value)),
        tag: f.tag.value.trim() || null, channel: f.channel.value || null, kind: f.kind.value,
        content: f.content.value, payload: payload === undefined ? {__invalid__: raw} : payload,
      };
    }
    function showTargets() {
      const kind = form.elements.target_kind.value;
      for (const box of form.querySelectorAll("[data-for]")) {
        const want = box.dataset.for;
        box.hidden = want === "payload" ? !["image", "news"].includes(form.elements.kind.value)
          : want === "broad" ? kind === "groups" : want !== kind;
      }
    }
    function showProblems(problems) {
      for (const slot of form.querySelectorAll(".field-error")) slot.textContent = "";
      for (const bad of form.querySelectorAll(".invalid")) bad.classList.remove("invalid");
      for (const problem of problems) {
        const slot = form.querySelector(`[data-error-for="${problem.field}"]`);
        if (slot) slot.textContent = problem.message;
        const input = form.elements[problem.field];
        if (input && input.classList) input.classList.add("invalid");
      }
      preview.querySelector("#preview-problems").replaceChildren(...problems.map((p) => h("li", {}, p.message)));
    }
    let sequence = 0;
    let timer = null;
    // A new, untouched form shows no problems yet (they appear once the user starts typing).
    let touched = Boolean(post);
    async function runPreview() {
      const mine = ++sequence;
      const b = body();
      const badJson = Boolean(b.payload && b.payload.__invalid__ !== undefined);
      if (badJson) b.payload = null;
      b.post_id = post ? post.id : null;
      b.group_id = previewGroup.value ? Number(previewGroup.value) : null;
      let out;
      try {
        out = await api("POST", "/console/api/push/preview", b);
      } catch (err) {
        if (mine === sequence) showProblems([{field: err.field || "schedule", message: err.message}]);
        return;
      }
      if (mine !== sequence) return;  // an older answer arriving after a newer one
      if (badJson) out.problems = [{field: "payload", message: t("push.payload_not_json")},
                                   ...out.problems.filter((p) => p.field !== "payload")];
      showProblems(touched ? out.problems : []);
      preview.querySelector("#preview-schedule").textContent = out.schedule
        ? t("push.preview_reads", {schedule: out.schedule, timezone: out.timezone}) : "";
      preview.querySelector("#preview-runs").replaceChildren(...(out.next_runs.length
        ? out.next_runs.map((r) => h("li", {"data-at": r.at}, `${r.local} ${r.weekday}`))
        : [h("li", {class: "hint"}, out.problems.some((p) => p.field === "schedule" || p.field === "timezone")
            ? t("push.preview_no_schedule") : t("push.preview_never"))]));
      preview.querySelector("#preview-content").textContent = out.content === null ? "" : out.content;
      preview.querySelector("#preview-content").dataset.group = out.group ? out.group.id : "";
      const att = out.attachment;
      preview.querySelector("#preview-attachment").replaceChildren(att ? h("p", {class: "hint"},
        att.kind === "image" ? t("push.preview_image", {url: att.url || "base64"})
          : t("push.preview_news", {count: (att.articles || []).length})) : "");
      preview.dataset.ready = String(mine);
    }
    function schedulePreview() {
      touched = true;
      clearTimeout(timer);
      timer = setTimeout(runPreview, PREVIEW_DELAY);
    }
    form.addEventListener("input", schedulePreview);
    form.addEventListener("change", () => { showTargets(); schedulePreview(); });
    previewGroup.addEventListener("change", schedulePreview);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const b = body();
      if (b.payload && b.payload.__invalid__ !== undefined) {
        showProblems([{field: "payload", message: t("push.payload_not_json")}]);
        return;
      }
      if (!post) b.enabled = form.elements.enabled.checked;
      const button = form.querySelector("#push-save");
      button.disabled = true;
      try {
        const saved = post ? await api("PUT", "/console/api/push/posts/" + post.id, b)
          : await api("POST", "/console/api/push/posts", b);
        Console.go({saved: saved.id});
      } catch (err) {
        showProblems([{field: err.field || "schedule", message: err.message}]);
        Console.message(form, err.message, "error");
        button.disabled = false;
      }
    });
    showTargets();
    if (!ctx.me.can_write) for (const input of form.elements) input.disabled = true;
    await runPreview();
  }

  // -- runs and deliveries ---------------------------------------------------------------------------------

  async function runs(root, ctx) {
    const which = ctx.params.runs;
    const query = new URLSearchParams({limit: 30});
    if (which !== "all") query.set("post", which);
    if (ctx.params.state) query.set("state", ctx.params.state);
    const data = await api("GET", "/console/api/push/runs?" + query);
    root.append(h("p", {}, h("a", {href: "/console/push", onclick: (e) => { e.preventDefault(); Console.go({}); }}, "← " + t("common.back"))));
    root.append(h("h2", {id: "runs-title"}, data.post
      ? t("push.runs_title", {id: data.post.id, name: data.post.name || excerpt(data.post.content, 20)}) : t("push.all_runs")));
    if (data.post) {
      root.append(h("p", {class: "hint"}, `${data.post.schedule_text || data.post.schedule}（${data.post.timezone}）→ ${targetsText(data.post)}`));
    }
    const sm = data.summary;
    root.append(h("div", {class: "kpis small", id: "runs-summary"},
      [["runs", sm.runs], ["late", sm.late], ["skipped_runs", sm.skipped],
       ...["sent", "pending", "sending", "awaiting", "failed", "skipped"].map((k) => [k, sm.deliveries[k]])].map(([key, value]) =>
        h("div", {class: "kpi", "data-kpi": key}, h("span", {class: "kpi-value"}, String(value)),
          h("span", {class: "kpi-label"}, t("push.sum_" + key))))));
    const filter = h("select", {"aria-label": t("push.filter_state"), onchange: (e) => Console.go({runs: which, state: e.target.value})},
      h("option", {value: ""}, t("push.all_states")),
      ["pending", "sending", "awaiting", "sent", "failed", "skipped"].map((k) => h("option", {value: k, selected: ctx.params.state === k}, t("push.delivery_" + k))));
    root.append(h("div", {class: "toolbar"}, h("label", {}, t("push.filter_state") + " ", filter)));
    if (!data.runs.length) root.append(h("p", {class: "hint", id: "no-runs"}, t("push.no_runs")));
    for (const run of data.runs) {
      const flag = run.status === "skipped" ? h("span", {class: "badge state-skipped"}, t("push.run_skipped", {reason: run.reason}))
        : run.late ? h("span", {class: "badge state-late"}, t("push.run_late")) : h("span", {class: "badge state-on"}, t("push.run_on_time"));
      root.append(h("section", {class: "card run", "data-run-id": run.id},
        h("h3", {}, t("push.run_heading", {local: Console.fmtTime(run.scheduled_at, run.timezone), id: run.post_id, name: run.post_name || ""}), " ", flag,
          h("span", {class: "hint"}, " " + t("push.run_targets", {count: run.targets}))),
        Console.table([
          {label: t("push.col_group"), value: (d) => (d.group_name || d.group) + " · " + d.channel},
          {label: t("push.col_delivery"), value: (d) => h("span", {class: "badge delivery-" + d.status}, t("push.delivery_" + d.status))},
          {label: t("push.col_attempts"), value: (d) => String(d.attempts), cls: "num"},
          {label: t("push.col_when"), value: (d) => d.sent_at ? Console.fmtTime(d.sent_at, run.timezone)
            : d.status === "pending" ? t("push.next_attempt", {at: Console.fmtTime(d.next_attempt_at, run.timezone)}) : ""},
          {label: t("push.col_reason"), value: (d) => d.reason, cls: "wrap"},
        ], run.deliveries.map((d) => Object.assign(d, {__attrs: {"data-status": d.status}})), {class: "deliveries"})));
    }
  }

  Console.page("push", async (root, ctx) => {
    if (ctx.params.runs) return runs(root, ctx);
    if (ctx.params.edit || ctx.params.new) return editor(root, ctx);
    return list(root, ctx);
  });
})();
