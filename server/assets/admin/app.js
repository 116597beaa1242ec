// Cohort privacy-budget dashboard. Plain JavaScript, no dependencies, nothing fetched from
// elsewhere (the server's Content-Security-Policy forbids it). Every number comes from the
// documented /v1 API, read with the bearer token the user typed in; the token lives in
// sessionStorage (this tab only) and travels as an Authorization header, never as a cookie.
// Text is always set with textContent; charts are SVG elements built here.
"use strict";

(() => {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const TOKEN_KEY = "cohort.dashboard.token";
  const POLL_MS = 3000;
  const STATUS_ORDER = { eligible: 0, exhausted: 1, pending: 2, revoked: 3 };

  const state = {
    token: null,
    claims: null,
    federations: [],
    fed: null,
    detail: null,
    rounds: [],
    budgets: null,
    audit: [],
    sort: { key: "client", dir: 1 },
    selected: null,
    busy: false,
    timer: null,
    revokeArmed: false,
  };

  // ---- DOM helpers ------------------------------------------------------------------------

  function build(el, attrs, children) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.setAttribute("class", v);
      else if (k === "dataset") Object.assign(el.dataset, v);
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  const h = (tag, attrs, ...children) => build(document.createElement(tag), attrs, children);
  const svg = (tag, attrs, ...children) => build(document.createElementNS(SVG_NS, tag), attrs, children);
  const $ = (id) => document.getElementById(id);
  const clear = (el) => { while (el.firstChild) el.removeChild(el.firstChild); return el; };

  // ---- Formatting (the CLI `cohort budgets` prints the same strings) -------------------------

  const fmtEps = (x) => (typeof x === "number" && isFinite(x) ? x.toFixed(3) : "—");
  const fmtDelta = (d) => (d === 0 ? "0" : d.toExponential());
  const fmtTime = (ms) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
  function fmtAgo(ms) {
    if (ms === null || ms === undefined) return "never";
    const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
    if (s < 60) return `${s} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
    return `${Math.floor(s / 86400)} d ago`;
  }
  function fmtDuration(ms) {
    if (ms < 1000) return `${ms} ms`;
    if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
    return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
  }
  function fmtMetric(v) {
    if (!isFinite(v)) return String(v);
    if (Number.isInteger(v)) return String(v);
    return Math.abs(v) >= 100 ? v.toFixed(1) : v.toPrecision(4);
  }

  // ---- Token and API ----------------------------------------------------------------------

  /** The claims of a cohort1 token, for display only: the server checks the signature. */
  function decodeClaims(token) {
    const parts = token.split(".");
    if (parts.length !== 3 || parts[0] !== "cohort1") return null;
    try {
      let b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
      while (b64.length % 4) b64 += "=";
      const claims = JSON.parse(atob(b64));
      return typeof claims.sub === "string" && typeof claims.role === "string" ? claims : null;
    } catch (_) {
      return null;
    }
  }

  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  async function api(path, options) {
    const opts = options || {};
    const headers = { Authorization: `Bearer ${state.token}`, Accept: "application/json" };
    if (opts.body !== undefined) headers["Content-Type"] = "application/json";
    const resp = await fetch(path, {
      method: opts.method || "GET",
      headers,
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
      cache: "no-store",
      credentials: "omit",
    });
    const text = await resp.text();
    let body = null;
    if (text) {
      try { body = JSON.parse(text); } catch (_) { body = null; }
    }
    if (!resp.ok) {
      throw new ApiError(resp.status, (body && body.detail) || `HTTP ${resp.status}`);
    }
    return body;
  }

  const enc = encodeURIComponent;

  // ---- Sign-in ----------------------------------------------------------------------------

  async function signIn(token, fromStorage) {
    const claims = decodeClaims(token);
    if (!claims) {
      $("signin-error").textContent = "That is not a Cohort token (expected cohort1.<payload>.<signature>).";
      return;
    }
    state.token = token;
    state.claims = claims;
    try {
      state.federations = await api("/v1/federations");
    } catch (e) {
      state.token = null;
      state.claims = null;
      sessionStorage.removeItem(TOKEN_KEY);
      $("signin-error").textContent = fromStorage ? `Please sign in again: ${e.message}` : e.message;
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token").value = "";
    $("signin-error").textContent = "";
    $("signin").hidden = true;
    $("app").hidden = false;
    $("who").hidden = false;
    $("who-name").textContent = `${claims.sub} (${claims.role})`;
    renderNav();
    const wanted = new URLSearchParams(location.hash.slice(1)).get("fed");
    const names = state.federations.map((f) => f.name);
    const first = names.includes(wanted) ? wanted : names[0];
    if (first) selectFederation(first);
    else clear($("federation")).append(h("p", { class: "card note" }, "No federations yet."));
    if (!state.timer) {
      state.timer = setInterval(() => { if (!document.hidden) refresh(); }, POLL_MS);
    }
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    if (state.timer) clearInterval(state.timer);
    Object.assign(state, { token: null, claims: null, federations: [], fed: null, timer: null, selected: null });
    clear($("federation"));
    clear($("federations"));
    $("app").hidden = true;
    $("who").hidden = true;
    $("signin").hidden = false;
    $("signin-error").textContent = message || "";
  }

  // ---- Navigation -------------------------------------------------------------------------

  function renderNav() {
    const nav = clear($("federations"));
    for (const f of state.federations) {
      nav.append(h("button", {
        type: "button",
        "aria-current": f.name === state.fed ? "true" : "false",
        dataset: { federation: f.name },
        onclick: () => selectFederation(f.name),
      }, f.name));
    }
  }

  function selectFederation(name) {
    state.fed = name;
    state.selected = null;
    state.detail = null;
    history.replaceState(null, "", `#fed=${enc(name)}`);
    renderNav();
    buildSkeleton();
    refresh();
  }

  function buildSkeleton() {
    const root = clear($("federation"));
    root.append(
      h("section", { class: "card", id: "fed-head" }),
      h("div", { class: "summary", id: "summary" }),
      h("div", { class: "grid2 chart-rounds" },
        h("section", { class: "card" },
          h("h3", {}, "Client-level ε over rounds"),
          h("div", { id: "fed-chart-box" })),
        h("section", { class: "card" },
          h("h3", {}, "Rounds"),
          h("div", { class: "table-wrap" }, h("table", { id: "rounds-table" })))),
      h("section", { class: "card" },
        h("h3", {}, "Clients"),
        h("p", { class: "note" },
          "Record-level ε at each client's δ, from the server's privacy ledger. Click a column to sort, a client to see its ε over time",
          state.claims && state.claims.role === "admin" ? " and change its budget." : "."),
        h("div", { class: "table-wrap" }, h("table", { id: "clients-table" }))),
      h("section", { class: "card", id: "client-panel", hidden: true },
        h("h3", { id: "client-title" }),
        h("div", { class: "grid2" },
          h("div", { id: "client-chart-box" }),
          h("div", { class: "ops", id: "client-ops" }))),
      h("section", { class: "card" },
        h("h3", {}, "Audit log"),
        h("div", { class: "table-wrap" }, h("table", { id: "audit-table" }))));
  }

  // ---- Polling ----------------------------------------------------------------------------

  async function refresh() {
    if (state.busy || !state.token || !state.fed) return;
    state.busy = true;
    const fed = state.fed;
    try {
      const [feds, detail, rounds, budgets, audit] = await Promise.all([
        api("/v1/federations"),
        api(`/v1/federations/${enc(fed)}`),
        api(`/v1/federations/${enc(fed)}/rounds`),
        api(`/v1/federations/${enc(fed)}/budgets`),
        api(`/v1/federations/${enc(fed)}/audit`),
      ]);
      if (fed !== state.fed) return;
      const namesChanged = feds.map((f) => f.name).join() !== state.federations.map((f) => f.name).join();
      state.federations = feds;
      if (namesChanged) renderNav();
      Object.assign(state, { detail, rounds, budgets, audit });
      render();
      $("app-error").textContent = "";
      $("live").textContent = `live · updated ${new Date().toLocaleTimeString()}`;
    } catch (e) {
      if (e.status === 401) {
        signOut(`Signed out: ${e.message}`);
      } else {
        $("app-error").textContent = `Could not refresh: ${e.message}`;
        $("live").textContent = "live · retrying";
      }
    } finally {
      state.busy = false;
    }
  }

  // ---- Rendering --------------------------------------------------------------------------

  function render() {
    renderHead();
    renderSummary();
    renderFedChart();
    renderRounds();
    renderClients();
    renderClientPanel(false);
    renderAudit();
  }

  function badge(kind, text) {
    return h("span", { class: `badge ${kind}` }, text || kind);
  }

  function renderHead() {
    const d = state.detail;
    const c = d.config;
    const secagg = Boolean(c.secure_aggregation);
    clear($("fed-head")).append(
      h("h2", {}, d.name, " ", badge(d.state === "active" ? "eligible" : "revoked", d.state)),
      h("p", { class: "note", id: "secure-aggregation", dataset: { secureAggregation: String(secagg) } },
        "Secure aggregation: ", badge(secagg ? "on" : "off", secagg ? "on" : "off"),
        ` · strategy ${c.strategy && c.strategy.name ? c.strategy.name : "fed_avg"}`,
        ` · client sampling rate ${c.client_sampling_rate}`,
        ` · min clients ${c.min_clients}`,
        ` · default client budget ε ${fmtEps(c.client_budget.epsilon)}, δ ${fmtDelta(c.client_budget.delta)}`,
        d.stopped_reason ? ` · stopped: ${d.stopped_reason}` : ""),
      // An admin's opt-out from bounding plain updates: one client can move the model anywhere.
      c.allow_unbounded_updates
        ? h("p", { class: "note", id: "unbounded-updates" },
          badge("exhausted", "unbounded updates allowed"),
          " no update clip and a mean-based strategy: any one client can move the model anywhere")
        : "");
  }

  function stat(k, v, id) {
    return h("div", { class: "stat", id }, h("div", { class: "k" }, k), h("div", { class: "v" }, v));
  }

  function renderSummary() {
    const b = state.budgets;
    const counts = { eligible: 0, exhausted: 0, revoked: 0, pending: 0 };
    for (const c of b.clients) counts[c.status] = (counts[c.status] || 0) + 1;
    const fedBudget = b.federation_budget ? fmtEps(b.federation_budget.epsilon) : "none";
    const done = state.rounds.filter((r) => r.state === "completed").length;
    clear($("summary")).append(
      stat("Client-level ε spent / budget", `${fmtEps(b.federation_spent.epsilon)} / ${fedBudget}`, "stat-fed-eps"),
      stat("Rounds (completed)", `${state.rounds.length} (${done})`, "stat-rounds"),
      stat("Clients eligible", String(counts.eligible), "stat-eligible"),
      stat("Exhausted", String(counts.exhausted), "stat-exhausted"),
      stat("Revoked / pending", `${counts.revoked} / ${counts.pending}`, "stat-revoked"));
  }

  function renderFedChart() {
    const points = state.rounds
      .filter((r) => typeof r.federation_epsilon === "number")
      .map((r) => ({ x: r.id, y: r.federation_epsilon, label: `round ${r.id}: ε = ${fmtEps(r.federation_epsilon)}` }));
    const budget = state.budgets.federation_budget;
    const box = clear($("fed-chart-box"));
    if (!budget && points.length === 0) {
      box.append(h("p", { class: "note" },
        "This federation claims no client-level DP (no central noise), so there is no client-level ε to chart."));
    }
    box.append(lineChart({
      id: "fed-chart",
      points,
      budget: budget ? budget.epsilon : null,
      xLabel: "round",
      yLabel: "client-level ε",
      empty: budget ? "No rounds yet" : "No client-level ε recorded",
    }));
  }

  function renderRounds() {
    const table = clear($("rounds-table"));
    table.append(h("thead", {}, h("tr", {},
      h("th", { class: "num" }, "#"), h("th", {}, "Status"), h("th", { class: "num" }, "Participants"),
      h("th", { class: "num" }, "Accepted"), h("th", { class: "num" }, "Duration"),
      h("th", { class: "num" }, "Client-level ε"), h("th", {}, "Metrics"))));
    const body = h("tbody");
    const rounds = state.rounds.slice().reverse().slice(0, 50);
    for (const r of rounds) {
      const end = r.closed_at_ms || Date.now();
      const metrics = Object.entries(r.metrics || {}).map(([k, v]) => `${k}=${fmtMetric(v)}`).join(" · ");
      const status = r.state === "completed" ? "eligible" : r.state === "aborted" ? "revoked" : "pending";
      body.append(h("tr", { dataset: { round: String(r.id) } },
        h("td", { class: "num" }, String(r.id)),
        h("td", { title: r.abort_reason || "" }, badge(status, r.state)),
        h("td", { class: "num", title: r.participants.join(", ") }, String(r.participants.length)),
        h("td", { class: "num" }, String(r.accepted)),
        h("td", { class: "num" }, fmtDuration(Math.max(0, end - r.opened_at_ms)) + (r.closed_at_ms ? "" : " …")),
        h("td", { class: "num" }, fmtEps(r.federation_epsilon)),
        h("td", { class: "metrics" }, r.abort_reason ? `aborted: ${r.abort_reason}` : metrics)));
    }
    if (rounds.length === 0) body.append(h("tr", {}, h("td", { colspan: "7", class: "note" }, "No rounds yet.")));
    table.append(body);
  }

  const COLUMNS = [
    { key: "client", label: "Client", get: (c) => c.client },
    { key: "status", label: "Status", get: (c) => STATUS_ORDER[c.status] },
    { key: "spent", label: "ε spent", num: true, get: (c) => c.spent.epsilon },
    { key: "budget", label: "ε budget", num: true, get: (c) => c.budget.epsilon },
    { key: "delta", label: "δ", num: true, get: (c) => c.budget.delta },
    { key: "rounds", label: "Rounds", num: true, get: (c) => c.rounds },
    { key: "next", label: "ε after next round", num: true, get: (c) => c.next_round_epsilon },
    { key: "last_seen", label: "Last seen", get: (c) => c.last_seen_ms },
  ];

  function sortedClients() {
    const col = COLUMNS.find((c) => c.key === state.sort.key) || COLUMNS[0];
    const dir = state.sort.dir;
    return state.budgets.clients.slice().sort((a, b) => {
      const x = col.get(a);
      const y = col.get(b);
      if (x === y) return a.client < b.client ? -1 : 1;
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * dir;
    });
  }

  function renderClients() {
    const table = clear($("clients-table"));
    const head = h("tr");
    for (const col of COLUMNS) {
      const active = state.sort.key === col.key;
      head.append(h("th", {
        class: col.num ? "num" : null,
        "aria-sort": active ? (state.sort.dir > 0 ? "ascending" : "descending") : "none",
        dataset: { sortKey: col.key },
      }, h("button", {
        type: "button",
        class: "sort",
        onclick: () => {
          state.sort = { key: col.key, dir: active ? -state.sort.dir : 1 };
          renderClients();
        },
      }, col.label)));
    }
    head.append(h("th", {}, "ε over time"));
    table.append(h("thead", {}, head));
    const body = h("tbody");
    for (const c of sortedClients()) {
      const select = () => { state.selected = c.client; state.revokeArmed = false; renderClients(); renderClientPanel(true); };
      body.append(h("tr", {
        class: `client-row${state.selected === c.client ? " selected" : ""}`,
        tabindex: "0",
        dataset: { client: c.client, status: c.status },
        onclick: select,
        onkeydown: (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); select(); } },
      },
        h("td", { dataset: { col: "client" } }, c.client),
        h("td", { dataset: { col: "status" } }, badge(c.status)),
        h("td", { class: "num", dataset: { col: "spent", value: String(c.spent.epsilon) } }, fmtEps(c.spent.epsilon)),
        h("td", { class: "num", dataset: { col: "budget", value: String(c.budget.epsilon) } }, fmtEps(c.budget.epsilon)),
        h("td", { class: "num", dataset: { col: "delta", value: String(c.budget.delta) } }, fmtDelta(c.budget.delta)),
        h("td", { class: "num", dataset: { col: "rounds" } }, String(c.rounds)),
        h("td", { class: "num", dataset: { col: "next" } }, fmtEps(c.next_round_epsilon)),
        h("td", { dataset: { col: "last_seen" }, title: c.last_seen_ms ? fmtTime(c.last_seen_ms) : "" }, fmtAgo(c.last_seen_ms)),
        h("td", {}, sparkline(c.history.map((p) => p.epsilon), c.budget.epsilon, c.client))));
    }
    if (state.budgets.clients.length === 0) {
      body.append(h("tr", {}, h("td", { colspan: "9", class: "note" }, "No clients yet.")));
    }
    table.append(body);
  }

  function renderAudit() {
    const table = clear($("audit-table"));
    table.append(h("thead", {}, h("tr", {},
      h("th", {}, "When (UTC)"), h("th", {}, "Who"), h("th", {}, "Client"), h("th", {}, "Action"),
      h("th", { class: "num" }, "Old ε"), h("th", { class: "num" }, "New ε"),
      h("th", { class: "num" }, "Spent ε"), h("th", {}, "Reason"))));
    const body = h("tbody");
    for (const a of state.audit.slice().reverse().slice(0, 100)) {
      body.append(h("tr", { dataset: { auditId: String(a.id) } },
        h("td", {}, fmtTime(a.at_ms)), h("td", {}, a.actor), h("td", {}, a.client),
        h("td", {}, a.action.replace("_", " ")),
        h("td", { class: "num" }, fmtEps(a.old_budget.epsilon)),
        h("td", { class: "num" }, fmtEps(a.new_budget.epsilon)),
        h("td", { class: "num" }, fmtEps(a.spent_epsilon)),
        h("td", { class: "metrics" }, a.reason || "")));
    }
    if (state.audit.length === 0) body.append(h("tr", {}, h("td", { colspan: "8", class: "note" }, "No budget operations yet.")));
    table.append(body);
  }

  // ---- One client: chart and operations -----------------------------------------------------

  function renderClientPanel(rebuildOps) {
    const panel = $("client-panel");
    const c = state.selected && state.budgets.clients.find((x) => x.client === state.selected);
    if (!c) { panel.hidden = true; return; }
    panel.hidden = false;
    $("client-title").textContent = `${c.client}: ε spent ${fmtEps(c.spent.epsilon)} of ${fmtEps(c.budget.epsilon)} (δ ${fmtDelta(c.budget.delta)}), ${c.status}`;
    clear($("client-chart-box")).append(lineChart({
      id: "client-chart",
      points: c.history.map((p) => ({ x: p.round, y: p.epsilon, label: `round ${p.round}: ε = ${fmtEps(p.epsilon)} (${fmtTime(p.recorded_at_ms)})` })),
      budget: c.budget.epsilon,
      xLabel: "round",
      yLabel: "record-level ε",
      empty: "Not charged for any round yet",
    }));
    if (rebuildOps) buildOps(c);
    else updateRevoke(c);
  }

  function buildOps(c) {
    const ops = clear($("client-ops"));
    if (!state.claims || state.claims.role !== "admin") {
      ops.append(h("p", { class: "note" }, "Signed in as a viewer: budgets are read-only."));
      return;
    }
    const msg = h("p", { class: "error", role: "status", id: "budget-message" });
    const opSelect = h("select", { id: "budget-op", name: "op" },
      h("option", { value: "set" }, "Set ε budget to"),
      h("option", { value: "raise" }, "Raise ε budget by"));
    const amount = h("input", { id: "budget-amount", type: "number", min: "0", step: "any", required: true, inputmode: "decimal" });
    const reason = h("input", { id: "budget-reason", type: "text", maxlength: "500", required: true, placeholder: "e.g. approved by the ethics board, ticket 123" });
    const form = h("form", {
      id: "budget-form",
      onsubmit: async (e) => {
        e.preventDefault();
        const value = Number(amount.value);
        const body = opSelect.value === "set" ? { set_epsilon: value } : { raise_epsilon_by: value };
        body.reason = reason.value;
        try {
          const out = await api(`/v1/federations/${enc(state.fed)}/clients/${enc(c.client)}/budget`, { method: "POST", body });
          msg.textContent = `Budget ${fmtEps(out.audit.old_budget.epsilon)} → ${fmtEps(out.audit.new_budget.epsilon)}; status ${out.client.status}.`;
          amount.value = "";
          reason.value = "";
          refresh();
        } catch (err) {
          msg.textContent = err.message;
        }
      },
    },
      h("div", {}, h("label", { for: "budget-op" }, "Operation"), opSelect),
      h("div", {}, h("label", { for: "budget-amount" }, "ε"), amount),
      h("div", { class: "wide" }, h("label", { for: "budget-reason" }, "Reason (audited)"), reason),
      h("div", { class: "wide" }, h("button", { type: "submit" }, "Apply"),
        h("span", { class: "note" }, " Spent ε is never changed; a budget below it makes the client exhausted.")));
    const revokeReason = h("input", { id: "revoke-reason", type: "text", maxlength: "500", placeholder: "reason (optional, audited)" });
    const revokeButton = h("button", {
      id: "revoke-button",
      type: "button",
      class: "danger",
      onclick: async () => {
        if (!state.revokeArmed) {
          state.revokeArmed = true;
          revokeButton.textContent = `Confirm: revoke ${c.client} for good`;
          return;
        }
        state.revokeArmed = false;
        try {
          await api(`/v1/federations/${enc(state.fed)}/clients/${enc(c.client)}/revoke`, {
            method: "POST",
            body: revokeReason.value.trim() ? { reason: revokeReason.value } : {},
          });
          msg.textContent = `${c.client} revoked.`;
          refresh();
        } catch (err) {
          msg.textContent = err.message;
        }
      },
    }, "Revoke client");
    ops.append(h("h3", {}, "Budget"), form, h("h3", {}, "Revocation"),
      h("div", { id: "revoke-box" }, revokeReason, revokeButton), msg);
    updateRevoke(c);
  }

  function updateRevoke(c) {
    const button = $("revoke-button");
    if (!button) return;
    const revoked = c.status === "revoked";
    button.disabled = revoked;
    $("revoke-reason").disabled = revoked;
    if (revoked) button.textContent = "Revoked";
    else if (!state.revokeArmed) button.textContent = "Revoke client";
  }

  // ---- Charts -------------------------------------------------------------------------------

  function niceStep(range, target) {
    const raw = range / Math.max(1, target);
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    const m = raw / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
  }

  /** A line chart of points {x, y, label} with an optional dashed budget line. */
  function lineChart(o) {
    const W = 640, H = 260, L = 52, R = 16, T = 16, B = 40;
    const chart = svg("svg", {
      id: o.id,
      class: "chart",
      viewBox: `0 0 ${W} ${H}`,
      role: "img",
      "aria-label": `${o.yLabel} by ${o.xLabel}${o.budget !== null && o.budget !== undefined ? `, budget ${fmtEps(o.budget)}` : ""}`,
      dataset: { points: String(o.points.length) },
    });
    chart.append(svg("title", {}, `${o.yLabel} by ${o.xLabel}`));
    const ys = o.points.map((p) => p.y).filter((y) => isFinite(y));
    const hasBudget = typeof o.budget === "number" && isFinite(o.budget);
    let yMax = Math.max(hasBudget ? o.budget : 0, ...ys, 0);
    yMax = yMax > 0 ? yMax * 1.1 : 1;
    const xs = o.points.map((p) => p.x);
    let xMin = xs.length ? Math.min(...xs) : 0;
    let xMax = xs.length ? Math.max(...xs) : 1;
    if (xMin === xMax) { xMin -= 1; xMax += 1; }
    const px = (x) => L + ((x - xMin) / (xMax - xMin)) * (W - L - R);
    const py = (y) => T + (1 - y / yMax) * (H - T - B);
    const yStep = niceStep(yMax, 5);
    for (let y = 0; y <= yMax + 1e-12; y += yStep) {
      chart.append(svg("line", { class: "grid", x1: L, x2: W - R, y1: py(y), y2: py(y) }));
      chart.append(svg("text", { class: "tick", x: L - 6, y: py(y) + 4, "text-anchor": "end" }, +y.toPrecision(4)));
    }
    const xStep = Math.max(1, Math.round(niceStep(xMax - xMin, 8)));
    for (let x = Math.ceil(xMin); x <= xMax; x += xStep) {
      chart.append(svg("text", { class: "tick", x: px(x), y: H - B + 16, "text-anchor": "middle" }, String(x)));
    }
    chart.append(svg("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }));
    chart.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
    chart.append(svg("text", { class: "tick", x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle" }, o.xLabel));
    chart.append(svg("text", { class: "tick", x: 12, y: (T + H - B) / 2, "text-anchor": "middle", transform: `rotate(-90 12 ${(T + H - B) / 2})` }, o.yLabel));
    if (hasBudget) {
      chart.append(svg("line", { class: "budget", x1: L, x2: W - R, y1: py(o.budget), y2: py(o.budget) },
        svg("title", {}, `budget ε = ${fmtEps(o.budget)}`)));
      chart.append(svg("text", { class: "budget-label", x: W - R, y: py(o.budget) - 5, "text-anchor": "end" }, `budget ${fmtEps(o.budget)}`));
    }
    if (o.points.length) {
      const d = o.points.map((p, i) => `${i ? "L" : "M"}${px(p.x).toFixed(1)},${py(p.y).toFixed(1)}`).join(" ");
      chart.append(svg("path", { class: "series", d }));
      for (const p of o.points) {
        chart.append(svg("circle", { class: "dot", cx: px(p.x).toFixed(1), cy: py(p.y).toFixed(1), r: 3.5 }, svg("title", {}, p.label)));
      }
    } else {
      chart.append(svg("text", { class: "tick", x: (L + W - R) / 2, y: (T + H - B) / 2, "text-anchor": "middle" }, o.empty));
    }
    return chart;
  }

  /** A row-sized chart of one client's ε after each round, against its budget. */
  function sparkline(values, budget, name) {
    const W = 110, H = 26, P = 2;
    const chart = svg("svg", {
      class: "spark", viewBox: `0 0 ${W} ${H}`, role: "img",
      "aria-label": `ε of ${name} over ${values.length} rounds against budget ${fmtEps(budget)}`,
      dataset: { points: String(values.length) },
    });
    const top = Math.max(budget, ...values, 1e-9) * 1.05;
    const py = (y) => H - P - (y / top) * (H - 2 * P);
    chart.append(svg("line", { class: "budget", x1: 0, x2: W, y1: py(budget), y2: py(budget) }));
    if (values.length) {
      // Spend starts at 0 before the first round.
      const n = values.length;
      const pts = [0, ...values].map((v, i) => `${((i / n) * (W - 2 * P) + P).toFixed(1)},${py(v).toFixed(1)}`);
      chart.append(svg("polyline", { class: "series", points: pts.join(" ") }));
    }
    return chart;
  }

  // ---- Start --------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("signin-form").addEventListener("submit", (e) => {
      e.preventDefault();
      signIn($("token").value.trim(), false);
    });
    $("sign-out").addEventListener("click", () => signOut(""));
    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved) signIn(saved, true);
  });
})();
