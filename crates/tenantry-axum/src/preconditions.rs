//! Conditional requests (RFC 9110, 13): which preconditions of a request cannot hold, and their 412 answered only once the request's credential is known good.

use axum::http::{request::Parts, HeaderMap, Method};

use crate::error::{ApiError, ProblemCode};

/// A precondition of the request that cannot hold, found by
/// [`crate::serve::http_hygiene`] ([`unmet`]) and left in the request's extensions for its
/// credential extractor ([`crate::TenantCaller`], [`crate::Person`], and
/// `tenantry serve`'s own), which answers it with 412 once the credential
/// was accepted: a request with a revoked key and `If-Match` was 412, so a
/// client library kept the key instead of asking for a new one (RFC 9110,
/// 13.2.1: preconditions count only where the answer would have been 2xx;
/// an HTTP review).
#[derive(Clone, Copy, Debug)]
pub struct UnmetPrecondition(pub &'static str);

impl UnmetPrecondition {
    /// The 412 of a request that carries one; called by a credential
    /// extractor after it accepted the credential.
    pub fn refuse(parts: &Parts) -> Result<(), ApiError> {
        match parts.extensions.get::<Self>() {
            Some(unmet) => Err(unmet.answer()),
            None => Ok(()),
        }
    }

    /// Its answer: 412 `precondition_failed`.
    pub fn answer(self) -> ApiError {
        ApiError::new(ProblemCode::PreconditionFailed, self.0)
    }
}

/// Why a request's precondition cannot hold, when one cannot: `If-Match`
/// naming entity tags (tenantry sends no `ETag`, so none is the current
/// representation's), and on a write `If-None-Match: *` (the target exists:
/// the collection a POST adds to, the object a PATCH or DELETE names) or
/// `If-Unmodified-Since` a moment already past (nothing shows that nothing
/// changed since). Each was ignored once, and a change guarded by it applied
/// over whatever changed meanwhile (found by outside reviews). `If-Match: *`,
/// `If-None-Match` with tags (none can match) and an `If-Unmodified-Since`
/// still to come hold.
pub fn unmet(method: &Method, headers: &HeaderMap) -> Option<UnmetPrecondition> {
    use axum::http::header::{IF_MATCH, IF_NONE_MATCH, IF_UNMODIFIED_SINCE};
    if headers
        .get_all(IF_MATCH)
        .iter()
        .any(|v| v.to_str().map_or(true, |v| v.trim() != "*"))
    {
        return Some(UnmetPrecondition(
            "If-Match names entity tags, and tenantry sends no ETag, so none matches: nothing was done; send the request without If-Match",
        ));
    }
    if method.is_safe() {
        return None;
    }
    if headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.trim() == "*"))
    {
        // A PUT's target may be absent (a permission not granted yet): the
        // condition could hold, but nothing here looks, so it is refused
        // as not checked rather than as false (a verification review).
        return Some(UnmetPrecondition(if method == Method::PUT {
            "If-None-Match: * asks to create only what is absent, which tenantry does not check: nothing was done; send the request without it (a PUT here is idempotent)"
        } else {
            "If-None-Match: * holds only where nothing exists yet, and this request's target exists: nothing was done"
        }));
    }
    // Ignored when If-Match is present (RFC 9110, 13.1.4), and when it is
    // not a date.
    let since = headers
        .get(IF_UNMODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v.trim()).ok());
    if !headers.contains_key(IF_MATCH)
        && since.is_some_and(|since| since < std::time::SystemTime::now())
    {
        return Some(UnmetPrecondition(
            "If-Unmodified-Since: tenantry sends no Last-Modified and cannot show that nothing changed since then: nothing was done; send the request without it",
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn writes_refuse_every_precondition_that_cannot_hold_and_reads_only_if_match() {
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            for (name, value) in pairs {
                h.append(*name, HeaderValue::from_str(value).unwrap());
            }
            h
        };
        for (method, pairs, refused) in [
            (Method::GET, vec![("if-match", "\"a\"")], true),
            (Method::GET, vec![("if-match", "*")], false),
            (Method::GET, vec![("if-none-match", "*")], false),
            (Method::PATCH, vec![("if-none-match", "*")], true),
            (Method::PATCH, vec![("if-none-match", "\"a\"")], false),
            (
                Method::DELETE,
                vec![("if-unmodified-since", "Thu, 01 Jan 2015 00:00:00 GMT")],
                true,
            ),
            (
                Method::DELETE,
                vec![("if-unmodified-since", "Fri, 01 Jan 2100 00:00:00 GMT")],
                false,
            ),
            (
                Method::POST,
                vec![
                    ("if-match", "*"),
                    ("if-unmodified-since", "Thu, 01 Jan 2015 00:00:00 GMT"),
                ],
                false,
            ),
            (
                Method::POST,
                vec![("if-unmodified-since", "yesterday")],
                false,
            ),
        ] {
            assert_eq!(
                unmet(&method, &headers(&pairs)).is_some(),
                refused,
                "{method} {pairs:?}"
            );
        }
    }
}
