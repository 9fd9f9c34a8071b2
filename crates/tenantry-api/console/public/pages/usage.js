// Usage: hourly requests, distinct users and keys, error rate, p95 latency
// and storage over the last 30 days (per tenant, with or without its
// descendants), requests and error rate per key; for the operator the top
// tenants over 30 days (/v1/usage/top) with their hourly charts, and the
// busiest tenants live.

import { all, get, query } from "../api.js";
import { h, fill, field, table, section, when, bytes, badge, errorBox, tenantLabel } from "../dom.js";
import { timeChart, lastHours } from "../chart.js";

const DAYS = 30;
const LIVE_MS = 5000;

export async function render(ctx) {
  const operator = ctx.caller.view === "operator";
  const tenants = operator ? await all("/v1/tenants") : null;
  const byId = new Map((tenants || []).map((t) => [t.tenant_id, t]));
  // Ids as the API writes them (lower case), so that the picker names the
  // tenant whose data is shown whatever case a link used.
  const wanted = (ctx.params.get("tenant") || "").toLowerCase() || (operator ? (tenants.find((t) => t.status !== "deleted") || {}).tenant_id : (ctx.caller.me || {}).tenant_id);
  const from = new Date((lastHours(DAYS)[0]) * 1000).toISOString();
  const metrics = async () => operator
    ? (wanted ? (await get(`/v1/tenants/${encodeURIComponent(wanted)}/usage`)).metrics : [])
    : get(`/v1/usage/metrics${query({ from })}`);

  const page = h("div", {}, h("h1", {}, "Usage"));
  if (operator) {
    page.append(topSection(ctx, byId));
    page.append(liveSection(ctx, byId));
  }
  const listed = operator ? tenants.filter((t) => t.status !== "deleted") : [];
  const picker = operator
    ? h("select", {}, listed.map((t) =>
      h("option", { value: t.tenant_id, selected: t.tenant_id === wanted }, tenantLabel(t, byId))),
      // A tenant the list leaves out (deleted, or no such id) is named as
      // what it is, never shown under the first tenant's name.
      wanted && !listed.some((t) => t.tenant_id === wanted)
        ? h("option", { value: wanted, selected: true },
          byId.has(wanted) ? `${tenantLabel(byId.get(wanted), byId)} (deleted)` : `unknown tenant ${wanted}`)
        : null)
    : null;
  if (picker) picker.addEventListener("change", () => ctx.go(`#/usage?tenant=${picker.value}`));
  const withDescendants = h("input", { type: "checkbox" });
  const charts = h("div", { class: "charts" });
  page.append(h("section", { "aria-label": "Last 30 days" },
    h("h2", {}, `Last ${DAYS} days, hourly`),
    h("div", { class: "toolbar" },
      picker ? field("Tenant", picker) : null,
      h("label", { class: "check" }, withDescendants, " Include descendants")),
    charts));
  let rows = [];
  const draw = () => {
    const own = wanted;
    const use = rows.filter((r) => withDescendants.checked || r.tenant_id === own);
    const h30 = hourly(use);
    fill(charts,
      timeChart("Requests per hour", h30.xs, [{ label: "requests", values: h30.sum("request_count") }], { yLabel: "requests" }),
      timeChart("Distinct users and keys per hour", h30.xs, [
        { label: "users", values: h30.sum("unique_users") },
        { label: "keys", values: h30.sum("unique_keys") },
      ], { yLabel: "distinct", additive: false }),
      timeChart("Error rate per hour", h30.xs, [
        { label: "4xx %", values: h30.rate("client_errors") },
        { label: "5xx %", values: h30.rate("server_errors") },
      ], { yLabel: "% of requests", additive: false }),
      timeChart("p95 latency per hour", h30.xs, [{ label: "p95 ms", values: h30.max("p95_latency_ms") }], { yLabel: "ms", additive: false }),
      timeChart("Storage (sampled hourly)", h30.xs, [
        { label: "bytes", values: h30.sum("storage_bytes", true) },
      ], { yLabel: "bytes", additive: false }),
      timeChart("Resources held (sampled hourly)", h30.xs, [
        { label: "resources", values: h30.sum("storage_resources", true) },
      ], { yLabel: "resources", additive: false }),
      h("p", { class: "muted" }, "Request rows are refreshed by the server every metrics_refresh_secs; storage is sampled at the first refresh of each hour. With descendants, the p95 shown is the highest of the tenants' hourly p95s."));
  };
  withDescendants.addEventListener("change", draw);
  try {
    rows = await metrics();
    if (wanted) draw();
    else fill(charts, h("p", { class: "empty" }, "No tenants yet."));
  } catch (e) {
    fill(charts, errorBox(e));
  }
  if (!operator) {
    page.append(section("Requests per key, last 30 days", async () => {
      const [keys, known] = [await get("/v1/usage/keys?hours=720"), await all("/v1/keys").catch(() => [])];
      const label = (id) => {
        const k = known.find((x) => x.key_id === id);
        return k ? `${k.prefix}${k.description ? ` (${k.description})` : ""}` : id;
      };
      return table("Requests per key", [
        ["Key", (k) => h("code", {}, label(k.key_id))],
        ["Requests", (k) => k.request_count],
        ["Errors", (k) => k.error_count],
        ["Error rate", (k) => pct(k.error_count, k.request_count)],
        ["Last request", (k) => when(k.last_request_at)],
      ], keys, "No requests with a key in the last 30 days.");
    }));
  }
  return page;
}

/**
 * Hourly rows bucketed on the last 30 days' hours: sums (NULL where no row
 * has the value, for samples), rates of a count per request (%), maxima.
 */
function hourly(rows) {
  const xs = lastHours(DAYS);
  const index = new Map(xs.map((x, i) => [x, i]));
  const at = (r) => index.get(Math.floor(Date.parse(r.hour) / 1000));
  const sum = (key, sampled = false) => {
    const v = xs.map(() => (sampled ? null : 0));
    for (const r of rows) {
      const i = at(r);
      if (i !== undefined && r[key] !== null && r[key] !== undefined) v[i] = (v[i] || 0) + r[key];
    }
    return v;
  };
  const rate = (key) => {
    const part = sum(key);
    const whole = sum("request_count");
    return xs.map((_, i) => (whole[i] ? (100 * part[i]) / whole[i] : null));
  };
  const max = (key) => {
    const v = xs.map(() => null);
    for (const r of rows) {
      const i = at(r);
      if (i !== undefined && r[key] !== null && r[key] !== undefined) v[i] = Math.max(v[i] ?? r[key], r[key]);
    }
    return v;
  };
  return { xs, sum, rate, max };
}

const RANKINGS = [["requests", "requests"], ["errors", "errors (4xx + 5xx)"], ["p95", "p95 latency"], ["storage", "storage"]];

/** The operator's top tenants over 30 days, ranked as chosen, with their hourly charts. */
function topSection(ctx, byId) {
  const by = ctx.params.get("by") || "requests";
  const picker = h("select", {}, RANKINGS.map(([v, label]) => h("option", { value: v, selected: v === by }, label)));
  picker.addEventListener("change", () => {
    const p = new URLSearchParams(ctx.params);
    p.set("by", picker.value);
    ctx.go(`#/usage?${p}`);
  });
  const body = h("div", {}, h("p", { class: "loading" }, "Loading…"));
  (async () => {
    try {
      const top = await get(`/v1/usage/top${query({ days: String(DAYS), limit: "10", by })}`);
      const charted = top.slice(0, 5);
      // Each tenant's own: one refused (a deleted tenant still ranks among
      // the top) leaves it out of the charts, not the whole section out
      // (found by a review of the console).
      const settled = await Promise.allSettled(charted.map((t) => get(`/v1/tenants/${t.tenant_id}/usage`)));
      const series = (pick) => charted.flatMap((t, i) => {
        if (settled[i].status !== "fulfilled") return [];
        const own = hourly(settled[i].value.metrics.filter((r) => r.tenant_id === t.tenant_id));
        return [{ label: labelOf(t.tenant_id, byId, t.name), values: pick(own) }];
      });
      const xs = lastHours(DAYS);
      fill(body,
        table(`Top tenants by ${by}, last ${DAYS} days`, [
          ["Tenant", (t) => h("a", { href: `#/tenants/${t.tenant_id}` }, labelOf(t.tenant_id, byId, `${t.name} (${t.tenant_id})`))],
          ["Status", (t) => badge(t.status)],
          ["Requests", (t) => t.request_count],
          ["4xx", (t) => t.client_errors],
          ["5xx", (t) => t.server_errors],
          ["Error rate", (t) => (t.error_rate === null ? "—" : `${(100 * t.error_rate).toFixed(1)} %`)],
          ["p95 ms", (t) => (t.p95_latency_ms === null ? "—" : t.p95_latency_ms.toFixed(1))],
          ["Resources", (t) => t.storage_resources ?? "—"],
          ["Storage", (t) => bytes(t.storage_bytes)],
        ], top, "No usage recorded in the last 30 days."),
        charted.length ? h("div", { class: "charts" },
          timeChart("Requests per hour, top tenants", xs, series((u) => u.sum("request_count")), { yLabel: "requests" }),
          timeChart("Error rate per hour, top tenants", xs, series((u) => u.rate("server_errors").map((v, i) => {
            const c = u.rate("client_errors")[i];
            return v === null ? null : v + c;
          })), { yLabel: "% of requests", additive: false }),
          timeChart("p95 latency per hour, top tenants", xs, series((u) => u.max("p95_latency_ms")), { yLabel: "ms", additive: false }),
          timeChart("Storage, top tenants", xs, series((u) => u.sum("storage_bytes", true)), { yLabel: "bytes", additive: false })) : null);
    } catch (e) {
      fill(body, errorBox(e));
    }
  })();
  return h("section", { "aria-label": "Top tenants, last 30 days" },
    h("h2", {}, `Top tenants, last ${DAYS} days`),
    h("div", { class: "toolbar" }, field("Rank by", picker)),
    body);
}

/** Tenant `id` as tenantLabel names it, or `fallback` for one not in the operator's list. */
function labelOf(id, byId, fallback = id) {
  return byId.has(id) ? tenantLabel(byId.get(id), byId) : fallback;
}

function pct(part, whole) {
  return whole ? `${((100 * part) / whole).toFixed(1)} %` : "—";
}

/** The busiest tenants of this server, refreshed every few seconds (operator). */
function liveSection(ctx, byId) {
  const body = h("div", {}, h("p", { class: "loading" }, "Loading…"));
  const stamp = h("p", { class: "muted", "aria-live": "off" });
  const history = { xs: [], byTenant: new Map() };
  let stopped = false;
  const tick = async () => {
    try {
      const s = await get("/v1/stats/tenants");
      const now = Math.floor(Date.now() / 1000);
      history.xs.push(now);
      const seen = new Set();
      for (const t of s.tenants) {
        seen.add(t.tenant_id);
        if (!history.byTenant.has(t.tenant_id)) history.byTenant.set(t.tenant_id, history.xs.slice(0, -1).map(() => null));
        history.byTenant.get(t.tenant_id).push(t.current.requests);
      }
      for (const [id, v] of history.byTenant) if (!seen.has(id)) v.push(null);
      if (history.xs.length > 120) {
        history.xs.shift();
        for (const v of history.byTenant.values()) v.shift();
      }
      const top = s.tenants.slice(0, 6).map((t) => ({ label: labelOf(t.tenant_id, byId), values: history.byTenant.get(t.tenant_id) }));
      const rows = [...s.tenants, { tenant_id: null, ...s.other }];
      fill(body,
        table("Busiest tenants", [
          ["Tenant", (r) => r.tenant_id ? h("a", { href: `#/tenants/${r.tenant_id}` }, labelOf(r.tenant_id, byId)) : badge("all others", "other")],
          ["Requests (now)", (r) => r.current.requests],
          ["Errors (now)", (r) => pct(r.current.client_errors + r.current.server_errors, r.current.requests)],
          ["p95 ms (now)", (r) => (r.current.p95_ms === null || r.current.p95_ms === undefined ? "—" : r.current.p95_ms.toFixed(1))],
          ["Requests (last)", (r) => r.last.requests],
          ["Errors (last)", (r) => pct(r.last.client_errors + r.last.server_errors, r.last.requests)],
          ["p95 ms (last)", (r) => (r.last.p95_ms === null || r.last.p95_ms === undefined ? "—" : r.last.p95_ms.toFixed(1))],
          ["Resources", (r) => r.resources ?? "—"],
          ["Storage", (r) => bytes(r.storage_bytes)],
        ], rows),
        top.length && history.xs.length > 1
          ? timeChart("Requests in the current period, busiest tenants", history.xs.slice(), top.map((t) => ({ label: t.label, values: t.values.slice() })), { yLabel: "requests", additive: false })
          : null);
      fill(stamp, `Periods of ${s.period_secs} s (${Math.round(s.current_elapsed_secs)} s into the current one); ${s.tracked} tenants tracked; updated ${new Date().toLocaleTimeString()}, every ${LIVE_MS / 1000} s.`);
    } catch (e) {
      fill(body, errorBox(e));
    }
    if (!stopped) timer = setTimeout(tick, LIVE_MS);
  };
  let timer = null;
  ctx.onLeave(() => { stopped = true; clearTimeout(timer); });
  tick();
  return h("section", { "aria-label": "Live: busiest tenants" },
    h("h2", {}, "Live: busiest tenants on this server"), stamp, body);
}
