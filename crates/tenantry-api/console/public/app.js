// The console's shell: sign-in, the navigation for the caller's view
// (operator with the admin token, tenant with a key or a person's token),
// and hash routing to the pages.

import { api, session, UNAUTHORIZED } from "./api.js";
import { h, fill, field, describe, say, pageShown } from "./dom.js";
import * as tenants from "./pages/tenants.js";
import * as tenant from "./pages/tenant.js";
import * as usage from "./pages/usage.js";
import * as audit from "./pages/audit.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
const logout = document.getElementById("logout");

/** Who the token belongs to: {view: "operator"} or {view: "tenant", me}. */
let caller = null;
/** Cleanups of the page shown (timers of live views). */
let leaving = [];

const PAGES = {
  operator: [["tenants", "Tenants"], ["usage", "Usage"], ["audit", "Audit"]],
  tenant: [["tenant", "Tenant"], ["usage", "Usage"], ["audit", "Audit"]],
};

/**
 * Works out the view a token opens: a tenant's (it reads /v1/tenant) or the
 * operator's (it lists tenants). A tenant's credential without `tenant.read`
 * opens the tenant's view too (`me` null: each section shows what the API
 * lets it see); a suspended tenant's is refused with the API's reason.
 */
async function identify(token, tenantId) {
  try {
    const me = await api("GET", "/v1/tenant", undefined, token, tenantId);
    return { view: "tenant", me };
  } catch (e) {
    const code = e.problem && e.problem.code;
    if (e.status === 403 && code === "permission_denied") return { view: "tenant", me: null };
    if (e.status !== 401 && !(e.status === 403 && code === "wrong_credential")) throw e;
  }
  await api("GET", "/v1/tenants?limit=1", undefined, token, null);
  return { view: "operator" };
}

function signInPage(message) {
  const token = h("input", { type: "password", name: "token", autocomplete: "off", required: true, spellcheck: "false" });
  const tenantId = h("input", { type: "text", name: "tenant", autocomplete: "off", spellcheck: "false", pattern: "[0-9a-fA-F-]{36}" });
  const error = h("p", { class: "error", role: "alert", hidden: !message }, message || "");
  const form = h("form", { class: "card signin", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, "Sign in"),
    h("p", {}, "The admin token opens the operator's view of every tenant; a tenant's API key (tk_…) opens that tenant's view. The token is kept in this tab's session storage only and is sent to this server's API alone."),
    field("Admin token, API key or person's token", token),
    field("Tenant id (a person's token only)", tenantId, "The tenant you act in, sent as X-Tenant-Id."),
    error,
    h("button", { type: "submit" }, "Sign in"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.hidden = true;
    const t = token.value.trim();
    const tid = tenantId.value.trim() || null;
    try {
      caller = await identify(t.replace(/^Bearer\s+/i, ""), tid);
      session.set(t.replace(/^Bearer\s+/i, ""), tid);
      token.value = "";
      const home = caller.view === "operator" ? "#/tenants" : "#/tenant";
      // Setting a new hash routes (hashchange); routing here as well drew
      // the page twice, every request of it sent twice.
      if (location.hash === home) route();
      else location.hash = home;
    } catch (e) {
      error.textContent = e.status === 401
        ? `That token is not accepted (unknown, revoked or expired): ${describe(e)}`
        : describe(e);
      error.hidden = false;
    }
  });
  fill(nav);
  fill(who);
  logout.hidden = true;
  fill(main, form);
  token.focus();
}

function signOut(message) {
  session.clear();
  caller = null;
  // A page still loading (its own 401 is what signed out) is not shown.
  routing += 1;
  history.replaceState(null, "", location.pathname);
  stopPage();
  say(message || "Signed out.");
  signInPage();
}

function stopPage() {
  for (const f of leaving) f();
  leaving = [];
}

function renderNav(current) {
  fill(nav, h("ul", {}, PAGES[caller.view].map(([id, label]) =>
    h("li", {}, h("a", { href: `#/${id}`, "aria-current": current === id ? "page" : null }, label)))));
  fill(who, caller.view === "operator" ? "Operator" : (caller.me ? `Tenant: ${caller.me.name}` : "Tenant"));
  logout.hidden = false;
}

/** Counts routings: a page that finishes loading after a newer one started is dropped. */
let routing = 0;

/** Shows the page of the current hash. */
async function route() {
  const mine = ++routing;
  stopPage();
  pageShown();
  if (!session.token) return signInPage();
  if (!caller) {
    try {
      caller = await identify(session.token, session.tenant);
    } catch (e) {
      return signOut(`Session ended: ${describe(e)}`);
    }
    if (mine !== routing) return;
  }
  const [path, qs] = location.hash.replace(/^#\/?/, "").split("?");
  // A hash edited by hand may not decode: then it is taken as typed.
  const decode = (p) => { try { return decodeURIComponent(p); } catch { return p; } };
  const parts = path.split("/").filter(Boolean).map(decode);
  const params = new URLSearchParams(qs || "");
  const home = caller.view === "operator" ? "tenants" : "tenant";
  const page = parts[0] || home;
  const modules = { tenants, tenant, usage, audit };
  const allowed = PAGES[caller.view].some(([id]) => id === page);
  renderNav(page);
  const ctx = {
    caller,
    parts,
    params,
    // A page still loading when another was asked for registers its timers
    // too late for that page's leaving: they stop at once.
    onLeave: (f) => (mine === routing ? leaving.push(f) : f()),
    go: (hash) => { location.hash = hash; },
    refresh: () => route(),
  };
  try {
    const el = allowed ? await modules[page].render(ctx) : h("p", {}, "No such page.");
    // A page still loading when the hash changed again (a slow detail page,
    // then the list) must not replace the newer one when it arrives.
    if (mine !== routing) return;
    fill(main, el);
  } catch (e) {
    if (mine !== routing) return;
    if (e.status === 401) return signOut("Your token is no longer accepted; sign in again.");
    fill(main, h("p", { class: "error", role: "alert" }, describe(e)));
  }
  const heading = main.querySelector("h1");
  if (heading) {
    heading.tabIndex = -1;
    heading.focus();
  }
}

logout.addEventListener("click", () => signOut());
// Any page's request answered 401 with the session's token (revoked, rotated
// away, expired): the session is over, whichever section asked.
window.addEventListener(UNAUTHORIZED, () => {
  if (caller) signOut("Your token is no longer accepted; sign in again.");
});
window.addEventListener("hashchange", () => route());
route();
