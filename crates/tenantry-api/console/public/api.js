// The console's only way to the server: the documented /v1 API, with the
// session's token as `Authorization: Bearer` (no cookies: nothing for a
// cross-site request to ride on). The token lives in sessionStorage only.

const TOKEN = "tenantry.token";
const TENANT = "tenantry.tenant";

export const session = {
  get token() { return sessionStorage.getItem(TOKEN); },
  /** The tenant a person's token acts in (X-Tenant-Id), if any. */
  get tenant() { return sessionStorage.getItem(TENANT); },
  set(token, tenant) {
    sessionStorage.setItem(TOKEN, token);
    if (tenant) sessionStorage.setItem(TENANT, tenant);
    else sessionStorage.removeItem(TENANT);
  },
  clear() { sessionStorage.clear(); },
};

/** The event a 401 to the session's own token raises (app.js signs out). */
export const UNAUTHORIZED = "tenantry:unauthorized";

/** An answer other than 2xx: `status` and the problem+json body. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem && problem.detail ? problem.detail : `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

/** One request; resolves to the JSON body (null for 204), rejects with ApiError. */
export async function api(method, path, body, token = session.token, tenant = session.tenant) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (tenant) headers["X-Tenant-Id"] = tenant;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
    cache: "no-store",
  });
  const text = await r.text();
  let json = null;
  if (text) {
    try { json = JSON.parse(text); } catch { json = { detail: text }; }
  }
  if (!r.ok) {
    if (r.status === 401 && token && token === session.token) {
      window.dispatchEvent(new Event(UNAUTHORIZED));
    }
    throw new ApiError(r.status, json);
  }
  return json;
}

export const get = (path) => api("GET", path);
export const post = (path, body) => api("POST", path, body);
export const del = (path) => api("DELETE", path);

/**
 * Every item of a paged list (following next_cursor), at most `max`; the
 * array's `truncated` is true when the list goes on past them, so that a
 * page can say it shows the first ones only.
 */
export async function all(path, max = 10000) {
  const items = [];
  let cursor = null;
  do {
    const sep = path.includes("?") ? "&" : "?";
    const page = await get(`${path}${sep}limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor && items.length < max);
  items.truncated = Boolean(cursor);
  return items;
}

/** Query text from an object, skipping empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}
