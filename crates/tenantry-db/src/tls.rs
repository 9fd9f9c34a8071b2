//! TLS to PostgreSQL with libpq's `sslmode` semantics: what a connection string says about encryption and certificates, and the rustls connector that does it.
//!
//! - `disable`: no TLS.
//! - `allow`, `prefer` (the default): TLS when the server offers it, else
//!   plain; the certificate is not checked (libpq checks it when
//!   `~/.postgresql/root.crt` exists); a failed handshake is not retried
//!   without TLS (libpq does retry).
//! - `require`: TLS or no connection; the certificate is not checked (as
//!   libpq does without a root certificate): encryption against passive
//!   eavesdroppers, not against an active attacker.
//! - `verify-ca`: TLS, and the server's certificate must chain to a trusted
//!   root. `verify-full`: the same, and it must name the host connected to.
//!
//! Trusted roots: the PEM file `sslrootcert` names (in the URL or as a
//! `key=value` setting), else `~/.postgresql/root.crt` when it exists (libpq's
//! default), else the Mozilla roots of `webpki-roots` (publicly trusted
//! certificates, as managed services such as Neon and Supabase present;
//! Amazon RDS needs its CA bundle as `sslrootcert`).
//!
//! tokio-postgres itself knows only `disable`, `prefer` and `require` and
//! refuses `sslrootcert`: [`parse`] takes both out of the string first.

use std::{path::PathBuf, sync::Arc};

use rustls::{
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        WebPkiServerVerifier,
    },
    crypto::{
        verify_tls12_signature, verify_tls13_signature, verify_tls13_signature_with_raw_key,
        CryptoProvider,
    },
    pki_types::{pem::PemObject, CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime},
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// How much of the server's certificate is checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Verify {
    /// Not at all (`prefer`, `require`): encrypted, not authenticated.
    #[default]
    Nothing,
    /// It chains to a trusted root (`verify-ca`).
    Chain,
    /// It chains to a trusted root and names the host (`verify-full`).
    ChainAndHost,
}

/// What a connection string asks of TLS beyond what tokio-postgres reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// Certificate checks.
    pub verify: Verify,
    /// PEM file of trusted roots (`sslrootcert`).
    pub root_cert: Option<PathBuf>,
}

/// A connection string or TLS setting that cannot be used, in words that
/// name it. An error type (`?` in a function returning `anyhow::Result` or
/// `Box<dyn Error>` takes it), whose text is also `String::from(e)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

impl std::ops::Deref for TlsError {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<TlsError> for String {
    fn from(e: TlsError) -> Self {
        e.0
    }
}

/// Parses a connection string (URL or `key=value` form) into the driver's
/// settings and the TLS settings it does not read itself.
pub fn parse(conninfo: &str) -> Result<(tokio_postgres::Config, TlsSettings), TlsError> {
    parse_settings(conninfo).map_err(TlsError)
}

fn parse_settings(conninfo: &str) -> Result<(tokio_postgres::Config, TlsSettings), String> {
    // A URL with a space before it (a shell's `export X= postgres://…`)
    // read as the key=value form.
    let conninfo = conninfo.trim();
    // A URL of another scheme (SQLAlchemy's `postgresql+psycopg://`, a typo
    // such as `postgress://`) said by its scheme alone: read as the
    // key=value form, its whole text, password included, was quoted in the
    // error (found by an operations review).
    if let Some((scheme, _)) = conninfo.split_once("://") {
        let is_scheme = !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if is_scheme && scheme != "postgres" && scheme != "postgresql" {
            return Err(format!(
                "a URL of scheme {scheme:?}: a PostgreSQL URL starts with postgres:// or postgresql://"
            ));
        }
    }
    let mut tls = TlsSettings::default();
    let mut mode: Option<SslMode> = None;
    let mut take = |key: &str, value: &str| -> Result<bool, String> {
        match key {
            "sslmode" => {
                let (verify, driver) = match value {
                    "disable" => (Verify::Nothing, SslMode::Disable),
                    "allow" | "prefer" => (Verify::Nothing, SslMode::Prefer),
                    "require" => (Verify::Nothing, SslMode::Require),
                    "verify-ca" => (Verify::Chain, SslMode::Require),
                    "verify-full" => (Verify::ChainAndHost, SslMode::Require),
                    other => {
                        return Err(format!(
                            "sslmode {other:?}: expected disable, allow, prefer, require, verify-ca or verify-full"
                        ))
                    }
                };
                tls.verify = verify;
                mode = Some(driver);
                Ok(true)
            }
            "sslrootcert" => {
                tls.root_cert = Some(PathBuf::from(value));
                Ok(true)
            }
            _ => Ok(false),
        }
    };
    let rest = if let Some((base, query)) = conninfo
        .split_once('?')
        .filter(|_| conninfo.starts_with("postgres://") || conninfo.starts_with("postgresql://"))
    {
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            // Only the two values read here are decoded here: another (a
            // `password=`) is the driver's, and never quoted.
            let ours = matches!(key, "sslmode" | "sslrootcert");
            if !(ours && take(key, &percent_decode(key, value)?)?) {
                kept.push(pair);
            }
        }
        if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        }
    } else if conninfo.starts_with("postgres://") || conninfo.starts_with("postgresql://") {
        conninfo.to_owned()
    } else {
        // key=value form: the two settings taken out, every other one
        // passed on exactly as written (quotes, escapes and spaces kept).
        let mut kept = String::new();
        for setting in settings(conninfo)? {
            if !take(setting.key, &setting.value)? {
                kept.push_str(setting.text);
                kept.push(' ');
            }
        }
        kept
    };
    // With its cause ("unknown option `foo`", "invalid value for option
    // `port`": names, never values), which the driver's own text leaves out
    // (found by an operations review: "invalid connection string" alone).
    let mut config: tokio_postgres::Config = rest
        .parse()
        .map_err(|e: tokio_postgres::Error| crate::error::with_sources(&e))?;
    if let Some(mode) = mode {
        config.ssl_mode(mode);
    }
    if tls.verify != Verify::Nothing && config.get_ssl_mode() == SslMode::Disable {
        return Err("sslmode verify-ca/verify-full and disable at once".into());
    }
    Ok((config, tls))
}

/// One `key = value` of a libpq connection string: its key, its value
/// unquoted, and its text as written.
struct Setting<'a> {
    key: &'a str,
    value: String,
    text: &'a str,
}

/// The settings of a `key=value` connection string, as libpq reads them:
/// spaces around `=` allowed; a value in single quotes may hold spaces, `\'`
/// and `\\`.
fn settings(conninfo: &str) -> Result<Vec<Setting<'_>>, String> {
    let bytes = conninfo.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let skip_spaces = |i: &mut usize| {
        while *i < bytes.len() && bytes[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_spaces(&mut i);
        if i >= bytes.len() {
            return Ok(out);
        }
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &conninfo[start..i];
        // libpq's keywords are lower-case words: anything else (a URL in
        // quotes, a JDBC URL, a URL missing its colon, each cut at its first
        // `=`) is not quoted, since it holds the password (found by a
        // review of the fix above).
        if !key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            return Err(format!(
                "word {} of the connection string is not a setting's name (not shown: it may hold a secret); \
                 it is a URL (postgres://…, without quotes) or settings key=value separated by spaces",
                out.len() + 1
            ));
        }
        skip_spaces(&mut i);
        if i >= bytes.len() || bytes[i] != b'=' {
            // The word is not quoted: it may be a password that lost its
            // `password=` (found by an operations review).
            return Err(format!(
                "missing \"=\" after word {} of the connection string (not shown: it may be a secret); \
                 it is a URL (postgres://…) or settings key=value separated by spaces",
                out.len() + 1
            ));
        }
        i += 1;
        skip_spaces(&mut i);
        let mut value = Vec::new();
        if i < bytes.len() && bytes[i] == b'\'' {
            i += 1;
            loop {
                match bytes.get(i) {
                    None => return Err(format!("unterminated quoted value of {key:?}")),
                    Some(b'\'') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') if i + 1 < bytes.len() => {
                        value.push(bytes[i + 1]);
                        i += 2;
                    }
                    Some(&b) => {
                        value.push(b);
                        i += 1;
                    }
                }
            }
        } else {
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                if bytes[i] == b'\\' && i + 1 < bytes.len() {
                    i += 1;
                }
                value.push(bytes[i]);
                i += 1;
            }
        }
        out.push(Setting {
            key,
            value: String::from_utf8(value)
                .map_err(|_| format!("the value of {key:?} is not UTF-8"))?,
            text: &conninfo[start..i],
        });
    }
}

/// The value of URL parameter `key` percent-decoded; an error names the
/// parameter, never the value.
fn percent_decode(key: &str, value: &str) -> Result<String, String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("invalid percent-encoding in the value of {key}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("the value of {key} is not UTF-8 once decoded"))
}

/// The connector for these settings: rustls on ring, TLS 1.2 and 1.3.
pub fn connector(settings: &TlsSettings) -> Result<MakeRustlsConnect, TlsError> {
    make_connector(settings).map_err(TlsError)
}

fn make_connector(settings: &TlsSettings) -> Result<MakeRustlsConnect, String> {
    // rustls 0.23.48 and later mark it deprecated ahead of 0.24's separate
    // provider crates; it is still ring's provider, and a build of an
    // application on a fresh lock file would warn on every build (found by
    // a review building its own service on this crate).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let config = match settings.verify {
        Verify::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
        Verify::Chain | Verify::ChainAndHost => {
            let roots = Arc::new(roots(settings.root_cert.as_deref())?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| format!("TLS: {e}"))?;
            if settings.verify == Verify::Chain {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyHostName(webpki)))
                    .with_no_client_auth()
            } else {
                builder.with_webpki_verifier(webpki).with_no_client_auth()
            }
        }
    };
    Ok(MakeRustlsConnect::new(config))
}

/// Trusted roots: the file given, libpq's default file, or webpki-roots.
fn roots(file: Option<&std::path::Path>) -> Result<RootCertStore, String> {
    let default = std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".postgresql/root.crt"))
        .filter(|p| p.exists());
    let mut store = RootCertStore::empty();
    match file.map(PathBuf::from).or(default) {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&path)
                .and_then(|certs| certs.collect())
                .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!(
                    "sslrootcert {}: no certificate in it",
                    path.display()
                ));
            }
        }
        None => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(store)
}

/// `prefer`/`require`: any certificate (libpq's behaviour), the handshake's
/// signatures still checked.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        match verify_tls13_signature(message, cert, dss, algorithms) {
            // A certificate webpki does not read (X.509 v1, as Citus makes
            // its own): the handshake is still signed with its key.
            Err(rustls::Error::InvalidCertificate(_)) => {
                let spki = subject_public_key_info(cert)?;
                verify_tls13_signature_with_raw_key(message, &spki, dss, algorithms)
            }
            other => other,
        }
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The public key (SubjectPublicKeyInfo, DER) of any X.509 certificate.
fn subject_public_key_info(
    cert: &CertificateDer<'_>,
) -> Result<SubjectPublicKeyInfoDer<'static>, rustls::Error> {
    use x509_cert::der::{Decode, Encode};
    let unreadable = |e: x509_cert::der::Error| {
        rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(e))))
    };
    let parsed = x509_cert::Certificate::from_der(cert.as_ref()).map_err(unreadable)?;
    let der = parsed
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(unreadable)?;
    Ok(SubjectPublicKeyInfoDer::from(der))
}

/// `verify-ca`: the chain checked, the host name not.
#[derive(Debug)]
struct AnyHostName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_malformed_connection_string_has_its_password_quoted_in_the_error() {
        for conninfo in [
            "postgresql+psycopg://app:s3cret@db.example/app",
            "mysql://app:s3cret@db.example/app",
            "\"postgres://app:s3cret@db.example/app?sslmode=require\"",
            "'postgres://app:s3cret@db.example/app?sslmode=require'",
            "jdbc:postgresql://app:s3cret@db.example/app?sslmode=require",
            "postgres//app:s3cret@db.example/app?x=y",
            "Host=db Password=s3cret",
            "postgress://app:s3cret@db.example/app",
            "postgres://app:s3cret@db.example/app?password=p%zzs3cret",
            "postgres://app@db.example/app?password=s3cret%ff&sslmode=require",
            "postgres://app:p%zzs3cret@db.example/app",
            "postgres://app:s3cret@db.example:notaport/app",
            "host=db.example user=app passwords3cret dbname=app",
            "host=db.example password='s3cret",
            "s3cret",
        ] {
            let Err(err) = parse(conninfo) else {
                // The driver takes some (a password is any bytes to it).
                continue;
            };
            assert!(!err.contains("s3cret"), "{conninfo}: {err}");
        }
        // A URL with a space before it is a URL.
        assert!(parse(" postgres://app:s3cret@db.example/app?sslmode=require").is_ok());
        for refused in [
            "postgresql+psycopg://app:s3cret@db.example/app",
            "host=db.example user=app passwords3cret dbname=app",
        ] {
            assert!(parse(refused).is_err(), "{refused}");
        }
        let err = parse("postgresql+psycopg://app:s3cret@db.example/app").unwrap_err();
        assert!(
            err.contains("\"postgresql+psycopg\"") && err.contains("postgres://"),
            "{err}"
        );
        let err = parse("postgres://db.example/app?sslrootcert=%zz").unwrap_err();
        assert!(err.contains("sslrootcert"), "{err}");
    }

    #[test]
    fn a_connection_string_the_driver_refuses_is_said_with_the_option_at_fault_and_no_secret() {
        let err = parse("postgres://app:s3cret@db.example/app?foo=bar")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown option") && err.contains("foo"),
            "{err}"
        );
        let err = parse("host=db.example port=notaport password=s3cret")
            .unwrap_err()
            .to_string();
        assert!(err.contains("port"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn verify_modes_and_the_root_file_are_taken_out_of_a_url_and_the_rest_is_the_drivers() {
        let (config, tls) = parse(
            "postgres://u:p@db.example.com:6543/app?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(tls.verify, Verify::ChainAndHost);
        assert_eq!(tls.root_cert, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(config.get_ssl_mode(), SslMode::Require);
        assert_eq!(config.get_application_name(), Some("x"));
        assert_eq!(config.get_dbname(), Some("app"));
    }

    #[test]
    fn the_key_value_form_is_read_the_same_way() {
        let (config, tls) =
            parse("host=db port=5432 user=u sslmode=verify-ca sslrootcert='/tmp/r.pem'").unwrap();
        assert_eq!(tls.verify, Verify::Chain);
        assert_eq!(tls.root_cert, Some(PathBuf::from("/tmp/r.pem")));
        assert_eq!(config.get_ssl_mode(), SslMode::Require);
    }

    #[test]
    fn other_settings_of_the_key_value_form_pass_through_exactly_as_written() {
        let (config, tls) = parse(
            "host=db password='a  b\\'c' sslmode = verify-full sslrootcert='/x y/ca.pem' dbname=app",
        )
        .unwrap();
        assert_eq!(config.get_password(), Some(&b"a  b'c"[..]));
        assert_eq!(config.get_dbname(), Some("app"));
        assert_eq!(tls.verify, Verify::ChainAndHost);
        assert_eq!(tls.root_cert, Some(PathBuf::from("/x y/ca.pem")));
        assert!(parse("host=db password='open").is_err());
    }

    #[test]
    fn libpqs_other_modes_keep_their_meaning_and_unknown_ones_are_refused() {
        for (mode, driver) in [
            ("disable", SslMode::Disable),
            ("allow", SslMode::Prefer),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
        ] {
            let (config, tls) = parse(&format!("postgres://h/d?sslmode={mode}")).unwrap();
            assert_eq!(
                (config.get_ssl_mode(), tls.verify),
                (driver, Verify::Nothing)
            );
        }
        let (config, tls) = parse("postgres://h/d").unwrap();
        assert_eq!(
            (config.get_ssl_mode(), tls),
            (SslMode::Prefer, TlsSettings::default())
        );
        assert!(parse("postgres://h/d?sslmode=verify")
            .unwrap_err()
            .contains("verify-full"));
    }

    #[test]
    fn a_root_file_without_certificates_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("empty.pem");
        std::fs::write(&file, "not a certificate").unwrap();
        let settings = TlsSettings {
            verify: Verify::ChainAndHost,
            root_cert: Some(file.clone()),
        };
        let err = connector(&settings).map(|_| ()).unwrap_err();
        assert!(err.contains(&file.display().to_string()), "{err}");
    }
}
