"use strict";
/*
 * The expertd page: pick an expert, ask it about a text, see the opinion drawn,
 * watch the per-expert stats. Talks only to this bridge (same origin). The
 * token, when the bridge asks for one, lives in this tab's sessionStorage only.
 */
(function () {
  const TOKEN_KEY = "expertd.token";
  const STATS_EVERY_MS = 2000;
  const $ = (id) => document.getElementById(id);
  let experts = [];

  /** An error from the bridge: {name, message, status}. */
  class ApiError extends Error {
    constructor(status, name, message) {
      super(message);
      this.status = status;
      this.name = name;
    }
  }

  function token() {
    return window.sessionStorage.getItem(TOKEN_KEY);
  }

  /** fetch() a JSON route of this bridge, with the token if there is one. */
  async function api(path, options = {}) {
    const headers = { Accept: "application/json", ...(options.headers || {}) };
    const t = token();
    if (t) headers.Authorization = `Bearer ${t}`;
    const res = await fetch(path, { ...options, headers });
    let body;
    try {
      body = await res.json();
    } catch {
      body = null;
    }
    if (res.status === 401) askForToken(t ? "the bridge refused this token" : "");
    if (!res.ok) {
      const e = (body && body.error) || {};
      throw new ApiError(res.status, e.name || `HTTP ${res.status}`, e.message || res.statusText);
    }
    return body;
  }

  // -- token ------------------------------------------------------------------

  function askForToken(problem) {
    $("token-panel").hidden = false;
    const err = $("token-error");
    err.hidden = !problem;
    err.textContent = problem || "";
  }

  function setUpToken() {
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("token-input").value.trim();
      if (!value) return;
      window.sessionStorage.setItem(TOKEN_KEY, value);
      $("token-input").value = "";
      $("token-panel").hidden = true;
      loadExperts();
      refreshStats();
    });
    $("token-forget").addEventListener("click", () => {
      window.sessionStorage.removeItem(TOKEN_KEY);
      askForToken("");
    });
  }

  // -- experts and opinions -----------------------------------------------------

  async function loadExperts() {
    try {
      experts = await api("/experts");
    } catch (err) {
      showError("ask-error", err);
      return;
    }
    const select = $("expert-select");
    const previous = select.value;
    select.replaceChildren(...experts.flatMap((e) => [
      new Option(`${e.name} (v${e.version})`, e.name),
      // Each other served version of a versioned expert, asked by NAME@VERSION (docs/versions.md).
      ...(Array.isArray(e.versions) ? e.versions.filter((v) => !v.default).map((v) => new Option(`${e.name}@${v.version}`, `${e.name}@${v.version}`)) : []),
    ]));
    if ([...select.options].some((o) => o.value === previous)) select.value = previous;
    describeExpert();
  }

  function currentExpert() {
    const value = $("expert-select").value;
    return experts.find((e) => e.name === value || value.startsWith(`${e.name}@`)) || null;
  }

  /** A versioned expert's versions, its shadow's agreement and its canary, in one sentence. */
  function describeVersions(e) {
    if (!Array.isArray(e.versions)) return "";
    const versions = e.versions.map((v) => `${v.version}${v.labels.length ? ` (${v.labels.join(", ")})` : ""}${v.default ? " answers" : ""}`);
    let text = ` Versions: ${versions.join(", ")}.`;
    for (const a of e.shadow_agreement || []) {
      const parts = [
        ...Object.entries(a.agreement || {}).map(([field, ratio]) => `${field} agreement ${(ratio * 100).toFixed(1)}%`),
        ...Object.entries(a.mean_abs_diff || {}).map(([field, diff]) => `${field} mean |difference| ${diff.toFixed(3)}`),
      ];
      text += ` Shadow ${a.shadow} vs ${a.serving} on ${a.documents} documents (this worker): ${parts.join(", ")}.`;
    }
    if (e.canary) text += ` Canary: ${e.canary.version} answers ${(e.canary.share * 100).toFixed(0)}%.`;
    return text;
  }

  function describeExpert() {
    const e = currentExpert();
    const text = e ? (e.description || "").trim() : "";
    $("expert-description").textContent = e ? `${text}${text && !/[.!?]$/.test(text) ? "." : ""} Reads the field "${e.field}".${describeVersions(e)}` : "";
  }

  async function ask(event) {
    event.preventDefault();
    const expert = currentExpert();
    if (!expert) return;
    const button = $("ask-button");
    button.disabled = true;
    $("ask-error").hidden = true;
    try {
      const opinion = await api(`/experts/${encodeURIComponent($("expert-select").value)}`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ [expert.field || "text"]: $("text-input").value }),
      });
      drawOpinion($("opinion"), expert, opinion);
      refreshStats();
    } catch (err) {
      $("opinion").replaceChildren();
      showError("ask-error", err);
    } finally {
      button.disabled = false;
    }
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  /** The range to draw a number in: the schema's bounds, else 0..1 or a symmetric one. */
  function rangeOf(value, schema) {
    const lo = schema && typeof schema.minimum === "number" ? schema.minimum : null;
    const hi = schema && typeof schema.maximum === "number" ? schema.maximum : null;
    if (lo !== null && hi !== null && hi > lo) return [lo, hi];
    if (value >= 0 && value <= 1) return [0, 1];
    const r = Math.max(1, Math.ceil(Math.abs(value)));
    return [-r, r];
  }

  /** One labelled bar; signed ranges grow from the middle. */
  function barRow(key, value, [lo, hi], highlight) {
    const row = el("div", `bar-row${highlight ? " best" : ""}`);
    row.dataset.key = key;
    row.append(el("span", "bar-label", key));
    const bar = el("span", "bar");
    const fill = el("span", "fill");
    const clamp = (x) => Math.min(1, Math.max(0, x));
    if (lo < 0 && hi > 0) {
      const zero = (0 - lo) / (hi - lo);
      const at = clamp((value - lo) / (hi - lo));
      fill.style.left = `${Math.min(zero, at) * 100}%`;
      fill.style.width = `${Math.abs(at - zero) * 100}%`;
      fill.classList.add(value < 0 ? "negative" : "positive");
      bar.classList.add("signed");
    } else {
      fill.style.width = `${clamp((value - lo) / (hi - lo)) * 100}%`;
    }
    bar.append(fill);
    row.append(bar, el("span", "bar-value", String(value)));
    return row;
  }

  /** Draw an opinion: its label, its probabilities and its numbers as bars, and the JSON. */
  function drawOpinion(target, expert, opinion) {
    const schema = (expert.opinion_schema && expert.opinion_schema.properties) || {};
    const box = el("div", "opinion-box");
    box.dataset.expert = expert.name;
    if (typeof opinion.label === "string") {
      const head = el("p", "opinion-label");
      head.append(el("span", "muted", `${expert.name} says `), el("strong", "label", opinion.label));
      box.append(head);
    }
    const bars = el("div", "bars");
    for (const [key, value] of Object.entries(opinion)) {
      if (typeof value === "number") {
        bars.append(barRow(key, value, rangeOf(value, schema[key]), false));
      } else if (value && typeof value === "object" && !Array.isArray(value)) {
        const entries = Object.entries(value).filter(([, v]) => typeof v === "number");
        if (!entries.length) continue;
        bars.append(el("h3", "bar-group", key));
        for (const [k, v] of entries) {
          bars.append(barRow(k, v, rangeOf(v, schema[key] && schema[key].properties && schema[key].properties[k]), k === opinion.label));
        }
      }
    }
    box.append(bars);
    const raw = el("details", "raw");
    raw.append(el("summary", "", "JSON"), el("pre", "", JSON.stringify(opinion, null, 2)));
    box.append(raw);
    target.replaceChildren(box);
  }

  function showError(id, err) {
    const node = $(id);
    node.hidden = false;
    node.textContent = err instanceof ApiError ? `${err.name}: ${err.message}` : String(err);
  }

  // -- watching -----------------------------------------------------------------

  async function refreshStats() {
    let stats;
    try {
      stats = await api("/stats");
    } catch (err) {
      $("stats-updated").textContent = err instanceof ApiError ? `(${err.name})` : "(unavailable)";
      return;
    }
    const rows = Object.entries(stats.experts || {}).map(([name, s]) => {
      const tr = el("tr");
      tr.dataset.expert = name;
      const latency = s.latency_ms || {};
      for (const v of [name, s.calls, s.errors, s.items, s.batches, s.mean_batch_size, latency.p50, latency.p99]) {
        tr.append(el("td", "", v === undefined ? "" : String(v)));
      }
      return tr;
    });
    document.querySelector("#stats-table tbody").replaceChildren(...rows);
    $("stats-updated").textContent = `(updated ${new Date().toLocaleTimeString()})`;
  }

  async function refreshHealth() {
    const state = $("server-state");
    try {
      const res = await fetch("/healthz", { headers: { Accept: "application/json" } });
      const body = await res.json();
      state.textContent = res.ok ? `server up: ${body.server.experts.length} experts, pid ${body.server.pid}` : "server not answering";
      state.className = `state ${res.ok ? "up" : "down"}`;
    } catch {
      state.textContent = "bridge not answering";
      state.className = "state down";
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    setUpToken();
    $("expert-select").addEventListener("change", describeExpert);
    $("ask-form").addEventListener("submit", ask);
    loadExperts();
    refreshHealth();
    refreshStats();
    window.setInterval(() => {
      if (document.hidden) return;
      refreshStats();
      refreshHealth();
    }, STATS_EVERY_MS);
  });
})();
