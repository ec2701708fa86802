/* 常见问题: search, add, edit and delete entries (a group's own, or the global ones for ops admins), CSV import
 * (a dry-run preview of what would change and the bad lines first) and export, and the unanswered questions
 * with "设为问答", which pre-fills the form and takes the question off the list once the entry is saved.
 * API: GET/POST /console/api/faq, PUT/DELETE /console/api/faq/ID, GET /console/api/faq/export,
 * POST /console/api/faq/import, GET /console/api/faq/unanswered, DELETE /console/api/faq/unanswered/ID. */
(function () {
  const {api, h, t} = Console;

  function groupName(g) {
    return g ? (g.name || g.external_id) + (g.direct ? "（" + t("groups.direct") + "）" : "") : t("faq.global");
  }

  function scopeOptions(groups, canGlobal, selected) {
    const options = [];
    if (canGlobal) options.push(h("option", {value: "global", selected: selected === "global"}, t("faq.global")));
    for (const g of groups) {
      options.push(h("option", {value: String(g.id), selected: String(selected) === String(g.id)}, groupName(g)));
    }
    return options;
  }

  function download(filename, text) {
    const url = URL.createObjectURL(new Blob(["\ufeff" + text], {type: "text/csv;charset=utf-8"}));
    const link = h("a", {href: url, download: filename});
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  Console.page("faq", async (root, ctx) => {
    const p = ctx.params;
    const page = Number(p.page || 1);
    const query = new URLSearchParams({page, per_page: 50, scope: p.scope || "all"});
    if (p.q) query.set("q", p.q);
    if (p.group) query.set("group", p.group);
    const [data, groupData, unanswered] = await Promise.all([
      api("GET", "/console/api/faq?" + query),
      api("GET", "/console/api/groups?per_page=200"),
      api("GET", "/console/api/faq/unanswered" + (p.group ? "?group=" + encodeURIComponent(p.group) : "")),
    ]);
    const groups = groupData.groups.map((r) => r.group).filter((g) => !g.dismissed);
    const canWrite = ctx.me.can_write;
    const canGlobal = data.can_write_global;

    // -- the filter bar --------------------------------------------------------------------------------
    const search = h("input", {type: "search", name: "q", value: p.q || "", placeholder: t("faq.search_placeholder"),
                               "aria-label": t("common.search")});
    const scope = h("select", {name: "scope", "aria-label": t("faq.scope")},
      ["all", "global", "group"].map((v) => h("option", {value: v, selected: (p.scope || "all") === v}, t("faq.scope_" + v))));
    const groupFilter = h("select", {name: "group", "aria-label": t("faq.group_filter")},
      h("option", {value: ""}, t("faq.all_groups")),
      groups.map((g) => h("option", {value: g.id, selected: String(p.group) === String(g.id)}, groupName(g))));
    root.append(h("form", {class: "toolbar", id: "faq-filter", onsubmit: (e) => {
      e.preventDefault();
      Console.go({q: search.value, scope: scope.value, group: groupFilter.value, page: 1});
    }}, search, scope, groupFilter, h("button", {type: "submit"}, t("common.search"))));

    // -- add / edit ------------------------------------------------------------------------------------
    const writable = canWrite ? groups : [];
    const defaultScope = p.group || (canGlobal ? "global" : writable.length ? String(writable[0].id) : "");
    const form = h("form", {id: "faq-form", class: "card form", hidden: !canWrite},
      h("h2", {id: "faq-form-title"}, t("faq.add_title")),
      h("label", {}, t("faq.field_scope"),
        h("select", {name: "scope"}, scopeOptions(writable, canGlobal, defaultScope))),
      h("label", {}, t("faq.field_question"), h("input", {name: "question", maxlength: 255, required: true,
                                                           placeholder: t("faq.question_placeholder")})),
      h("label", {}, t("faq.field_answer"), h("textarea", {name: "answer", rows: 4, maxlength: 4000, required: true})),
      h("label", {}, t("faq.field_aliases"), h("input", {name: "aliases", placeholder: t("faq.aliases_placeholder")}),
        h("small", {class: "hint"}, t("faq.aliases_hint"))),
      h("input", {type: "hidden", name: "from_unanswered"}),
      h("p", {class: "hint", id: "faq-from", hidden: true}),
      h("div", {class: "form-actions"},
        h("button", {type: "submit", class: "primary", id: "faq-save"}, t("faq.save_add")),
        h("button", {type: "button", id: "faq-reset", onclick: () => reset()}, t("faq.cancel_edit"))));
    let editing = null;
    function reset() {
      editing = null;
      form.reset();
      form.elements.scope.disabled = false;
      form.elements.from_unanswered.value = "";
      form.querySelector("#faq-from").hidden = true;
      form.querySelector("#faq-form-title").textContent = t("faq.add_title");
      form.querySelector("#faq-save").textContent = t("faq.save_add");
      for (const bad of form.querySelectorAll(".invalid")) bad.classList.remove("invalid");
    }
    function fill(entry, cluster) {
      reset();
      const f = form.elements;
      if (entry) {
        editing = entry;
        f.scope.value = entry.group ? String(entry.group.id) : "global";
        f.scope.disabled = true;
        f.question.value = entry.question;
        f.answer.value = entry.answer;
        f.aliases.value = entry.aliases.join(" | ");
        form.querySelector("#faq-form-title").textContent = t("faq.edit_title", {id: entry.id});
        form.querySelector("#faq-save").textContent = t("common.save");
      } else if (cluster) {
        f.scope.value = String(cluster.group.id);
        f.question.value = cluster.sample;
        f.from_unanswered.value = cluster.id;
        const from = form.querySelector("#faq-from");
        from.textContent = t("faq.from_unanswered", {count: cluster.count, group: groupName(cluster.group)});
        from.hidden = false;
      }
      form.scrollIntoView({behavior: "smooth", block: "start"});
      f.answer.focus();
    }
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const f = form.elements;
      const aliases = f.aliases.value.split(/[|｜]/).map((a) => a.trim()).filter(Boolean);
      const body = {question: f.question.value, answer: f.answer.value, aliases};
      const button = form.querySelector("#faq-save");
      button.disabled = true;
      try {
        let saved;
        if (editing) {
          saved = await api("PUT", "/console/api/faq/" + editing.id, body);
        } else {
          body.group_id = f.scope.value === "global" ? null : Number(f.scope.value);
          if (f.from_unanswered.value) body.from_unanswered = Number(f.from_unanswered.value);
          saved = await api("POST", "/console/api/faq", body);
        }
        sessionStorage.setItem("faq-flash", t("faq.saved_" + saved.result, {id: saved.entry.id}));
        ctx.rerender();
      } catch (err) {
        for (const bad of form.querySelectorAll(".invalid")) bad.classList.remove("invalid");
        const field = err.field && form.elements[err.field];
        if (field) field.classList.add("invalid");
        Console.message(form, err.message, "error");
      }
      button.disabled = false;
    });
    root.append(form);
    const flash = sessionStorage.getItem("faq-flash");
    if (flash) {
      sessionStorage.removeItem("faq-flash");
      Console.message(root, flash, "ok");
    }

    // -- the entries -----------------------------------------------------------------------------------
    root.append(h("h2", {}, t("faq.entries_title", {total: data.total})));
    root.append(Console.table([
      {label: t("faq.col_question"), value: (e) => h("div", {},
        h("strong", {}, e.question),
        e.aliases.length ? h("div", {class: "hint"}, t("faq.aliases_shown", {aliases: e.aliases.join("、")})) : null)},
      {label: t("faq.col_answer"), value: (e) => e.answer, cls: "wrap"},
      {label: t("faq.col_scope"), value: (e) => groupName(e.group)},
      {label: t("faq.col_updated"), value: (e) => Console.fmtTime(e.updated_at) + (e.updated_by ? " · " + e.updated_by : "")},
      {label: "", value: (e) => e.can_write ? h("span", {class: "actions"},
        h("button", {type: "button", class: "link faq-edit", onclick: () => fill(e)}, t("faq.edit")),
        h("button", {type: "button", class: "link danger faq-delete", onclick: async () => {
          if (!confirm(t("faq.confirm_delete", {question: e.question}))) return;
          try {
            await api("DELETE", "/console/api/faq/" + e.id);
            sessionStorage.setItem("faq-flash", t("faq.deleted", {id: e.id}));
            ctx.rerender();
          } catch (err) { Console.message(root, err.message, "error"); }
        }}, t("faq.delete"))) : null},
    ], data.entries.map((e) => Object.assign(e, {__attrs: {"data-entry-id": e.id}})), {id: "faq-table"}));
    root.append(Console.pager(data.total, data.page, data.per_page, (n) => Console.go({...p, page: n})));

    // -- unanswered questions --------------------------------------------------------------------------
    root.append(h("section", {class: "card", id: "unanswered"},
      h("h2", {}, t("faq.unanswered_title")),
      h("p", {class: "hint"}, t("faq.unanswered_hint")),
      Console.table([
        {label: t("faq.col_sample"), value: (c) => c.sample, cls: "wrap"},
        {label: t("faq.col_group"), value: (c) => groupName(c.group)},
        {label: t("faq.col_count"), value: (c) => String(c.count), cls: "num"},
        {label: t("faq.col_last_seen"), value: (c) => Console.fmtTime(c.last_seen)},
        {label: "", value: (c) => canWrite ? h("span", {class: "actions"},
          h("button", {type: "button", class: "link make-faq", onclick: () => fill(null, c)}, t("faq.make_faq")),
          h("button", {type: "button", class: "link dismiss", onclick: async () => {
            try {
              await api("DELETE", "/console/api/faq/unanswered/" + c.id);
              ctx.rerender();
            } catch (err) { Console.message(root, err.message, "error"); }
          }}, t("faq.dismiss"))) : null},
      ], unanswered.clusters.map((c) => Object.assign(c, {__attrs: {"data-cluster-id": c.id}})), {id: "unanswered-table"})));

    // -- import and export -----------------------------------------------------------------------------
    const exportScope = h("select", {name: "export_scope", "aria-label": t("faq.field_scope")},
      h("option", {value: "global"}, t("faq.global")), groups.map((g) => h("option", {value: g.id}, groupName(g))));
    const exportCard = h("section", {class: "card", id: "faq-export"}, h("h2", {}, t("faq.export_title")),
      h("div", {class: "toolbar"}, exportScope, h("button", {type: "button", id: "export-btn", onclick: async () => {
        try {
          const out = await api("GET", "/console/api/faq/export" + (exportScope.value === "global" ? "" : "?group=" + exportScope.value));
          download(out.filename, out.csv);
          Console.message(exportCard, t("faq.exported", {count: out.count}), "ok");
        } catch (err) { Console.message(exportCard, err.message, "error"); }
      }}, t("faq.export"))),
      h("p", {class: "hint"}, t("faq.csv_format")));
    root.append(exportCard);
    if (!canWrite) return;

    const importForm = h("form", {class: "card form", id: "faq-import"},
      h("h2", {}, t("faq.import_title")),
      h("label", {}, t("faq.field_scope"), h("select", {name: "scope"}, scopeOptions(writable, canGlobal, defaultScope))),
      h("label", {}, t("faq.import_file"), h("input", {type: "file", name: "file", accept: ".csv,text/csv"})),
      h("small", {class: "hint"}, t("faq.csv_format")),
      h("div", {class: "form-actions"},
        h("button", {type: "submit", id: "import-preview"}, t("faq.import_preview")),
        h("button", {type: "button", class: "primary", id: "import-apply", disabled: true}, t("faq.import_apply"))),
      h("div", {id: "import-result"}));
    let csvText = null;
    async function readFile() {
      const file = importForm.elements.file.files[0];
      if (!file) throw new Console.ApiError(t("faq.import_no_file"), 0, "no_file");
      const bytes = await file.arrayBuffer();
      try {
        return new TextDecoder("utf-8", {fatal: true}).decode(bytes);
      } catch (err) {
        throw new Console.ApiError(t("faq.csv_not_utf8"), 0, "not_utf8");
      }
    }
    function scopeBody() {
      const v = importForm.elements.scope.value;
      return v === "global" ? null : Number(v);
    }
    function showPlan(plan) {
      const box = importForm.querySelector("#import-result");
      const c = plan.counts;
      box.replaceChildren(
        h("p", {class: "import-summary " + (plan.problems.length ? "bad" : "good")},
          t(plan.imported ? "faq.import_done" : "faq.import_plan", {add: c.add, update: c.update, unchanged: c.unchanged})),
        plan.problems.length ? h("div", {class: "message error", id: "import-problems"},
          h("strong", {}, t("faq.import_problems", {count: plan.problems.length})),
          h("ul", {}, plan.problems.map((x) => h("li", {"data-line": x.line}, x.message)))) : null,
        plan.imported ? null : Console.table([
          {label: t("faq.col_line"), value: (s) => String(s.line), cls: "num"},
          {label: t("faq.col_question"), value: (s) => s.question},
          {label: t("faq.col_action"), value: (s) => h("span", {class: "badge " + s.action}, t("faq.action_" + s.action))},
          {label: t("faq.col_before"), value: (s) => s.before || "", cls: "wrap"},
        ], plan.steps, {id: "import-steps"}));
    }
    importForm.addEventListener("submit", async (e) => {
      e.preventDefault();
      const apply = importForm.querySelector("#import-apply");
      apply.disabled = true;
      try {
        csvText = await readFile();
        const plan = await api("POST", "/console/api/faq/import", {group_id: scopeBody(), csv: csvText, dry_run: true});
        showPlan(plan);
        apply.disabled = plan.problems.length > 0 || (plan.counts.add + plan.counts.update) === 0;
      } catch (err) {
        importForm.querySelector("#import-result").replaceChildren(h("p", {class: "message error", id: "import-error"}, err.message));
      }
    });
    importForm.querySelector("#import-apply").addEventListener("click", async () => {
      const apply = importForm.querySelector("#import-apply");
      apply.disabled = true;
      try {
        const done = await api("POST", "/console/api/faq/import", {group_id: scopeBody(), csv: csvText, dry_run: false});
        showPlan(done);
        sessionStorage.setItem("faq-flash", t("faq.import_done", done.counts));
        setTimeout(() => ctx.rerender(), 600);
      } catch (err) {
        importForm.querySelector("#import-result").replaceChildren(h("p", {class: "message error", id: "import-error"}, err.message));
      }
    });
    importForm.elements.file.addEventListener("change", () => {
      importForm.querySelector("#import-apply").disabled = true;
      importForm.querySelector("#import-result").replaceChildren();
    });
    importForm.elements.scope.addEventListener("change", () => { importForm.querySelector("#import-apply").disabled = true; });
    root.append(importForm);
  });
})();
