/* qunbot console: what every page's script uses (window.Console).
 *
 *   Console.page(key, async (root, ctx) => {...})   register the renderer of a page (static/pages/<key>.js)
 *   Console.api(method, path, body)                 JSON API call; sends the CSRF header; 401 → login page
 *   Console.h(tag, attrs, ...children)              build DOM (attrs: class, text, on<Event>, any attribute)
 *   Console.t(key, vars)                            a console text (bot/templates/zh/console.toml, no "console.")
 *   Console.table(columns, rows), Console.pager(...), Console.message(root, text, kind)
 *   Console.fmtTime(iso, zone)                      a time in the bot's timezone (Console.zone) or the given one
 *   Console.params() / Console.go(params)           the page's query string as state
 *
 * ctx = {me, params, rerender}. Nothing here uses innerHTML with data: text is always set as text.
 */
(function () {
  "use strict";
  const texts = JSON.parse(document.getElementById("console-texts").textContent);
  const meNode = document.getElementById("console-me");
  const me = meNode ? JSON.parse(meNode.textContent) : null;
  const pages = {};

  function t(key, vars) {
    let text = texts[key];
    if (text === undefined) return key;
    if (vars) text = text.replace(/\{(\w+)\}/g, (m, name) => (name in vars ? String(vars[name]) : m));
    return text;
  }

  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
      else if (value === true) node.setAttribute(key, "");
      else node.setAttribute(key, String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  class ApiError extends Error {
    constructor(message, status, code, field) {
      super(message);
      this.status = status;
      this.code = code;
      this.field = field;  // the body field a validation error is about, when the API names one
    }
  }

  async function api(method, path, body) {
    const headers = {"Accept": "application/json"};
    const init = {method, headers, credentials: "same-origin"};
    if (method !== "GET") {
      headers["X-CSRF-Token"] = me ? me.csrf_token : "";
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body === undefined ? {} : body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      throw new ApiError(t("error.network"), 0, "network");
    }
    let data = null;
    try { data = await response.json(); } catch (err) { data = null; }
    if (response.status === 401 && me) {
      location.href = "/console/login?next=" + encodeURIComponent(location.pathname + location.search);
      throw new ApiError(t("error.unauthenticated"), 401, "unauthenticated");
    }
    if (!response.ok) {
      throw new ApiError((data && data.message) || t("error.server"), response.status, data && data.error,
                         data && data.field);
    }
    return data;
  }

  // Times are shown in the bot's timezone (config `timezone`, given with the account), never the browser's:
  // ops in different places read the same clock. A group's own things (a post's runs, a lottery) pass their
  // zone, and a time in a zone other than the console's is followed by the zone's name.
  const zone = validZone(me && me.timezone) || "UTC";
  const formats = {};

  function validZone(tz) {
    if (!tz) return null;
    try {
      new Intl.DateTimeFormat("en-US", {timeZone: tz});
      return tz;
    } catch (err) {
      return null;
    }
  }

  function formatIn(tz) {
    if (!formats[tz]) {
      formats[tz] = new Intl.DateTimeFormat("en-US", {timeZone: tz, year: "numeric", month: "2-digit",
        day: "2-digit", hour: "2-digit", minute: "2-digit", hourCycle: "h23"});
    }
    return formats[tz];
  }

  // "2026-05-01 09:00" in the console's zone, or "2026-05-01 10:00（Asia/Tokyo）" in another one.
  function fmtTime(iso, tz) {
    if (!iso) return "";
    const d = new Date(iso);
    if (isNaN(d.getTime())) return String(iso);
    const shown = validZone(tz) || zone;
    const part = {};
    for (const p of formatIn(shown).formatToParts(d)) part[p.type] = p.value;
    const text = `${part.year}-${part.month}-${part.day} ${part.hour}:${part.minute}`;
    return shown === zone ? text : `${text}（${shown}）`;
  }

  function fmtPercent(x) { return (Math.round(x * 1000) / 10).toFixed(1) + "%"; }

  // columns: [{label, value: row => text|Node, cls}]
  function table(columns, rows, attrs) {
    const head = h("tr", {}, columns.map((c) => h("th", {class: c.cls, scope: "col"}, c.label)));
    const body = rows.map((row) => h("tr", row.__attrs || {}, columns.map((c) => {
      const value = c.value(row);
      return h("td", {class: c.cls, "data-label": c.label}, value === undefined || value === null || value === "" ? null : value);
    })));
    if (!rows.length) body.push(h("tr", {}, h("td", {colspan: columns.length, class: "muted"}, t("common.none"))));
    return h("div", {class: "table-wrap"}, h("table", attrs || {}, h("thead", {}, head), h("tbody", {}, body)));
  }

  function pager(total, page, perPage, go) {
    const pages = Math.max(1, Math.ceil(total / perPage));
    return h("div", {class: "pager"},
      h("button", {type: "button", disabled: page <= 1, onclick: () => go(page - 1)}, t("common.prev")),
      h("span", {}, t("common.paging", {page, pages, total})),
      h("button", {type: "button", disabled: page >= pages, onclick: () => go(page + 1)}, t("common.next")));
  }

  function message(root, text, kind) {
    let box = root.querySelector(":scope > .message");
    if (!box) {
      box = h("p", {class: "message", role: "status"});
      root.prepend(box);
    }
    box.className = "message " + (kind || "info");
    box.textContent = text;
    return box;
  }

  function params() {
    return Object.fromEntries(new URLSearchParams(location.search).entries());
  }

  let rerender = () => {};

  function go(next, replace) {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(next)) {
      if (value !== undefined && value !== null && value !== "") query.set(key, value);
    }
    const url = location.pathname + (query.toString() ? "?" + query : "");
    if (replace) history.replaceState(null, "", url); else history.pushState(null, "", url);
    rerender();
  }

  function page(key, render) { pages[key] = render; }

  async function start() {
    const toggle = document.getElementById("menu-toggle");
    const nav = document.getElementById("nav");
    if (toggle && nav) {
      toggle.addEventListener("click", () => {
        const open = nav.classList.toggle("open");
        toggle.setAttribute("aria-expanded", open ? "true" : "false");
      });
    }
    const who = document.getElementById("who");
    if (who && me) {  // which clock the page's times are on
      who.after(" · ", h("span", {id: "console-zone", class: "zone", title: zone}, t("common.times_in", {zone})));
    }
    const logout = document.getElementById("logout");
    if (logout) {
      logout.addEventListener("click", async () => {
        try { await api("POST", "/console/api/logout"); } catch (err) { /* gone already */ }
        location.href = "/console/login";
      });
    }
    const key = document.body.dataset.page;
    const root = document.getElementById("root");
    if (!key || !pages[key]) return;
    rerender = async () => {
      try {
        const fresh = h("div", {});
        await pages[key](fresh, {me, params: params(), rerender: () => rerender()});
        root.replaceChildren(...fresh.childNodes);
        root.dataset.ready = "1";
      } catch (err) {
        root.replaceChildren(h("p", {class: "message error", role: "alert"}, err.message || String(err)));
        root.dataset.ready = "1";
      }
    };
    window.addEventListener("popstate", () => rerender());
    await rerender();
  }

  /* A post's or a campaign's targets in a form: the kind (listed groups; a tag or every group only for
   * `broad` accounts), the group checklist, the tag (with `tags` offered), and the door for broad targets.
   * `field(name, label, control)` is the form's own labelled-field maker; `prefix` names the elements. */
  function targetFields({x, groups, chosen, broad, field, prefix, label, legend, tags = []}) {
    const groupName = (g) => g.name || g.external_id;
    const channels = [...new Set(groups.map((g) => g.channel))];
    return [
      field("target_kind", label,
        h("select", {name: "target_kind"}, ["groups", "tag", "all"].filter((k) => k === "groups" || broad || x.target_kind === k)
          .map((k) => h("option", {value: k, selected: x.target_kind === k}, t("push.target_" + k))))),
      h("fieldset", {class: "targets", "data-for": "groups"},
        h("legend", {}, legend),
        h("div", {class: "checklist", id: prefix + "-groups"}, groups.map((g) => h("label", {class: "check"},
          h("input", {type: "checkbox", name: "group_ids", value: g.id, checked: chosen.has(g.id)}), " " + groupName(g),
          h("span", {class: "hint"}, " " + g.channel)))),
        h("small", {class: "field-error", "data-error-for": "group_ids"})),
      h("div", {class: "targets", "data-for": "tag"},
        field("tag", t("push.field_tag"), h("input", {name: "tag", value: x.target_tag || "", list: prefix + "-tags", maxlength: 64})),
        h("datalist", {id: prefix + "-tags"}, tags.map((tag) => h("option", {value: tag})))),
      h("div", {class: "targets", "data-for": "broad"},
        field("channel", t("push.field_channel"), h("select", {name: "channel"},
          h("option", {value: ""}, t("push.any_channel")),
          channels.map((ch) => h("option", {value: ch, selected: x.target_channel === ch}, ch))))),
    ];
  }

  window.Console = {page, api, h, t, me, zone, table, pager, message, params, go, fmtTime, fmtPercent, ApiError,
                    targetFields};
  document.addEventListener("DOMContentLoaded", start);
})();
