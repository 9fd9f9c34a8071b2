//! A stand-in identity provider for tests (feature `test-support`): serves a JWKS over HTTP on a loopback port and signs tokens with keys made at test time; it never checks tokens (that is [`JwtVerifier`](super::JwtVerifier)'s).
//!
//! ```no_run
//! # async fn demo() {
//! use tenantry_axum::jwt::{testing::{Alg, IdentityProvider}, JwtVerifier};
//!
//! let idp = IdentityProvider::start().await;
//! let verifier = JwtVerifier::new(idp.config()).unwrap();
//! let token = idp.sign(Alg::Es256, idp.claims("auth0|alice"));
//! assert_eq!(verifier.verify(&token).await.unwrap().subject, "auth0|alice");
//! # }
//! ```
//!
//! The EC P-256 keys come from `ring`; the RSA 2048 keys from the `openssl`
//! command (it must be on `PATH`), since `ring` does not generate RSA keys.

use std::{
    io::Write,
    net::SocketAddr,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use axum::{extract::State, http::StatusCode, routing::get, Json, Router};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::{
    rand::{SecureRandom, SystemRandom},
    signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING},
};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use super::JwtConfig;

/// The audience of [`IdentityProvider::claims`] and [`IdentityProvider::config`].
pub const AUDIENCE: &str = "tenantry-test";

/// Where the provider serves its JWKS.
const JWKS_PATH: &str = "/.well-known/jwks.json";

/// The asymmetric algorithms the provider signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256, RSA 2048 key.
    Rs256,
    /// ECDSA on P-256 with SHA-256.
    Es256,
}

/// What [`IdentityProvider::rotate`] does with the keys it replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldKeys {
    /// The JWKS keeps serving them beside the new ones (tokens signed
    /// before the rotation stay good): a provider's usual rotation.
    StillServed,
    /// The JWKS serves only the new keys (a compromised key withdrawn).
    Withdrawn,
}

/// A running stand-in identity provider; its server stops when it is dropped.
pub struct IdentityProvider {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

struct Shared {
    keys: Mutex<KeyRing>,
    fetches: AtomicUsize,
    failing: AtomicBool,
}

struct KeyRing {
    rsa: SigningKey,
    ec: SigningKey,
    /// The JWKS entries served.
    served: Vec<Value>,
}

#[derive(Clone)]
struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
    /// The RSA public key as PEM (SPKI) and DER, for algorithm-confusion tests.
    public_pem: Vec<u8>,
    public_der: Vec<u8>,
}

impl IdentityProvider {
    /// Makes an RSA and an EC key and serves their JWKS on
    /// `127.0.0.1:<free port>`.
    pub async fn start() -> Self {
        let (rsa, ec) = tokio::task::spawn_blocking(|| (rsa_key(), ec_key()))
            .await
            .expect("key generation");
        let served = vec![rsa.jwk.clone(), ec.jwk.clone()];
        let shared = Arc::new(Shared {
            keys: Mutex::new(KeyRing { rsa, ec, served }),
            fetches: AtomicUsize::new(0),
            failing: AtomicBool::new(false),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the identity provider");
        let addr = listener.local_addr().expect("its address");
        let app = Router::new()
            .route(JWKS_PATH, get(serve_jwks))
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("identity provider server");
        });
        Self {
            addr,
            shared,
            server,
        }
    }

    /// The URL of its JWKS.
    pub fn jwks_url(&self) -> String {
        format!("http://{}{JWKS_PATH}", self.addr)
    }

    /// Its issuer (`iss`): its base URL, different for each provider.
    pub fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A configuration accepting its tokens: its issuer, [`AUDIENCE`], its
    /// JWKS, defaults otherwise.
    pub fn config(&self) -> JwtConfig {
        let mut config = JwtConfig::new(self.issuer(), AUDIENCE);
        config.jwks_url = Some(self.jwks_url());
        config
    }

    /// Standard claims for `subject`: its issuer, [`AUDIENCE`], `iat` now,
    /// `exp` in 300 s, an email address the provider verified
    /// (`email_verified: true`).
    pub fn claims(&self, subject: &str) -> Value {
        let now = chrono::Utc::now().timestamp();
        json!({
            "iss": self.issuer(),
            "aud": AUDIENCE,
            "sub": subject,
            "iat": now,
            "exp": now + 300,
            "email": "someone@example.test",
            "email_verified": true,
        })
    }

    /// A token of `claims` signed with its current key for `alg`, naming
    /// that key's `kid`.
    pub fn sign(&self, alg: Alg, claims: Value) -> String {
        let kid = self.kid(alg);
        self.sign_with_kid(alg, &kid, claims)
    }

    /// A token of `claims` signed with its current key for `alg` but naming
    /// `kid` (a key it does not have, or another provider's).
    pub fn sign_with_kid(&self, alg: Alg, kid: &str, claims: Value) -> String {
        let key = self.current(alg);
        let mut header = Header::new(match alg {
            Alg::Rs256 => Algorithm::RS256,
            Alg::Es256 => Algorithm::ES256,
        });
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, &claims, &key.encoding).expect("sign")
    }

    /// The `kid` of its current key for `alg`.
    pub fn kid(&self, alg: Alg) -> String {
        self.current(alg).kid
    }

    /// Replaces both keys with new ones under new `kid`s; the JWKS serves the
    /// old ones beside them or not, as `old` says.
    pub async fn rotate(&self, old: OldKeys) {
        let (rsa, ec) = tokio::task::spawn_blocking(|| (rsa_key(), ec_key()))
            .await
            .expect("key generation");
        let mut ring = self.shared.keys.lock().expect("keys lock");
        let mut served = vec![rsa.jwk.clone(), ec.jwk.clone()];
        if old == OldKeys::StillServed {
            served.append(&mut ring.served);
        }
        *ring = KeyRing { rsa, ec, served };
    }

    /// How many JWKS requests it has answered (failed ones too).
    pub fn fetch_count(&self) -> usize {
        self.shared.fetches.load(Ordering::SeqCst)
    }

    /// From now on, whether its JWKS answers `503` (a provider outage).
    pub fn set_jwks_failing(&self, failing: bool) {
        self.shared.failing.store(failing, Ordering::SeqCst);
    }

    /// An HS256 token of `claims` with `secret` (no `kid`).
    pub fn hs256(&self, secret: impl AsRef<[u8]>, claims: Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_ref()),
        )
        .expect("sign HS256")
    }

    /// An unsigned token (`alg: none`, empty signature) of `claims`.
    pub fn forge_none(&self, claims: Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        format!("{header}.{payload}.")
    }

    /// `token` with its payload replaced by `claims`, header and signature
    /// kept (an altered token).
    pub fn tamper(&self, token: &str, claims: Value) -> String {
        let mut parts = token.split('.');
        let (header, _, signature) = (
            parts.next().expect("header"),
            parts.next().expect("payload"),
            parts.next().expect("signature"),
        );
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        format!("{header}.{payload}.{signature}")
    }

    /// Its current RSA public key as PEM (SPKI), the bytes an HS/RS
    /// confusion attack uses as the HMAC secret.
    pub fn rsa_public_key_pem(&self) -> Vec<u8> {
        self.current(Alg::Rs256).public_pem
    }

    /// Its current RSA public key as DER (SPKI).
    pub fn rsa_public_key_der(&self) -> Vec<u8> {
        self.current(Alg::Rs256).public_der
    }

    fn current(&self, alg: Alg) -> SigningKey {
        let ring = self.shared.keys.lock().expect("keys lock");
        match alg {
            Alg::Rs256 => ring.rsa.clone(),
            Alg::Es256 => ring.ec.clone(),
        }
    }
}

impl Drop for IdentityProvider {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn serve_jwks(State(shared): State<Arc<Shared>>) -> Result<Json<Value>, StatusCode> {
    shared.fetches.fetch_add(1, Ordering::SeqCst);
    if shared.failing.load(Ordering::SeqCst) {
        return Err(StatusCode::SERVICE_UNAVAILABLE);
    }
    let keys = shared.keys.lock().expect("keys lock").served.clone();
    Ok(Json(json!({ "keys": keys })))
}

/// A `kid` no other key of any provider in the process has.
fn new_kid(prefix: &str) -> String {
    let mut bytes = [0u8; 8];
    SystemRandom::new().fill(&mut bytes).expect("random kid");
    format!("{prefix}-{}", hex::encode(bytes))
}

fn ec_key() -> SigningKey {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .expect("generate a P-256 key");
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .expect("read it back");
    // Uncompressed point: 0x04, x (32 bytes), y (32 bytes).
    let point = pair.public_key().as_ref();
    let kid = new_kid("ec");
    SigningKey {
        jwk: json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        }),
        kid,
        encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
        public_pem: Vec::new(),
        public_der: Vec::new(),
    }
}

fn rsa_key() -> SigningKey {
    let pem = openssl(
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ],
        &[],
    );
    // PKCS#1 DER, the form jsonwebtoken signs with (ring's RsaKeyPair::from_der).
    let private_der = openssl(&["rsa", "-traditional", "-outform", "DER"], &pem);
    let modulus =
        String::from_utf8(openssl(&["rsa", "-noout", "-modulus"], &pem)).expect("modulus is text");
    let modulus = modulus
        .trim()
        .strip_prefix("Modulus=")
        .expect("openssl prints Modulus=<hex>");
    let n = hex::decode(modulus).expect("modulus is hex");
    let kid = new_kid("rsa");
    SigningKey {
        jwk: json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
            "n": URL_SAFE_NO_PAD.encode(n),
            "e": "AQAB", // 65537, openssl's default exponent
        }),
        kid,
        encoding: EncodingKey::from_rsa_der(&private_der),
        public_pem: openssl(&["rsa", "-pubout"], &pem),
        public_der: openssl(&["rsa", "-pubout", "-outform", "DER"], &pem),
    }
}

/// Runs the `openssl` command with `input` on its standard input and answers
/// its standard output.
fn openssl(args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the openssl command (apt-get install openssl) makes the test RSA keys");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write to openssl");
    let output = child.wait_with_output().expect("openssl ran");
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}
