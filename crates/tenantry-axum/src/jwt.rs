//! JWT verification: whether an identity provider's token is genuine and current, and which user (and tenant) it names; what that user may do is not decided here.
//!
//! [`JwtVerifier::verify`] checks a bearer token issued by the identity
//! provider named in a [`JwtConfig`] and answers a [`VerifiedToken`] or the
//! reason it refused ([`JwtError`]):
//!
//! - the algorithm comes from the key, never from the token: an `HS256`
//!   token is checked only against the configured secret, `RS256` and
//!   `ES256` only against a key of the provider's JWKS of that type (RSA, EC
//!   P-256) named by the token's `kid`; `none` and every other algorithm are
//!   refused, and keys a token carries itself (`jwk`, `jku`, `x5u`) are never
//!   used;
//! - the JWKS is fetched over HTTP and cached (module `jwks`): it is
//!   fetched again when older than [`JwtConfig::jwks_refresh_secs`] and when
//!   a token names a key it lacks (keys rotate without a restart), at most
//!   once per [`JwtConfig::jwks_min_refetch_secs`], so that a stream of
//!   invented `kid`s cannot make tenantry hammer the provider; a failed fetch
//!   keeps the keys it had;
//! - `iss` must equal the issuer, `aud` must name one of the audiences, `exp`
//!   is required and `nbf` checked when present, both with the configured
//!   leeway;
//! - the user id is the user claim itself when it is a canonical UUID not of
//!   version 5, else a UUIDv5 of issuer and subject ([`user_id_for`]);
//! - the email is verified only when the token's `email_verified` claim is
//!   `true` ([`VerifiedToken::email_verified`]); a provider that never sends
//!   the claim is trusted only when configured so
//!   ([`JwtConfig::trust_email_without_verified_claim`]).
//!
//! ```no_run
//! # async fn demo(token: &str) -> Result<(), tenantry_axum::jwt::JwtError> {
//! use tenantry_axum::jwt::{JwtConfig, JwtVerifier};
//!
//! let mut config = JwtConfig::new("https://example.eu.auth0.com/", "https://api.example.com");
//! config.jwks_url = Some("https://example.eu.auth0.com/.well-known/jwks.json".into());
//! let verifier = JwtVerifier::new(config)?;
//! let token = verifier.verify(token).await?;
//! println!("{} ({:?})", token.user_id, token.email);
//! # Ok(())
//! # }
//! ```

use std::{fmt, sync::Arc};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use chrono::{DateTime, Utc};
use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};
use tenantry_db::{TenantId, UserId};
use uuid::Uuid;

mod jwks;
#[cfg(feature = "test-support")]
pub mod testing;

use jwks::Jwks;

/// The namespace of the UUIDv5 user ids made from subjects that are not
/// UUIDs ([`user_id_for`]). Fixed forever: changing it changes every such
/// user's id.
pub const SUBJECT_NAMESPACE: Uuid = Uuid::from_u128(0x012d435f_d91b_4b5e_9e42_b033f8851a81);

/// The most leeway [`JwtConfig::validate`] accepts: clocks further apart
/// than five minutes are a fault to fix, not to tolerate.
pub const MAX_LEEWAY_SECS: u64 = 300;

/// The shortest HS256 secret accepted: 32 bytes, the size of the hash (RFC 7518, 3.2).
pub const MIN_HS256_SECRET_LEN: usize = 32;

/// Tokens longer than this are refused before any parsing.
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Which identity provider's tokens are accepted and how they name users and
/// tenants. Read from configuration (unknown keys are refused); check it with
/// [`validate`](Self::validate) (which [`JwtVerifier::new`] calls).
/// Its `Debug` never shows the HS256 secret.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The provider's issuer: a token's `iss` must equal it exactly
    /// (Auth0's ends with `/`, Keycloak's is the realm's URL).
    pub issuer: String,
    /// The audiences tenantry answers to: a token's `aud` must name at least
    /// one. Required and never empty: a token meant for another service of
    /// the same provider must not open this one.
    pub audience: Vec<String>,
    /// Where the provider publishes its RS256 / ES256 keys (JWKS): `https`,
    /// or `http` to a loopback address only.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// The shared secret of HS256 tokens (Supabase's "JWT secret"), at least
    /// [`MIN_HS256_SECRET_LEN`] bytes.
    #[serde(default)]
    pub hs256_secret: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds (default 30, at
    /// most [`MAX_LEEWAY_SECS`]).
    #[serde(default = "defaults::leeway_secs")]
    pub leeway_secs: u64,
    /// The claim naming the user (default `sub`); its value must be a string.
    #[serde(default = "defaults::user_claim")]
    pub user_claim: String,
    /// The claim naming the tenant (a UUID string), if the provider puts one
    /// in its tokens; a token whose claim is present but not a UUID is refused.
    #[serde(default)]
    pub tenant_claim: Option<String>,
    /// The claim holding the user's email address (default `email`).
    #[serde(default = "defaults::email_claim")]
    pub email_claim: String,
    /// The claim saying the provider verified that email (default
    /// `email_verified`, as OpenID Connect, Auth0, Keycloak and Cognito name
    /// it): only `true` (or Cognito's `"true"`) verifies it.
    #[serde(default = "defaults::email_verified_claim")]
    pub email_verified_claim: String,
    /// Whether an email is trusted as verified when the token has no
    /// [`email_verified_claim`](Self::email_verified_claim) at all (default
    /// `false`). Set it only for a provider that issues tokens for verified
    /// emails alone and never sends the claim (Supabase with email
    /// confirmation on, a Clerk session template carrying the primary
    /// email); an explicit `false` is never trusted.
    #[serde(default)]
    pub trust_email_without_verified_claim: bool,
    /// Keys older than this many seconds are fetched again (default 600).
    #[serde(default = "defaults::jwks_refresh_secs")]
    pub jwks_refresh_secs: u64,
    /// The JWKS is fetched at most once per this many seconds, however many
    /// tokens name unknown keys (default 10, at least 1).
    #[serde(default = "defaults::jwks_min_refetch_secs")]
    pub jwks_min_refetch_secs: u64,
    /// A PEM file of certificate authorities that an `https` JWKS URL's
    /// certificate may also chain to (a provider behind a private CA: a
    /// self-hosted Keycloak, say); the public web's authorities are trusted
    /// with or without it.
    #[serde(default)]
    pub jwks_ca_file: Option<std::path::PathBuf>,
}

mod defaults {
    pub(super) fn leeway_secs() -> u64 {
        30
    }
    pub(super) fn user_claim() -> String {
        "sub".into()
    }
    pub(super) fn email_claim() -> String {
        "email".into()
    }
    pub(super) fn email_verified_claim() -> String {
        "email_verified".into()
    }
    pub(super) fn jwks_refresh_secs() -> u64 {
        600
    }
    pub(super) fn jwks_min_refetch_secs() -> u64 {
        10
    }
}

impl JwtConfig {
    /// Every variable [`apply_env`](Self::apply_env) reads, the issuer first
    /// (the one that turns people's tokens on).
    pub const ENV_VARIABLES: [&'static str; 13] = [
        "TENANTRY_JWT_ISSUER",
        "TENANTRY_JWT_AUDIENCE",
        "TENANTRY_JWT_JWKS_URL",
        "TENANTRY_JWT_HS256_SECRET",
        "TENANTRY_JWT_TENANT_CLAIM",
        "TENANTRY_JWT_USER_CLAIM",
        "TENANTRY_JWT_LEEWAY_SECS",
        "TENANTRY_JWT_EMAIL_CLAIM",
        "TENANTRY_JWT_EMAIL_VERIFIED_CLAIM",
        "TENANTRY_JWT_TRUST_EMAIL_WITHOUT_VERIFIED_CLAIM",
        "TENANTRY_JWT_JWKS_REFRESH_SECS",
        "TENANTRY_JWT_JWKS_MIN_REFETCH_SECS",
        "TENANTRY_JWT_JWKS_CA_FILE",
    ];

    /// Refuses a `TENANTRY_JWT_*` variable among `names` (the process's
    /// environment) that is none of [`ENV_VARIABLES`](Self::ENV_VARIABLES):
    /// misspelt, it would be ignored without a word while the setting it
    /// meant keeps its default (found by an outside review; unknown keys of
    /// a `[jwt]` section are refused the same way).
    pub fn refuse_unknown_env(names: impl IntoIterator<Item = String>) -> Result<(), String> {
        match names
            .into_iter()
            .filter(|n| {
                n.starts_with("TENANTRY_JWT_") && !Self::ENV_VARIABLES.contains(&n.as_str())
            })
            .min()
        {
            Some(name) => Err(format!(
                "{name} is not a variable tenantry reads; the people's-token settings are {}",
                Self::ENV_VARIABLES.join(", ")
            )),
            None => Ok(()),
        }
    }

    /// [`refuse_unknown_env`](Self::refuse_unknown_env) over this process's
    /// environment (names that are not Unicode cannot be tenantry's).
    pub fn refuse_unknown_process_env() -> Result<(), String> {
        Self::refuse_unknown_env(
            std::env::vars_os().filter_map(|(name, _)| name.into_string().ok()),
        )
    }

    /// The defaults for one issuer and one audience, with no key source yet:
    /// set [`jwks_url`](Self::jwks_url) or [`hs256_secret`](Self::hs256_secret).
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: vec![audience.into()],
            jwks_url: None,
            hs256_secret: None,
            leeway_secs: defaults::leeway_secs(),
            user_claim: defaults::user_claim(),
            tenant_claim: None,
            email_claim: defaults::email_claim(),
            email_verified_claim: defaults::email_verified_claim(),
            trust_email_without_verified_claim: false,
            jwks_refresh_secs: defaults::jwks_refresh_secs(),
            jwks_min_refetch_secs: defaults::jwks_min_refetch_secs(),
            jwks_ca_file: None,
        }
    }

    /// Applies the `TENANTRY_JWT_*` variables (read through `get`, which
    /// tests replace), each over its own key of `config` (a `[jwt]` section
    /// of a file, say): `TENANTRY_JWT_ISSUER` starts a configuration when
    /// there is none, `TENANTRY_JWT_AUDIENCE` (comma-separated),
    /// `TENANTRY_JWT_JWKS_URL`, `TENANTRY_JWT_HS256_SECRET`,
    /// `TENANTRY_JWT_TENANT_CLAIM`, `TENANTRY_JWT_USER_CLAIM`,
    /// `TENANTRY_JWT_LEEWAY_SECS`, `TENANTRY_JWT_EMAIL_CLAIM`,
    /// `TENANTRY_JWT_EMAIL_VERIFIED_CLAIM`,
    /// `TENANTRY_JWT_TRUST_EMAIL_WITHOUT_VERIFIED_CLAIM`,
    /// `TENANTRY_JWT_JWKS_REFRESH_SECS`, `TENANTRY_JWT_JWKS_MIN_REFETCH_SECS`,
    /// `TENANTRY_JWT_JWKS_CA_FILE` (one for every key of the section). Without an issuer
    /// from either, none of the others may be set (an error names the first
    /// one set); with none set, API keys only. The caller then
    /// [`validate`](Self::validate)s. Errs naming the variable whose value
    /// does not parse.
    pub fn apply_env(
        config: &mut Option<JwtConfig>,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<(), String> {
        fn parse<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, String>
        where
            T::Err: fmt::Display,
        {
            v.trim().parse().map_err(|e| format!("{name}={v:?}: {e}"))
        }
        let set = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        if let Some(issuer) = set("TENANTRY_JWT_ISSUER") {
            match config.as_mut() {
                Some(jwt) => jwt.issuer = issuer,
                None => {
                    let mut jwt = JwtConfig::new(issuer, "");
                    jwt.audience.clear();
                    *config = Some(jwt);
                }
            }
        }
        let Some(jwt) = config.as_mut() else {
            // A misspelt or forgotten issuer variable would otherwise leave
            // people locked out without a word (found by a new user's review).
            if let Some(name) = Self::ENV_VARIABLES[1..]
                .iter()
                .find(|name| set(name).is_some())
            {
                return Err(format!(
                    "{name} is set but no issuer is (TENANTRY_JWT_ISSUER or the [jwt] section's issuer): set it to accept people's tokens, or unset {name}"
                ));
            }
            return Ok(());
        };
        if let Some(audience) = set("TENANTRY_JWT_AUDIENCE") {
            jwt.audience = audience
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect();
        }
        if let Some(v) = set("TENANTRY_JWT_JWKS_URL") {
            jwt.jwks_url = Some(v);
        }
        if let Some(v) = set("TENANTRY_JWT_HS256_SECRET") {
            jwt.hs256_secret = Some(v);
        }
        if let Some(v) = set("TENANTRY_JWT_TENANT_CLAIM") {
            jwt.tenant_claim = Some(v);
        }
        if let Some(v) = set("TENANTRY_JWT_USER_CLAIM") {
            jwt.user_claim = v;
        }
        if let Some(v) = get("TENANTRY_JWT_LEEWAY_SECS") {
            jwt.leeway_secs = parse("TENANTRY_JWT_LEEWAY_SECS", &v)?;
        }
        // Found by an audit: without these three, following the docs'
        // advice through the environment was silently ignored.
        if let Some(v) = set("TENANTRY_JWT_EMAIL_CLAIM") {
            jwt.email_claim = v;
        }
        if let Some(v) = get("TENANTRY_JWT_JWKS_REFRESH_SECS") {
            jwt.jwks_refresh_secs = parse("TENANTRY_JWT_JWKS_REFRESH_SECS", &v)?;
        }
        if let Some(v) = get("TENANTRY_JWT_JWKS_MIN_REFETCH_SECS") {
            jwt.jwks_min_refetch_secs = parse("TENANTRY_JWT_JWKS_MIN_REFETCH_SECS", &v)?;
        }
        if let Some(v) = set("TENANTRY_JWT_JWKS_CA_FILE") {
            jwt.jwks_ca_file = Some(v.into());
        }
        if let Some(v) = set("TENANTRY_JWT_EMAIL_VERIFIED_CLAIM") {
            jwt.email_verified_claim = v;
        }
        if let Some(v) = get("TENANTRY_JWT_TRUST_EMAIL_WITHOUT_VERIFIED_CLAIM") {
            jwt.trust_email_without_verified_claim =
                parse("TENANTRY_JWT_TRUST_EMAIL_WITHOUT_VERIFIED_CLAIM", &v)?;
        }
        Ok(())
    }

    /// Checks what serde cannot: an issuer, at least one audience, at least
    /// one key source, a JWKS URL that cannot be intercepted (`https`, or
    /// `http` to a loopback address), an HS256 secret of at least
    /// [`MIN_HS256_SECRET_LEN`] bytes, a leeway of at most
    /// [`MAX_LEEWAY_SECS`], claim names and intervals that are not empty or 0.
    pub fn validate(&self) -> Result<(), String> {
        if self.issuer.is_empty() {
            return Err("jwt.issuer is empty".into());
        }
        if self.audience.is_empty() {
            return Err("jwt.audience names no audience: name at least one (tokens for other services of the provider would be accepted)".into());
        }
        if self.audience.iter().any(String::is_empty) {
            return Err("jwt.audience holds an empty audience".into());
        }
        if self.jwks_url.is_none() && self.hs256_secret.is_none() {
            return Err("jwt needs jwks_url or hs256_secret (or both)".into());
        }
        if let Some(url) = &self.jwks_url {
            check_jwks_url(url)?;
        }
        if self.jwks_ca_file.is_some() && self.jwks_url.is_none() {
            return Err("jwt.jwks_ca_file is set without jwks_url".into());
        }
        if let Some(secret) = &self.hs256_secret {
            if secret.len() < MIN_HS256_SECRET_LEN {
                return Err(format!(
                    "jwt.hs256_secret is {} bytes; HS256 needs at least {MIN_HS256_SECRET_LEN}",
                    secret.len()
                ));
            }
        }
        if self.leeway_secs > MAX_LEEWAY_SECS {
            return Err(format!(
                "jwt.leeway_secs is {}; at most {MAX_LEEWAY_SECS} (fix the clocks instead)",
                self.leeway_secs
            ));
        }
        for (name, value) in [
            ("user_claim", Some(&self.user_claim)),
            ("email_claim", Some(&self.email_claim)),
            ("email_verified_claim", Some(&self.email_verified_claim)),
            ("tenant_claim", self.tenant_claim.as_ref()),
        ] {
            if value.is_some_and(|v| v.is_empty()) {
                return Err(format!("jwt.{name} is empty"));
            }
            // A space at an end names a claim no provider sends: every
            // token was refused, the reason in a debug line only (a review
            // of people).
            if let Some(v) = value.filter(|v| v.trim() != v.as_str()) {
                return Err(format!(
                    "jwt.{name} is {v:?}: a claim's name has no spaces at its ends"
                ));
            }
        }
        // Claims that say something about the token, not who it is for: no
        // two tokens' values tell people apart (every person would be one
        // user, or none), so every token was refused or all were one person.
        if self.user_claim == self.email_verified_claim
            || TOKEN_CLAIMS.contains(&self.user_claim.as_str())
        {
            return Err(format!(
                "jwt.user_claim is {:?}, a claim about the token rather than the person it is for: use sub \
                 (or a claim the provider assigns each person once, such as Azure AD's oid)",
                self.user_claim
            ));
        }
        // OpenID Connect Core §5.7: only `sub`, with the issuer, identifies
        // a person; the profile claims are data people choose or change, and
        // one address can be somebody else's unverified (an outside review:
        // with `user_claim = "email"`, a token with a member's address and
        // `email_verified: false` acted as that member).
        if self.user_claim == self.email_claim || PROFILE_CLAIMS.contains(&self.user_claim.as_str())
        {
            return Err(format!(
                "jwt.user_claim is {:?}, a claim people choose or change, which may name somebody else \
                 (OpenID Connect Core 5.7: only sub identifies a person at its issuer): use sub, or a \
                 claim the provider assigns once and never reuses (such as Azure AD's oid)",
                self.user_claim
            ));
        }
        if self.jwks_refresh_secs == 0 {
            return Err("jwt.jwks_refresh_secs must be at least 1".into());
        }
        if self.jwks_min_refetch_secs == 0 {
            return Err("jwt.jwks_min_refetch_secs must be at least 1 (0 would let unknown kids make a fetch each)".into());
        }
        Ok(())
    }
}

/// The claims of OpenID Connect's standard profile (Core §5.1) that people
/// choose or change at their provider, and `jwt.user_claim` may not name:
/// none identifies a person (§5.7).
const PROFILE_CLAIMS: &[&str] = &[
    "name",
    "given_name",
    "family_name",
    "middle_name",
    "nickname",
    "preferred_username",
    "profile",
    "picture",
    "website",
    "email",
    "gender",
    "birthdate",
    "zoneinfo",
    "locale",
    "phone_number",
    "address",
    // Not OpenID Connect's, as mutable: Azure AD's sign-in names (an
    // administrator renames a user, and the name is given to someone
    // else) and Cognito's user name.
    "upn",
    "unique_name",
    "cognito:username",
];

/// Registered claims (RFC 7519 §4.1, OpenID Connect Core §2) that describe
/// the token, not the person it is for: `jwt.user_claim` may not name them.
const TOKEN_CLAIMS: &[&str] = &[
    "iss",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "azp",
    "nonce",
    "auth_time",
    "acr",
    "amr",
    "at_hash",
    "c_hash",
    "sid",
    "scope",
    "email_verified",
    "phone_number_verified",
];

/// A JWKS URL as logs and errors show it: without the user and password
/// it may carry and without its query (a provider's `?api_key=`), each
/// replaced by `redacted` (an on-call review found both in the start line and in
/// every failed fetch's warning; "no line holds a credential").
pub fn shown_jwks_url(url: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        return "(not a URL)".into();
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        let _ = parsed.set_username("redacted");
        let _ = parsed.set_password(None);
    }
    if parsed.query().is_some() {
        parsed.set_query(Some("redacted"));
    }
    parsed.set_fragment(None);
    parsed.to_string()
}

/// Keys fetched over plain HTTP could be swapped on the way: only a loopback
/// provider (a sidecar, a test) may be reached without TLS.
fn check_jwks_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("jwt.jwks_url is not a URL: {e}"))?;
    let loopback = match parsed.host_str() {
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    };
    match parsed.scheme() {
        "https" if parsed.has_host() => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(format!(
            "jwt.jwks_url {:?} must be https (http only to a loopback address)",
            shown_jwks_url(url)
        )),
    }
}

impl fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtConfig")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("jwks_url", &self.jwks_url)
            .field(
                "hs256_secret",
                &self.hs256_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("leeway_secs", &self.leeway_secs)
            .field("user_claim", &self.user_claim)
            .field("tenant_claim", &self.tenant_claim)
            .field("email_claim", &self.email_claim)
            .field("email_verified_claim", &self.email_verified_claim)
            .field(
                "trust_email_without_verified_claim",
                &self.trust_email_without_verified_claim,
            )
            .field("jwks_refresh_secs", &self.jwks_refresh_secs)
            .field("jwks_min_refetch_secs", &self.jwks_min_refetch_secs)
            .field("jwks_ca_file", &self.jwks_ca_file)
            .finish()
    }
}

/// What a verified token says: who the user is, in which tenant if the
/// token names one, until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The user: the user claim if it is a UUID, else [`user_id_for`] of
    /// issuer and subject.
    pub user_id: UserId,
    /// The user claim as the token has it (`sub` unless configured otherwise).
    pub subject: String,
    /// The tenant claim, when one is configured and the token has it.
    pub tenant: Option<TenantId>,
    /// The email claim, when the token has it (verified or not: see
    /// [`email_verified`](Self::email_verified)).
    pub email: Option<String>,
    /// Whether the provider vouches for [`email`](Self::email): the token
    /// has it and its email-verified claim is `true` (or the claim is absent
    /// and [`JwtConfig::trust_email_without_verified_claim`] is set). Only a
    /// verified email may accept an invitation made out to it.
    pub email_verified: bool,
    /// The token's `exp`.
    pub expires_at: DateTime<Utc>,
    /// The token's `iss` (the configured issuer).
    pub issuer: String,
}

/// Why a token was refused (or, for [`JwksUnavailable`](Self::JwksUnavailable),
/// could not be checked). An HTTP answer gives every reason the same `401`
/// and keeps the reason for its log, so a caller learns nothing about which
/// check failed; only `JwksUnavailable` is the server's fault (`503`, see
/// [`is_unavailable`](Self::is_unavailable)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// The configuration is not usable ([`JwtConfig::validate`]'s reason).
    #[error("JWT configuration: {0}")]
    Config(String),
    /// Not a JWS in compact form: parts, base64url, JSON, size.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header's `alg` is not one tenantry accepts from this provider
    /// (`none`, anything but RS256 / ES256 / HS256, HS256 without a secret,
    /// RS256 / ES256 without a JWKS).
    #[error("unsupported algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// The key named by `kid` is not a key for the header's `alg` (an RSA
    /// key named in an ES256 token, say).
    #[error("key {kid:?} is not a {alg} key")]
    KeyAlgorithmMismatch {
        /// The header's `kid` (cut to 64 characters).
        kid: String,
        /// The header's `alg`.
        alg: String,
    },
    /// No key of the JWKS has the token's `kid`, even after fetching it
    /// again (or, without `kid`, the JWKS has not exactly one key for `alg`).
    #[error("unknown signing key {kid:?}")]
    UnknownKey {
        /// The header's `kid` (cut to 64 characters), if any.
        kid: Option<String>,
    },
    /// The signature does not match the key (a forged or altered token).
    #[error("bad signature")]
    BadSignature,
    /// `exp` is past, beyond the leeway.
    #[error("token expired")]
    Expired,
    /// `nbf` is ahead, beyond the leeway.
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` is not the configured issuer (or not a string).
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` names none of the configured audiences.
    #[error("wrong audience")]
    WrongAudience,
    /// A required claim is absent (`exp`, `iss`, `aud`, the user claim), or
    /// not of the kind the JWT library reads it as (an `exp` that is a string).
    #[error("claim {0:?} missing or not of its type")]
    ClaimMissing(String),
    /// A claim has a value of the wrong kind (a user claim that is not a
    /// string, a tenant claim that is not a UUID, ...).
    #[error("claim {claim:?} invalid: {reason}")]
    ClaimInvalid {
        /// The claim's name.
        claim: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The provider's keys could not be fetched and none are cached: the
    /// token could not be checked at all.
    #[error("JWKS unavailable: {0}")]
    JwksUnavailable(String),
}

impl JwtError {
    /// Whether the failure is tenantry's, not the token's: the JWKS could not
    /// be fetched and no keys are cached (an HTTP answer is then `503`, every
    /// other reason `401`).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, JwtError::JwksUnavailable(_))
    }

    fn claim_invalid(claim: &str, reason: &'static str) -> Self {
        JwtError::ClaimInvalid {
            claim: claim.to_owned(),
            reason,
        }
    }
}

/// A `kid` as it goes into an error (and so into logs): the token's sender
/// chose it, so it is cut short.
fn kid_for_log(kid: &str) -> String {
    kid.chars().take(64).collect()
}

/// The user id of a token's subject (its user claim).
///
/// A subject that is a UUID (Supabase, Nile, Keycloak, Cognito) is the user
/// id itself, so ids agree with the provider's, when it is written the
/// canonical way (lower case, hyphenated) and is not of version 5. Any other
/// subject (Auth0's `auth0|abc`, Clerk's `user_2x...`, and a UUID written
/// another way or of version 5) becomes the UUIDv5, in the namespace
/// [`SUBJECT_NAMESPACE`], of `issuer + "\n" + subject`: the same user of the
/// same issuer always gets the same id, and the same subject at another
/// issuer a different one. So one id has one subject: `{…}`, `urn:uuid:`,
/// upper-case and 32-digit spellings of a UUID are other subjects, and no
/// subject can be the id derived from another (those are all version 5),
/// nor the id the database draws for a member no person signs in as
/// (version 5 too: `tenant_members_consent`), whoever controls the claim.
pub fn user_id_for(issuer: &str, subject: &str) -> UserId {
    match Uuid::parse_str(subject) {
        Ok(id) if id.get_version_num() != 5 && id.to_string() == subject => UserId::from_uuid(id),
        _ => UserId::from_uuid(Uuid::new_v5(
            &SUBJECT_NAMESPACE,
            format!("{issuer}\n{subject}").as_bytes(),
        )),
    }
}

/// Checks tokens of one identity provider ([`JwtConfig`]). Cheap to clone:
/// the clones share the cached keys.
#[derive(Clone)]
pub struct JwtVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    config: JwtConfig,
    hs256: Option<DecodingKey>,
    jwks: Option<Jwks>,
    /// Issuer, audience, `exp` required, leeway; the algorithm is set per key.
    validation: Validation,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// The header fields the key is chosen by; the rest are ignored (keys a
/// token carries, `jwk`/`jku`/`x5u`, are never used).
#[derive(Deserialize)]
struct TokenHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    /// Extensions the token says must be understood: tenantry understands
    /// none, so their presence refuses the token (RFC 7515, 4.1.11).
    #[serde(default)]
    crit: Option<Value>,
}

impl TokenHeader {
    fn parse(token: &str) -> Result<Self, JwtError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(JwtError::Malformed("longer than 16 KiB"));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed("not three dot-separated parts"));
        };
        let json = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| JwtError::Malformed("header is not base64url"))?;
        let header: TokenHeader = serde_json::from_slice(&json)
            .map_err(|_| JwtError::Malformed("header is not a JSON object with an alg"))?;
        if header.crit.is_some() {
            return Err(JwtError::Malformed("header has crit extensions"));
        }
        Ok(header)
    }
}

impl JwtVerifier {
    /// A verifier for the configured provider. Validates the configuration
    /// ([`JwtError::Config`]); the JWKS is fetched on first use, not here.
    pub fn new(config: JwtConfig) -> Result<Self, JwtError> {
        config.validate().map_err(JwtError::Config)?;
        let hs256 = config
            .hs256_secret
            .as_ref()
            .map(|secret| DecodingKey::from_secret(secret.as_bytes()));
        let jwks = config
            .jwks_url
            .as_ref()
            .map(|url| Jwks::new(url, &config))
            .transpose()?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = config.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&config.audience);
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                hs256,
                jwks,
                validation,
            }),
        })
    }

    /// The configuration it checks by.
    pub fn config(&self) -> &JwtConfig {
        &self.inner.config
    }

    /// Fetches the provider's JWKS now (a server does at start, so that a
    /// wrong or unreachable `jwks_url` is seen before a person's request
    /// meets it): how many usable keys it holds; `None` without a JWKS URL
    /// (HS256 only). Counts as a fetch for the intervals.
    pub async fn prefetch_keys(&self) -> Result<Option<usize>, JwtError> {
        match &self.inner.jwks {
            Some(jwks) => jwks.prefetch().await.map(Some),
            None => Ok(None),
        }
    }

    /// Checks a token (without `Bearer `) and says whom it names. Fetches
    /// the JWKS when it is not cached, is old, or lacks the token's `kid`
    /// (at most once per [`JwtConfig::jwks_min_refetch_secs`]).
    pub async fn verify(&self, token: &str) -> Result<VerifiedToken, JwtError> {
        let header = TokenHeader::parse(token)?;
        let inner = &*self.inner;
        let (alg, keys) = match header.alg.as_str() {
            "HS256" => match &inner.hs256 {
                Some(secret) => (Algorithm::HS256, vec![secret.clone()]),
                None => return Err(JwtError::UnsupportedAlgorithm(header.alg)),
            },
            "RS256" | "ES256" => {
                let alg = if header.alg == "RS256" {
                    Algorithm::RS256
                } else {
                    Algorithm::ES256
                };
                let Some(jwks) = &inner.jwks else {
                    return Err(JwtError::UnsupportedAlgorithm(header.alg));
                };
                (alg, jwks.keys(header.kid.as_deref(), alg).await?)
            }
            _ => {
                return Err(JwtError::UnsupportedAlgorithm(
                    header.alg.chars().take(16).collect(),
                ))
            }
        };
        let mut validation = inner.validation.clone();
        validation.algorithms = vec![alg];
        let mut outcome = None;
        for key in &keys {
            let checked = jsonwebtoken::decode::<UniqueClaims>(token, key, &validation);
            // Another key of the same kid may have signed it; any other
            // refusal is the token's, whatever the key.
            let other_key =
                matches!(&checked, Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature));
            outcome = Some(checked);
            if !other_key {
                break;
            }
        }
        let data = outcome
            .ok_or(JwtError::BadSignature)?
            .map_err(from_library)?;
        inner.identity(data.claims.0)
    }
}

/// A token's claims, each name once: a payload naming a claim twice is
/// malformed. serde_json keeps the last of two, and a provider or proxy
/// that reads the first would mean another tenant or email than tenantry
/// took (found by a review: `tenant_id` and `email_verified` given twice
/// were taken last-wins, while the library refused a doubled `iss`).
struct UniqueClaims(Map<String, Value>);

/// Why a payload naming a claim twice is malformed.
const CLAIM_TWICE: &str = "a claim is given twice";

impl<'de> serde::Deserialize<'de> for UniqueClaims {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Claims;
        impl<'de> serde::de::Visitor<'de> for Claims {
            type Value = Map<String, Value>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object of claims")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut access: A,
            ) -> Result<Self::Value, A::Error> {
                let mut claims = Map::new();
                while let Some(name) = access.next_key::<String>()? {
                    let value: Value = access.next_value()?;
                    if claims.insert(name, value).is_some() {
                        return Err(serde::de::Error::custom(CLAIM_TWICE));
                    }
                }
                Ok(claims)
            }
        }
        deserializer.deserialize_map(Claims).map(UniqueClaims)
    }
}

/// The library's reasons as ours.
fn from_library(e: jsonwebtoken::errors::Error) -> JwtError {
    match e.into_kind() {
        ErrorKind::InvalidSignature | ErrorKind::Crypto(_) => JwtError::BadSignature,
        // A JWKS key the crypto library cannot use (an RSA modulus under
        // 2048 bits, a point off the curve) verifies nothing.
        ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidRsaKey(_) | ErrorKind::InvalidKeyFormat => {
            JwtError::BadSignature
        }
        ErrorKind::ExpiredSignature => JwtError::Expired,
        ErrorKind::ImmatureSignature => JwtError::NotYetValid,
        ErrorKind::InvalidIssuer => JwtError::WrongIssuer,
        ErrorKind::InvalidAudience => JwtError::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) => JwtError::ClaimMissing(claim),
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::InvalidAlgorithmName => JwtError::UnsupportedAlgorithm("(mismatch)".into()),
        ErrorKind::InvalidToken => JwtError::Malformed("not three dot-separated parts"),
        ErrorKind::Base64(_) => JwtError::Malformed("a part is not base64url"),
        ErrorKind::Json(e) if e.to_string().contains(CLAIM_TWICE) => {
            JwtError::Malformed(CLAIM_TWICE)
        }
        ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
            JwtError::Malformed("payload is not a JSON object")
        }
        _ => JwtError::Malformed("refused by the JWT library"),
    }
}

impl Inner {
    /// The user, tenant and times of claims whose signature, `iss`, `aud`,
    /// `exp` and `nbf` the library has checked; checks what it lets through
    /// (an `iss` given as an array, an `nbf` that is not a number).
    fn identity(&self, claims: Map<String, Value>) -> Result<VerifiedToken, JwtError> {
        let config = &self.config;
        match claims.get("iss") {
            Some(Value::String(iss)) if *iss == config.issuer => {}
            _ => return Err(JwtError::WrongIssuer),
        }
        // The JWT library checks an `nbf` it reads as a u64 and skips any
        // other number (`1e20`, `1.7e9`): such a token was valid at once
        // (found by an outside review). Checked here against the same leeway.
        if let Some(nbf) = claims.get("nbf") {
            let nbf = nbf
                .as_f64()
                .ok_or_else(|| JwtError::claim_invalid("nbf", "not a number"))?;
            let latest = Utc::now().timestamp() as f64 + config.leeway_secs as f64;
            if nbf.floor() > latest {
                return Err(JwtError::NotYetValid);
            }
        }
        let expires_at = claims
            .get("exp")
            .and_then(Value::as_f64)
            .and_then(|exp| DateTime::from_timestamp(exp.floor() as i64, 0))
            .ok_or_else(|| JwtError::claim_invalid("exp", "not a time"))?;
        let subject = match claims.get(&config.user_claim) {
            None => return Err(JwtError::ClaimMissing(config.user_claim.clone())),
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(_) => {
                return Err(JwtError::claim_invalid(
                    &config.user_claim,
                    "not a non-empty string",
                ))
            }
        };
        let tenant = match config.tenant_claim.as_deref() {
            None => None,
            Some(name) => match claims.get(name) {
                None => None,
                Some(Value::String(s)) => Some(
                    TenantId::parse(s).map_err(|_| JwtError::claim_invalid(name, "not a UUID"))?,
                ),
                Some(_) => return Err(JwtError::claim_invalid(name, "not a UUID string")),
            },
        };
        // An email that is null or not a string is no email: the person
        // signs in without one (a Clerk template's primary email is null for
        // someone who signs in by phone), and only invitations made out to
        // an email need it (found by a review: such tokens were refused).
        let email = match claims.get(&config.email_claim) {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        // Any value but true is "not verified", never a refused token: the
        // person may still act in tenants they already belong to.
        let email_verified = email.is_some()
            && match claims.get(&config.email_verified_claim) {
                None => config.trust_email_without_verified_claim,
                Some(Value::Bool(verified)) => *verified,
                // Cognito has sent the flag as a string.
                Some(Value::String(s)) => s == "true",
                Some(_) => false,
            };
        Ok(VerifiedToken {
            user_id: user_id_for(&config.issuer, &subject),
            subject,
            tenant,
            email,
            email_verified,
            expires_at,
            issuer: config.issuer.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: Value) -> Result<JwtConfig, String> {
        serde_json::from_value(json).map_err(|e| e.to_string())
    }

    #[test]
    fn a_jwks_url_is_shown_without_its_credentials_or_query() {
        assert_eq!(
            shown_jwks_url(
                "https://user:Pw-Secret@idp.example/.well-known/jwks.json?api_key=Q-Secret#x"
            ),
            "https://redacted@idp.example/.well-known/jwks.json?redacted"
        );
        assert_eq!(
            shown_jwks_url("https://idp.example/jwks"),
            "https://idp.example/jwks"
        );
        assert_eq!(shown_jwks_url("not a url Secret"), "(not a URL)");
        let refused = check_jwks_url("http://u:Pw-Secret@idp.example/jwks?k=Q-Secret").unwrap_err();
        assert!(!refused.contains("Secret"), "{refused}");
    }

    #[test]
    fn a_misspelt_jwt_variable_is_refused_by_name_and_known_ones_and_others_pass() {
        let names = |list: &[&str]| list.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(
            JwtConfig::refuse_unknown_env(names(&[
                "PATH",
                "TENANTRY_LISTEN",
                "TENANTRY_JWT_ISSUER",
                "TENANTRY_JWT_TRUST_EMAIL_WITHOUT_VERIFIED_CLAIM",
            ])),
            Ok(())
        );
        let err = JwtConfig::refuse_unknown_env(names(&[
            "TENANTRY_JWT_ISSUER",
            "TENANTRY_JWT_TRUST_EMAIL_WITHOUT_VERIFIED",
        ]))
        .unwrap_err();
        assert!(
            err.starts_with("TENANTRY_JWT_TRUST_EMAIL_WITHOUT_VERIFIED is not a variable")
                && err.contains("TENANTRY_JWT_TRUST_EMAIL_WITHOUT_VERIFIED_CLAIM"),
            "{err}"
        );
    }

    #[test]
    fn env_variables_names_exactly_what_apply_env_reads_and_each_changes_the_config() {
        let asked = std::cell::RefCell::new(std::collections::BTreeSet::new());
        let issuer_only = |name: &str| {
            asked.borrow_mut().insert(name.to_owned());
            (name == "TENANTRY_JWT_ISSUER").then(|| "https://env.example/".to_owned())
        };
        let mut base = None;
        JwtConfig::apply_env(&mut base, issuer_only).unwrap();
        let listed: std::collections::BTreeSet<String> = JwtConfig::ENV_VARIABLES
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(asked.into_inner(), listed);
        for name in &JwtConfig::ENV_VARIABLES[1..] {
            let value = match *name {
                "TENANTRY_JWT_LEEWAY_SECS"
                | "TENANTRY_JWT_JWKS_REFRESH_SECS"
                | "TENANTRY_JWT_JWKS_MIN_REFETCH_SECS" => "17",
                "TENANTRY_JWT_TRUST_EMAIL_WITHOUT_VERIFIED_CLAIM" => "true",
                _ => "changed",
            };
            let mut changed = None;
            JwtConfig::apply_env(&mut changed, |n: &str| match n {
                "TENANTRY_JWT_ISSUER" => Some("https://env.example/".to_owned()),
                n if n == *name => Some(value.to_owned()),
                _ => None,
            })
            .unwrap();
            assert_ne!(
                format!("{changed:?}"),
                format!("{base:?}"),
                "{name} changed nothing"
            );
        }
    }

    #[test]
    fn a_jwt_variable_set_without_an_issuer_is_refused_and_named() {
        for name in &JwtConfig::ENV_VARIABLES[1..] {
            let mut config = None;
            let err =
                JwtConfig::apply_env(&mut config, |n: &str| (n == *name).then(|| "x".to_owned()))
                    .expect_err(name);
            assert!(err.starts_with(name), "{err}");
            assert!(config.is_none());
        }
        // Blank values count as unset; nothing set at all is API keys only.
        let mut config = None;
        JwtConfig::apply_env(&mut config, |_: &str| Some("  ".to_owned())).unwrap();
        assert!(config.is_none());
        // An issuer from a file's [jwt] section takes the variables.
        let mut config = Some(JwtConfig::new("https://file.example/", "api"));
        JwtConfig::apply_env(&mut config, |n: &str| {
            (n == "TENANTRY_JWT_AUDIENCE").then(|| "other".to_owned())
        })
        .unwrap();
        assert_eq!(config.unwrap().audience, vec!["other".to_owned()]);
    }

    fn jwks_config() -> JwtConfig {
        let mut c = JwtConfig::new("https://issuer.example/", "api");
        c.jwks_url = Some("https://issuer.example/.well-known/jwks.json".into());
        c
    }

    #[test]
    fn a_user_claim_people_choose_or_change_is_refused() {
        for (claim, email_claim) in [
            ("email", "email"),
            ("preferred_username", "email"),
            ("mail", "mail"),
            ("phone_number", "email"),
        ] {
            let c = config(serde_json::json!({
                "issuer": "https://issuer.example/",
                "audience": ["api"],
                "jwks_url": "https://issuer.example/jwks",
                "user_claim": claim,
                "email_claim": email_claim,
            }))
            .unwrap();
            let refused = c.validate().unwrap_err();
            assert!(
                refused.contains("user_claim")
                    && refused.contains("5.7")
                    && !refused.contains("  "),
                "{refused}"
            );
        }
        let c = config(serde_json::json!({
            "issuer": "https://issuer.example/",
            "audience": ["api"],
            "jwks_url": "https://issuer.example/jwks",
            "user_claim": "oid",
        }))
        .unwrap();
        c.validate().unwrap();
    }

    #[test]
    fn a_user_claim_about_the_token_or_with_spaces_at_its_ends_is_refused() {
        for (field, claim, said) in [
            ("user_claim", " sub", "no spaces at its ends"),
            ("user_claim", "sub ", "no spaces at its ends"),
            ("email_claim", "email ", "no spaces at its ends"),
            ("user_claim", "email_verified", "about the token"),
            ("user_claim", "iat", "about the token"),
            ("user_claim", "upn", "5.7"),
            ("user_claim", "cognito:username", "5.7"),
        ] {
            let mut json = serde_json::json!({
                "issuer": "https://issuer.example/",
                "audience": ["api"],
                "jwks_url": "https://issuer.example/jwks",
            });
            json[field] = serde_json::json!(claim);
            let refused = config(json).unwrap().validate().unwrap_err();
            assert!(
                refused.contains(field) && refused.contains(said),
                "{claim}: {refused}"
            );
        }
    }

    #[test]
    fn a_configuration_gets_the_documented_defaults() {
        let c = config(serde_json::json!({
            "issuer": "https://issuer.example/",
            "audience": ["api"],
            "jwks_url": "https://issuer.example/jwks",
        }))
        .unwrap();
        assert_eq!(c.leeway_secs, 30);
        assert_eq!(c.user_claim, "sub");
        assert_eq!(c.email_claim, "email");
        assert_eq!(c.email_verified_claim, "email_verified");
        assert!(!c.trust_email_without_verified_claim);
        assert_eq!(c.tenant_claim, None);
        assert_eq!(c.jwks_refresh_secs, 600);
        assert_eq!(c.jwks_min_refetch_secs, 10);
        c.validate().unwrap();
    }

    #[test]
    fn an_unknown_configuration_key_is_refused() {
        let e = config(serde_json::json!({
            "issuer": "i", "audience": ["a"], "hs256_secret": "x", "audiences": ["b"],
        }))
        .unwrap_err();
        assert!(e.contains("audiences"), "{e}");
    }

    #[test]
    fn a_configuration_without_an_audience_is_refused() {
        let mut c = jwks_config();
        c.audience.clear();
        assert!(c.validate().unwrap_err().contains("audience"));
        c.audience = vec![String::new()];
        assert!(c.validate().is_err());
    }

    #[test]
    fn a_configuration_without_a_key_source_is_refused() {
        let mut c = jwks_config();
        c.jwks_url = None;
        assert!(c
            .validate()
            .unwrap_err()
            .contains("jwks_url or hs256_secret"));
        c.hs256_secret = Some("s".repeat(MIN_HS256_SECRET_LEN));
        c.validate().unwrap();
    }

    #[test]
    fn a_short_hs256_secret_is_refused() {
        let mut c = jwks_config();
        c.hs256_secret = Some("s".repeat(MIN_HS256_SECRET_LEN - 1));
        assert!(c.validate().unwrap_err().contains("hs256_secret"));
    }

    #[test]
    fn a_jwks_url_over_plain_http_is_refused_unless_it_is_loopback() {
        let mut c = jwks_config();
        for url in [
            "http://127.0.0.1:8080/jwks",
            "http://[::1]/jwks",
            "http://localhost/jwks",
        ] {
            c.jwks_url = Some(url.into());
            c.validate().unwrap();
        }
        for url in ["http://idp.example/jwks", "ftp://idp.example/jwks", "jwks"] {
            c.jwks_url = Some(url.into());
            assert!(c.validate().is_err(), "{url}");
        }
    }

    #[test]
    fn a_huge_leeway_and_zero_intervals_are_refused() {
        let mut c = jwks_config();
        c.leeway_secs = MAX_LEEWAY_SECS + 1;
        assert!(c.validate().is_err());
        let mut c = jwks_config();
        c.jwks_min_refetch_secs = 0;
        assert!(c.validate().is_err());
        let mut c = jwks_config();
        c.jwks_refresh_secs = 0;
        assert!(c.validate().is_err());
        let mut c = jwks_config();
        c.tenant_claim = Some(String::new());
        assert!(c.validate().is_err());
    }

    #[test]
    fn debug_never_shows_the_hs256_secret() {
        let mut c = jwks_config();
        c.hs256_secret = Some("very-secret-value-0123456789abcdef".into());
        let shown = format!("{c:?}");
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        let verifier = JwtVerifier::new(c).unwrap();
        assert!(!format!("{verifier:?}").contains("very-secret"));
    }

    #[test]
    fn the_verifier_refuses_an_invalid_configuration() {
        let mut c = jwks_config();
        c.audience.clear();
        assert!(matches!(JwtVerifier::new(c), Err(JwtError::Config(_))));
    }

    #[test]
    fn one_user_id_has_one_subject_whoever_controls_the_claim() {
        let id = "6b39e4e3-84cd-4d21-88a9-cff7e14ca36c";
        let canonical = user_id_for("https://a/", id);
        assert_eq!(canonical.to_string(), id);
        // Other spellings of the same UUID are other subjects, other ids.
        let spellings = [
            id.to_uppercase(),
            format!("{{{id}}}"),
            format!("urn:uuid:{id}"),
            id.replace('-', ""),
        ];
        let mut ids: Vec<UserId> = spellings
            .iter()
            .map(|s| user_id_for("https://a/", s))
            .collect();
        ids.push(canonical);
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 5, "five subjects, five ids");
        // A derived id written as a subject is not that person.
        let alice = user_id_for("https://a/", "auth0|alice");
        assert_ne!(user_id_for("https://a/", &alice.to_string()), alice);
        // Nor is any version-5 UUID (the database draws such ids for members
        // no person signs in as).
        let drawn = Uuid::new_v5(&Uuid::NAMESPACE_OID, b"drawn");
        assert_ne!(
            *user_id_for("https://a/", &drawn.to_string()).as_uuid(),
            drawn
        );
    }

    #[test]
    fn a_subject_uuid_is_the_user_id_and_other_subjects_get_a_stable_uuid_v5() {
        let id = "6b39e4e3-84cd-4d21-88a9-cff7e14ca36c";
        assert_eq!(user_id_for("https://a/", id).to_string(), id);
        let a = user_id_for("https://a/", "auth0|abc");
        assert_eq!(a, user_id_for("https://a/", "auth0|abc"));
        assert_ne!(a, user_id_for("https://b/", "auth0|abc"));
        assert_eq!(a.as_uuid().get_version_num(), 5);
        // Pinned: the namespace and the input's shape must never change.
        assert_eq!(
            *a.as_uuid(),
            Uuid::new_v5(&SUBJECT_NAMESPACE, b"https://a/\nauth0|abc")
        );
    }

    #[test]
    fn only_jwkss_errors_are_unavailable() {
        assert!(JwtError::JwksUnavailable("down".into()).is_unavailable());
        assert!(!JwtError::BadSignature.is_unavailable());
        assert!(!JwtError::UnknownKey { kid: None }.is_unavailable());
    }

    #[test]
    fn a_header_that_is_not_a_jws_header_is_malformed() {
        for token in ["", "a.b", "a.b.c.d", "!!!.e30.x", "e30.e30.x"] {
            assert!(
                matches!(TokenHeader::parse(token), Err(JwtError::Malformed(_))),
                "{token}"
            );
        }
        let crit = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","crit":["exp"]}"#);
        assert!(matches!(
            TokenHeader::parse(&format!("{crit}.e30.x")),
            Err(JwtError::Malformed(_))
        ));
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert!(matches!(
            TokenHeader::parse(&long),
            Err(JwtError::Malformed(_))
        ));
    }
}
