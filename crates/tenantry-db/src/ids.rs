//! Typed identifiers (`TenantId`, `ResourceId`, ...): a uuid that cannot be passed where another kind of id belongs.

/// Declares typed ids for a team's own tables: each a `uuid` that cannot be
/// passed where another kind of id belongs, yet is a query parameter and a
/// column value as its uuid (`ToSql`, `FromSql`), parses from a path segment
/// (`FromStr`, `parse`), prints as the uuid (`Display`) and is a JSON string
/// (`Serialize`, `Deserialize`). tenantry's own ids (`TenantId`, …) are
/// declared with it.
///
/// ```
/// tenantry_db::typed_id! {
///     /// An invoice's id.
///     pub struct InvoiceId;
///     /// A line of an invoice.
///     pub struct InvoiceLineId;
/// }
///
/// let id: InvoiceId = "6b39e4e3-84cd-4d21-88a9-cff7e14ca36c".parse().unwrap();
/// assert_eq!(id.to_string(), "6b39e4e3-84cd-4d21-88a9-cff7e14ca36c");
/// // A statement parameter as it is: `scope.query_opt(sql, &[&id])`.
/// let _: &(dyn tokio_postgres::types::ToSql + Sync) = &id;
/// ```
///
/// Ids of two kinds do not mix:
///
/// ```compile_fail
/// tenantry_db::typed_id! { pub struct InvoiceId; pub struct CustomerId; }
/// fn customer(_: CustomerId) {}
/// customer(InvoiceId::parse("6b39e4e3-84cd-4d21-88a9-cff7e14ca36c").unwrap());
/// ```
#[macro_export]
macro_rules! typed_id {
    ($($(#[$attr:meta])* $vis:vis struct $name:ident;)*) => {$(
        $(#[$attr])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(transparent)]
        $vis struct $name($crate::__private::Uuid);

        impl $name {
            /// Wraps a uuid read from a trusted source (the database).
            pub const fn from_uuid(id: $crate::__private::Uuid) -> Self {
                Self(id)
            }
            /// The underlying uuid.
            pub const fn as_uuid(&self) -> &$crate::__private::Uuid {
                &self.0
            }
            /// Parses a uuid in its standard form, 36 characters hyphenated
            /// (`6b39e4e3-84cd-4d21-88a9-cff7e14ca36c`, either case), the
            /// form it prints in. The braced, `urn:uuid:` and undashed forms
            /// are refused: one id spelt several ways got past cache keys and
            /// proxy rules written for the one form (an HTTP review).
            pub fn parse(s: &str) -> ::core::result::Result<Self, $crate::ParseIdError> {
                $crate::__private::parse_standard(s).map(Self)
            }
        }

        impl ::core::fmt::Display for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                ::core::fmt::Display::fmt(&self.0, f)
            }
        }

        impl ::core::str::FromStr for $name {
            type Err = $crate::ParseIdError;
            fn from_str(s: &str) -> ::core::result::Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl ::core::convert::From<$name> for $crate::__private::Uuid {
            fn from(id: $name) -> $crate::__private::Uuid {
                id.0
            }
        }

        /// A JSON string: the uuid.
        impl $crate::__private::serde::Serialize for $name {
            fn serialize<S: $crate::__private::serde::Serializer>(
                &self,
                serializer: S,
            ) -> ::core::result::Result<S::Ok, S::Error> {
                $crate::__private::serde::Serialize::serialize(&self.0, serializer)
            }
        }

        impl<'de> $crate::__private::serde::Deserialize<'de> for $name {
            fn deserialize<D: $crate::__private::serde::Deserializer<'de>>(
                deserializer: D,
            ) -> ::core::result::Result<Self, D::Error> {
                $crate::__private::deserialize_standard(deserializer).map(Self)
            }
        }

        /// A query parameter of type `uuid`, as the uuid it wraps.
        impl $crate::__private::ToSql for $name {
            fn to_sql(
                &self,
                ty: &$crate::__private::Type,
                out: &mut $crate::__private::BytesMut,
            ) -> ::core::result::Result<$crate::__private::IsNull, $crate::__private::BoxError> {
                $crate::__private::ToSql::to_sql(&self.0, ty, out)
            }
            fn accepts(ty: &$crate::__private::Type) -> bool {
                <$crate::__private::Uuid as $crate::__private::ToSql>::accepts(ty)
            }
            $crate::__private::to_sql_checked!();
        }

        /// Read from a `uuid` column.
        impl<'a> $crate::__private::FromSql<'a> for $name {
            fn from_sql(
                ty: &$crate::__private::Type,
                raw: &'a [u8],
            ) -> ::core::result::Result<Self, $crate::__private::BoxError> {
                <$crate::__private::Uuid as $crate::__private::FromSql>::from_sql(ty, raw).map(Self)
            }
            fn accepts(ty: &$crate::__private::Type) -> bool {
                <$crate::__private::Uuid as $crate::__private::FromSql>::accepts(ty)
            }
        }
    )*};
}

/// Text that is not an id ([`typed_id!`](crate::typed_id)'s `parse`): ids
/// are UUIDs in their standard form, and the message says so (a command line
/// given a tenant's name where its id belongs said only "invalid character:
/// found `m` at 2").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseIdError(pub(crate) Option<uuid::Error>);

impl From<uuid::Error> for ParseIdError {
    fn from(e: uuid::Error) -> Self {
        Self(Some(e))
    }
}

impl std::fmt::Display for ParseIdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "not an id: ids are UUIDs in their standard form, 36 characters such as \
             6b39e4e3-84cd-4d21-88a9-cff7e14ca36c",
        )?;
        match &self.0 {
            Some(e) => write!(f, " ({e})"),
            None => f.write_str(" (no braces, urn:uuid: or undashed form)"),
        }
    }
}

impl std::error::Error for ParseIdError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.as_ref().map(|e| e as _)
    }
}

/// What [`typed_id!`](crate::typed_id) expands to refers to, so that a team's
/// crate needs none of these as its own dependencies. Not an API.
#[doc(hidden)]
pub mod __private {
    pub use bytes::BytesMut;
    pub use serde;
    pub use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};
    pub use uuid::{self, Uuid};
    /// The error type of `ToSql` and `FromSql`.
    pub type BoxError = Box<dyn std::error::Error + Sync + Send>;

    /// A uuid in its standard form only (36 characters, hyphenated).
    pub fn parse_standard(s: &str) -> Result<Uuid, crate::ParseIdError> {
        if s.len() != 36 {
            return Err(crate::ParseIdError(None));
        }
        Ok(Uuid::parse_str(s)?)
    }

    /// A uuid from a text format (JSON, a path) in its standard form only;
    /// from a binary one as `uuid` writes it (its 16 bytes).
    pub fn deserialize_standard<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Uuid, D::Error> {
        use serde::Deserialize;
        if !deserializer.is_human_readable() {
            return Uuid::deserialize(deserializer);
        }
        // Parsed inside the visitor, so that a deserializer that names the
        // field and value of a refused one (axum's path) does.
        struct Standard;
        impl serde::de::Visitor<'_> for Standard {
            type Value = Uuid;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a UUID in its standard form")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Uuid, E> {
                parse_standard(text).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Standard)
    }
}

typed_id! {
    /// Identifies a tenant.
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub struct TenantId;
    /// Identifies a resource (unique across tenants in practice; the key is (tenant, id)).
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub struct ResourceId;
    /// Identifies a user (member of one or more tenants).
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub struct UserId;
    /// Identifies an audit event (random: it orders nothing across tenants).
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub struct AuditEventId;
    /// Identifies a tenant role.
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub struct RoleId;
    /// Identifies an API key.
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub struct KeyId;
    /// Identifies an invitation to a tenant.
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub struct InvitationId;
    /// Identifies an impersonation session.
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub struct ImpersonationId;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_postgres::types::{FromSql, ToSql, Type};

    #[test]
    fn ids_parse_in_their_standard_form_only_from_text_and_json() {
        let id = "6b39e4e3-84cd-4d21-88a9-cff7e14ca36c";
        let parsed = TenantId::parse(id).unwrap();
        assert_eq!(parsed.to_string(), id);
        assert_eq!(TenantId::parse(&id.to_uppercase()).unwrap(), parsed);
        for other in [
            "{6b39e4e3-84cd-4d21-88a9-cff7e14ca36c}",
            "urn:uuid:6b39e4e3-84cd-4d21-88a9-cff7e14ca36c",
            "6b39e4e384cd4d2188a9cff7e14ca36c",
            "6b39e4e3-84cd-4d21-88a9-cff7e14ca36",
            " 6b39e4e3-84cd-4d21-88a9-cff7e14ca36c",
            "acme",
        ] {
            let refused = TenantId::parse(other).unwrap_err().to_string();
            assert!(refused.contains("standard form"), "{other}: {refused}");
            assert!(
                serde_json::from_value::<TenantId>(serde_json::json!(other)).is_err(),
                "{other}"
            );
        }
        let from_json: TenantId = serde_json::from_value(serde_json::json!(id)).unwrap();
        assert_eq!(from_json, parsed);
        // An escaped string is read too (not borrowed).
        let escaped: TenantId =
            serde_json::from_str(r#""6b39e4e3\u002d84cd-4d21-88a9-cff7e14ca36c""#).unwrap();
        assert_eq!(escaped, parsed);
    }

    #[test]
    fn typed_ids_are_query_parameters_and_column_values_as_their_uuid() {
        let id = TenantId::parse("6b39e4e3-84cd-4d21-88a9-cff7e14ca36c").unwrap();
        let mut written = bytes::BytesMut::new();
        id.to_sql_checked(&Type::UUID, &mut written).unwrap();
        assert_eq!(&written[..], id.as_uuid().as_bytes());
        assert_eq!(TenantId::from_sql(&Type::UUID, &written).unwrap(), id);
        assert!(id.to_sql_checked(&Type::TEXT, &mut written).is_err());
    }

    #[test]
    fn typed_ids_parse_and_print_the_same_uuid() {
        let raw = "6b39e4e3-84cd-4d21-88a9-cff7e14ca36c";
        let id = TenantId::parse(raw).unwrap();
        assert_eq!(id.to_string(), raw);
        assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{raw}\""));
    }

    #[test]
    fn typed_ids_reject_garbage() {
        assert!(ResourceId::parse("not-a-uuid").is_err());
        assert!(ResourceId::parse("'; drop table resources; --").is_err());
    }
}
