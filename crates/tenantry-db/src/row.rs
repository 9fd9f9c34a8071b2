//! Typed access to the team's own tables: [`Sql`] (a statement and, optionally, its parameter types) and [`FromRow`] (a row read into the caller's type: tuples, [`Row`] itself, or a type of yours, which may refuse a value with [`RowError`]). Sending them is `scope`'s.

use tokio_postgres::{
    types::{FromSqlOwned, Type},
    Row,
};

use crate::DbError;

/// A statement for [`TenantScope::query`](crate::TenantScope::query) and its
/// siblings, with the types of its parameters when the caller names them.
///
/// Naming types is never needed in the prepared mode (the default): the
/// server infers them and the statement is cached per connection. In the
/// unnamed mode (behind a transaction-pooling pgbouncer) a statement with
/// every type named travels in the same flight as the transaction's BEGIN and
/// context; one without is described by the server first, inside the
/// transaction: one more round trip, and only built-in types can be inferred
/// that way. A `&str` converts into a `Sql` with no types.
///
/// ```
/// use tenantry_db::Sql;
/// use tokio_postgres::types::Type;
/// const GET_ISSUE: Sql = Sql::typed("SELECT id, title FROM issues WHERE id = $1", &[Type::UUID]);
/// assert_eq!(GET_ISSUE.types(), &[Type::UUID]);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Sql<'a> {
    pub(crate) text: &'a str,
    pub(crate) types: &'a [Type],
}

impl<'a> Sql<'a> {
    /// A statement whose parameter types the server infers.
    pub const fn new(text: &'a str) -> Self {
        Self { text, types: &[] }
    }

    /// A statement with the types of its first parameters (usually all of them).
    pub const fn typed(text: &'a str, types: &'a [Type]) -> Self {
        Self { text, types }
    }

    /// The SQL text.
    pub fn text(&self) -> &'a str {
        self.text
    }

    /// The parameter types named by the caller.
    pub fn types(&self) -> &'a [Type] {
        self.types
    }
}

impl<'a> From<&'a str> for Sql<'a> {
    fn from(text: &'a str) -> Self {
        Self::new(text)
    }
}

impl<'a> From<&'a String> for Sql<'a> {
    fn from(text: &'a String) -> Self {
        Self::new(text)
    }
}

/// A value read from one row of a result.
///
/// Implemented for [`Row`] itself and for tuples of up to eight column types
/// (`(Uuid, String)` reads the first two columns). For a type of yours, read
/// the columns by name; there is no derive to learn:
///
/// ```
/// use tenantry_db::{FromRow, RowError};
/// use tokio_postgres::Row;
///
/// struct Issue { id: uuid::Uuid, title: String }
///
/// impl FromRow for Issue {
///     fn from_row(row: Row) -> Result<Self, RowError> {
///         Ok(Self { id: row.try_get("id")?, title: row.try_get("title")? })
///     }
/// }
/// ```
///
/// A value your type refuses is an error of yours, returned the same way
/// (`Err(format!("unknown state {s:?}").into())`, or any error type). Either
/// is the application's bug, not the caller's: the method that read the row
/// answers [`DbError::Internal`] naming it (a 500 through `tenantry-axum`,
/// whose body never repeats it).
pub trait FromRow: Sized {
    /// Reads the row; a missing column, a type that does not fit or a value
    /// the type refuses is an error.
    fn from_row(row: Row) -> Result<Self, RowError>;
}

/// Why a row could not be read into a type: the driver's error (a missing
/// column, a type that does not fit) or the type's own. `?` converts either.
pub type RowError = Box<dyn std::error::Error + Send + Sync>;

impl FromRow for Row {
    fn from_row(row: Row) -> Result<Self, RowError> {
        Ok(row)
    }
}

macro_rules! tuple_from_row {
    ($($t:ident $i:tt),+) => {
        impl<$($t: FromSqlOwned),+> FromRow for ($($t,)+) {
            fn from_row(row: Row) -> Result<Self, RowError> {
                Ok(($(row.try_get::<_, $t>($i)?,)+))
            }
        }
    };
}

tuple_from_row!(A 0);
tuple_from_row!(A 0, B 1);
tuple_from_row!(A 0, B 1, C 2);
tuple_from_row!(A 0, B 1, C 2, D 3);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);

/// Reads a row into `T`; a mapping that does not fit the statement is the
/// caller's bug, reported as [`DbError::Internal`] (never to an HTTP client).
pub(crate) fn read<T: FromRow>(row: Row) -> Result<T, DbError> {
    // With the driver's cause: which Rust type did not fit which column type
    // (found by a review as a new user: the log said only "error
    // deserializing column 0").
    T::from_row(row).map_err(|e| {
        DbError::Internal(format!(
            "reading a row into {}: {}",
            std::any::type_name::<T>(),
            crate::error::with_sources(&*e)
        ))
    })
}

/// An identity the database answers as one JSON value (a verified key, a
/// membership, an impersonation session), parsed into its type; `what` names
/// it in the error of a value that does not fit.
pub(crate) fn identity_from_json<T: serde::de::DeserializeOwned>(
    what: &str,
    v: serde_json::Value,
) -> Result<T, DbError> {
    serde_json::from_value(v).map_err(|e| DbError::Internal(format!("{what}: {e}")))
}
