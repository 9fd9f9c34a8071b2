//! Extractors whose rejections are problem+json: JSON bodies, path and query parameters.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request},
    http::header,
};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ProblemCode};

/// A JSON request body with problem+json rejections (400 bad JSON, 413 too
/// large, 415 wrong type). Its top level must be an object: serde would
/// otherwise read a struct from an array, field by position.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (is_json, bytes) = body(req, state).await?;
        if !is_json {
            return Err(not_json());
        }
        json_object(&bytes).map(Self)
    }
}

/// Whether the request says its body is JSON, and the body.
async fn body<S: Send + Sync>(req: Request, state: &S) -> Result<(bool, Bytes), ApiError> {
    // Which of several types counts would be a guess, and a proxy reading
    // the last one would see another body than the server parses (the
    // first one counted: an outside fuzzing review).
    if req.headers().get_all(header::CONTENT_TYPE).iter().count() > 1 {
        return Err(ApiError::new(
            ProblemCode::InvalidHeader,
            "send Content-Type once: which of several types counts would be a guess",
        )
        .with_field("Content-Type"));
    }
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_json_media_type);
    let bytes = Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ProblemCode::BodyTooLarge,
                "request body exceeds the size limit",
            )
        } else if let Some(late) = timed_out(&e) {
            ApiError::new(
                ProblemCode::BodyTimeout,
                format!("{late}: send it at once after its headers, or retry"),
            )
        } else {
            ApiError::new(ProblemCode::InvalidJson, e.body_text())
        }
    })?;
    Ok((is_json, bytes))
}

/// The body's deadline passed ([`crate::serve::BodyTimedOut`], somewhere
/// in the error's sources).
fn timed_out(error: &(dyn std::error::Error + 'static)) -> Option<crate::serve::BodyTimedOut> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(late) = e.downcast_ref::<crate::serve::BodyTimedOut>() {
            return Some(*late);
        }
        next = e.source();
    }
    None
}

/// `application/json` or `application/<anything>+json` but the two patch
/// formats, in UTF-8: no
/// `charset` parameter, or `utf-8` or `us-ascii` (its subset). RFC 8259
/// (8.1, 11) has JSON exchanged between systems in UTF-8 and a charset
/// parameter without effect; stricter than that, a body declared in another
/// charset is refused rather than read as something it is not. Media types
/// and charsets compare without regard to case (RFC 9110, 8.3.1), a charset
/// also quoted.
fn is_json_media_type(value: &str) -> bool {
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    // Not JSON Patch (RFC 6902): its body is a list of operations, which a
    // route reading an object would refuse as malformed (400) instead of
    // saying it does not take the format (an HTTP review). Nor JSON Merge
    // Patch (RFC 7396), whose `null` removes a member: a route's PATCH has
    // rules of its own (a resource's `data` is replaced whole), and a client
    // sending merge patches would get them silently (a new user's review).
    let json = essence == "application/json"
        || essence.strip_prefix("application/").is_some_and(|sub| {
            sub.ends_with("+json")
                && sub.len() > "+json".len()
                && sub != "json-patch+json"
                && sub != "merge-patch+json"
        });
    json && parts.all(|parameter| {
        let (name, charset) = parameter.split_once('=').unwrap_or((parameter, ""));
        !name.trim().eq_ignore_ascii_case("charset") || {
            let charset = charset.trim();
            let charset = charset
                .strip_prefix('"')
                .and_then(|c| c.strip_suffix('"'))
                .unwrap_or(charset);
            ["utf-8", "utf8", "us-ascii"]
                .iter()
                .any(|utf8| charset.eq_ignore_ascii_case(utf8))
        }
    })
}

fn not_json() -> ApiError {
    ApiError::new(
        ProblemCode::UnsupportedMediaType,
        "send the body as UTF-8 JSON with Content-Type: application/json",
    )
}

/// A body whose top level is a JSON object, parsed into `T`.
fn json_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::new(
            ProblemCode::InvalidJson,
            "the request body must be a JSON object",
        ));
    }
    let value = axum::Json::<T>::from_bytes(bytes)
        .map(|axum::Json(value)| value)
        .map_err(ApiError::from)?;
    // PostgreSQL's text holds no U+0000: said here, naming the field, where
    // the database refused it with no column to name (found by a review with
    // generated clients). Only a body spelling the escape is read again.
    if bytes.windows(6).any(|w| w == br"\u0000") {
        if let Some(field) = serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()
            .as_ref()
            .and_then(field_holding_nul)
        {
            return Err(ApiError::invalid(
                &field,
                "text may not contain the NUL character (\\u0000)",
            ));
        }
    }
    Ok(value)
}

/// The top-level field of a JSON object whose value (or a key or string
/// inside it) holds U+0000.
fn field_holding_nul(body: &serde_json::Value) -> Option<String> {
    fn holds(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::String(s) => s.contains('\0'),
            serde_json::Value::Array(items) => items.iter().any(holds),
            serde_json::Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds(v)),
            _ => false,
        }
    }
    body.as_object()?
        .iter()
        .find(|(k, v)| k.contains('\0') || holds(v))
        .map(|(k, _)| k.clone())
}

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Path` with problem+json rejections.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// `axum::extract::Query` with problem+json rejections. A query string whose
/// percent-decoded bytes are not UTF-8 is refused (400 `invalid_query`) rather
/// than decoded lossily into U+FFFD.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        if parts.uri.query().is_some_and(|q| !decodes_to_utf8(q)) {
            return Err(ApiError::new(
                ProblemCode::InvalidQuery,
                "the query string is not valid UTF-8 once percent-decoded",
            ));
        }
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        // As in a JSON body (json_object): a parameter holding U+0000 is named.
        if parts.uri.query().is_some_and(|q| q.contains("%00")) {
            let pairs = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
                .map(|q| q.0)
                .unwrap_or_default();
            if let Some((name, _)) = pairs.iter().find(|(_, v)| v.contains('\0')) {
                return Err(ApiError::invalid(
                    name,
                    "text may not contain the NUL character (\\u0000)",
                ));
            }
        }
        Ok(Self(value))
    }
}

/// Whether a query string percent-decodes (`%XX`, `+`) to valid UTF-8.
fn decodes_to_utf8(query: &str) -> bool {
    let bytes = query.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                decoded.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    std::str::from_utf8(&decoded).is_ok()
}

/// A JSON body that may be absent (an empty body, no byte at all): `None`
/// then. A present body must be an `application/json` object, like
/// [`Json`]: `null` too is refused (400 `invalid_json`), as the OpenAPI
/// document, whose optional bodies are a plain object schema, says, and so
/// is one of white space alone, which is no JSON (a lone `\r` was taken as
/// no body: found by schemathesis).
#[derive(Debug, Clone, Default)]
pub struct OptionalJson<T>(pub Option<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (is_json, bytes) = body(req, state).await?;
        if bytes.is_empty() {
            return Ok(Self(None));
        }
        let text = bytes.trim_ascii();
        if !is_json {
            return Err(not_json());
        }
        json_object(text).map(|value| Self(Some(value)))
    }
}

#[cfg(test)]
mod media_type_tests {
    use super::is_json_media_type;

    #[test]
    fn json_media_types_in_utf8_are_recognised_whatever_their_case_and_parameters() {
        for yes in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            " application/json ;charset=UTF-8",
            "application/json; charset=\"utf-8\"",
            "application/json; charset=utf8; profile=x",
            "application/json; charset=US-ASCII",
            "application/problem+json",
            "application/vnd.api+JSON",
        ] {
            assert!(is_json_media_type(yes), "{yes}");
        }
        for no in [
            "text/plain",
            "application/jsonx",
            "application/+json",
            "text/x+json",
            "",
            "json",
            "application/json; charset=utf-16",
            "application/json; charset=iso-8859-1",
            "application/merge-patch+json; Charset=latin1",
            "application/merge-patch+json",
            "application/json-patch+json",
            "Application/JSON-Patch+JSON; charset=utf-8",
        ] {
            assert!(!is_json_media_type(no), "{no}");
        }
    }
}
