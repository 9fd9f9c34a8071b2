//! Tenant settings (quotas, rate limits, metadata) parsed once into [`TenantSettings`], with the bounds and messages of the database's `tenantry.validate_tenant_settings`, which still checks every write.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::DbError;

/// A tenant's validated settings: every key optional, unknown keys refused.
/// Integral numbers written as floats (`5.0`, `1e3`) count as integers; the
/// quotas fit a `bigint` (the database counts in one) and the burst a `u32`.
// Built by `TenantSettings::parse`, or by serde, which parses the same way.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Value", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TenantSettings {
    /// Most resources the tenant may hold (integer ≥ 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(nullable = false, minimum = 0, maximum = 9_223_372_036_854_775_807_u64)
    )]
    max_resources: Option<u64>,
    /// Most bytes of resource names and data (integer ≥ 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(nullable = false, minimum = 0, maximum = 9_223_372_036_854_775_807_u64)
    )]
    max_storage_bytes: Option<u64>,
    /// Requests per second for the tenant's keys (> 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false, exclusive_minimum = 0))]
    rate_limit_per_second: Option<f64>,
    /// Burst of requests allowed above the rate (integer ≥ 1; default: the rate, rounded up).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(nullable = false, minimum = 1, maximum = 4_294_967_295_u64)
    )]
    rate_limit_burst: Option<u32>,
    /// Free-form object.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false, value_type = Option<Object>))]
    metadata: Option<Map<String, Value>>,
}

impl TenantSettings {
    /// Parses settings JSON. Errors are [`DbError::Invalid`] naming the key
    /// (`settings.<key>`), worded like the database's own validator.
    pub fn parse(value: &Value) -> Result<Self, DbError> {
        let Value::Object(object) = value else {
            return Err(DbError::invalid(
                "settings",
                "settings must be a JSON object",
            ));
        };
        let mut settings = Self::default();
        for (key, v) in object {
            let field = format!("settings.{key}");
            match key.as_str() {
                "max_resources" | "max_storage_bytes" => {
                    let n = integer(v, 0, i64::MAX).ok_or_else(|| {
                        DbError::invalid(
                            &field,
                            format!("{field} must be an integer from 0 to {}", i64::MAX),
                        )
                    })?;
                    let n = Some(n.unsigned_abs());
                    if key == "max_resources" {
                        settings.max_resources = n;
                    } else {
                        settings.max_storage_bytes = n;
                    }
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
                "rate_limit_per_second" => {
                    let rate = v.as_f64().filter(|r| *r > 0.0).ok_or_else(|| {
                        DbError::invalid(&field, format!("{field} must be a number > 0"))
                    })?;
                    settings.rate_limit_per_second = Some(rate);
                }
                "metadata" => {
                    let Value::Object(m) = v else {
                        return Err(DbError::invalid(
                            field,
                            "settings.metadata must be a JSON object",
                        ));
                    };
                    settings.metadata = Some(m.clone());
                }
                other => {
                    return Err(DbError::invalid(
                        field,
                        format!("unknown settings key \"{other}\""),
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

    /// Requests per second for the tenant's keys (always > 0 and finite).
    pub fn rate_limit_per_second(&self) -> Option<f64> {
        self.rate_limit_per_second
    }

    /// Requests allowed in a burst above the rate (≥ 1).
    pub fn rate_limit_burst(&self) -> Option<u32> {
        self.rate_limit_burst
    }

    /// Free-form metadata.
    pub fn metadata(&self) -> Option<&Map<String, Value>> {
        self.metadata.as_ref()
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

impl TryFrom<Value> for TenantSettings {
    type Error = DbError;

    fn try_from(value: Value) -> Result<Self, Self::Error> {
        Self::parse(&value)
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
    fn every_known_key_parses_and_prints_back_the_same() {
        let value = json!({
            "max_resources": 10,
            "max_storage_bytes": 0,
            "rate_limit_per_second": 0.5,
            "rate_limit_burst": 3,
            "metadata": { "plan": "pro" }
        });
        let settings = TenantSettings::parse(&value).unwrap();
        assert_eq!(settings.max_resources(), Some(10));
        assert_eq!(settings.rate_limit_per_second(), Some(0.5));
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
    fn an_unknown_key_is_refused_in_the_databases_words() {
        let err = TenantSettings::parse(&json!({ "bogus": 1 })).unwrap_err();
        assert_eq!(err.to_string(), "unknown settings key \"bogus\"");
        assert!(serde_json::from_value::<TenantSettings>(json!({ "bogus": 1 })).is_err());
    }
}
