/* 账号管理 (ops admins only): the console accounts; create one with a password the admin types (twice), reset a
 * password, disable / enable, change the role and a group admin's groups. The server checks everything again
 * (the same code as `qunbot console …`), keeps the last active ops admin, and logs every change.
 * API: GET/POST /console/api/users, POST …/users/ID/password, POST …/ID/disable, POST …/ID/enable,
 * PUT …/ID/role, PUT …/ID/groups, and GET /console/api/groups for the group choices. */
(function () {
  const {api, h, t} = Console;
  let flash = null;  // a message to show once, after the page is drawn again

  function groupName(g) { return (g.name || g.external_id) + ` (${g.channel})`; }

  function roleSelect(roles, selected) {
    return h("select", {name: "role", required: true},
      roles.map((r) => h("option", {value: r, selected: r === selected}, t("role." + r))));
  }

  // Check boxes of every group; only shown while the role is group_admin.
  function groupPicker(groups, chosen) {
    const ids = new Set((chosen || []).map((g) => g.id));
    return h("fieldset", {class: "group-picker", "data-field": "group_ids"},
      h("legend", {}, t("users.field_groups")),
      groups.length ? groups.map((g) => h("label", {class: "check"},
        h("input", {type: "checkbox", name: "group_ids", value: g.id, checked: ids.has(g.id)}), " " + groupName(g)))
        : h("p", {class: "hint"}, t("common.none")));
  }

  function showGroupsFor(form) {
    const picker = form.querySelector(".group-picker");
    if (picker) picker.hidden = form.elements.role.value !== "group_admin";
  }

  function chosenGroups(form) {
    if (form.elements.role && form.elements.role.value !== "group_admin") return [];
    return [...form.querySelectorAll("input[name=group_ids]:checked")].map((x) => Number(x.value));
  }

  function passwordFields(min) {
    return [
      h("label", {"data-field": "password"}, t("users.field_password"),
        h("input", {type: "password", name: "password", autocomplete: "new-password", required: true}),
        h("small", {class: "hint"}, t("users.password_hint", {min}))),
      h("label", {}, t("users.field_password_again"),
        h("input", {type: "password", name: "password_again", autocomplete: "new-password", required: true})),
    ];
  }

  // Submit only when the password was typed the same twice (the server checks its length and spaces).
  function onPasswordSubmit(form, submit) {
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const f = form.elements;
      if (f.password.value !== f.password_again.value) failed(form, {message: t("users.passwords_differ"), field: "password"});
      else submit(f);
    });
  }

  function failed(form, err) {
    for (const bad of form.querySelectorAll(".invalid")) bad.classList.remove("invalid");
    const box = err.field && form.querySelector(`[data-field="${err.field}"]`);
    if (box) box.classList.add("invalid");
    Console.message(form, err.message, "error");
  }

  async function send(form, call, done, ctx) {
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const user = await call();
      flash = done(user);
      ctx.rerender();
    } catch (err) {
      failed(form, err);
      button.disabled = false;
    }
  }

  function createForm(data, groups, ctx) {
    const form = h("form", {class: "card form", id: "user-form", autocomplete: "off"},
      h("h2", {}, t("users.create_title")),
      h("label", {"data-field": "username"}, t("users.field_username"),
        h("input", {name: "username", maxlength: 64, required: true, autocomplete: "off"})),
      h("label", {"data-field": "role"}, t("users.field_role"), roleSelect(data.roles, "ops_viewer")),
      groupPicker(groups, []),
      ...passwordFields(data.min_password_length),
      h("div", {class: "form-actions"}, h("button", {type: "submit", class: "primary", id: "user-create"}, t("users.create"))));
    form.elements.role.addEventListener("change", () => showGroupsFor(form));
    showGroupsFor(form);
    onPasswordSubmit(form, (f) => send(form, () => api("POST", "/console/api/users", {
      username: f.username.value.trim(), role: f.role.value, password: f.password.value, group_ids: chosenGroups(form),
    }), (u) => t("users.created", {name: u.username}), ctx));
    return form;
  }

  function passwordForm(user, min, ctx) {
    const form = h("form", {class: "card form", id: "password-form"},
      h("h3", {}, t("users.reset_title", {name: user.username})),
      user.is_self ? h("p", {class: "message info"}, t("users.reset_self")) : null,
      ...passwordFields(min),
      h("div", {class: "form-actions"},
        h("button", {type: "submit", class: "primary", id: "password-save"}, t("users.save")),
        h("button", {type: "button", onclick: () => form.remove()}, t("users.cancel"))));
    onPasswordSubmit(form, (f) => send(form, () => api("POST", `/console/api/users/${user.id}/password`,
                                                       {password: f.password.value}),
                                       (u) => t("users.password_changed", {name: u.username}), ctx));
    return form;
  }

  function roleForm(user, data, groups, ctx) {
    const form = h("form", {class: "card form", id: "role-form"},
      h("h3", {}, t("users.role_title", {name: user.username})),
      h("label", {"data-field": "role"}, t("users.field_role"), roleSelect(data.roles, user.role)),
      groupPicker(groups, user.groups),
      h("div", {class: "form-actions"},
        h("button", {type: "submit", class: "primary", id: "role-save"}, t("users.save")),
        h("button", {type: "button", onclick: () => form.remove()}, t("users.cancel"))));
    form.elements.role.addEventListener("change", () => showGroupsFor(form));
    showGroupsFor(form);
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const role = form.elements.role.value;
      const ids = chosenGroups(form);
      // Only the groups changed on a group admin: set-groups; otherwise set-role (with the groups it needs).
      const call = role === user.role && role === "group_admin"
        ? () => api("PUT", `/console/api/users/${user.id}/groups`, {group_ids: ids})
        : () => api("PUT", `/console/api/users/${user.id}/role`, {role, group_ids: ids});
      send(form, call, (u) => t("users.role_saved", {name: u.username}), ctx);
    });
    return form;
  }

  Console.page("users", async (root, ctx) => {
    const [data, groupData] = await Promise.all([
      api("GET", "/console/api/users"),
      api("GET", "/console/api/groups?per_page=200"),
    ]);
    const groups = groupData.groups.map((r) => r.group).filter((g) => !g.dismissed);
    root.append(h("p", {class: "hint"}, t("users.intro")));
    if (flash) {
      root.append(h("p", {class: "message ok", id: "users-flash", role: "status"}, flash));
      flash = null;
    }
    const forms = h("div", {id: "user-actions"});
    function open(form) {
      forms.replaceChildren(form);
      form.scrollIntoView({block: "nearest"});
      const first = form.querySelector("input, select");
      if (first) first.focus();
    }
    async function toggle(user) {
      if (!user.disabled && !confirm(t("users.confirm_disable", {name: user.username}))) return;
      try {
        const u = await api("POST", `/console/api/users/${user.id}/${user.disabled ? "enable" : "disable"}`);
        flash = t(u.disabled ? "users.disabled_done" : "users.enabled_done", {name: u.username});
        ctx.rerender();
      } catch (err) {
        Console.message(document.getElementById("root"), err.message, "error");  // `root` is drawn into it
      }
    }
    root.append(Console.table([
      {label: t("users.col_username"), value: (u) => u.username + (u.is_self ? t("users.you") : "")},
      {label: t("users.col_role"), value: (u) => t("role." + u.role)},
      {label: t("users.col_groups"), value: (u) => u.role === "group_admin" ? u.groups.map(groupName).join("、")
        : t("users.all_groups"), cls: "wrap"},
      {label: t("users.col_state"), value: (u) => h("span", {class: "badge " + (u.disabled ? "state-removed" : "state-on")},
        u.disabled ? t("users.disabled") : t("users.active"))},
      {label: t("users.col_sessions"), value: (u) => String(u.sessions), cls: "num sessions"},
      {label: t("users.col_last_login"), value: (u) => u.last_login_at ? Console.fmtTime(u.last_login_at) : t("users.never")},
      {label: "", value: (u) => h("span", {class: "actions"},
        h("button", {type: "button", class: "link user-password",
                     onclick: () => open(passwordForm(u, data.min_password_length, ctx))}, t("users.reset_password")),
        h("button", {type: "button", class: "link user-role", onclick: () => open(roleForm(u, data, groups, ctx))},
          t("users.change_role")),
        h("button", {type: "button", class: "link user-toggle" + (u.disabled ? "" : " danger"), onclick: () => toggle(u)},
          u.disabled ? t("users.enable") : t("users.disable")))},
    ], data.users.map((u) => Object.assign(u, {__attrs: {"data-username": u.username}})), {id: "users-table"}));
    root.append(forms);
    root.append(createForm(data, groups, ctx));
  });
})();
