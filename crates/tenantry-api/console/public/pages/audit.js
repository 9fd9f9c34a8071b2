// Audit: the audit log newest first, filtered by action and time, a page at
// a time, with the actor and the impersonator (who acted as the actor).

import { all, get, query } from "../api.js";
import { h, fill, field, table, when, errorBox, badge, tenantLabel } from "../dom.js";

const PAGE = 25;

export async function render(ctx) {
  const operator = ctx.caller.view === "operator";
  const tenants = operator ? (await all("/v1/tenants")) : null;
  const byId = new Map((tenants || []).map((t) => [t.tenant_id, t]));
  const p = ctx.params;
  // Ids as the API writes them (lower case): the picker then names the
  // tenant whose rows are shown whatever case a link used.
  const tenant = operator ? ((p.get("tenant") || "").toLowerCase() || (tenants[0] || {}).tenant_id || "") : null;

  const picker = operator ? h("select", { name: "tenant" }, tenants.map((t) =>
    h("option", { value: t.tenant_id, selected: t.tenant_id === tenant }, tenantLabel(t, byId, true))),
    // An id the list lacks is named as such, never shown under the first
    // tenant's name.
    tenant && !byId.has(tenant) ? h("option", { value: tenant, selected: true }, `unknown tenant ${tenant}`) : null) : null;
  const action = h("input", { type: "text", name: "action", value: p.get("action") || "", placeholder: "e.g. key.revoked", autocomplete: "off" });
  const since = h("input", { type: "datetime-local", name: "since", value: local(p.get("since")) });
  const until = h("input", { type: "datetime-local", name: "until", value: local(p.get("until")) });
  const form = h("form", { class: "toolbar", "aria-label": "Filter the audit log" },
    picker ? field("Tenant", picker) : null,
    field("Action", action),
    field("From", since),
    field("Until", until),
    h("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const iso = (v) => (v ? new Date(v).toISOString() : "");
    ctx.go(`#/audit${query({ tenant: picker ? picker.value : "", action: action.value.trim(), since: iso(since.value), until: iso(until.value) })}`);
  });

  const results = h("div", {});
  const pager = h("nav", { class: "pager", "aria-label": "Audit pages" });
  const cursors = [null];
  const load = async (n) => {
    const base = operator ? `/v1/tenants/${encodeURIComponent(tenant)}/audit` : "/v1/audit";
    try {
      const page = await get(`${base}${query({ limit: String(PAGE), cursor: cursors[n], action: p.get("action"), since: p.get("since"), until: p.get("until") })}`);
      cursors[n + 1] = page.next_cursor;
      fill(results, table(`Audit log, page ${n + 1}`, [
        ["When", (e) => when(e.occurred_at)],
        ["Actor", (e) => h("code", {}, e.actor)],
        ["Impersonated by", (e) => (e.impersonator ? badge(e.impersonator, "impersonator") : "—")],
        ["Action", (e) => h("code", {}, e.action)],
        ["Target", (e) => `${e.target_type}${e.target_id ? ` ${e.target_id}` : ""}`],
        ["Details", (e) => (e.details && Object.keys(e.details).length ? h("code", { class: "details" }, JSON.stringify(e.details)) : "—")],
      ], page.items, "No audit rows match."));
      fill(pager,
        h("button", { type: "button", disabled: n === 0, onclick: () => load(n - 1) }, "← Newer"),
        h("span", {}, ` Page ${n + 1} `),
        h("button", { type: "button", disabled: !page.next_cursor, onclick: () => load(n + 1) }, "Older →"));
    } catch (e) {
      fill(results, errorBox(e));
      fill(pager);
    }
  };
  if (!operator || tenant) await load(0);
  else fill(results, h("p", { class: "empty" }, "No tenants yet."));
  return h("div", {}, h("h1", {}, "Audit"), form, results, pager);
}

/** An RFC 3339 time as a datetime-local value (local time). */
function local(t) {
  if (!t) return "";
  const d = new Date(t);
  if (Number.isNaN(d.getTime())) return "";
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}
