// Tenant: one tenant's details, settings (quotas, limits, rate limits), keys,
// roles and permissions, members, adopted tables with row counts, shares,
// children and storage. The operator's page reads the admin twins of the
// tenant routes (/v1/tenants/{id}/keys, roles, members, tables); a tenant's
// own key reads the tenant routes. Shares and children are the tenant's only.

import { all, get, post, del, query } from "../api.js";
import { h, fill, field, table, section, badge, when, bytes, say, describe, errorBox, secretOnce } from "../dom.js";

/** Resources shared with the tenant shown on its page (one page of the API's list). */
const SHARED_SHOWN = 20;

const SETTINGS = [
  ["max_resources", "Resources (quota)"],
  ["max_storage_bytes", "Storage bytes (quota)"],
  ["max_children", "Children", 100],
  ["max_descendants", "Descendants", 1000],
  ["max_api_keys", "API keys", 100],
  ["max_roles", "Roles", 100],
  ["max_members", "Members", 1000],
  ["max_shares", "Shares", 1000],
  ["rate_limit_per_second", "Requests per second"],
  ["rate_limit_burst", "Request burst"],
  ["child_creation_rate_per_second", "Children created per second", 10],
];

function header(t, parentLink) {
  return h("div", {},
    h("h1", {}, t.name),
    h("dl", { class: "facts" },
      h("dt", {}, "Id"), h("dd", {}, h("code", {}, t.tenant_id)),
      h("dt", {}, "Status"), h("dd", {}, badge(t.status)),
      h("dt", {}, "Tier"), h("dd", {}, badge(t.isolation, "tier")),
      h("dt", {}, "Parent"), h("dd", {}, t.parent_id ? parentLink(t.parent_id) : "— (root)"),
      h("dt", {}, "Created"), h("dd", {}, when(t.created_at)),
      h("dt", {}, "Changed"), h("dd", {}, when(t.updated_at))));
}

function settingsSection(t) {
  const s = t.settings || {};
  return h("section", { "aria-label": "Quotas and rate limits" },
    h("h2", {}, "Quotas and rate limits"),
    table("Quotas and rate limits", [
      ["Setting", ([, label]) => label],
      ["Value", ([key, , dflt]) => (s[key] !== undefined && s[key] !== null
        ? (key === "max_storage_bytes" ? bytes(s[key]) : String(s[key]))
        : (dflt !== undefined ? `${dflt} (default)` : "no limit"))],
    ], SETTINGS));
}

function storageTable(rows, linkTo) {
  return table("Rows and storage", [
    ["Tenant", (r) => linkTo ? h("a", { href: linkTo(r.tenant_id) }, r.tenant_name) : r.tenant_name],
    ["Resources", (r) => r.total_resources],
    ["Storage", (r) => bytes(r.storage_used)],
    ["Last change", (r) => when(r.last_modified)],
  ], rows);
}

/** The operator's page of one tenant (admin routes only). */
export async function renderForOperator(ctx, id) {
  const t = await get(`/v1/tenants/${encodeURIComponent(id)}`);
  const base = `/v1/tenants/${t.tenant_id}`;
  const roles = await all(`${base}/roles`).catch(() => null);
  const roleName = nameOfRole(roles);
  return h("div", {},
    h("p", {}, h("a", { href: "#/tenants" }, "← All tenants")),
    header(t, (p) => h("a", { href: `#/tenants/${p}` }, h("code", {}, p))),
    h("p", { class: "links" },
      h("a", { href: `#/usage?tenant=${t.tenant_id}` }, "Usage charts"), " · ",
      h("a", { href: `#/audit?tenant=${t.tenant_id}` }, "Audit log")),
    settingsSection(t),
    section("Rows and storage", async () =>
      storageTable((await get(`${base}/usage`)).resources)),
    keysSection(`${base}/keys`, roles, roleName, t.status === "active"),
    rolesSection(`${base}/roles`),
    membersSection(`${base}/members`, roleName),
    tablesSection(`${base}/tables`));
}

function nameOfRole(roles) {
  return (id) => {
    if (!id) return "—";
    const r = roles && roles.find((x) => x.role_id === id);
    return r ? r.name : h("code", {}, id);
  };
}

/** Roles read from `path` (the API's answer, a 403 included, is shown in place), with the permission catalogue when given. */
function rolesSection(path, perms) {
  return section("Roles and permissions", async () => {
    const roles = await all(path);
    return h("div", {},
      table("Roles", [
        ["Role", (r) => r.name],
        ["Description", (r) => r.description || "—"],
        ["Permissions", (r) => r.permissions.join(", ") || "—"],
        ["Created", (r) => when(r.created_at)],
      ], roles, "No roles defined."),
      perms ? table("Permissions", [
        ["Permission", (p) => h("code", {}, p.name)],
        ["Allows", (p) => p.description],
      ], await perms()) : null);
  });
}

function membersSection(path, roleName) {
  return section("Members", async () => table("Members", [
    ["Email", (m) => m.email],
    ["Name", (m) => m.display_name || "—"],
    ["Roles", (m) => m.is_owner ? "owner" : (m.role_ids.map((r) => { const n = roleName(r); return typeof n === "string" ? n : r; }).join(", ") || "—")],
    ["Joined", (m) => when(m.created_at)],
  ], await all(path), "No members."));
}

function tablesSection(path) {
  return section("Adopted tables", async () => table("Adopted tables", [
    ["Table", (t) => h("code", {}, t.table)],
    ["Rows of this tenant", (t) => t.row_count],
    ["Hierarchy", (t) => (t.hierarchy ? "ancestors see descendants' rows" : "own rows only")],
    ["Sharing", (t) => (t.sharing ? "rows can be shared" : "—")],
    ["Writes need", (t) => (t.write_permission ? h("code", {}, t.write_permission) : "—")],
    ["Adopted", (t) => when(t.adopted_at)],
  ], await get(path), "No tables adopted (tenantry table adopt)."));
}

/** A form minting a key; shows the secret once. */
function keyForm(create, roles, done) {
  const description = h("input", { type: "text", maxlength: "500", autocomplete: "off" });
  const role = roles ? h("select", {}, h("option", { value: "" }, "(no role: all of this key's permissions)"),
    roles.map((r) => h("option", { value: r.role_id }, r.name))) : null;
  const expires = h("input", { type: "datetime-local" });
  const out = h("div", { class: "key-out" });
  const form = h("form", { class: "card", "aria-label": "Create an API key" },
    h("h3", {}, "Create an API key"),
    field("Description", description),
    role ? field("Role", role) : null,
    field("Expires (optional, your local time)", expires),
    h("button", { type: "submit" }, "Create key"),
    out);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = {};
    if (description.value) body.description = description.value;
    if (role && role.value) body.role_id = role.value;
    if (expires.value) body.expires_at = new Date(expires.value).toISOString();
    try {
      const k = await create(body);
      description.value = "";
      fill(out, secretOnce(`New key ${k.key_info.prefix}`, k.key));
      say(`Key ${k.key_info.prefix} created.`);
      if (done) done(k);
    } catch (e) {
      fill(out, errorBox(e));
    }
  });
  return form;
}

function keyState(k) {
  if (k.revoked_at) return "revoked";
  if (k.rotated_to) return "replaced";
  if (k.expires_at && new Date(k.expires_at) <= new Date()) return "expired";
  return "active";
}

/** The tenant's own page (tenant routes). */
export async function render(ctx) {
  // A key without tenant.read still has the page: each section shows what
  // the API lets it see (a 403 in place).
  // Only a missing permission: a tenant suspended meanwhile is said as
  // such (it read as a missing tenant.read, found by a console review).
  const me = await get("/v1/tenant").catch((e) => {
    if (e.status === 403 && e.problem && e.problem.code === "permission_denied") return null;
    throw e;
  });
  const roles = await all("/v1/roles").catch(() => null);
  const roleName = nameOfRole(roles);
  return h("div", {},
    me ? header(me, (p) => h("code", {}, p))
      : h("div", {}, h("h1", {}, "Tenant"),
        h("p", { class: "note" }, "This credential may not read the tenant's details (tenant.read); the sections below show what it may.")),
    me ? settingsSection(me) : null,
    keysSection("/v1/keys", roles, roleName, true),
    rolesSection("/v1/roles", () => all("/v1/permissions")),
    membersSection("/v1/members", roleName),
    tablesSection("/v1/tables"),
    section("Shares", async () => {
      // One list of every share made (GET /v1/shares), not a request per
      // resource: those counted against the tenant's rate limit.
      const shares = await all("/v1/shares", 1000);
      // One page: each resource comes with its data, and another tenant
      // decides how large that is and how many it shares (up to 1,000 of
      // up to 1 MB each: a review measured 198 MB downloaded for 199 shares).
      const first = await get(`/v1/resources${query({ owner: "shared", limit: String(SHARED_SHOWN) })}`);
      const inbound = first.items;
      return h("div", {},
        table("Shared by this tenant and its descendants", [
          ["Resource", (s) => h("code", {}, s.resource_id)],
          ["Owner", (s) => h("code", {}, s.owner_tenant_id)],
          ["With tenant", (s) => h("code", {}, s.tenant_id)],
          ["Shared", (s) => when(s.shared_at)],
        ], shares, "This tenant shares no resources."),
        table("Shared with this tenant", [
          ["Resource", (r) => r.name],
          ["Owner", (r) => h("code", {}, r.tenant_id)],
        ], inbound, "Nothing is shared with this tenant."),
        first.next_cursor ? h("p", { class: "note" },
          `The first ${SHARED_SHOWN} are shown; the API lists the rest (GET /v1/resources?owner=shared).`) : null);
    }),
    section("Children", async () => table("Children", [
      ["Name", (t) => t.name],
      ["Status", (t) => badge(t.status)],
      ["Tier", (t) => badge(t.isolation, "tier")],
      ["Id", (t) => h("code", {}, t.tenant_id)],
    ], await all("/v1/tenant/children"), "No child tenants.")),
    section("Rows and storage", async () => storageTable(await get("/v1/usage/resources"))));
}

/** Keys under `path` (/v1/keys, or the operator's /v1/tenants/{id}/keys): list, create, rotate, revoke. */
function keysSection(path, roles, roleName, canCreate) {
  // The form and the secret it shows stay put; only the tables reload.
  const once = h("div", { class: "key-once" });
  const tables = h("div", {}, h("p", { class: "loading" }, "Loading…"));
  const reload = async () => {
    try {
      const keys = await all(path);
      const live = keys.filter((k) => keyState(k) === "active");
      const rest = keys.filter((k) => keyState(k) !== "active");
      const columns = (withActions) => [
        ["Prefix", (k) => h("code", {}, k.prefix)],
        ["Description", (k) => k.description || "—"],
        ["Role", (k) => roleName(k.role_id)],
        ["Created", (k) => when(k.created_at)],
        ["Last used", (k) => when(k.last_used_at)],
        ["Expires", (k) => when(k.expires_at)],
        ["State", (k) => badge(keyState(k))],
        ...(withActions ? [["Actions", (k) => keyActions(path, k, reload, once)]] : []),
      ];
      fill(tables,
        table("Active keys", columns(true), live, "No active keys."),
        rest.length ? h("details", {}, h("summary", {}, `Revoked, replaced or expired keys (${rest.length})`),
          table("Inactive keys", columns(false), rest)) : null);
    } catch (e) {
      fill(tables, errorBox(e));
    }
  };
  reload();
  return h("section", { "aria-label": "API keys" },
    h("h2", {}, "API keys"),
    canCreate ? keyForm((body) => post(path, body), roles, () => reload()) : h("p", {}, "The tenant is not active; its keys are refused."),
    once,
    tables);
}

function keyActions(path, k, reload, once) {
  const grace = h("select", { "aria-label": `Old key ${k.prefix} keeps working for` },
    h("option", { value: "0" }, "stop old key now"),
    h("option", { value: "3600" }, "old key works 1 hour"),
    h("option", { value: "86400", selected: true }, "old key works 1 day"));
  const out = h("div", { class: "key-out" });
  const rotate = h("button", {
    type: "button", class: "small",
    onclick: async () => {
      try {
        const n = await post(`${path}/${k.key_id}/rotate`, { grace_seconds: Number(grace.value) });
        fill(once, secretOnce(`New key ${n.key_info.prefix} (replaces ${k.prefix})`, n.key));
        await reload();
        say(`Key ${k.prefix} rotated to ${n.key_info.prefix}.`);
      } catch (e) {
        fill(out, errorBox(e));
      }
    },
  }, "Rotate");
  const revoke = h("button", {
    type: "button", class: "small danger",
    onclick: async () => {
      if (!confirm(`Revoke key ${k.prefix}? Requests with it are refused from now on.`)) return;
      try {
        await del(`${path}/${k.key_id}`);
        say(`Key ${k.prefix} revoked.`);
        await reload();
      } catch (e) {
        say(describe(e), "error");
        fill(out, errorBox(e));
      }
    },
  }, "Revoke");
  return h("div", { class: "actions" }, grace, rotate, revoke, out);
}
