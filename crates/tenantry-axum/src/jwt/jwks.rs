//! The identity provider's signing keys (its JWKS): fetched over HTTP, cached, fetched again when old or when a token names a key not in them, at most once per interval; checking tokens with them is `jwt`'s.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, RwLock,
    },
    time::{Duration, Instant},
};

use jsonwebtoken::{
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse},
    Algorithm, DecodingKey,
};
use serde::Deserialize;
use serde_json::Value;

use super::{kid_for_log, JwtConfig, JwtError};

/// How long one JWKS request may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// A JWKS larger than this is not a provider's key set.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// The cached keys of one provider and how they are kept current.
pub(super) struct Jwks {
    url: String,
    client: reqwest::Client,
    refresh: Duration,
    min_refetch: Duration,
    /// What tokens are checked against; replaced whole by a successful fetch.
    current: RwLock<Arc<KeySet>>,
    /// Held by the one request that fetches; the others use the keys they
    /// have, or wait for that fetch instead of making their own. Holds when
    /// the last fetch began (successful or not), which the interval counts from.
    fetching: tokio::sync::Mutex<Option<Instant>>,
    /// Fetches ended so far: a request that waited while one ended takes
    /// that fetch's outcome, whatever the interval
    /// (with an interval under the fetch's timeout, each waiter behind a
    /// hung provider made its own fetch, one after another: found by a
    /// review, the sixth request answered after 30 s).
    attempts: AtomicU64,
    /// Why the last fetch failed, for the error while no keys are cached.
    last_error: Mutex<Option<String>>,
}

/// One fetched JWKS: the keys tenantry can use, when it was fetched.
#[derive(Default)]
struct KeySet {
    keys: Vec<VerifyingKey>,
    /// `None` until the first successful fetch.
    fetched_at: Option<Instant>,
}

/// A key of the JWKS and the one algorithm it verifies: RS256 for an RSA
/// key, ES256 for an EC P-256 key.
struct VerifyingKey {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

#[derive(Deserialize)]
struct JwksDocument {
    keys: Vec<Value>,
}

/// Whether a JWKS URL is https, whatever the scheme's case (`HTTPS://` is
/// https too, and passes the configuration's check).
fn is_https(url: &str) -> bool {
    url.get(..6)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https:"))
}

impl Jwks {
    pub(super) fn new(url: &str, config: &JwtConfig) -> Result<Self, JwtError> {
        let mut builder = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            // An https JWKS must not be redirected to plain http.
            .https_only(is_https(url))
            // Nor a loopback one to plain http elsewhere: every hop must be
            // a URL the configuration would take (found by a review: a
            // loopback endpoint's redirect to http on another host was
            // followed, and the keys found there trusted).
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                if attempt.previous().len() > 5 {
                    attempt.error("more than 5 redirects")
                } else if super::check_jwks_url(attempt.url().as_str()).is_err() {
                    attempt.error(
                        "redirected to a URL that is neither https nor http to a loopback address",
                    )
                } else {
                    attempt.follow()
                }
            }));
        if let Some(path) = &config.jwks_ca_file {
            let refused = |why: String| {
                JwtError::Config(format!("jwt.jwks_ca_file {}: {why}", path.display()))
            };
            let pem = std::fs::read(path).map_err(|e| refused(e.to_string()))?;
            let authorities =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| refused(e.to_string()))?;
            if authorities.is_empty() {
                return Err(refused("holds no PEM certificate".into()));
            }
            for authority in authorities {
                builder = builder.add_root_certificate(authority);
            }
        }
        let client = builder
            .build()
            .map_err(|e| JwtError::Config(format!("JWKS client: {e}")))?;
        Ok(Self {
            url: url.to_owned(),
            client,
            refresh: Duration::from_secs(config.jwks_refresh_secs),
            min_refetch: Duration::from_secs(config.jwks_min_refetch_secs),
            current: RwLock::new(Arc::new(KeySet::default())),
            fetching: tokio::sync::Mutex::new(None),
            attempts: AtomicU64::new(0),
            last_error: Mutex::new(None),
        })
    }

    /// The key that checks a token with this `kid` and `alg`.
    ///
    /// Keys older than the refresh interval are fetched again; a `kid` not
    /// among them makes one more fetch. Both only if no fetch began within
    /// the minimum interval. Without a `kid`, the one key for `alg` (a JWKS
    /// holding several cannot say which).
    pub(super) async fn keys(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Vec<DecodingKey>, JwtError> {
        let attempts_before = self.attempts.load(Ordering::Acquire);
        let mut set = self.current();
        if set.fetched_at.is_none_or(|at| at.elapsed() >= self.refresh) {
            let wait = set.fetched_at.is_none();
            set = self.refetch(&set, wait).await;
        }
        if set.fetched_at.is_none() {
            return Err(self.unavailable());
        }
        let Some(kid) = kid else {
            let mut candidates = set.keys.iter().filter(|k| k.alg == alg);
            return match (candidates.next(), candidates.next()) {
                (Some(only), None) => Ok(vec![only.key.clone()]),
                _ => Err(JwtError::UnknownKey { kid: None }),
            };
        };
        // One more fetch for a kid not among the keys, unless one ended
        // while this request waited above: a request waits for one fetch at
        // most (two in a row waited 10 s behind a provider that hung, with
        // jwks_min_refetch_secs under the fetch's 5 s: found by a review).
        if !set.has(kid) {
            set = if self.attempts.load(Ordering::Acquire) == attempts_before {
                self.refetch(&set, true).await
            } else {
                // That fetch's keys, which `set` may predate.
                self.current()
            };
        }
        if !set.has(kid) {
            return Err(JwtError::UnknownKey {
                kid: Some(kid_for_log(kid)),
            });
        }
        // Every key of this kid and algorithm (a JWKS may give one kid to
        // several: the first alone was tried, found by a review).
        let usable: Vec<DecodingKey> = set
            .keys
            .iter()
            .filter(|k| k.kid.as_deref() == Some(kid) && k.alg == alg)
            .map(|k| k.key.clone())
            .collect();
        if usable.is_empty() {
            return Err(JwtError::KeyAlgorithmMismatch {
                kid: kid_for_log(kid),
                alg: format!("{alg:?}"),
            });
        }
        Ok(usable)
    }

    /// Fetches the JWKS unless a fetch began within the minimum interval:
    /// how many usable keys are cached then, or why there are none.
    pub(super) async fn prefetch(&self) -> Result<usize, JwtError> {
        let set = self.refetch(&self.current(), true).await;
        if set.fetched_at.is_none() {
            return Err(self.unavailable());
        }
        Ok(set.keys.len())
    }

    /// Why no keys are held: the last fetch's failure, or none tried yet.
    fn unavailable(&self) -> JwtError {
        let why = self.last_error.lock().expect("jwks error lock").clone();
        JwtError::JwksUnavailable(why.unwrap_or_else(|| "not fetched yet".into()))
    }

    fn current(&self) -> Arc<KeySet> {
        self.current.read().expect("jwks lock").clone()
    }

    /// Fetches the JWKS again unless another request did since `seen` was
    /// read or a fetch began less than the minimum interval ago, and answers
    /// the keys now current. A failed fetch keeps the keys there were.
    ///
    /// Unless `wait`, a request that finds a fetch under way goes on with the
    /// keys it has rather than wait for it (up to the 5 s timeout): old keys
    /// are still good keys while the provider is slow.
    async fn refetch(&self, seen: &Arc<KeySet>, wait: bool) -> Arc<KeySet> {
        let attempts_before = self.attempts.load(Ordering::Acquire);
        let mut last_attempt = if wait {
            self.fetching.lock().await
        } else {
            match self.fetching.try_lock() {
                Ok(guard) => guard,
                Err(_) => return seen.clone(),
            }
        };
        let now = self.current();
        if !Arc::ptr_eq(&now, seen) {
            return now;
        }
        if self.attempts.load(Ordering::Acquire) != attempts_before
            || last_attempt.is_some_and(|at| at.elapsed() < self.min_refetch)
        {
            return now;
        }
        *last_attempt = Some(Instant::now());
        let outcome = self.download().await;
        // Counted once it ends, under the lock: whoever waited meanwhile
        // (for this fetch or behind it) sees it and takes its outcome.
        self.attempts.fetch_add(1, Ordering::Release);
        match outcome {
            Ok(keys) => {
                let set = Arc::new(KeySet {
                    keys,
                    fetched_at: Some(Instant::now()),
                });
                *self.current.write().expect("jwks lock") = set.clone();
                *self.last_error.lock().expect("jwks error lock") = None;
                set
            }
            Err(why) => {
                tracing::warn!(url = %super::shown_jwks_url(&self.url), error = %why, cached_keys = now.keys.len(), "JWKS fetch failed; keeping the keys there were");
                *self.last_error.lock().expect("jwks error lock") = Some(why);
                now
            }
        }
    }

    /// One GET of the JWKS and the keys in it tenantry can use; a set
    /// without any is an error (a provider serving an empty set by mistake
    /// must not lock every user out).
    async fn download(&self) -> Result<Vec<VerifyingKey>, String> {
        let response = self.client.get(&self.url).send().await.map_err(|e| {
            format!(
                "GET failed: {}",
                tenantry_db::with_sources(&e.without_url())
            )
        })?;
        if !response.status().is_success() {
            return Err(format!("GET answered {}", response.status()));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err("JWKS larger than 1 MiB".into());
        }
        // Read a chunk at a time and given up past the bound: a body without
        // Content-Length was read whole first (found by a review: 3 GB in
        // memory for a provider streaming a large answer).
        let mut response = response;
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| {
            format!(
                "reading the body failed: {}",
                tenantry_db::with_sources(&e.without_url())
            )
        })? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err("JWKS larger than 1 MiB".into());
            }
            body.extend_from_slice(&chunk);
        }
        let document: JwksDocument =
            serde_json::from_slice(&body).map_err(|e| format!("not a JWKS: {e}"))?;
        let keys: Vec<VerifyingKey> = document
            .keys
            .into_iter()
            .filter_map(VerifyingKey::from_jwk)
            .collect();
        if keys.is_empty() {
            return Err("the JWKS has no RS256 or ES256 (P-256) signing key".into());
        }
        Ok(keys)
    }
}

impl KeySet {
    fn has(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

impl VerifyingKey {
    /// A JWKS entry tenantry can verify with, or `None` for one it skips:
    /// encryption keys, symmetric (`oct`) keys (HS256 uses the configured
    /// secret only), curves other than P-256, a stated `alg` that is not the
    /// key type's, entries the JWK parser does not know.
    fn from_jwk(entry: Value) -> Option<Self> {
        let jwk: Jwk = serde_json::from_value(entry).ok()?;
        if jwk
            .common
            .public_key_use
            .as_ref()
            .is_some_and(|u| *u != PublicKeyUse::Signature)
        {
            return None;
        }
        if jwk
            .common
            .key_operations
            .as_ref()
            .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
        {
            return None;
        }
        let (alg, stated) = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => (Algorithm::RS256, KeyAlgorithm::RS256),
            AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
                (Algorithm::ES256, KeyAlgorithm::ES256)
            }
            _ => return None,
        };
        if jwk.common.key_algorithm.is_some_and(|a| a != stated) {
            return None;
        }
        let key = DecodingKey::from_jwk(&jwk).ok()?;
        Some(Self {
            kid: jwk.common.key_id,
            alg,
            key,
        })
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn an_https_url_in_any_case_is_held_to_https() {
        assert!(is_https("https://idp.example/jwks"));
        assert!(is_https("HTTPS://idp.example/jwks"));
        assert!(!is_https("http://127.0.0.1/jwks"));
        assert!(!is_https("htt"));
    }
    use super::*;
    use serde_json::json;

    fn rsa(extra: Value) -> Value {
        let mut key = json!({"kty": "RSA", "kid": "r", "n": "AQAB", "e": "AQAB"});
        key.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        key
    }

    #[test]
    fn signing_keys_of_rsa_and_p256_are_kept_with_the_algorithm_of_their_type() {
        let k = VerifyingKey::from_jwk(rsa(json!({"use": "sig", "alg": "RS256"}))).unwrap();
        assert_eq!(k.alg, Algorithm::RS256);
        let ec = json!({"kty": "EC", "crv": "P-256", "kid": "e", "x": "AQAB", "y": "AQAB"});
        assert_eq!(VerifyingKey::from_jwk(ec).unwrap().alg, Algorithm::ES256);
    }

    #[test]
    fn encryption_symmetric_other_curve_and_mislabelled_keys_are_skipped() {
        for entry in [
            rsa(json!({"use": "enc"})),
            rsa(json!({"alg": "RSA-OAEP"})),
            rsa(json!({"alg": "PS256"})),
            rsa(json!({"key_ops": ["encrypt"]})),
            json!({"kty": "oct", "kid": "h", "k": "c2VjcmV0"}),
            json!({"kty": "EC", "crv": "P-384", "kid": "e", "x": "AQAB", "y": "AQAB"}),
            json!({"kty": "EC", "crv": "P-256", "kid": "e", "x": "AQAB", "y": "AQAB", "alg": "ES384"}),
            json!({"kty": "OKP", "crv": "Ed25519", "kid": "o", "x": "AQAB"}),
            json!({"kty": "XYZ", "kid": "z"}),
        ] {
            assert!(VerifyingKey::from_jwk(entry.clone()).is_none(), "{entry}");
        }
    }
}
