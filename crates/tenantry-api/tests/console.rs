//! The console in a real headless Chromium (Debian's `chromium` and `chromium-driver`, driven over WebDriver) against a real server on port 0: both sign-ins, the pages' actions, charts from a seeded request log, and a tenant key that never sees another tenant on a page or in an answer the page fetched. Screenshots of each page go to `target/console-screenshots/`.
//!
//! Without chromium or chromedriver this test fails (it never passes silently); CI installs them.

#[allow(dead_code)]
#[path = "http/helpers.rs"]
mod helpers;
#[path = "common/server.rs"]
mod server;

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use helpers::TestApp;
use serde_json::{json, Value};
use tenantry_axum::jwt::testing::{Alg, IdentityProvider};
use thirtyfour::{prelude::*, ChromiumLikeCapabilities};

/// A program on PATH or at one of Debian's paths.
fn program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    names.iter().find_map(|n| {
        std::env::split_paths(&path)
            .map(|d| d.join(n))
            .chain([PathBuf::from("/usr/lib/chromium").join(n)])
            .find(|p| p.is_file())
    })
}

/// chromedriver on a free loopback port and one headless Chromium session.
struct Browser {
    driver: Option<WebDriver>,
    chromedriver: Child,
}

/// A script that returns the first element matching a CSS selector.
fn first_match(selector: &str) -> String {
    format!("return document.querySelector({})", json!(selector))
}

impl Browser {
    async fn start() -> Self {
        let missing = "the console test needs Debian's chromium and chromium-driver: \
                       apt-get install -y chromium chromium-driver";
        let driver_bin = program(&["chromedriver"]).expect(missing);
        // The real binary, not the /usr/bin shell wrapper.
        let chromium = program(&["chromium", "chromium-browser"]).expect(missing);
        let chromium = [PathBuf::from("/usr/lib/chromium/chromium"), chromium]
            .into_iter()
            .find(|p| p.is_file())
            .unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let chromedriver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = client.get(format!("{url}/status")).send().await;
            if let Ok(r) = ready {
                let v: Value = r.json().await.unwrap_or_default();
                if v["value"]["ready"] == true {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut caps = DesiredCapabilities::chrome();
        caps.set_binary(chromium.to_str().unwrap()).unwrap();
        for arg in [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1280,1000",
        ] {
            caps.add_arg(arg).unwrap();
        }
        let driver = WebDriver::new(&url, caps)
            .await
            .expect("a Chromium session from chromedriver");
        Self {
            driver: Some(driver),
            chromedriver,
        }
    }

    fn d(&self) -> &WebDriver {
        self.driver.as_ref().unwrap()
    }

    /// What `script` returns.
    async fn js(&self, script: &str) -> Value {
        self.d()
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("{script}: {e}"))
            .json()
            .clone()
    }

    /// Signs in on the sign-in form.
    async fn sign_in(&self, token: &str) {
        self.type_into("input[name=token]", token).await;
        self.click("form.signin button[type=submit]").await;
    }

    /// Creates a key with the page's key form; returns the secret it shows once.
    async fn create_key(&self, description: &str) -> String {
        let previous = self
            .js("return document.querySelector('input.secret')?.value ?? ''")
            .await;
        self.type_into(
            "form[aria-label='Create an API key'] input[type=text]",
            description,
        )
        .await;
        self.click("form[aria-label='Create an API key'] button[type=submit]")
            .await;
        let script = format!(
            "const v = document.querySelector('input.secret')?.value; return v && v !== {} ? v : null",
            previous
        );
        self.wait("the new key's secret", &script)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Runs `script` until it returns something truthy; panics with `what` and the page's text after 30 s.
    async fn wait(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self
                .d()
                .execute(script, vec![])
                .await
                .map(|r| r.json().clone())
                .unwrap_or(Value::Null);
            let truthy = match &v {
                Value::Null | Value::Bool(false) => false,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                let text = self.text().await;
                panic!("timed out waiting for {what}; the page shows:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the page shows `needle`.
    async fn wait_text(&self, needle: &str) {
        let script = format!("return document.body.innerText.includes({})", json!(needle));
        self.wait(&format!("the text {needle:?}"), &script).await;
    }

    async fn text(&self) -> String {
        self.d()
            .execute("return document.body.innerText", vec![])
            .await
            .map(|r| r.json().as_str().unwrap_or_default().to_owned())
            .unwrap_or_default()
    }

    /// The element a script returns (after waiting for it).
    async fn element(&self, what: &str, script: &str) -> WebElement {
        self.wait(what, script).await;
        self.d()
            .execute(script, vec![])
            .await
            .unwrap()
            .element()
            .unwrap_or_else(|e| panic!("{what} is not an element: {e}"))
    }

    /// Does `act` on the element `script` returns, found again when the page
    /// rendered it anew between finding and acting (a stale element
    /// reference: the console re-renders a view when its data arrives), or
    /// when it was not interactable yet (found while that view was still
    /// being laid out, as on a loaded machine).
    async fn on_element<F, Fut>(&self, what: &str, script: &str, act: F)
    where
        F: Fn(WebElement) -> Fut,
        Fut: std::future::Future<Output = WebDriverResult<()>>,
    {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match act(self.element(what, script).await).await {
                Ok(()) => return,
                Err(e)
                    if matches!(
                        e.as_inner(),
                        thirtyfour::error::WebDriverErrorInner::StaleElementReference(_)
                            | thirtyfour::error::WebDriverErrorInner::ElementNotInteractable(_)
                    ) && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("{what}: {e}"),
            }
        }
    }

    /// Clicks the first element matching `selector`.
    async fn click(&self, selector: &str) {
        let script = first_match(selector);
        self.on_element(selector, &script, |e| async move { e.click().await })
            .await;
    }

    /// Clicks the button whose text is `label`, inside the first element matching `within` that contains `context`.
    async fn click_button(&self, within: &str, context: &str, label: &str) {
        let script = format!(
            "return [...document.querySelectorAll({within})].filter(e => e.innerText.includes({context}))
                .flatMap(e => [...e.querySelectorAll('button')]).find(b => b.innerText.trim() === {label})",
            within = json!(within),
            context = json!(context),
            label = json!(label),
        );
        self.on_element(
            &format!("button {label:?} near {context:?}"),
            &script,
            |e| async move { e.click().await },
        )
        .await;
    }

    async fn type_into(&self, selector: &str, text: &str) {
        let script = first_match(selector);
        self.on_element(selector, &script, |e| async move {
            e.clear().await?;
            e.send_keys(text).await
        })
        .await;
    }

    async fn go(&self, url: &str) {
        self.d().goto(url).await.unwrap();
    }

    async fn hash(&self, hash: &str) {
        self.d()
            .execute(&format!("location.hash = {}", json!(hash)), vec![])
            .await
            .unwrap();
    }

    async fn accept_confirm(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.d().accept_alert().await.is_err() {
            assert!(Instant::now() < deadline, "no confirmation was asked");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A screenshot of the whole page: the window grows to the page's height for it.
    async fn shot(&self, name: &str) {
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let rect = self.d().get_window_rect().await.unwrap();
        let height = self
            .d()
            .execute("return document.documentElement.scrollHeight", vec![])
            .await
            .unwrap()
            .json()
            .as_i64()
            .unwrap_or(rect.height);
        let tall = |h: i64| u32::try_from(h.clamp(600, 6000)).unwrap();
        let width = u32::try_from(rect.width).unwrap();
        self.d()
            .set_window_rect(rect.x, rect.y, width, tall(height + 140))
            .await
            .unwrap();
        self.d()
            .screenshot(&dir.join(format!("{name}.png")))
            .await
            .unwrap();
        self.d()
            .set_window_rect(rect.x, rect.y, width, tall(rect.height))
            .await
            .unwrap();
    }

    /// The URLs this document has fetched (resource timing).
    async fn fetched(&self) -> Vec<String> {
        let v = self
            .d()
            .execute(
                "return performance.getEntriesByType('resource').map(e => e.name)",
                vec![],
            )
            .await
            .unwrap();
        serde_json::from_value(v.json().clone()).unwrap()
    }

    async fn quit(mut self) {
        if let Some(d) = self.driver.take() {
            let _ = d.quit().await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.chromedriver.kill();
        let _ = self.chromedriver.wait();
    }
}

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("console-screenshots")
}

/// `n` request-log rows of `tenant`, one an hour back from an hour ago, every
/// fifth a 500, every seventh otherwise a 404, by one random key; storage
/// samples of the same hours (`10 * hours ago` bytes); then the hourly
/// metrics refreshed.
async fn seed_request_log(app: &TestApp, tenant: &str, n: i32) {
    let db = app.db.superuser_client().await;
    db.execute(
        "INSERT INTO tenantry.request_log (tenant_id, created_at, method, route, status, latency_ms, key_id)
         SELECT $1::text::uuid, now() - make_interval(hours => g), 'GET', '/v1/resources',
                CASE WHEN g % 5 = 0 THEN 500 WHEN g % 7 = 0 THEN 404 ELSE 200 END, 3 + g % 7,
                '00000000-0000-4000-8000-00000000000a'
         FROM generate_series(1, $2) g",
        &[&tenant, &n],
    )
    .await
    .unwrap();
    db.execute(
        "INSERT INTO tenantry.storage_samples (tenant_id, hour, resources, bytes)
         SELECT $1::text::uuid, date_trunc('hour', now()) - make_interval(hours => g), 1, 10 * g
         FROM generate_series(1, $2) g WHERE g < 720",
        &[&tenant, &n],
    )
    .await
    .unwrap();
    // Rows dated in hours the roll-up may have counted already (as an
    // import's are): that tenant's hours counted again, then the view.
    db.execute(
        "SELECT tenantry.recount_tenant_metrics($1::text::uuid)",
        &[&tenant],
    )
    .await
    .unwrap();
    db.execute("SELECT tenantry.refresh_tenant_metrics()", &[])
        .await
        .unwrap();
}

/// Requests of `tenant` in the last 30 days' hourly metrics, as the
/// database has them now (`tenant_metrics_now`, which the usage routes read).
async fn metrics_total(app: &TestApp, tenant: &str) -> i64 {
    let db = app.db.superuser_client().await;
    db.query_one(
        "SELECT coalesce(sum(request_count), 0)::bigint FROM tenantry.tenant_metrics_now
         WHERE tenant_id = $1::text::uuid AND hour >= date_trunc('hour', now()) - interval '719 hours'",
        &[&tenant],
    )
    .await
    .unwrap()
    .get(0)
}

/// A sum over the last 30 days' hours of `tenant`'s usage, as the database has it (`column` over `source`).
async fn db_sum(app: &TestApp, tenant: &str, source: &str, column: &str) -> f64 {
    let db = app.db.superuser_client().await;
    db.query_one(
        &format!(
            "SELECT coalesce(sum({column}), 0)::float8 FROM tenantry.{source}
             WHERE tenant_id = $1::text::uuid AND hour >= date_trunc('hour', now()) - interval '719 hours'"
        ),
        &[&tenant],
    )
    .await
    .unwrap()
    .get(0)
}

/// The first series' total of the chart titled `title`, once it has drawn (fractional).
async fn chart_sum(b: &Browser, title: &str) -> f64 {
    let script = format!(
        "const f = [...document.querySelectorAll('figure.chart')].find(f => f.querySelector('.u-title')?.textContent === {});
         return f && f.querySelector('canvas') ? f.dataset.total : null",
        json!(title)
    );
    b.wait(&format!("the chart {title:?}"), &script)
        .await
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Asserts two sums agree to within rounding.
fn assert_close(shown: f64, want: f64, what: &str) {
    assert!(
        (shown - want).abs() < 1e-6 * want.abs().max(1.0),
        "{what}: the chart shows {shown}, the database has {want}"
    );
}

/// The first series' total of the chart titled `title`, once it has drawn (a count).
async fn chart_total(b: &Browser, title: &str) -> i64 {
    let total = chart_sum(b, title).await;
    assert_eq!(total.fract(), 0.0, "{title}: {total} is not a count");
    total as i64
}

#[tokio::test]
async fn console_signs_in_both_ways_acts_through_the_api_and_shows_a_tenant_only_itself() {
    // A stand-in identity provider: people sign in with its tokens.
    let idp = IdentityProvider::start().await;
    let jwt = idp.config();
    let mut app = TestApp::spawn_with(move |s| s.jwt = Some(jwt)).await;
    let console = app.url("/console/");

    // The console's files come with their security headers; /console leads to /console/.
    let r = app.client.get(&console).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert_eq!(csp, tenantry_api::console::CONTENT_SECURITY_POLICY);
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(app.url("/console"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], "/console/");

    // Another tenant the tenant view must never show, with traffic of its own.
    let stranger_name = format!("Globex {}", &helpers::random_id()[..8]);
    let stranger = app.create_tenant(&stranger_name, None).await;
    seed_request_log(&app, &stranger, 500).await;

    let b = Browser::start().await;

    // --- Operator: sign in with the admin token.
    b.go(&console).await;
    b.sign_in(&app.admin_token).await;
    b.wait_text("Create a tenant").await;
    b.wait_text(&stranger_name).await;

    // Create a tenant, then a child of it (the tree nests it).
    b.type_into("#create-tenant ~ .field input", "Acme").await;
    b.click("#create-tenant ~ button[type=submit]").await;
    let acme = b
        .wait(
            "the new tenant's page",
            "const m = location.hash.match(/^#\\/tenants\\/([0-9a-f-]{36})$/);
             return m && document.querySelector('h1')?.textContent === 'Acme' ? m[1] : null",
        )
        .await
        .as_str()
        .unwrap()
        .to_owned();
    let t = app.admin_get(&format!("/v1/tenants/{acme}")).await;
    assert_eq!(t.expect(200)["name"], "Acme");

    // A key for it, shown once.
    let key = b.create_key("console test").await;
    assert!(key.starts_with("tk_"), "{key}");
    b.wait_text("shown this once").await;
    b.shot("operator-tenant").await;
    let me = app.get("/v1/tenant", &key).await;
    assert_eq!(me.expect(200)["tenant_id"], acme.as_str());
    b.d().refresh().await.unwrap();
    b.wait_text("Quotas and rate limits").await;
    let again: Value = b.js("return document.querySelector('input.secret')").await;
    assert!(again.is_null(), "the secret is shown a second time");
    assert!(!b.text().await.contains(&key));

    // Back to the tree: a child of Acme, suspended, activated, deleted (after a confirmation).
    b.hash("#/tenants").await;
    b.wait_text(&stranger_name).await;
    b.type_into("#create-tenant ~ .field input", "Acme Labs")
        .await;
    b.js(&format!(
        "document.querySelector('#create-tenant ~ .field select').value = {}",
        json!(acme)
    ))
    .await;
    b.click("#create-tenant ~ button[type=submit]").await;
    b.wait_text("Acme Labs").await;
    let labs = b
        .wait(
            "the child's id",
            "return location.hash.match(/^#\\/tenants\\/([0-9a-f-]{36})$/)?.[1]",
        )
        .await
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.admin_get(&format!("/v1/tenants/{labs}"))
            .await
            .expect(200)["parent_id"],
        acme.as_str()
    );
    b.hash("#/tenants").await;
    let nested = format!(
        "return !!document.querySelector('li[data-tenant=\"{acme}\"] li[data-tenant=\"{labs}\"]')"
    );
    b.wait("the child nested under its parent", &nested).await;
    b.shot("operator-tenants").await;
    let node = format!("li[data-tenant=\"{labs}\"]");
    b.click_button(&node, "Acme Labs", "Suspend").await;
    b.wait_text("Suspended: Acme Labs").await;
    assert_eq!(
        app.admin_get(&format!("/v1/tenants/{labs}"))
            .await
            .expect(200)["status"],
        "suspended"
    );
    b.click_button(&node, "Acme Labs", "Activate").await;
    b.wait_text("Activated: Acme Labs").await;
    b.click_button(&node, "Acme Labs", "Delete").await;
    b.accept_confirm().await;
    b.wait_text("Deleted: Acme Labs").await;
    assert_eq!(
        app.admin_get(&format!("/v1/tenants/{labs}"))
            .await
            .expect(200)["status"],
        "deleted"
    );
    // Search narrows the tree.
    b.type_into("input[type=search]", "Globex").await;
    b.wait(
        "the search to hide Acme",
        &format!("return !document.querySelector('li[data-tenant=\"{acme}\"]')"),
    )
    .await;
    assert!(b.text().await.contains(&stranger_name));

    // Usage with charts from a seeded request log, and the live view of the busiest tenants.
    seed_request_log(&app, &acme, 240).await;
    let acme_total = metrics_total(&app, &acme).await;
    assert!(acme_total >= 240, "{acme_total}");
    b.hash(&format!("#/usage?tenant={acme}")).await;
    assert_eq!(chart_total(&b, "Requests per hour").await, acme_total);
    // The new charts, each against the database's hourly rows: 4xx rate (%),
    // p95 latency, distinct users, storage.
    let rate_4xx = {
        let db = app.db.superuser_client().await;
        db.query_one(
            "SELECT coalesce(sum(100.0 * client_errors / request_count), 0)::float8 FROM tenantry.tenant_metrics_now
             WHERE tenant_id = $1::text::uuid AND hour >= date_trunc('hour', now()) - interval '719 hours'",
            &[&acme],
        )
        .await
        .unwrap()
        .get::<_, f64>(0)
    };
    assert!(rate_4xx > 0.0);
    assert_close(
        chart_sum(&b, "Error rate per hour").await,
        rate_4xx,
        "4xx rate",
    );
    assert_close(
        chart_sum(&b, "p95 latency per hour").await,
        db_sum(&app, &acme, "tenant_metrics_now", "p95_latency_ms").await,
        "p95",
    );
    let stored = db_sum(&app, &acme, "storage_samples", "bytes").await;
    assert!(stored > 0.0);
    assert_close(
        chart_sum(&b, "Storage (sampled hourly)").await,
        stored,
        "storage",
    );
    chart_sum(&b, "Distinct users and keys per hour").await;
    // The top tenants over 30 days by requests: the stranger's 500 seeded
    // requests before Acme's, each charted.
    let stranger_total = metrics_total(&app, &stranger).await;
    assert!(stranger_total > acme_total);
    b.wait(
        "the stranger, then Acme, in the top tenants",
        &format!(
            "const r = [...document.querySelectorAll('section[aria-label^=\"Top tenants\"] tbody tr')];
             return r.length >= 2 && r[0].innerText.startsWith({}) && r[1].innerText.startsWith('Acme')",
            json!(stranger_name)
        ),
    )
    .await;
    assert_eq!(
        chart_total(&b, "Requests per hour, top tenants").await,
        stranger_total
    );
    b.wait(
        "the live table",
        "return document.querySelector('section[aria-label^=\"Live\"] table')",
    )
    .await;
    b.shot("operator-usage").await;

    // The operator's page of Acme: its keys, roles, members and adopted
    // tables through the admin routes; the operator revokes one of its keys.
    let (spare, _) = app
        .create_key(&acme, json!({ "description": "operator-revokes" }))
        .await;
    b.hash(&format!("#/tenants/{acme}")).await;
    b.wait_text("Adopted tables").await;
    b.wait_text("operator-revokes").await;
    b.wait_text("No members.").await;
    let spare_prefix = spare.split('_').nth(1).unwrap().to_owned();
    b.shot("operator-tenant").await;
    b.click_button("tr", "operator-revokes", "Revoke").await;
    b.accept_confirm().await;
    b.wait_text(&format!("Key {spare_prefix} revoked.")).await;
    assert_eq!(app.get("/v1/tenant", &spare).await.status, 401);
    app.get("/v1/tenant", &key).await.expect(200);

    // Audit of Acme: the key's creation by the operator.
    b.hash(&format!("#/audit?tenant={acme}")).await;
    b.wait_text("key.created").await;
    b.shot("operator-audit").await;
    // A link with an id in capitals names the tenant whose rows it shows
    // (its picker fell back to the first tenant's name: found by a review of
    // the console). Both ways round, so that neither is merely the first.
    for tenant in [&stranger, &acme] {
        b.hash(&format!("#/audit?tenant={}", tenant.to_uppercase()))
            .await;
        b.wait(
            "the audit picker to name the linked tenant",
            &format!(
                "const s = document.querySelector('select[name=tenant]'); \
                 return s && s.value === {} && !document.querySelector('.loading')",
                json!(tenant)
            ),
        )
        .await;
    }

    // Sign out: the session is gone.
    b.click("#logout").await;
    b.wait_text("Sign in").await;
    let stored = b
        .js("return sessionStorage.length + localStorage.length")
        .await;
    assert_eq!(stored, json!(0));

    // --- Tenant: sign in with Acme's key, in a fresh document (its own resource log).
    b.go(&console).await;
    b.sign_in(&key).await;
    b.wait_text("Tenant: Acme").await;
    b.wait_text("Active keys").await;
    let stored: Value = b
        .js("return [Object.keys(sessionStorage), localStorage.length, document.cookie]")
        .await;
    assert_eq!(stored, json!([["tenantry.token"], 0, ""]));

    // A second key: shown once, then revoked.
    let temp = b.create_key("short-lived").await;
    let prefix = temp.split('_').nth(1).unwrap().to_owned();
    b.wait(
        "the new key in the table",
        &format!(
            "return [...document.querySelectorAll('table tr')].some(r => r.innerText.includes({}) && r.innerText.includes('short-lived'))",
            json!(prefix)
        ),
    )
    .await;
    b.shot("tenant").await;
    app.get("/v1/tenant", &temp).await.expect(200);
    b.click_button("tr", "short-lived", "Revoke").await;
    b.accept_confirm().await;
    b.wait_text(&format!("Key {prefix} revoked.")).await;
    assert_eq!(app.get("/v1/tenant", &temp).await.status, 401);
    let keys = app.get("/v1/keys", &key).await.items();
    let revoked = keys
        .iter()
        .find(|k| k["prefix"] == prefix.as_str())
        .expect("the revoked key is listed");
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    let revoked_id = revoked["key_id"].as_str().unwrap().to_owned();

    // Its audit row, with the actor.
    b.hash("#/audit").await;
    b.wait_text("key.revoked").await;
    b.wait_text(&revoked_id).await;
    b.shot("tenant-audit").await;
    b.hash("#/audit?action=key.revoked").await;
    b.wait(
        "the filtered audit page",
        "const rows = [...document.querySelectorAll('tbody tr')]; return rows.length > 0 && rows.every(r => r.innerText.includes('key.revoked'))",
    )
    .await;

    // Usage: Acme's seeded traffic and this session's own requests since
    // (usage is live), not the stranger's.
    let before = metrics_total(&app, &acme).await;
    b.hash("#/usage").await;
    let shown = chart_total(&b, "Requests per hour").await;
    let after = metrics_total(&app, &acme).await;
    assert!(
        acme_total <= before && before <= shown && shown <= after,
        "{acme_total} seeded, {before} before, {shown} shown, {after} after"
    );
    b.wait_text("Requests per key").await;
    b.shot("tenant-usage").await;

    // A narrow screen: one column, still usable.
    b.d().set_window_rect(0, 0, 390, 900).await.unwrap();
    b.hash("#/tenant").await;
    b.wait_text("Active keys").await;
    b.shot("tenant-narrow").await;
    let overflow: Value = b
        .js("return document.documentElement.scrollWidth <= window.innerWidth + 1")
        .await;
    assert_eq!(
        overflow,
        json!(true),
        "the page scrolls sideways on a narrow screen"
    );

    // Nothing of the stranger on any page of the tenant view...
    for page in ["#/tenant", "#/usage", "#/audit"] {
        b.hash(page).await;
        b.wait(
            "the page to load",
            "return document.querySelector('main h1') && !document.querySelector('.loading')",
        )
        .await;
        let text = b.text().await;
        assert!(text.contains("Acme"), "{page} does not show the tenant");
        assert!(
            !text.contains(&stranger) && !text.contains(&stranger_name),
            "{page} shows another tenant:\n{text}"
        );
    }
    // ...nor in any answer the pages fetched, all of them from this server's API or console.
    let fetched = b.fetched().await;
    let api: Vec<&String> = fetched
        .iter()
        .filter(|u| u.starts_with(&app.url("/v1/")))
        .collect();
    assert!(api.len() >= 8, "too few API calls seen: {fetched:?}");
    for url in &fetched {
        assert!(
            url.starts_with(&app.url("/v1/")) || url.starts_with(&console),
            "the console fetched {url}, outside the API and its own files"
        );
    }
    for url in api {
        let r = app
            .client
            .get(url.as_str())
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        let body = r.text().await.unwrap();
        assert!(
            !body.contains(&stranger) && !body.contains(&stranger_name),
            "{url} answers with another tenant: {body}"
        );
    }
    // --- A person: invited into Acme with a role that reads the tenant and
    // its usage, signs in with their token (JWT) and Acme's id.
    let viewer = app
        .create_role(&key, "viewer", &["tenant.read", "usage.read"])
        .await;
    let invitation = app
        .post(
            "/v1/invitations",
            &key,
            &json!({ "email": "pat@example.com", "role_id": viewer }),
        )
        .await
        .expect(201)
        .clone();
    let mut claims = idp.claims("pat-subject");
    claims["email"] = json!("pat@example.com");
    let person = idp.sign(Alg::Es256, claims);
    app.send_raw(
        app.client
            .post(app.url("/v1/invitations/accept"))
            .bearer_auth(&person)
            .json(&json!({ "token": invitation["token"] })),
    )
    .await
    .expect(200);
    b.click("#logout").await;
    b.wait_text("Sign in").await;
    b.type_into("input[name=tenant]", &acme).await;
    b.sign_in(&person).await;
    b.wait_text("Tenant: Acme").await;
    let before = metrics_total(&app, &acme).await;
    b.hash("#/usage").await;
    let shown = chart_total(&b, "Requests per hour").await;
    let after = metrics_total(&app, &acme).await;
    assert!(
        before <= shown && shown <= after,
        "{before} before, {shown} shown, {after} after"
    );
    b.shot("person-usage").await;
    let text = b.text().await;
    assert!(
        !text.contains(&stranger) && !text.contains(&stranger_name),
        "the person's view shows another tenant:\n{text}"
    );

    // The operator does see the stranger: the checks above can fail.
    assert!(app
        .admin_get("/v1/tenants")
        .await
        .text
        .contains(&stranger_name));

    // --- Found by a review of the console: a key for resources only (no
    // tenant.read) could not sign in at all; its view opens now, each
    // section showing the API's answer. Its shares come in one request.
    let reader = app
        .create_role(&key, "resource reader", &["resources.read"])
        .await;
    let (reader_key, _) = app.create_role_key(&key, &reader).await;
    b.click("#logout").await;
    b.wait_text("Sign in").await;
    b.go(&console).await;
    b.sign_in(&reader_key).await;
    b.wait_text("may not read the tenant's details").await;
    b.wait_text("This tenant shares no resources.").await;
    b.wait_text("keys.read").await;
    let fetched = b.fetched().await;
    let shares = fetched.iter().filter(|u| u.contains("/shares")).count();
    assert_eq!(shares, 1, "one request for the shares, once: {fetched:?}");
    // Revoked while signed in: the next page's 401 ends the session, on
    // whichever page it came (it stayed on Usage and Audit before).
    let reader_id = app
        .get("/v1/keys", &key)
        .await
        .items()
        .into_iter()
        .find(|k| k["role_id"] == reader.as_str())
        .expect("the reader's key")["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.delete(&format!("/v1/keys/{reader_id}"), &key)
        .await
        .expect(204);
    b.hash("#/audit").await;
    b.wait_text("no longer accepted").await;
    b.wait_text("Sign in").await;
    let stored = b.js("return sessionStorage.length").await;
    assert_eq!(stored, json!(0));

    b.quit().await;
    app.shutdown().await;
}
