// Usage: hourly requests, distinct users and resources accessed over the
// last 30 days (per tenant, with or without its descendants), requests and
// error rate per key, and for the operator the busiest tenants live.

import { all, get, query } from "../api.js";
import { h, fill, field, table, section, when, bytes, badge, errorBox } from "../dom.js";
import { timeChart, lastHours } from "../chart.js";

const DAYS = 30;
const LIVE_MS = 5000;

export async function render(ctx) {
  const operator = ctx.caller.view === "operator";
  const tenants = operator ? await all("/v1/tenants") : null;
  const wanted = ctx.params.get("tenant") || (operator ? (tenants.find((t) => t.status !== "deleted") || {}).tenant_id : ctx.caller.me.tenant_id);
  const from = new Date((lastHours(DAYS)[0]) * 1000).toISOString();
  const metrics = async () => operator
    ? (wanted ? (await get(`/v1/tenants/${wanted}/usage`)).metrics : [])
    : get(`/v1/usage/metrics${query({ from })}`);

  const page = h("div", {}, h("h1", {}, "Usage"));
  if (operator) {
    page.append(liveSection(ctx, tenants));
  }
  const picker = operator
    ? h("select", {}, tenants.filter((t) => t.status !== "deleted").map((t) =>
      h("option", { value: t.tenant_id, selected: t.tenant_id === wanted }, t.name)))
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
    const xs = lastHours(DAYS);
    const index = new Map(xs.map((x, i) => [x, i]));
    const sum = (key) => {
      const v = xs.map(() => 0);
      for (const r of use) {
        const i = index.get(Math.floor(Date.parse(r.hour) / 1000));
        if (i !== undefined) v[i] += r[key];
      }
      return v;
    };
    fill(charts,
      timeChart("Requests per hour", xs, [{ label: "requests", values: sum("request_count") }], { yLabel: "requests" }),
      timeChart("Distinct users per hour", xs, [{ label: "users", values: sum("unique_users") }], { yLabel: "users" }),
      timeChart("Resources accessed per hour", xs, [{ label: "resources", values: sum("resources_accessed") }], { yLabel: "resources" }),
      h("p", { class: "muted" }, "Hourly rows are refreshed by the server every metrics_refresh_secs; error rate and latency per hour are not in the API (see the live view and the per-key table)."));
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

function pct(part, whole) {
  return whole ? `${((100 * part) / whole).toFixed(1)} %` : "—";
}

/** The busiest tenants of this server, refreshed every few seconds (operator). */
function liveSection(ctx, tenants) {
  const names = new Map(tenants.map((t) => [t.tenant_id, t.name]));
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
      const top = s.tenants.slice(0, 6).map((t) => ({ label: names.get(t.tenant_id) || t.tenant_id.slice(0, 8), values: history.byTenant.get(t.tenant_id) }));
      const rows = [...s.tenants, { tenant_id: null, ...s.other }];
      fill(body,
        table("Busiest tenants", [
          ["Tenant", (r) => r.tenant_id ? h("a", { href: `#/tenants/${r.tenant_id}` }, names.get(r.tenant_id) || r.tenant_id) : badge("all others", "other")],
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
          ? timeChart("Requests in the current period, busiest tenants", history.xs.slice(), top.map((t) => ({ label: t.label, values: t.values.slice() })), { yLabel: "requests" })
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
