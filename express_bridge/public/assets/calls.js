"use strict";
/*
 * The page's call view: the last calls (GET /traces, from the bridge's ring of
 * recent traces), filtered by expert and outcome or sorted slowest first, and,
 * for the call clicked, its waterfall (GET /trace?id=...): every span of the
 * bridge and the server on one time axis, indented as the call tree (the
 * chain's dependencies under the call), the shared model calls with the size
 * of the batch they served. Needs tracing on (OTEL_TRACES_EXPORTER).
 */
(function () {
  const TOKEN_KEY = "expertd.token";
  const EVERY_MS = 3000;
  const $ = (id) => document.getElementById(id);

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  async function getJson(path) {
    const headers = { Accept: "application/json" };
    const t = window.sessionStorage.getItem(TOKEN_KEY);
    if (t) headers.Authorization = `Bearer ${t}`;
    const res = await fetch(path, { headers });
    const body = await res.json().catch(() => null);
    if (!res.ok) throw new Error((body && body.error && body.error.message) || `HTTP ${res.status}`);
    return body;
  }

  async function refreshCalls() {
    const query = new URLSearchParams({ sort: $("calls-sort").value, limit: "25" });
    if ($("calls-expert").value) query.set("expert", $("calls-expert").value.trim());
    if ($("calls-outcome").value) query.set("outcome", $("calls-outcome").value);
    let answer;
    try {
      answer = await getJson(`/traces?${query}`);
    } catch (err) {
      $("calls-note").textContent = `(${err.message})`;
      return;
    }
    $("calls-note").textContent = answer.tracing ? `(${answer.calls.length} shown)` : "(tracing is off: set OTEL_TRACES_EXPORTER)";
    const rows = answer.calls.map((call) => {
      const tr = el("tr", call.error || call.status >= 400 ? "failed" : "");
      tr.dataset.trace = call.trace_id;
      tr.tabIndex = 0;
      for (const v of [new Date(call.start_ms).toLocaleTimeString(), call.name, call.expert || "", call.error || String(call.status), call.duration_ms.toFixed(1)]) {
        tr.append(el("td", "", v));
      }
      tr.addEventListener("click", () => showWaterfall(call.trace_id));
      tr.addEventListener("keydown", (e) => e.key === "Enter" && showWaterfall(call.trace_id));
      return tr;
    });
    document.querySelector("#calls-table tbody").replaceChildren(...rows);
  }

  /** The spans in call-tree order, each with its depth (a span whose parent is not here is a root). */
  function treeOrder(spans) {
    const ids = new Set(spans.map((s) => s.span_id));
    const children = new Map();
    for (const s of spans) {
      const key = s.parent_id && ids.has(s.parent_id) ? s.parent_id : null;
      if (!children.has(key)) children.set(key, []);
      children.get(key).push(s);
    }
    const out = [];
    const visit = (parent, depth) => {
      for (const s of (children.get(parent) || []).sort((a, b) => a.start_ms - b.start_ms)) {
        out.push([s, depth]);
        visit(s.span_id, depth + 1);
      }
    };
    visit(null, 0);
    return out;
  }

  async function showWaterfall(traceId) {
    let answer;
    try {
      answer = await getJson(`/trace?id=${traceId}`);
    } catch (err) {
      $("waterfall-title").textContent = `trace ${traceId}: ${err.message}`;
      $("waterfall").hidden = false;
      return;
    }
    const spans = answer.spans;
    const t0 = Math.min(...spans.map((s) => s.start_ms));
    const t1 = Math.max(...spans.map((s) => s.start_ms + s.duration_ms));
    const total = Math.max(t1 - t0, 0.001);
    $("waterfall-title").textContent = `trace ${traceId}: ${spans.length} spans, ${total.toFixed(1)} ms`;
    const rows = treeOrder(spans).map(([s, depth]) => {
      const row = el("div", `wf-row ${s.service === "expertd-bridge" ? "bridge" : "server"}${s.error ? " failed" : ""}`);
      row.dataset.name = s.name;
      const label = el("div", "wf-label", `${s.name}${s.error ? ` (${s.error})` : ""}`);
      label.style.paddingLeft = `${depth * 0.9}rem`;
      label.title = `${s.service}: ${JSON.stringify(s.attributes)}`;
      const lane = el("div", "wf-lane");
      const bar = el("div", "wf-bar");
      bar.style.left = `${((s.start_ms - t0) / total) * 100}%`;
      bar.style.width = `${Math.max((s.duration_ms / total) * 100, 0.4)}%`;
      lane.append(bar);
      row.append(label, lane, el("div", "wf-ms", s.duration_ms.toFixed(2)));
      return row;
    });
    $("waterfall-rows").replaceChildren(...rows);
    const shared = spans.filter((s) => s.attributes["expertd.batch_size"] !== undefined && s.name.startsWith("model "));
    $("waterfall-batch").textContent = shared.length
      ? shared.map((s) => `${s.name}: a batch of ${s.attributes["expertd.batch_size"]} input(s), serving ${(s.attributes["expertd.links"] || []).length} linked request(s)`).join("; ")
      : "";
    $("waterfall").hidden = false;
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("calls-filter").addEventListener("change", refreshCalls);
    $("calls-filter").addEventListener("submit", (e) => {
      e.preventDefault();
      refreshCalls();
    });
    refreshCalls();
    window.setInterval(() => {
      if (!document.hidden) refreshCalls();
    }, EVERY_MS);
  });
})();
