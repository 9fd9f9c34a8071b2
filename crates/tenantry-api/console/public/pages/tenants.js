// Tenants (operator): the hierarchy as a tree with status and tier
// (isolation), search, create, suspend/activate, delete with confirmation.

import { all, post, del } from "../api.js";
import { h, fill, field, badge, say, describe, errorBox, tenantLabel } from "../dom.js";
import { renderForOperator } from "./tenant.js";

export async function render(ctx) {
  if (ctx.parts[1]) return renderForOperator(ctx, ctx.parts[1]);
  const list = await all("/v1/tenants");
  const byParent = new Map();
  for (const t of list) {
    const k = t.parent_id || "";
    if (!byParent.has(k)) byParent.set(k, []);
    byParent.get(k).push(t);
  }
  for (const kids of byParent.values()) kids.sort((a, b) => a.name.localeCompare(b.name));
  const ids = new Set(list.map((t) => t.tenant_id));
  // A tenant whose parent is not listed is shown as a root.
  const roots = list.filter((t) => !t.parent_id || !ids.has(t.parent_id))
    .sort((a, b) => a.name.localeCompare(b.name));

  const search = h("input", { type: "search", autocomplete: "off" });
  const showDeleted = h("input", { type: "checkbox" });
  const tree = h("div", { class: "tree" });
  const counts = h("p", { class: "muted", "aria-live": "polite" });

  const draw = () => {
    const q = search.value.trim().toLowerCase();
    const deleted = showDeleted.checked;
    const match = (t) => (deleted || t.status !== "deleted")
      && (!q || t.name.toLowerCase().includes(q) || t.tenant_id.includes(q));
    // A node is shown when it or a descendant matches.
    const visible = new Map();
    const walk = (t) => {
      const kids = (byParent.get(t.tenant_id) || []).filter(walk);
      const show = match(t) || kids.length > 0;
      if (show) visible.set(t.tenant_id, kids);
      return show;
    };
    const shownRoots = roots.filter(walk);
    const node = (t) => h("li", { dataset: { tenant: t.tenant_id } },
      row(t, ctx),
      visible.get(t.tenant_id).length ? h("ul", {}, visible.get(t.tenant_id).map(node)) : null);
    fill(tree, shownRoots.length
      ? h("ul", { class: "tree-root", "aria-label": "Tenant hierarchy" }, shownRoots.map(node))
      : h("p", { class: "empty" }, q ? "No tenant matches." : "No tenants yet."));
    fill(counts, `${visible.size} of ${list.length} tenants shown.`,
      // (The console reads at most 10,000: a search past them goes through
      // the API, GET /v1/tenants?cursor=..., or tenantry tenant list.)
      list.truncated ? ` The first ${list.length} tenants are loaded; there are more (GET /v1/tenants pages through them all, or tenantry tenant list).` : "");
  };
  search.addEventListener("input", draw);
  showDeleted.addEventListener("change", draw);
  draw();

  return h("div", {},
    h("h1", {}, "Tenants"),
    h("div", { class: "toolbar" },
      field("Search by name or id", search),
      h("label", { class: "check" }, showDeleted, " Show deleted")),
    counts,
    tree,
    createForm(list, ctx));
}

function row(t, ctx) {
  const actions = h("span", { class: "actions" });
  const act = async (label, f) => {
    try {
      await f();
      say(`${label}: ${t.name}.`);
      ctx.refresh();
    } catch (e) {
      say(describe(e), "error");
    }
  };
  if (t.status === "active") {
    actions.append(h("button", { type: "button", class: "small", onclick: () => act("Suspended", () => post(`/v1/tenants/${t.tenant_id}/suspend`)) }, "Suspend"));
  } else if (t.status === "suspended") {
    actions.append(h("button", { type: "button", class: "small", onclick: () => act("Activated", () => post(`/v1/tenants/${t.tenant_id}/activate`)) }, "Activate"));
  }
  if (t.status !== "deleted") {
    actions.append(h("button", {
      type: "button",
      class: "small danger",
      onclick: () => {
        if (confirm(`Delete tenant "${t.name}" (${t.tenant_id})? Nothing can act as it afterwards; its data is kept for audit. This cannot be undone.`)) {
          act("Deleted", () => del(`/v1/tenants/${t.tenant_id}`));
        }
      },
    }, "Delete"));
  }
  return h("div", { class: "node" },
    h("a", { href: `#/tenants/${t.tenant_id}` }, t.name),
    " ", badge(t.status), " ", badge(t.isolation, "tier"),
    h("code", { class: "id" }, t.tenant_id),
    actions);
}

function createForm(list, ctx) {
  const byId = new Map(list.map((t) => [t.tenant_id, t]));
  const name = h("input", { type: "text", required: true, maxlength: "200", autocomplete: "off" });
  const parent = h("select", {},
    h("option", { value: "" }, "(none: a root tenant)"),
    list.filter((t) => t.status !== "deleted").map((t) => h("option", { value: t.tenant_id }, tenantLabel(t, byId))));
  const isolation = h("select", {},
    h("option", { value: "shared" }, "shared (pooled tables under RLS)"),
    h("option", { value: "schema" }, "schema (its own schema)"));
  const out = h("div", { "aria-live": "polite" });
  const form = h("form", { class: "card", "aria-labelledby": "create-tenant" },
    h("h2", { id: "create-tenant" }, "Create a tenant"),
    field("Name", name),
    field("Parent", parent),
    field("Tier (isolation)", isolation),
    h("button", { type: "submit" }, "Create tenant"),
    out);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const body = { name: name.value, isolation: isolation.value };
      if (parent.value) body.parent_id = parent.value;
      const t = await post("/v1/tenants", body);
      say(`Created tenant ${t.name}.`);
      ctx.go(`#/tenants/${t.tenant_id}`);
    } catch (e) {
      fill(out, errorBox(e));
    }
  });
  return form;
}
