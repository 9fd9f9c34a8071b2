//! Typed identifiers (`TenantId`, `ResourceId`, ...): a uuid that cannot be passed where another kind of id belongs.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};
use uuid::Uuid;

macro_rules! typed_id {
    ($(#[$doc:meta] $name:ident),* $(,)?) => {$(
        #[$doc]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// Wraps a uuid read from a trusted source (the database).
            pub const fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }
            /// The underlying uuid, for query parameters.
            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }
            /// Parses a textual uuid (any form `uuid` accepts).
            pub fn parse(s: &str) -> Result<Self, uuid::Error> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Uuid {
                id.0
            }
        }

        /// A query parameter of type `uuid`, as the uuid it wraps.
        impl ToSql for $name {
            fn to_sql(
                &self,
                ty: &Type,
                out: &mut bytes::BytesMut,
            ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
                self.0.to_sql(ty, out)
            }
            fn accepts(ty: &Type) -> bool {
                <Uuid as ToSql>::accepts(ty)
            }
            to_sql_checked!();
        }

        /// Read from a `uuid` column.
        impl<'a> FromSql<'a> for $name {
            fn from_sql(
                ty: &Type,
                raw: &'a [u8],
            ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
                Uuid::from_sql(ty, raw).map(Self)
            }
            fn accepts(ty: &Type) -> bool {
                <Uuid as FromSql>::accepts(ty)
            }
        }
    )*};
}

typed_id! {
    /// Identifies a tenant.
    TenantId,
    /// Identifies a resource (unique across tenants in practice; the key is (tenant, id)).
    ResourceId,
    /// Identifies a user (member of one or more tenants).
    UserId,
    /// Identifies an audit event (random: it orders nothing across tenants).
    AuditEventId,
    /// Identifies a tenant role.
    RoleId,
    /// Identifies an API key.
    KeyId,
    /// Identifies an invitation to a tenant.
    InvitationId,
    /// Identifies an impersonation session.
    ImpersonationId,
}

#[cfg(test)]
mod tests {
    use super::*;

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
