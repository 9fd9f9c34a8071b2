//! Pages of a list over a table of yours: `?limit=&cursor=` validated as the API validates them, the cursor carrying the last row's place in the list's order (keyset pagination: rows made or removed meanwhile never shift a page), and the page answered with its `next_cursor`.
//!
//! ```no_run
//! # async fn demo(caller: tenantry_axum::TenantCaller, query: tenantry_axum::page::PageQuery)
//! #     -> Result<axum::Json<tenantry_axum::page::Page<(chrono::DateTime<chrono::Utc>, uuid::Uuid, String)>>, tenantry_axum::ApiError> {
//! use chrono::{DateTime, Utc};
//! use uuid::Uuid;
//! // The list's order is (created_at, id); the cursor carries both. On the
//! // first page both are NULL, and the comparison starts before every row;
//! // written so (not `$1 IS NULL OR ...`) it stays a condition of the index
//! // on (tenant_id, created_at, id) in a generic plan too, and a later page
//! // starts where it begins instead of filtering its way there.
//! let window = query.window::<(DateTime<Utc>, Uuid)>(50, 200)?;
//! let (after_at, after_id) = window.after().cloned().unzip();
//! let mut scope = caller.scope().await?;
//! let rows: Vec<(DateTime<Utc>, Uuid, String)> = scope
//!     .query(
//!         "SELECT created_at, id, name FROM projects
//!          WHERE (created_at, id) > (coalesce($1::timestamptz, '-infinity'),
//!                                    coalesce($2::uuid, '00000000-0000-0000-0000-000000000000'))
//!          ORDER BY created_at, id LIMIT $3",
//!         &[&after_at, &after_id, &window.fetch()],
//!     )
//!     .await?;
//! scope.commit().await?;
//! Ok(axum::Json(window.page(rows, |(at, id, _)| (*at, *id))))
//! # }
//! ```

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::{ApiError, ProblemCode};

/// The longest cursor accepted, in characters.
const MAX_CURSOR_LEN: usize = 1024;

/// `?limit=&cursor=` of a list: at most `limit` rows after the place the
/// cursor names (a page's `next_cursor`); none, or an empty one: the first page.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Rows per page.
    pub limit: Option<i64>,
    /// The `next_cursor` of the page before.
    pub cursor: Option<String>,
}

/// A validated page request: how many rows, after which place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window<K> {
    after: Option<K>,
    limit: i64,
}

/// A page of a list: `next_cursor` is `null` on the last one.
#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    /// The rows.
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page.
    pub next_cursor: Option<String>,
}

impl PageQuery {
    /// The page this query asks for: `limit` from 1 to `max` (absent:
    /// `default`; else 422 `validation_failed`, field `limit`), and the key
    /// of the place the cursor names (400 `invalid_cursor`, field `cursor`,
    /// for one this list did not give: made up, cut, or another list's
    /// whose key has another shape).
    pub fn window<K: DeserializeOwned>(
        &self,
        default: i64,
        max: i64,
    ) -> Result<Window<K>, ApiError> {
        let limit = self.limit.unwrap_or(default);
        if !(1..=max).contains(&limit) {
            return Err(ApiError::invalid(
                "limit",
                format!("limit must be 1 to {max}"),
            ));
        }
        let after = match self.cursor.as_deref().filter(|c| !c.is_empty()) {
            None => None,
            Some(cursor) => Some(decode(cursor).ok_or_else(|| {
                ApiError::new(
                    ProblemCode::InvalidCursor,
                    "the cursor is not one of this list's: pass the next_cursor of an earlier page",
                )
                .with_field("cursor")
            })?),
        };
        Ok(Window { after, limit })
    }
}

fn decode<K: DeserializeOwned>(cursor: &str) -> Option<K> {
    if cursor.len() > MAX_CURSOR_LEN {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    serde_json::from_slice(&bytes).ok()
}

impl<K> Window<K> {
    /// The place the page starts after (`None`: the first page).
    pub fn after(&self) -> Option<&K> {
        self.after.as_ref()
    }

    /// Rows per page.
    pub fn limit(&self) -> i64 {
        self.limit
    }

    /// Rows to fetch: one more than the page holds, so that the page knows
    /// whether another follows (the statement's `LIMIT`).
    pub fn fetch(&self) -> i64 {
        self.limit + 1
    }
}

impl<K: Serialize> Window<K> {
    /// The page of `rows` (read with [`Window::fetch`] as their limit, in the
    /// list's order): at most `limit` of them, and when more followed, the
    /// cursor of the last one's place, `key(last row)`.
    pub fn page<T>(&self, mut rows: Vec<T>, key: impl Fn(&T) -> K) -> Page<T> {
        let more = rows.len() as i64 > self.limit;
        rows.truncate(self.limit.max(0) as usize);
        let next_cursor = more
            .then(|| rows.last().map(|row| encode(&key(row))))
            .flatten();
        Page {
            items: rows,
            next_cursor,
        }
    }
}

fn encode<K: Serialize>(key: &K) -> String {
    // A key of plain data always serialises (maps with non-string keys do not,
    // and make no sense as a place in a list).
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(key).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use uuid::Uuid;

    use super::*;

    type Key = (DateTime<Utc>, Uuid);

    fn query(limit: Option<i64>, cursor: Option<&str>) -> PageQuery {
        PageQuery {
            limit,
            cursor: cursor.map(str::to_owned),
        }
    }

    #[test]
    fn pages_walk_a_list_once_and_the_last_has_no_cursor() {
        let base = DateTime::from_timestamp_micros(1_764_800_000_123_456).unwrap();
        let all: Vec<Key> = (0..7)
            .map(|i| (base + chrono::Duration::microseconds(i), Uuid::new_v4()))
            .collect();
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let window = query(Some(3), cursor.as_deref())
                .window::<Key>(50, 200)
                .unwrap();
            // What a statement `WHERE (at, id) > after ORDER BY .. LIMIT fetch` reads.
            let rows: Vec<Key> = all
                .iter()
                .filter(|row| window.after().is_none_or(|after| *row > after))
                .take(window.fetch() as usize)
                .copied()
                .collect();
            let page = window.page(rows, |row| *row);
            seen.extend(page.items.iter().copied());
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, all, "every row once, in order, microseconds kept");
        // A page exactly full with nothing after it ends the list.
        let window = query(Some(7), None).window::<Key>(50, 200).unwrap();
        assert_eq!(window.page(all.clone(), |row| *row).next_cursor, None);
    }

    #[test]
    fn a_limit_out_of_range_is_422_and_a_cursor_not_of_this_list_is_400() {
        for limit in [0, -1, 201] {
            let e = query(Some(limit), None).window::<Key>(50, 200).unwrap_err();
            assert_eq!(
                (e.code(), e.field()),
                (ProblemCode::ValidationFailed, Some("limit"))
            );
        }
        assert_eq!(
            query(None, None).window::<Key>(50, 200).unwrap().limit(),
            50
        );
        assert_eq!(
            query(None, Some(""))
                .window::<Key>(50, 200)
                .unwrap()
                .after(),
            None
        );
        let another_lists = URL_SAFE_NO_PAD.encode(br#""just a name""#);
        for cursor in ["nope", "%%%", &"A".repeat(2000), &another_lists] {
            let e = query(None, Some(cursor))
                .window::<Key>(50, 200)
                .unwrap_err();
            assert_eq!(
                (e.code(), e.field()),
                (ProblemCode::InvalidCursor, Some("cursor")),
                "{cursor}"
            );
        }
    }
}
