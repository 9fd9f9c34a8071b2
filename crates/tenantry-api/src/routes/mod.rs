//! The HTTP routes, one module per area; this module assembles them (with their OpenAPI descriptions) and holds what routes share: pagination, the fields of a change (PATCH).

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ProblemCode};

pub mod access;
pub mod audit;
pub mod keys;
pub mod people;
pub mod resources;
pub mod stats;
pub mod system;
pub mod tenants;
pub mod usage;

/// Default and largest page sizes.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest accepted `limit`.
pub const MAX_LIMIT: u32 = 1000;

/// `limit` and `cursor` of every list route.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size, 1–1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// The previous page's `next_cursor`; empty or absent: the first page.
    /// The next page starts after the item the cursor ended on. Keys,
    /// members, invitations and children are paged by their place in the
    /// list's order, whatever was removed since; in the other lists, when the item the cursor ended on
    /// was removed since, the page starts at the item that followed it, and
    /// when both were, the answer is 400 `invalid_cursor`: start again from
    /// the first page.
    pub cursor: Option<String>,
}

impl PageQuery {
    /// The validated page size.
    pub fn limit(&self) -> Result<u32, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(l) if (1..=MAX_LIMIT).contains(&l) => Ok(l),
            Some(_) => Err(ApiError::invalid(
                "limit",
                format!("limit must be between 1 and {MAX_LIMIT}"),
            )),
        }
    }
}

/// A page of items.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// The page a list read by the database asks for: the API's page size
/// (1–1000, default 50) and the place of the last item of the page before,
/// which the cursor carries (when it was made and its id: the columns the
/// list is ordered by), so that the database reads one page, however long
/// the list. A time no row can have (before year 1 or after 9999, where
/// PostgreSQL's own range ends or nears its end) is not a cursor of the
/// list: 400, not the database's 422 (found by a verification review).
pub fn keyset<I: serde::de::DeserializeOwned>(
    query: &PageQuery,
) -> Result<tenantry_axum::page::Window<(chrono::DateTime<chrono::Utc>, I)>, ApiError> {
    let limit = query.limit()?;
    let window = tenantry_axum::page::PageQuery {
        limit: Some(i64::from(limit)),
        // An empty cursor is the first page there as here.
        cursor: query.cursor.clone(),
    }
    .window::<(chrono::DateTime<chrono::Utc>, I)>(i64::from(DEFAULT_LIMIT), i64::from(MAX_LIMIT))?;
    if window
        .after()
        .is_some_and(|(at, _)| !tenantry_db::within_calendar(at))
    {
        return Err(invalid_cursor());
    }
    Ok(window)
}

/// The page of `rows`, read with `window.fetch()` as their limit in the
/// list's order; `key` gives a row's place in that order.
pub fn keyset_page<T, K: Serialize>(
    window: &tenantry_axum::page::Window<K>,
    rows: Vec<T>,
    key: impl Fn(&T) -> K,
) -> Page<T> {
    let page = window.page(rows, key);
    Page {
        items: page.items,
        next_cursor: page.next_cursor,
    }
}

/// Pages an in-memory list ordered by a unique key. The cursor names the
/// last item returned and the one after it: the next page starts after the
/// first, or, when it was removed in between (a member removed, a share
/// revoked while a client pages), at the second.
pub fn page_by_key<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> String,
    query: &PageQuery,
) -> Result<Page<T>, ApiError> {
    let limit = query.limit()? as usize;
    let start = match given_cursor(&query.cursor) {
        None => 0,
        Some(c) => {
            let (last, next) = match c.split_once('.') {
                Some((last, next)) => (decode_cursor(last)?, Some(decode_cursor(next)?)),
                None => (decode_cursor(c)?, None),
            };
            let position = |wanted: &str| items.iter().position(|i| key(i) == wanted);
            match (position(&last), next.as_deref().and_then(position)) {
                (Some(p), _) => p + 1,
                (None, Some(p)) => p,
                (None, None) => return Err(stale_cursor()),
            }
        }
    };
    let mut rest: Vec<T> = items.into_iter().skip(start).collect();
    let next_cursor = if rest.len() > limit {
        let after = key(&rest[limit]);
        rest.truncate(limit);
        rest.last()
            .map(|i| format!("{}.{}", encode_cursor(&key(i)), encode_cursor(&after)))
    } else {
        None
    };
    Ok(Page {
        items: rest,
        next_cursor,
    })
}

/// 400 for a cursor whose place in the list is gone: the item it ended
/// after and the one that came next were both removed since, or it is
/// another list's (found by an outside review: it was told the items were
/// removed).
fn stale_cursor() -> ApiError {
    ApiError::new(
        ProblemCode::InvalidCursor,
        "this cursor names no item of this list: it came from another list, or the items around it were removed since it was issued; start again from the first page",
    )
    .with_field("cursor")
}

/// The cursor a list query gives, if any: an empty one (what a client
/// serialising an optional string sends) is the first page, like none.
pub(crate) fn given_cursor(cursor: &Option<String>) -> Option<&str> {
    cursor.as_deref().filter(|c| !c.is_empty())
}

/// Opaque cursor text for a key.
pub fn encode_cursor(key: &str) -> String {
    hex::encode(key)
}

/// The key inside a cursor made by [`encode_cursor`].
pub fn decode_cursor(cursor: &str) -> Result<String, ApiError> {
    if cursor.len() > 512 {
        return Err(invalid_cursor());
    }
    hex::decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(invalid_cursor)
}

/// 400 for a cursor that is not this list's (malformed, made up, or another list's).
pub fn invalid_cursor() -> ApiError {
    ApiError::new(
        ProblemCode::InvalidCursor,
        "the cursor is not one of this list's: pass the next_cursor of an earlier page of the same list",
    )
    .with_field("cursor")
}

/// A time a client sent, refused unless it falls in years 1 to 9999
/// (RFC 3339's range, and well inside PostgreSQL's): beyond, the database
/// refuses it with a message that names no field. As PostgreSQL will store
/// it, rounded to microseconds: `9999-12-31T23:59:59.9999999Z` became
/// `+10000-01-01T00:00:00Z`, which the API then answered in every list of
/// keys and which RFC 3339 parsers refuse (found by a review of time-based
/// behaviour).
pub(crate) fn calendar_time(
    field: &str,
    at: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<(), ApiError> {
    use chrono::{SubsecRound, Timelike};
    // A leap second (`23:59:60`) is the next minute's first second to
    // PostgreSQL, after this check: `9999-12-31T23:59:60Z` was stored and
    // answered as `+10000-01-01T00:00:00Z`, and `…:60.5` got the database's
    // own words (found by a review of clocks). Refused, saying what to send.
    if at.is_some_and(|t| t.nanosecond() >= 1_000_000_000) {
        return Err(ApiError::invalid(
            field,
            format!("{field} is a leap second (:60), which is not stored: send :59 or the next minute's :00"),
        ));
    }
    match at.map(|t| t.round_subsecs(6)) {
        Some(t) if !tenantry_db::within_calendar(&t) => Err(ApiError::invalid(
            field,
            format!("{field} must be a time between the years 1 and 9999"),
        )),
        _ => Ok(()),
    }
}

/// A window a client sent, `start` to `end` (fields named `start_field` and
/// `end_field`): each within the calendar ([`calendar_time`]), and the start
/// not after the end (422 naming the start), on every route that takes one
/// (the audit log answered a reversed window with an empty page, the usage
/// metrics with a 422: found by a review of time-based behaviour).
pub(crate) fn time_window(
    (start_field, start): (&str, Option<chrono::DateTime<chrono::Utc>>),
    (end_field, end): (&str, Option<chrono::DateTime<chrono::Utc>>),
) -> Result<(), ApiError> {
    calendar_time(start_field, start)?;
    calendar_time(end_field, end)?;
    match (start, end) {
        (Some(s), Some(e)) if s > e => Err(ApiError::invalid(
            start_field,
            format!("{start_field} must not be after {end_field}"),
        )),
        _ => Ok(()),
    }
}

/// A whole number as JSON Schema counts integers: `1369` and `1369.0` alike
/// (serde's integer types refuse the second); at least 0.
pub(crate) fn whole_number<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<u64>, D::Error> {
    use serde::Deserialize;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    n.as_u64()
        .or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && (0.0..1.8e19).contains(f))
                .map(|f| f as u64)
        })
        .map(Some)
        // The value is not echoed: a number past u64 comes back as the
        // double it was read into ("not 1e+20" for 99999999999999999999,
        // found by a review as an SDK's developer). Nor is a bound: each
        // field has its own, which its check names (the 2^64 this said was
        // none of them: a new user's review).
        .ok_or_else(|| serde::de::Error::custom("must be a whole number, 0 or more"))
}

/// A time given as RFC 3339 with its UTC offset (`2027-01-01T00:00:00Z`),
/// in a JSON body or a query string. One without an offset (Python's
/// `datetime.isoformat()` of a naive time) was refused with chrono's
/// "premature end of input" (found by a review as an SDK's developer):
/// said as what is missing.
pub(crate) fn date_time<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, D::Error> {
    use serde::Deserialize;
    let Some(text) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    text.parse::<chrono::DateTime<chrono::Utc>>()
        .map(Some)
        .map_err(|_| {
            // `+05:30` in a query string arrives as ` 05:30` when the `+`
            // was not encoded (a review of clocks found the message blamed
            // a missing offset the client had sent).
            if text.len() > 6 && text.as_bytes()[text.len() - 6] == b' ' {
                serde::de::Error::custom(
                    "must be an RFC 3339 date-time with its UTC offset: its `+` arrived as a space \
                     (in a query string, send + as %2B, as in 2027-01-01T05:30:00%2B05:30)",
                )
            } else {
                serde::de::Error::custom(
                    "must be an RFC 3339 date-time with its UTC offset, such as 2027-01-01T00:00:00Z \
                     (a time without Z or +hh:mm says no time zone)",
                )
            }
        })
}

/// A field of a change (PATCH) read as absent (`None`), `null`
/// (`Some(None)`) or a value: serde alone reads `null` as absent.
pub(crate) fn double_option<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A field of a change that has no `null` (a name, a payload): absent
/// leaves the value as it is, and an explicit `null` is refused with the
/// 400 `invalid_json` of a value of the wrong JSON type, naming the field,
/// instead of being taken for absent (a client that meant to clear the
/// field would get 200 and an unchanged value).
pub(crate) fn not_null<T>(field: &str, value: Option<Option<T>>) -> Result<Option<T>, ApiError> {
    match value {
        Some(None) => Err(ApiError::new(
            ProblemCode::InvalidJson,
            format!("{field} cannot be null: leave it out to keep it as it is"),
        )
        .with_field(field)),
        Some(value) => Ok(value),
        None => Ok(None),
    }
}
