/* The login form: POST /console/api/login, then go where the login page was asked to return to. */
(function () {
  "use strict";
  const texts = JSON.parse(document.getElementById("console-texts").textContent);
  const t = (key, vars) => (texts[key] || key).replace(/\{(\w+)\}/g, (m, k) => (vars && k in vars ? vars[k] : m));

  function target() {
    const next = new URLSearchParams(location.search).get("next") || "";
    // Only a path of this console: never another site (an open redirect).
    return /^\/console(\/|\?|$)/.test(next) && !next.startsWith("//") ? next : "/console";
  }

  document.addEventListener("DOMContentLoaded", () => {
    const form = document.getElementById("login-form");
    const error = document.getElementById("login-error");
    const submit = document.getElementById("login-submit");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.hidden = true;
      submit.disabled = true;
      const label = submit.textContent;
      submit.textContent = t("login.working");
      try {
        const response = await fetch("/console/api/login", {
          method: "POST", credentials: "same-origin",
          headers: {"Content-Type": "application/json", "Accept": "application/json"},
          body: JSON.stringify({username: form.username.value, password: form.password.value}),
        });
        if (response.ok) {
          location.href = target();
          return;
        }
        const data = await response.json().catch(() => ({}));
        if (response.status === 429) {
          error.textContent = t("login.rate_limited", {seconds: response.headers.get("Retry-After") || "?"});
        } else {
          error.textContent = data.message || t("error.server");
        }
      } catch (err) {
        error.textContent = t("error.network");
      }
      error.hidden = false;
      submit.disabled = false;
      submit.textContent = label;
      form.password.value = "";
      form.password.focus();
    });
  });
})();
