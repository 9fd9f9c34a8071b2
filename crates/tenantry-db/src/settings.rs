//! Tenant settings (quotas, limits and their defaults, rate limits, metadata) parsed once into [`TenantSettings`], with the bounds and messages of the database's `tenantry.validate_tenant_settings`, which still checks every write.

use serde::{Deserialize, Serialize};
use serde_json::{value::RawValue, Value};

use crate::{DbError, JsonText};

/// Every settings key, in the order `tenantry.validate_tenant_settings`
/// lists them when it refuses another.
pub const KNOWN_KEYS: [&str; 12] = [
    "max_resources",
    "max_storage_bytes",
    "max_children",
    "max_descendants",
    "max_api_keys",
    "max_roles",
    "max_members",
    "max_shares",
    "rate_limit_per_second",
    "rate_limit_burst",
    "child_creation_rate_per_second",
    "metadata",
];

/// A tenant's validated settings: every key optional, unknown keys and a key
/// given twice refused.
/// Integral numbers written as floats (`5.0`, `1e3`) count as integers; the
/// quotas fit a `bigint` (the database counts in one) and the burst a `u32`.
// Built by `TenantSettings::parse_text`, or by serde, which parses the same
// way from the value's text: `metadata` is kept as written (JsonText), so a
// number in it comes back exactly as the client wrote it (it went through a
// 64-bit float and came back rounded: found by a review of hostile input).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Box<RawValue>", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TenantSettings {
    /// Most resources the tenant may hold (integer ≥ 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(nullable = false, format = Int64, minimum = 0)
    )]
    max_resources: Option<u64>,
    /// Most bytes of resource names and data (integer ≥ 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(nullable = false, format = Int64, minimum = 0)
    )]
    max_storage_bytes: Option<u64>,
    /// Most direct children the tenant may have that are not deleted (integer ≥ 0; default 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(nullable = false, format = Int64, minimum = 0)
    )]
    max_children: Option<u64>,
    /// Most tenants below the tenant at any depth, deleted ones excluded: bounds the whole subtree (integer ≥ 0; default 1000).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(nullable = false, format = Int64, minimum = 0)
    )]
    max_descendants: Option<u64>,
    /// Most API keys of the tenant that are neither revoked nor replaced by rotation (integer ≥ 0; default 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(nullable = false, format = Int64, minimum = 0)
    )]
    max_api_keys: Option<u64>,
    /// Most roles the tenant may define (integer ≥ 0; default 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(nullable = false, format = Int64, minimum = 0)
    )]
    max_roles: Option<u64>,
    /// Most members the tenant may have (integer ≥ 0; default 1000).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(nullable = false, format = Int64, minimum = 0)
    )]
    max_members: Option<u64>,
    /// Most shares of the tenant's resources with other tenants (integer ≥ 0; default 1000).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(nullable = false, format = Int64, minimum = 0)
    )]
    max_shares: Option<u64>,
    /// Requests per second for the tenant's keys (> 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false, exclusive_minimum = 0))]
    rate_limit_per_second: Option<f64>,
    /// Children the tenant's keys may create per second (> 0; default 10, burst twice
    /// the rate): creating a tenant is the most expensive write, so a tenant looping
    /// on it gets 429 with Retry-After instead of taking the machine from others.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false, exclusive_minimum = 0))]
    child_creation_rate_per_second: Option<f64>,
    /// Burst of requests allowed above the rate (integer ≥ 1; default: the rate, rounded up).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(nullable = false, format = Int64, minimum = 1, maximum = 4_294_967_295_u64)
    )]
    rate_limit_burst: Option<u32>,
    /// Free-form object, kept as written (numbers of any precision, of
    /// magnitude below 1e131072).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false, value_type = Option<Object>))]
    metadata: Option<Metadata>,
}

/// The members of a JSON object as written, and the first key given twice.
struct Members {
    members: Vec<(String, Box<RawValue>)>,
    repeated: Option<String>,
}

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> serde::de::Visitor<'de> for Object {
            type Value = Members;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Members, A::Error> {
                let mut members: Vec<(String, Box<RawValue>)> = Vec::new();
                // A set, not a scan of what came before: a scan made an
                // object of 100,000 keys cost seconds of a worker thread
                // (found by a review of this change).
                let mut seen = std::collections::HashSet::new();
                let mut repeated = None;
                while let Some(key) = map.next_key::<String>()? {
                    let value = map.next_value::<Box<RawValue>>()?;
                    if !seen.insert(key.clone()) && repeated.is_none() {
                        repeated = Some(key.clone());
                    }
                    members.push((key, value));
                }
                Ok(Members { members, repeated })
            }
        }
        deserializer.deserialize_map(Object)
    }
}

impl TenantSettings {
    /// Parses settings JSON. Errors are [`DbError::Invalid`] naming the key
    /// (`settings.<key>`), worded like the database's own validator. The
    /// value's numbers are already those of a `Value` (64-bit): prefer
    /// [`TenantSettings::parse_text`] where the text is at hand.
    pub fn parse(value: &Value) -> Result<Self, DbError> {
        let raw = serde_json::value::to_raw_value(value)
            .map_err(|e| DbError::invalid("settings", format!("settings: {e}")))?;
        Self::parse_raw(&raw)
    }

    /// Parses settings from their JSON text, `metadata` kept as written.
    pub fn parse_text(text: &str) -> Result<Self, DbError> {
        let raw: Box<RawValue> = serde_json::from_str(text)
            .map_err(|e| DbError::invalid("settings", format!("settings are not JSON: {e}")))?;
        Self::parse_raw(&raw)
    }

    fn parse_raw(raw: &RawValue) -> Result<Self, DbError> {
        let not_object = || DbError::invalid("settings", "settings must be a JSON object");
        if !raw.get().trim_start().starts_with('{') {
            return Err(not_object());
        }
        let Members {
            mut members,
            repeated,
        } = serde_json::from_str(raw.get()).map_err(|_| not_object())?;
        // A key given twice kept its last value, which a client or gateway
        // reading the first (a quota of 0) never sees (found by an outside
        // review): refused, as a repeated field of a request body is.
        if let Some(key) = repeated {
            return Err(DbError::invalid(
                format!("settings.{key}"),
                format!("settings.{key} is given twice: give each key once"),
            ));
        }
        // Keys in order, as serde_json::Map (the Value this parsed before) had them.
        members.sort_by(|a, b| a.0.cmp(&b.0));
        let mut settings = Self::default();
        for (key, raw) in members {
            let field = format!("settings.{key}");
            if key == "metadata" {
                let text = JsonText::parse(raw.get())
                    .map_err(|e| DbError::invalid(&field, format!("{field}: {e}")))?;
                if !text.is_object() {
                    return Err(DbError::invalid(
                        field,
                        "settings.metadata must be a JSON object",
                    ));
                }
                // The settings travel inside other JSON too (a key's or a
                // member's verified identity, read as a tree): nested deeper,
                // every request of the tenant failed (found by a
                // verification review).
                if text.nests_deeper_than(METADATA_MAX_DEPTH) {
                    return Err(DbError::invalid(
                        field,
                        format!(
                            "settings.metadata may nest at most {METADATA_MAX_DEPTH} levels deep"
                        ),
                    ));
                }
                if text.holds_unstorable_number() {
                    return Err(DbError::invalid(
                        field,
                        "settings.metadata holds a number too large or too small to store: magnitudes below 1e131072 with at most 16383 digits after the point are kept",
                    ));
                }
                settings.metadata = Some(Metadata(text));
                continue;
            }
            let v: Value = serde_json::from_str(raw.get())
                .map_err(|e| DbError::invalid(&field, format!("{field}: {e}")))?;
            let v = &v;
            match key.as_str() {
                "max_resources" | "max_storage_bytes" | "max_children" | "max_descendants"
                | "max_api_keys" | "max_roles" | "max_members" | "max_shares" => {
                    let n = integer(v, 0, i64::MAX).ok_or_else(|| {
                        DbError::invalid(
                            &field,
                            format!("{field} must be an integer from 0 to {}", i64::MAX),
                        )
                    })?;
                    let n = Some(n.unsigned_abs());
                    *match key.as_str() {
                        "max_resources" => &mut settings.max_resources,
                        "max_storage_bytes" => &mut settings.max_storage_bytes,
                        "max_children" => &mut settings.max_children,
                        "max_descendants" => &mut settings.max_descendants,
                        "max_api_keys" => &mut settings.max_api_keys,
                        "max_roles" => &mut settings.max_roles,
                        "max_members" => &mut settings.max_members,
                        _ => &mut settings.max_shares,
                    } = n;
                }
                "rate_limit_burst" => {
                    let n = integer(v, 1, u32::MAX.into()).ok_or_else(|| {
                        DbError::invalid(
                            &field,
                            format!("{field} must be an integer from 1 to {}", u32::MAX),
                        )
                    })?;
                    settings.rate_limit_burst = u32::try_from(n).ok();
                }
                "rate_limit_per_second" | "child_creation_rate_per_second" => {
                    let rate = v.as_f64().filter(|r| *r > 0.0).ok_or_else(|| {
                        DbError::invalid(&field, format!("{field} must be a number > 0"))
                    })?;
                    *if key == "rate_limit_per_second" {
                        &mut settings.rate_limit_per_second
                    } else {
                        &mut settings.child_creation_rate_per_second
                    } = Some(rate);
                }
                other => {
                    return Err(DbError::invalid(
                        field,
                        format!(
                            "unknown settings key \"{other}\" (known: {})",
                            KNOWN_KEYS.join(", ")
                        ),
                    ))
                }
            }
        }
        Ok(settings)
    }

    /// Most resources the tenant may hold.
    pub fn max_resources(&self) -> Option<u64> {
        self.max_resources
    }

    /// Most bytes of resource names and data.
    pub fn max_storage_bytes(&self) -> Option<u64> {
        self.max_storage_bytes
    }

    /// A limit in force: the tenant's own value, else the default
    /// ([`Limit::default_value`]), as the database applies it.
    pub fn limit(&self, limit: Limit) -> u64 {
        match limit {
            Limit::Children => self.max_children,
            Limit::Descendants => self.max_descendants,
            Limit::ApiKeys => self.max_api_keys,
            Limit::Roles => self.max_roles,
            Limit::Members => self.max_members,
            Limit::Shares => self.max_shares,
        }
        .unwrap_or(limit.default_value())
    }

    /// Requests per second for the tenant's keys (always > 0 and finite).
    pub fn rate_limit_per_second(&self) -> Option<f64> {
        self.rate_limit_per_second
    }

    /// Requests allowed in a burst above the rate (≥ 1).
    pub fn rate_limit_burst(&self) -> Option<u32> {
        self.rate_limit_burst
    }

    /// Children the tenant's keys may create per second: its setting, else
    /// [`DEFAULT_CHILD_CREATION_RATE`] (always > 0 and finite).
    pub fn child_creation_rate_per_second(&self) -> f64 {
        self.child_creation_rate_per_second
            .unwrap_or(DEFAULT_CHILD_CREATION_RATE)
    }

    /// Free-form metadata, as written.
    pub fn metadata(&self) -> Option<&JsonText> {
        self.metadata.as_ref().map(|m| &m.0)
    }
}

/// How deep a tenant's `settings.metadata` may nest: below serde_json's 128
/// levels with room for the JSON the settings travel in (a verified key's
/// identity holds them three levels down).
pub const METADATA_MAX_DEPTH: usize = 120;

/// Children a tenant's keys may create per second when its settings do not say
/// (`child_creation_rate_per_second`).
pub const DEFAULT_CHILD_CREATION_RATE: f64 = 10.0;

/// The limits every tenant has, with a default when its settings do not name
/// them (`tenantry.limit_defaults()` in `migrations/repeatable/09_limits.sql`
/// holds the same numbers). The database counts and enforces them for every
/// writer; an operator raises or lowers them per tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `max_children`: direct children not deleted (default 100).
    Children,
    /// `max_descendants`: tenants below, at any depth, not deleted (default 1000).
    Descendants,
    /// `max_api_keys`: keys neither revoked nor rotated (default 100).
    ApiKeys,
    /// `max_roles`: roles (default 100).
    Roles,
    /// `max_members`: members (default 1000).
    Members,
    /// `max_shares`: shares of the tenant's resources (default 1000).
    Shares,
}

impl Limit {
    /// Every limit.
    pub const ALL: [Limit; 6] = [
        Limit::Children,
        Limit::Descendants,
        Limit::ApiKeys,
        Limit::Roles,
        Limit::Members,
        Limit::Shares,
    ];

    /// The settings key, e.g. `max_children`.
    pub fn key(self) -> &'static str {
        match self {
            Limit::Children => "max_children",
            Limit::Descendants => "max_descendants",
            Limit::ApiKeys => "max_api_keys",
            Limit::Roles => "max_roles",
            Limit::Members => "max_members",
            Limit::Shares => "max_shares",
        }
    }

    /// The value in force when the settings do not name it.
    pub fn default_value(self) -> u64 {
        match self {
            Limit::Children | Limit::ApiKeys | Limit::Roles => 100,
            Limit::Descendants | Limit::Members | Limit::Shares => 1000,
        }
    }
}

/// A JSON number that is an integer from `min` to `max` (`5.0` and `1e3` included).
fn integer(v: &Value, min: i64, max: i64) -> Option<i64> {
    let n = match v.as_i64() {
        Some(n) => n,
        None if v.is_u64() => return None, // beyond i64::MAX
        None => {
            let f = v.as_f64()?;
            // 2^63 is the first float beyond i64::MAX.
            if f.fract() != 0.0 || f.abs() >= 9_223_372_036_854_775_808.0 {
                return None;
            }
            f as i64
        }
    };
    (min..=max).contains(&n).then_some(n)
}

/// A tenant's `metadata` as written; the same as another holding the same
/// JSON (PostgreSQL writes `{"a": 1}` back for `{"a":1}`), so that settings
/// compare alike wherever they were read.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
struct Metadata(JsonText);

impl PartialEq for Metadata {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0 || self.0.to_value().ok() == other.0.to_value().ok()
    }
}

impl TryFrom<Box<RawValue>> for TenantSettings {
    type Error = DbError;

    fn try_from(raw: Box<RawValue>) -> Result<Self, Self::Error> {
        Self::parse_raw(&raw)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn field_of(value: Value) -> Option<String> {
        match TenantSettings::parse(&value) {
            Err(DbError::Invalid { field, .. }) => field,
            other => panic!("{value} parsed: {other:?}"),
        }
    }

    #[test]
    fn metadata_keeps_its_text_and_the_other_keys_parse_as_from_a_value() {
        let text = r#"{"max_roles": 7, "metadata": {"n": 123456789012345678901234567890, "f": 0.10, "t": 1e-400}}"#;
        let settings = TenantSettings::parse_text(text).unwrap();
        assert_eq!(settings.limit(Limit::Roles), 7);
        assert_eq!(
            settings.metadata().map(JsonText::get),
            Some(r#"{"n": 123456789012345678901234567890, "f": 0.10, "t": 1e-400}"#)
        );
        // Serialized and read back (the database's column, an answer's body): the same text.
        let json = serde_json::to_string(&settings).unwrap();
        assert!(
            json.contains(
                r#""metadata":{"n": 123456789012345678901234567890, "f": 0.10, "t": 1e-400}"#
            ),
            "{json}"
        );
        assert_eq!(
            serde_json::from_str::<TenantSettings>(&json).unwrap(),
            settings
        );
        // Refusals name the key, as from a value.
        for (text, field) in [
            (r#"{"metadata": [1]}"#, "settings.metadata"),
            (r#"{"metadata": {"a": "\ud800"}}"#, "settings.metadata"),
            (r#"{"max_roles": 1e400}"#, "settings.max_roles"),
            (r#"[1]"#, "settings"),
        ] {
            match TenantSettings::parse_text(text) {
                Err(DbError::Invalid { field: f, .. }) => {
                    assert_eq!(f.as_deref(), Some(field), "{text}")
                }
                other => panic!("{text} parsed: {other:?}"),
            }
        }
    }

    #[test]
    fn every_known_key_parses_and_prints_back_the_same() {
        let value = json!({
            "max_resources": 10,
            "max_storage_bytes": 0,
            "max_children": 1,
            "max_descendants": 2,
            "max_api_keys": 3,
            "max_roles": 4,
            "max_members": 5,
            "max_shares": 6,
            "rate_limit_per_second": 0.5,
            "rate_limit_burst": 3,
            "metadata": { "plan": "pro" }
        });
        let settings = TenantSettings::parse(&value).unwrap();
        assert_eq!(settings.max_resources(), Some(10));
        assert_eq!(settings.rate_limit_per_second(), Some(0.5));
        let limits: Vec<u64> = Limit::ALL.iter().map(|l| settings.limit(*l)).collect();
        assert_eq!(limits, [1, 2, 3, 4, 5, 6]);
        assert_eq!(serde_json::to_value(&settings).unwrap(), value);
        assert_eq!(
            serde_json::to_value(TenantSettings::default()).unwrap(),
            json!({})
        );
    }

    #[test]
    fn integral_floats_count_as_integers_up_to_the_largest_the_database_counts() {
        let s = TenantSettings::parse(&json!({
            "max_resources": 1.0, "max_storage_bytes": i64::MAX, "rate_limit_burst": 4294967295.0
        }))
        .unwrap();
        assert_eq!(s.max_resources(), Some(1));
        assert_eq!(s.max_storage_bytes(), Some(i64::MAX.unsigned_abs()));
        assert_eq!(s.rate_limit_burst(), Some(u32::MAX));
        for (value, field) in [
            (
                json!({ "max_storage_bytes": 1e30 }),
                "settings.max_storage_bytes",
            ),
            (
                json!({ "max_resources": 9_223_372_036_854_775_808_u64 }),
                "settings.max_resources",
            ),
            (json!({ "max_resources": 9.3e18 }), "settings.max_resources"),
            (
                json!({ "rate_limit_burst": 1e15 }),
                "settings.rate_limit_burst",
            ),
        ] {
            match TenantSettings::parse(&value) {
                Err(DbError::Invalid { field: Some(f), .. }) => assert_eq!(f, field, "{value}"),
                other => panic!("{value}: expected Invalid naming {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn limits_not_named_have_the_defaults_the_database_applies() {
        let settings = TenantSettings::parse(&json!({ "max_roles": 7 })).unwrap();
        assert_eq!(settings.limit(Limit::Roles), 7);
        assert_eq!(settings.limit(Limit::Children), 100);
        assert_eq!(settings.limit(Limit::Descendants), 1000);
        assert_eq!(settings.limit(Limit::ApiKeys), 100);
        assert_eq!(settings.limit(Limit::Members), 1000);
        assert_eq!(settings.limit(Limit::Shares), 1000);
        assert_eq!(
            TenantSettings::parse(&json!({ "max_shares": -1 }))
                .unwrap_err()
                .to_string(),
            format!(
                "settings.max_shares must be an integer from 0 to {}",
                i64::MAX
            )
        );
    }

    #[test]
    fn values_out_of_bounds_are_refused_naming_the_key() {
        for (value, field) in [
            (json!([1]), "settings"),
            (json!({ "max_resources": -1 }), "settings.max_resources"),
            (json!({ "max_resources": 1.5 }), "settings.max_resources"),
            (
                json!({ "max_storage_bytes": "many" }),
                "settings.max_storage_bytes",
            ),
            (
                json!({ "rate_limit_per_second": 0 }),
                "settings.rate_limit_per_second",
            ),
            (
                json!({ "rate_limit_per_second": null }),
                "settings.rate_limit_per_second",
            ),
            (
                json!({ "rate_limit_burst": 0 }),
                "settings.rate_limit_burst",
            ),
            (json!({ "metadata": 3 }), "settings.metadata"),
            (json!({ "bogus": 1 }), "settings.bogus"),
        ] {
            assert_eq!(field_of(value).as_deref(), Some(field));
        }
    }

    #[test]
    fn a_key_given_twice_is_refused_naming_it_whatever_its_values() {
        for (text, key) in [
            (
                r#"{"max_resources": 0, "max_resources": 1000000}"#,
                "max_resources",
            ),
            (
                r#"{"max_members": 5, "max_roles": 1, "max_members": 5}"#,
                "max_members",
            ),
            (r#"{"metadata": {}, "metadata": {"a": 1}}"#, "metadata"),
        ] {
            let err = TenantSettings::parse_text(text).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("settings.{key} is given twice: give each key once")
            );
            assert!(
                matches!(&err, DbError::Invalid { field: Some(field), .. }
                    if *field == format!("settings.{key}")),
                "{err:?}"
            );
        }
        // The same key inside metadata is metadata's own business.
        let kept =
            TenantSettings::parse_text(r#"{"metadata": {"a": 1, "a": 2}, "max_resources": 3}"#)
                .unwrap();
        assert_eq!(kept.max_resources(), Some(3));
    }

    #[test]
    fn an_unknown_key_is_refused_in_the_databases_words() {
        let err = TenantSettings::parse(&json!({ "bogus": 1 })).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("unknown settings key \"bogus\" (known: max_resources, "),
            "{err}"
        );
        for key in KNOWN_KEYS {
            let one = format!(r#"{{"{key}": 1}}"#);
            let parsed = TenantSettings::parse_text(&one);
            assert!(
                !matches!(&parsed, Err(e) if e.to_string().contains("unknown settings key")),
                "{key} is listed as known but refused as unknown"
            );
        }
        assert!(serde_json::from_value::<TenantSettings>(json!({ "bogus": 1 })).is_err());
    }
}
