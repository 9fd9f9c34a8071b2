//! The console at `/console/`: static assets embedded in the binary (plain ES modules, CSS and the vendored uPlot from `console/public/`), served with a strict Content-Security-Policy. It holds no routes of its own beyond the files: the pages call the documented `/v1` API from the browser with `Authorization: Bearer`.

use axum::{
    extract::Path,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Redirect, Response},
    routing::get,
    Router,
};
use rust_embed::RustEmbed;

use crate::error::{ApiError, ProblemCode};

/// The served files: `crates/tenantry-api/console/public/`, embedded at compile time.
#[derive(RustEmbed)]
#[folder = "console/public/"]
struct Assets;

/// The policy of every console response: scripts, styles, images and API calls
/// from this origin only; no inline script or style, no framing, no `<base>`.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The console's routes: `/console` redirects to `/console/`, which serves
/// `index.html`. Every answer of theirs carries the console's headers: the
/// redirect and the 405 of a method they do not take did not (a console
/// review).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    // Each route's own 405 (the application's fallback for other routes
    // is set outside this router's layer, and answered without its headers).
    let not_allowed = tenantry_axum::error::method_not_allowed;
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }).fallback(not_allowed),
        )
        .route(
            "/console/",
            get(|headers: HeaderMap| async move { asset("index.html", &headers) })
                .fallback(not_allowed),
        )
        .route(
            "/console/{*path}",
            get(|Path(path): Path<String>, headers: HeaderMap| async move {
                asset(&path, &headers)
            })
            .fallback(not_allowed),
        )
        .layer(axum::middleware::map_response(
            |mut response: Response| async move {
                protect(response.headers_mut(), CONTENT_SECURITY_POLICY);
                response
            },
        ))
}

/// One embedded file with the console's headers; 304 when the browser's copy is current.
fn asset(path: &str, request: &HeaderMap) -> Response {
    let (Some(file), Some(content_type)) = (Assets::get(path), content_type(path)) else {
        // Its 404 carries the headers too, as every answer of the router
        // (found by a review of the console: the documentation says every
        // console response does).
        return ApiError::new(ProblemCode::RouteNotFound, "no such console file").into_response();
    };
    let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..16]));
    // Weak comparison (RFC 9110, 13.1.2): a proxy that compresses answers
    // (nginx's gzip) weakens the tag to W/"…", which then never matched and
    // the console was fetched whole on every load (an HTTP review); `*`
    // matches any file that exists.
    let fresh = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag);
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = file.data.into_owned().into_response();
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        r
    };
    let headers = response.headers_mut();
    // Revalidated on every load (a 304 costs one round trip): an upgraded server
    // never runs with last version's scripts.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, v);
    }
    response
}

/// The policy of the API explorer at `/docs/` (Swagger UI, which the
/// console's policy would break: it is not framed by other sites, which is
/// what matters for a page that holds a token and sends requests).
pub const DOCS_CONTENT_SECURITY_POLICY: &str = "frame-ancestors 'none'";

/// The security headers of the console's and the API explorer's responses:
/// `policy`, no sniffing of content types, no referrer, no framing.
fn protect(headers: &mut HeaderMap, policy: &'static str) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(policy),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // A page that opened the console in a window keeps no handle to it (to
    // send a signed-in operator's tab to a look-alike sign-in page later).
    headers.insert(
        header::HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
}

/// The API explorer's responses with [`DOCS_CONTENT_SECURITY_POLICY`] and the
/// console's other security headers (a review found `/docs/` without any).
pub async fn docs_headers(mut response: Response) -> Response {
    // Swagger UI's own answer for a file it does not have is an empty 404:
    // said as every other missing route is (an outside fuzzing review).
    if response.status() == axum::http::StatusCode::NOT_FOUND
        && !response
            .headers()
            .contains_key(axum::http::header::CONTENT_TYPE)
    {
        response = ApiError::route_not_found().into_response();
    }
    protect(response.headers_mut(), DOCS_CONTENT_SECURITY_POLICY);
    response
}

/// The type of each kind of file the console ships; anything else is not served.
fn content_type(path: &str) -> Option<&'static str> {
    let ext = path.rsplit_once('.').map(|(_, e)| e)?;
    Some(match ext {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "LICENSE" => "text/plain; charset=utf-8",
        _ => return None,
    })
}

/// The embedded files' paths (for the tests and the page weight).
pub fn asset_paths() -> impl Iterator<Item = String> {
    Assets::iter().map(|p| p.into_owned())
}

#[cfg(test)]
mod tests {
    use std::{path::PathBuf, process::Command};

    use base64::Engine;
    use sha2::{Digest, Sha512};

    use super::*;

    /// The tarball `update-vendor.sh` fetched; its version is the lockfile's.
    const VENDORED_TARBALL: &str = "console/vendor/uplot-1.6.32.tgz";

    fn console_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    /// `tar -xzO`: one member of the tarball.
    fn tar_member(tgz: &PathBuf, member: &str) -> Vec<u8> {
        let out = Command::new("tar")
            .arg("-xzOf")
            .arg(tgz)
            .arg(member)
            .output()
            .expect("running tar");
        assert!(
            out.status.success(),
            "tar could not read {member} of {tgz:?}"
        );
        out.stdout
    }

    #[test]
    fn vendored_chart_library_matches_the_lockfile() {
        let dir = console_dir();
        let lock: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.join("console/package-lock.json")).expect("package-lock.json"),
        )
        .expect("package-lock.json is JSON");
        let locked = &lock["packages"]["node_modules/uplot"];
        let version = locked["version"].as_str().expect("uplot is locked");
        assert!(
            VENDORED_TARBALL.ends_with(&format!("uplot-{version}.tgz")),
            "the lockfile has uplot {version}, the vendored tarball is {VENDORED_TARBALL}: run console/update-vendor.sh"
        );
        let tgz = dir.join(VENDORED_TARBALL);
        let digest = Sha512::digest(std::fs::read(&tgz).expect("vendored tarball"));
        let integrity = format!(
            "sha512-{}",
            base64::engine::general_purpose::STANDARD.encode(digest)
        );
        assert_eq!(
            locked["integrity"].as_str(),
            Some(integrity.as_str()),
            "{VENDORED_TARBALL} is not the tarball package-lock.json pins"
        );
        for (served, member) in [
            ("vendor/uPlot.iife.min.js", "package/dist/uPlot.iife.min.js"),
            ("vendor/uPlot.min.css", "package/dist/uPlot.min.css"),
            ("vendor/uPlot.LICENSE", "package/LICENSE"),
        ] {
            let embedded = Assets::get(served).unwrap_or_else(|| panic!("{served} not embedded"));
            assert!(
                *embedded.data == *tar_member(&tgz, member),
                "{served} differs from {member} of the locked tarball: run console/update-vendor.sh"
            );
        }
    }

    /// Every file `index.html` links and every module a script imports is embedded.
    #[test]
    fn every_referenced_console_file_is_embedded() {
        let files: Vec<String> = asset_paths().collect();
        let mut referenced = Vec::new();
        for path in &files {
            let Some(text) = Assets::get(path).and_then(|f| String::from_utf8(f.data.into()).ok())
            else {
                continue;
            };
            let base = path.rsplit_once('/').map_or("", |(d, _)| d);
            let quoted = |marker: &str| -> Vec<String> {
                text.split(marker)
                    .skip(1)
                    .filter_map(|rest| rest.split('"').next().map(str::to_owned))
                    .collect()
            };
            let mut targets = Vec::new();
            if path.ends_with(".html") {
                targets.extend(quoted("src=\""));
                targets.extend(quoted("href=\""));
            }
            if path.ends_with(".js") && !path.starts_with("vendor/") {
                targets.extend(quoted("from \""));
            }
            for t in targets
                .into_iter()
                .filter(|t| !t.starts_with('#') && !t.starts_with("data:"))
            {
                let joined = normalize(base, &t);
                referenced.push((path.clone(), joined));
            }
        }
        assert!(
            referenced.len() >= 5,
            "found too few references: {referenced:?}"
        );
        for (from, to) in referenced {
            assert!(
                files.contains(&to),
                "{from} references {to}, which is not embedded"
            );
        }
    }

    /// `base/rel` with `./` and `../` resolved.
    fn normalize(base: &str, rel: &str) -> String {
        let mut parts: Vec<&str> = base.split('/').filter(|p| !p.is_empty()).collect();
        for p in rel.split('/') {
            match p {
                "." | "" => {}
                ".." => {
                    parts.pop();
                }
                p => parts.push(p),
            }
        }
        parts.join("/")
    }

    /// `GET /console/<path>` through the console's router (whose layer adds
    /// the security headers), with `headers`.
    fn asset(path: &str, headers: &HeaderMap) -> Response {
        use tower::ServiceExt;
        let mut request = axum::http::Request::get(format!("/console/{path}"))
            .body(axum::body::Body::empty())
            .unwrap();
        *request.headers_mut() = headers.clone();
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(router::<()>().oneshot(request))
            .unwrap()
    }

    #[test]
    fn console_files_carry_the_strict_policy_and_unknown_files_are_404() {
        let r = asset("index.html", &HeaderMap::new());
        assert_eq!(r.status(), StatusCode::OK);
        let h = r.headers();
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY);
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
        assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
        let etag = h[header::ETAG].clone();
        let mut again = HeaderMap::new();
        again.insert(header::IF_NONE_MATCH, etag);
        let r = asset("index.html", &again);
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(
            r.headers()[header::CONTENT_SECURITY_POLICY],
            CONTENT_SECURITY_POLICY
        );
        assert_eq!(
            asset("app.js", &HeaderMap::new()).headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        for missing in ["nope.js", "../Cargo.toml", "index.html.bak"] {
            assert_eq!(
                asset(missing, &HeaderMap::new()).status(),
                StatusCode::NOT_FOUND,
                "{missing}"
            );
        }
    }

    /// No inline script or style in the markup: the policy would block it.
    #[test]
    fn console_markup_has_no_inline_script_or_style() {
        for path in asset_paths().filter(|p| p.ends_with(".html")) {
            let text = String::from_utf8(Assets::get(&path).unwrap().data.into()).unwrap();
            assert!(!text.contains("style=\""), "{path} has a style attribute");
            assert!(!text.contains("<style"), "{path} has a style element");
            assert!(
                !has_inline_handler(&text),
                "{path} has an inline event handler"
            );
            for script in text.split("<script").skip(1) {
                let tag = script.split('>').next().unwrap_or_default();
                assert!(tag.contains("src="), "{path} has an inline script");
            }
        }
    }

    fn has_inline_handler(html: &str) -> bool {
        ["onclick=", "onload=", "onerror=", "onsubmit=", "oninput="]
            .iter()
            .any(|h| html.contains(h))
    }
}
