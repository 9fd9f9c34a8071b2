//! [`JsonText`]: a JSON value kept as its text between the client and a `jsonb` column, so that what a client wrote comes back exactly (numbers of any size or precision) and passing it through costs a copy, not a tree.

use std::{error::Error, fmt};

use bytes::{BufMut, BytesMut};
use serde::{de::DeserializeOwned, Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};

/// A JSON value as text, checked to be JSON when made.
///
/// `serde_json::Value` keeps numbers as 64-bit integers or floats, so an
/// integer beyond 2^64 or a decimal of more than 17 digits written by a
/// client came back rounded. PostgreSQL's `jsonb` keeps them exactly; this
/// type carries its text unchanged both ways: as a query parameter or column
/// value (`json` and `jsonb`), and through serde (a JSON request body's member
/// is taken as written; serialized, the text is written as it is).
///
/// ```
/// use tenantry_db::JsonText;
/// let data = JsonText::parse(r#"{"id": 123456789012345678901234567890}"#).unwrap();
/// assert_eq!(data.get(), r#"{"id": 123456789012345678901234567890}"#);
/// assert!(data.is_object());
/// let from_value: JsonText = serde_json::json!({"n": 1}).into();
/// assert_eq!(from_value.get(), r#"{"n":1}"#);
/// ```
#[derive(Clone)]
pub struct JsonText(Box<RawValue>);

impl JsonText {
    /// Checks that `text` is one JSON value nested at most
    /// [`JsonText::MAX_DEPTH`] deep (whitespace around it is dropped).
    pub fn parse(text: impl Into<String>) -> Result<Self, serde_json::Error> {
        Self::checked(RawValue::from_string(text.into())?)
    }

    /// `raw`, unless it nests deeper than [`JsonText::MAX_DEPTH`] or holds an
    /// escape that is no Unicode text ([`refusal`]): the bound on what
    /// comes in (parsed or deserialized), not on what the database gives
    /// back, which it already holds. (A lone surrogate reached the database,
    /// whose own message was a 422: found by a red-team review. `\u0000`,
    /// which jsonb does not hold either, is the NUL every field refuses with
    /// a 422 of its own.)
    fn checked<E: serde::de::Error>(raw: Box<RawValue>) -> Result<Self, E> {
        match refusal(raw.get(), Self::MAX_DEPTH) {
            Some(Refusal::TooDeep) => Err(E::custom("JSON nested more than 128 levels deep")),
            Some(Refusal::LoneSurrogate) => Err(E::custom(
                "a \\u escape that is no Unicode text: a lone surrogate (\\ud800 to \\udfff unpaired)",
            )),
            None => Ok(Self(raw)),
        }
    }

    /// How deep arrays and objects may nest: serde_json's own limit when it
    /// parses into a tree (a raw value is only scanned, without one).
    pub const MAX_DEPTH: usize = 128;

    /// `{}`.
    pub fn empty_object() -> Self {
        Self::parse("{}").expect("{} is JSON")
    }

    /// The text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// Whether its arrays and objects nest deeper than `max` (brackets
    /// inside strings do not count): a bound tighter than
    /// [`JsonText::MAX_DEPTH`], which every value already keeps, for JSON
    /// that travels inside other JSON (a tenant's settings' metadata).
    pub fn nests_deeper_than(&self, max: usize) -> bool {
        refusal(self.get(), max) == Some(Refusal::TooDeep)
    }

    /// Whether it holds a number that PostgreSQL's `jsonb` cannot store
    /// (its `numeric`): more than 16,383 digits after the decimal point once
    /// the exponent is applied (`1e-16384`, or a zero written
    /// `0.0e-999999`), or a magnitude of 1e131072 or more. The database
    /// refused those with its own message, naming no field (found by a new
    /// user's review); the write's own check names the field instead. Any
    /// such number but a zero is far outside what tenantry keeps anyway
    /// (resources' data: magnitudes of at least 1e-400 and below 1e400).
    pub fn holds_unstorable_number(&self) -> bool {
        unstorable_number(self.get())
    }

    /// Whether it is a JSON object.
    pub fn is_object(&self) -> bool {
        self.get().starts_with('{')
    }

    /// Parsed into `T` (numbers beyond what `T` holds are refused or rounded
    /// as `T`'s own `Deserialize` does).
    pub fn to<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.get())
    }

    /// Parsed into a `serde_json::Value`: integers beyond 64 bits and
    /// decimals of more than 17 digits become the nearest 64-bit float, and
    /// a number beyond a float's range (`1e400`, which `jsonb` holds) is an
    /// error.
    pub fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        self.to()
    }
}

impl Default for JsonText {
    /// `{}`.
    fn default() -> Self {
        Self::empty_object()
    }
}

impl From<serde_json::Value> for JsonText {
    fn from(value: serde_json::Value) -> Self {
        Self::from(&value)
    }
}

impl From<&serde_json::Value> for JsonText {
    fn from(value: &serde_json::Value) -> Self {
        Self(serde_json::value::to_raw_value(value).expect("a Value serializes"))
    }
}

impl PartialEq for JsonText {
    /// The same text.
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Eq for JsonText {}

impl PartialEq<serde_json::Value> for JsonText {
    /// The same JSON once parsed (as [`JsonText::to_value`]).
    fn eq(&self, other: &serde_json::Value) -> bool {
        self.to_value().is_ok_and(|v| v == *other)
    }
}

impl fmt::Debug for JsonText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

impl fmt::Display for JsonText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

impl Serialize for JsonText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for JsonText {
    /// Takes the value as written; from JSON only (serde_json's raw value).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::checked(Box::<RawValue>::deserialize(deserializer)?)
    }
}

/// What [`JsonText`] refuses in a raw value's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Arrays and objects nested deeper than [`JsonText::MAX_DEPTH`].
    TooDeep,
    /// A `\u` escape that is no Unicode text: a surrogate not in a
    /// high-then-low pair. A raw value is not unescaped, so only the
    /// database refused it, with its own message.
    LoneSurrogate,
}

/// What valid JSON holds that [`JsonText`] refuses, in one pass: nesting
/// deeper than `max_depth` ([`JsonText::MAX_DEPTH`] for every value;
/// brackets inside strings do not count), which is told first, else a `\u`
/// escape of a surrogate that is not the high half of a pair followed at
/// once by its low half.
fn refusal(json: &str, max_depth: usize) -> Option<Refusal> {
    let bytes = json.as_bytes();
    let (mut i, mut depth, mut in_string) = (0, 0usize, false);
    // A high surrogate just read; an unpaired one seen anywhere.
    let (mut high, mut lone) = (false, false);
    while i < bytes.len() {
        let b = bytes[i];
        i += 1;
        if !in_string {
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > max_depth {
                        return Some(Refusal::TooDeep);
                    }
                }
                b']' | b'}' => depth -= 1,
                _ => {}
            }
            continue;
        }
        if b == b'\\' && bytes.get(i) == Some(&b'u') {
            let unit = json
                .get(i + 1..i + 5)
                .and_then(|h| u16::from_str_radix(h, 16).ok());
            i += 5;
            match unit {
                Some(0xD800..=0xDBFF) if !high => high = true,
                Some(0xDC00..=0xDFFF) if high => high = false,
                Some(u) if !high && !(0xD800..=0xDFFF).contains(&u) => {}
                _ => (high, lone) = (false, true),
            }
            continue;
        }
        if high {
            (high, lone) = (false, true);
        }
        match b {
            b'\\' => i += 1,
            b'"' => in_string = false,
            _ => {}
        }
    }
    (lone || high).then_some(Refusal::LoneSurrogate)
}

/// The largest number of digits after the decimal point PostgreSQL's
/// `numeric` keeps (`NUMERIC_DSCALE_MAX`).
const NUMERIC_MAX_SCALE: i64 = 0x3FFF;
/// The largest power of ten of a `numeric`'s leading digit (its weight of at
/// most `0x7FFF` base-10,000 digits).
const NUMERIC_MAX_MAGNITUDE: i64 = (0x7FFF + 1) * 4 - 1;
/// The exponent `numeric`'s input refuses whatever the digits (`INT_MAX / 2`).
const NUMERIC_MAX_EXPONENT: u64 = (i32::MAX / 2) as u64;

/// [`JsonText::holds_unstorable_number`] over valid JSON text: each number
/// outside strings, taken apart as PostgreSQL's `numeric` input does.
fn unstorable_number(json: &str) -> bool {
    let bytes = json.as_bytes();
    let (mut i, mut in_string) = (0, false);
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        if b == b'"' {
            in_string = true;
            i += 1;
            continue;
        }
        if b != b'-' && !b.is_ascii_digit() {
            i += 1;
            continue;
        }
        // A number: [-] int [. frac] [e|E [+|-] exp] (valid JSON).
        i += usize::from(b == b'-');
        let int_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let int = &bytes[int_start..i];
        let mut frac: &[u8] = &[];
        if bytes.get(i) == Some(&b'.') {
            let start = i + 1;
            i = start;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            frac = &bytes[start..i];
        }
        let mut exponent: i64 = 0;
        if matches!(bytes.get(i), Some(b'e' | b'E')) {
            i += 1;
            let negative = bytes.get(i) == Some(&b'-');
            i += usize::from(matches!(bytes.get(i), Some(b'+' | b'-')));
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                // Saturating: an exponent of a thousand digits is as far
                // out of range as one of ten.
                exponent = exponent
                    .saturating_mul(10)
                    .saturating_add(i64::from(bytes[i] - b'0'));
                i += 1;
            }
            if negative {
                exponent = -exponent;
            }
        }
        // numeric_in refuses an exponent of about 2^30 or more outright,
        // zero's too (PostgreSQL 15: at or past INT_MAX / 2).
        if exponent.unsigned_abs() >= NUMERIC_MAX_EXPONENT {
            return true;
        }
        let scale = (frac.len() as i64).saturating_sub(exponent);
        if scale > NUMERIC_MAX_SCALE {
            return true;
        }
        // The power of ten of the leading digit that is not zero.
        let leading = match int.iter().position(|d| *d != b'0') {
            Some(at) => Some((int.len() - at - 1) as i64),
            None => frac
                .iter()
                .position(|d| *d != b'0')
                .map(|at| -(at as i64) - 1),
        };
        if leading.is_some_and(|m| m.saturating_add(exponent) > NUMERIC_MAX_MAGNITUDE) {
            return true;
        }
    }
    false
}

type SqlError = Box<dyn Error + Sync + Send>;

/// The version byte before `jsonb`'s text in the binary format.
const JSONB_VERSION: u8 = 1;

impl<'a> FromSql<'a> for JsonText {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, SqlError> {
        let text = if *ty == Type::JSONB {
            match raw.split_first() {
                Some((&JSONB_VERSION, text)) => text,
                _ => return Err("unsupported jsonb format version".into()),
            }
        } else {
            raw
        };
        // Checked to be JSON, not scanned for depth again on every read.
        Ok(Self(RawValue::from_string(
            std::str::from_utf8(text)?.to_owned(),
        )?))
    }

    fn accepts(ty: &Type) -> bool {
        is_json(ty)
    }
}

/// The column types a [`JsonText`] is read from and written to.
fn is_json(ty: &Type) -> bool {
    *ty == Type::JSON || *ty == Type::JSONB
}

impl ToSql for JsonText {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, SqlError> {
        if *ty == Type::JSONB {
            out.put_u8(JSONB_VERSION);
        }
        out.put_slice(self.get().as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        is_json(ty)
    }

    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_postgresql_cannot_store_are_told_apart_from_those_it_can() {
        let unstorable = |json: &str| {
            super::JsonText::parse(json)
                .unwrap()
                .holds_unstorable_number()
        };
        for fine in [
            r#"{"n": 1e131071}"#,
            r#"{"n": -9.99e131071}"#,
            r#"{"n": 1e-16383}"#,
            r#"{"n": 0e999999}"#,
            r#"{"n": 0.0, "s": "1e999999", "m": 12.5E+3, "z": -0}"#,
            r#"[1, 2.25, 3e-2, "\"1e999999"]"#,
        ] {
            assert!(!unstorable(fine), "{fine}");
        }
        for bad in [
            r#"{"n": 1e131072}"#,
            r#"{"n": 10e131071}"#,
            r#"{"a": [0, {"n": -1e-16384}]}"#,
            r#"{"n": 0.0e-999999}"#,
            r#"{"n": 1e99999999999999999999999999}"#,
            r#"{"n": 0e1073741823}"#,
            r#"{"n": 0.0e+2000000000}"#,
        ] {
            assert!(unstorable(bad), "{bad}");
        }
    }

    use super::*;

    #[test]
    fn unicode_escapes_that_jsonb_cannot_hold_are_refused_and_pairs_and_raw_text_pass() {
        for fine in [
            r#"{"k":"\ud83d\ude00"}"#,
            r#"{"k":"\u00e9 \\ud800 \"\u0041"}"#,
            r#"["plain", "é", 1, {"\ud83d\ude00": null}]"#,
        ] {
            assert!(JsonText::parse(fine).is_ok(), "{fine}");
        }
        for refused in [
            r#"{"k":"\ud800"}"#,
            r#"{"k":"\udc00"}"#,
            r#"{"k":"\ud800x"}"#,
            r#"{"k":"\ud800\u0041"}"#,
            r#"{"k":"\ud800\ud800"}"#,
            r#"{"\ud800":1}"#,
        ] {
            assert!(JsonText::parse(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn numbers_beyond_64_bits_keep_every_digit_through_serde() {
        let body = r#"{"data":{"big":123456789012345678901234567890,"pi":3.14159265358979323846264338327950288}}"#;
        #[derive(Deserialize, Serialize)]
        struct Body {
            data: JsonText,
        }
        let parsed: Body = serde_json::from_str(body).unwrap();
        assert_eq!(serde_json::to_string(&parsed).unwrap(), body);
    }

    #[test]
    fn nesting_deeper_than_serde_jsons_own_limit_is_refused_brackets_in_strings_aside() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(JsonText::parse(deep(128)).is_ok());
        assert!(JsonText::parse(deep(129)).is_err());
        assert!(serde_json::from_str::<JsonText>(&deep(100_000)).is_err());
        let quoted = format!(r#"{{"s": "{}\"{}"}}"#, "[".repeat(500), "{".repeat(500));
        assert!(JsonText::parse(quoted).is_ok());
    }

    #[test]
    fn a_jsonb_value_is_read_and_written_as_its_text_after_the_version_byte() {
        let v = JsonText::parse(" [1, 2.50] ").unwrap();
        assert_eq!(v.get(), "[1, 2.50]");
        assert!(!v.is_object());
        let mut out = BytesMut::new();
        v.to_sql_checked(&Type::JSONB, &mut out).unwrap();
        assert_eq!(&out[..], b"\x01[1, 2.50]");
        assert_eq!(JsonText::from_sql(&Type::JSONB, &out).unwrap(), v);
        assert!(JsonText::from_sql(&Type::JSONB, b"\x02{}").is_err());
        assert!(v.to_sql_checked(&Type::TEXT, &mut out).is_err());
        assert!(JsonText::parse("{").is_err());
    }
}
