// Building the page: elements from data with textContent only (never innerHTML,
// so no text from the API can become markup), tables, dates and messages.

/** An element: h("a", {href: "#/x", class: "c"}, "text", child, ...). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A table: columns are [heading, row => cell]; `empty` shown when there are no rows. */
export function table(caption, columns, rows, empty = "None.") {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  return h("div", { class: "scroll", tabindex: "0", role: "region", "aria-label": caption },
    h("table", {},
      h("caption", {}, caption),
      h("thead", {}, h("tr", {}, columns.map(([head]) => h("th", { scope: "col" }, head)))),
      h("tbody", {}, rows.map((r) => h("tr", {}, columns.map(([, cell]) => h("td", {}, cell(r))))))));
}

/** A section with a heading whose body is filled by `load` (errors shown in place). */
export function section(title, load) {
  const body = h("div", { class: "section-body" }, h("p", { class: "loading" }, "Loading…"));
  const sec = h("section", { "aria-label": title }, h("h2", {}, title), body);
  const run = async () => {
    try {
      fill(body, await load(run));
    } catch (e) {
      fill(body, errorBox(e));
    }
  };
  run();
  return sec;
}

/** An API error as a message (the problem's title, detail and code). */
export function errorBox(e) {
  return h("p", { class: "error", role: "alert" }, describe(e));
}

export function describe(e) {
  if (e && e.problem) {
    const p = e.problem;
    return `${p.title || "Error"}: ${p.detail || ""}${p.code ? ` (${p.code})` : ""}`;
  }
  return String(e && e.message ? e.message : e);
}

/** A time as local text, or a dash. */
export function when(t) {
  if (!t) return "—";
  const d = new Date(t);
  return h("time", { datetime: d.toISOString(), title: d.toISOString() }, d.toLocaleString());
}

/** A short status badge. */
export function badge(text, kind = text) {
  return h("span", { class: `badge badge-${kind}` }, text);
}

let shown = 0;
let said = -1;

/** Announces a message to the status line (read by screen readers); it stays for the page it leads to. */
export function say(text, kind = "info") {
  const s = document.getElementById("status");
  s.className = `status status-${kind}`;
  s.textContent = text;
  said = shown;
}

/** A page is being shown: messages from before the previous page are cleared. */
export function pageShown() {
  shown += 1;
  if (said < shown - 1) fill(document.getElementById("status"));
}

/** A labelled form field. */
export function field(label, input, hint) {
  const id = input.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  input.id = id;
  return h("div", { class: "field" }, h("label", { for: id }, label), input,
    hint ? h("small", {}, hint) : null);
}

/** Bytes in KB/MB. */
export function bytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  let v = Number(n);
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  return `${i ? v.toFixed(1) : v} ${units[i]}`;
}

/** A secret shown once, with a copy button. */
export function secretOnce(label, secret) {
  const input = h("input", { type: "text", readonly: true, value: secret, class: "secret", "aria-label": label, spellcheck: "false" });
  const copied = h("span", { class: "copied", "aria-live": "polite" });
  const copy = h("button", {
    type: "button",
    onclick: async () => {
      try {
        await navigator.clipboard.writeText(secret);
      } catch {
        input.select();
        document.execCommand("copy");
      }
      copied.textContent = "Copied.";
    },
  }, "Copy");
  return h("div", { class: "once", role: "group", "aria-label": label },
    h("p", {}, h("strong", {}, label), " — shown this once; it is not stored and cannot be shown again."),
    h("div", { class: "row" }, input, copy, copied));
}

/**
 * A tenant as the operator's pickers and tables name it: names are the
 * tenants' own and not unique (a tenant's key may name a child like another
 * tenant, fake id included), so the full id follows, and a child says whose
 * it is. `byId` maps ids to tenants (the operator's list).
 */
export function tenantLabel(t, byId, withStatus = false) {
  const parent = t.parent_id ? byId.get(t.parent_id) : null;
  const parts = [t.tenant_id];
  if (t.parent_id) parts.push(`child of ${parent ? parent.name : t.parent_id}`);
  if (withStatus) parts.push(t.status);
  return `${t.name} (${parts.join(", ")})`;
}
