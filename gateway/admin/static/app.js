// ztgate dashboard: live refresh of record tables, the "verify now" progress, and the wall mode.
// Everything works without it; it only saves reloading.
"use strict";

(function () {
  const wall = new URLSearchParams(location.search).get("wall") === "1";
  if (wall) {
    document.body.classList.add("wall");
    for (const a of document.querySelectorAll('a[href^="/"]')) {
      if (a.hasAttribute("download")) continue;
      const u = new URL(a.getAttribute("href"), location.origin);
      u.searchParams.set("wall", "1");
      a.setAttribute("href", u.pathname + u.search);
    }
  }

  function el(tag, text, attrs) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  }

  function link(href, text) {
    if (wall) {
      const u = new URL(href, location.origin);
      u.searchParams.set("wall", "1");
      href = u.pathname + u.search;
    }
    return el("a", text, { href: href });
  }

  function identityPath(id) {
    return "/identities/" + id.replace(/^spiffe:\/\//, "").split("/").map(encodeURIComponent).join("/");
  }

  function time(t) {
    return new Date(t).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
  }

  function row(r) {
    const tr = el("tr", null, { class: "kind-" + r.kind + (r.decision ? " decision-" + r.decision : "") });
    const td = () => tr.appendChild(el("td"));
    td().appendChild(link("/records/" + r.index, r.index));
    td().appendChild(el("time", time(r.time), { datetime: r.time }));
    td().textContent = r.kind;
    const d = td();
    if (r.decision) d.appendChild(el("span", r.decision, { class: "badge " + r.decision }));
    const who = td();
    if (r.source) who.appendChild(link(identityPath(r.source), r.source));
    else if (r.remote) who.textContent = "(" + r.remote + ")";
    const svc = td();
    if (r.service) svc.appendChild(link("/services/" + encodeURIComponent(r.service), r.service));
    let req = ((r.method || "") + " " + (r.path || "")).trim();
    if (r.purpose) req += " for " + r.purpose;
    td().textContent = req;
    const why = td();
    if (r.kind === "outcome") {
      let s = "status " + (r.status || 0) + ", " + (r.request_bytes || 0) + " B in, " + (r.response_bytes || 0) + " B out";
      if (r.error) s += ", " + r.error;
      why.textContent = s;
    } else {
      for (const x of r.reasons || []) {
        const span = el("span", null, { class: "reason" });
        span.appendChild(el("code", x.code));
        span.appendChild(document.createTextNode(" " + (x.message || "")));
        why.appendChild(span);
      }
      if (r.note) why.appendChild(el("span", r.note, { class: "note" }));
    }
    return tr;
  }

  const live = document.querySelector("tbody[data-live]");
  if (live) {
    const url = live.getAttribute("data-live");
    let busy = false;
    setInterval(async function () {
      if (busy || document.hidden) return;
      busy = true;
      try {
        const resp = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
        if (resp.status === 401 || resp.status === 403) { location.reload(); return; }
        if (!resp.ok) return;
        const page = await resp.json();
        const rows = (page.records || []).map(row);
        if (rows.length === 0) {
          const tr = el("tr", null, { class: "empty" });
          tr.appendChild(el("td", "No matching records.", { colspan: "8" }));
          rows.push(tr);
        }
        live.replaceChildren(...rows);
      } catch (e) {
        // The next tick tries again.
      } finally {
        busy = false;
      }
    }, 2000);
  }

  const form = document.getElementById("verify");
  if (form) {
    const button = form.querySelector("button");
    const state = document.getElementById("verify-state");
    const bar = document.getElementById("verify-progress");
    const detail = document.getElementById("verify-detail");
    function show(st) {
      state.textContent = st.state;
      bar.max = Math.max(st.total, 1);
      bar.value = st.state === "ok" ? bar.max : st.done;
      let s = st.done + " of " + st.total + " records checked.";
      if (st.state === "ok") s += " " + st.entries + " records and " + st.checkpoints + " checkpoints verified" + (st.unsigned ? "; " + st.unsigned + " records after the newest checkpoint" : "") + ".";
      if (st.state === "failed") s += " The log does NOT verify" + (st.first_bad !== undefined ? ": first bad index " + st.first_bad : "") + ": " + st.problem;
      detail.textContent = s;
      button.disabled = st.state === "running";
    }
    async function poll() {
      const resp = await fetch("/api/verify", { credentials: "same-origin" });
      if (!resp.ok) return;
      const st = await resp.json();
      show(st);
      if (st.state === "running") setTimeout(poll, 500);
    }
    form.addEventListener("submit", async function (ev) {
      ev.preventDefault();
      button.disabled = true;
      const resp = await fetch("/api/verify", { method: "POST", credentials: "same-origin" });
      if (resp.ok || resp.status === 409) show(await resp.json());
      poll();
    });
    if (document.getElementById("verify-status").dataset.state === "running") poll();
  }
})();
