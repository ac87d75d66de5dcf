//! The web shell in a real browser (headless Chromium through chromedriver) against the real
//! `trellis` binary: sign-in, language switch, form errors then success, a block appearing
//! live, in-browser proof verification (valid and tampered), server-side role checks, CSRF,
//! security headers and sign-in rate limiting. The JavaScript verifier is compared with the
//! Rust verifier on the same bundles, including tampered ones.
//!
//! Needs `chromium` and `chromium-driver` (Debian); `./scripts/test` installs them. Screenshots
//! of every page go to `target/screenshots/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chain_core::keystore::Keystore;
use chain_core::proof::{ProofBundle, verify_bundle};
use chain_core::types::ValidatorSet;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_trellis");
pub(crate) const PASS: &str = "web-test-passphrase";

pub(crate) fn screenshot_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&d).expect("screenshot dir");
    d
}

/// The real node binary with a demo chain in a temp dir; killed on drop.
pub(crate) struct NodeProc {
    child: Child,
    pub(crate) url: String,
    pub(crate) dir: tempfile::TempDir,
    /// The port of the node's embedded MQTT broker (IoT gateway).
    pub(crate) mqtt_port: u16,
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl NodeProc {
    /// A fresh demo chain without the traceability demo data.
    pub(crate) async fn start() -> Self {
        Self::start_with(&["--no-demo"]).await
    }

    /// A fresh demo chain; `flags` go to `trellis node` (e.g. `--no-demo`).
    pub(crate) async fn start_with(flags: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let db_url = crate::common::fresh_database(dir.path()).await;
        let port = crate::common::free_port();
        let mqtt_port = crate::common::free_port();
        let log = std::fs::File::create(dir.path().join("node.log")).expect("log");
        let child = Command::new(BIN)
            .arg("--data-dir")
            .arg(dir.path())
            .arg("node")
            .args(flags)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("TRELLIS_PASSPHRASE", PASS)
            .env("TRELLIS_FAST_KDF", "1")
            .env("DATABASE_URL", &db_url)
            .env("TRELLIS_MQTT_LISTEN", format!("127.0.0.1:{mqtt_port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn trellis node");
        let n = NodeProc {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
            mqtt_port,
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(format!("{}/healthz", n.url)).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(Instant::now() < deadline, "node did not start: {}", n.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        n
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("node.log")).unwrap_or_default()
    }

    /// (username, password) of the demo organisation admins.
    pub(crate) fn demo_users(&self) -> Vec<(String, String)> {
        let text = std::fs::read_to_string(self.dir.path().join("web-users.txt"))
            .expect("web-users.txt written at first start");
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                Some((it.next()?.to_string(), it.next()?.to_string()))
            })
            .collect()
    }

    pub(crate) fn password_of(&self, user: &str) -> String {
        self.demo_users()
            .into_iter()
            .find(|(u, _)| u == user)
            .map(|(_, p)| p)
            .expect("demo user")
    }

    /// Anchor a document with `acme-admin`'s key through the API; returns the tx id.
    pub(crate) async fn anchor(&self, doc: &str) -> String {
        let ks = Keystore::open(self.dir.path().join("keystore")).expect("keystore");
        let key = ks.load("acme-admin", PASS).expect("key");
        let hash = chain_core::crypto::HashAlg::Sha256
            .digest(doc.as_bytes())
            .to_hex();
        let args = json!({"key": doc, "hash": hash});
        let r = submit_signed(
            &reqwest::Client::new(),
            &self.url,
            &key,
            "notary",
            "anchor",
            args,
        )
        .await;
        assert_eq!(r["status"], "committed", "{r}");
        r["tx_id"].as_str().expect("tx id").to_string()
    }
}

/// Signs `contract.method(args)` with `key`, submits it and waits for the commit.
pub(crate) async fn submit_signed(
    http: &reqwest::Client,
    url: &str,
    key: &chain_core::crypto::SigningKey,
    contract: &str,
    method: &str,
    args: Value,
) -> Value {
    let chain: Value = http
        .get(format!("{url}/api/v1/chain"))
        .send()
        .await
        .expect("chain")
        .json()
        .await
        .expect("json");
    let acc: Value = http
        .get(format!("{url}/api/v1/accounts/{}", key.public_key()))
        .send()
        .await
        .expect("account")
        .json()
        .await
        .expect("json");
    let tx = chain_core::types::build_tx(
        chain_core::crypto::Suite::Ed25519Sha256,
        chain["chain_id"].as_str().expect("chain id"),
        key,
        acc["next_nonce"].as_u64().expect("nonce"),
        chain_core::node::now_ms() + 60_000,
        contract,
        method,
        serde_json::to_vec(&args).expect("json"),
    );
    http.post(format!("{url}/api/v1/txs"))
        .json(&json!({"tx": hex::encode(tx.bytes()), "wait": "commit", "timeout_ms": 20000}))
        .send()
        .await
        .expect("submit")
        .json()
        .await
        .expect("json")
}

/// chromedriver + a headless Chromium session; both cleaned up on drop.
pub(crate) struct Browser {
    client: Option<Client>,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn find_exe(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| names.iter().map(move |n| d.join(n)))
        .find(|p| p.is_file())
}

impl Browser {
    pub(crate) async fn start() -> Self {
        let chromium = find_exe(&["chromium", "chromium-browser"])
            .expect("chromium is not installed: run ./scripts/test, which installs it");
        let driver_bin = find_exe(&["chromedriver"])
            .expect("chromedriver is not installed: run ./scripts/test, which installs it");
        let port = crate::common::free_port();
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().expect("profile dir");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--no-first-run", "--window-size=1200,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("browser session");
        Browser {
            client: Some(client),
            driver,
            _profile: profile,
        }
    }

    pub(crate) fn c(&self) -> &Client {
        self.client.as_ref().expect("client")
    }

    pub(crate) async fn shot(&self, name: &str) {
        let png = self.c().screenshot().await.expect("screenshot");
        std::fs::write(screenshot_dir().join(format!("{name}.png")), png).expect("write png");
    }

    /// Text of the first element matching `css`. A click that submits a form may still be
    /// replacing the page: an element of the old page that went stale is looked up again.
    pub(crate) async fn text_of(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self
                .c()
                .wait()
                .at_most(Duration::from_secs(10))
                .for_element(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("no element {css}: {e}"));
            match found.text().await {
                Ok(t) => return t,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("text of {css}: {e}"),
            }
        }
    }

    /// Wait until the page's heading is `want`.
    pub(crate) async fn expect_h1(&self, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let h1 = self.text_of("h1").await;
            if h1 == want {
                return;
            }
            assert!(Instant::now() < deadline, "heading is {h1:?}, not {want:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The page's text once it contains `needle` (the page after a form post may take a moment
    /// to replace the one before it).
    pub(crate) async fn wait_text(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let body = self.body_text().await;
            if body.contains(needle) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "page never showed {needle:?}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) async fn body_text(&self) -> String {
        self.text_of("body").await
    }

    pub(crate) async fn fill(&self, css: &str, value: &str) {
        let e = self.c().find(Locator::Css(css)).await.expect(css);
        e.clear().await.expect("clear");
        e.send_keys(value).await.expect("type");
    }

    pub(crate) async fn click(&self, css: &str) {
        self.c()
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
            .click()
            .await
            .expect("click");
    }

    /// Click "Verify in this browser" and wait for the outcome: (result attribute, text shown).
    pub(crate) async fn verify_in_page(&self) -> (String, String) {
        self.click("#verify-button").await;
        let out = self
            .c()
            .wait()
            .at_most(Duration::from_secs(15))
            .for_element(Locator::Css("#verify-out[data-verify-result]"))
            .await
            .expect("verification finished");
        let result = out
            .attr("data-verify-result")
            .await
            .expect("attr")
            .unwrap_or_default();
        (result, out.text().await.expect("text"))
    }

    pub(crate) async fn close(mut self) {
        if let Some(c) = self.client.take() {
            let _ = c.close().await;
        }
    }
}

/// The main walk through the shell, as a user would do it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_shell_works_in_a_real_browser() {
    // A browser is heavy on two cores: never beside a four-validator network, whose timeouts
    // it would stretch.
    let _one = crate::bft::ONE_NETWORK.lock().await;
    let node = NodeProc::start().await;
    let b = Browser::start().await;
    let url = &node.url;
    let c = b.c();

    // Start page and explorer (English by default: the browser asks for en-US).
    c.goto(url).await.expect("home");
    assert!(b.text_of("h1").await.contains("Trellis"));
    b.shot("home").await;
    c.goto(&format!("{url}/explorer")).await.expect("explorer");
    b.expect_h1("Chain explorer").await;
    b.wait_text("Latest blocks").await;
    b.shot("explorer").await;

    // Language switch: Chinese, remembered across pages, then back.
    b.click("a[hreflang='zh-CN']").await;
    b.expect_h1("区块浏览器").await;
    b.wait_text("最新区块").await;
    b.shot("explorer-zh").await;
    c.goto(&format!("{url}/explorer/blocks"))
        .await
        .expect("blocks");
    b.expect_h1("区块").await;
    b.click("a[hreflang='en']").await;
    b.expect_h1("Blocks").await;
    b.shot("blocks").await;

    // A block appears live: note the top row, commit a transaction, wait for its row.
    c.goto(&format!("{url}/explorer")).await.expect("explorer");
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#live-status[data-state='connected']"))
        .await
        .expect("SSE stream connected");
    let tx_id = node.anchor("live-doc-1").await;
    let tx: Value = reqwest::get(format!("{url}/api/v1/txs/{tx_id}"))
        .await
        .expect("tx")
        .json()
        .await
        .expect("json");
    let height = tx["height"].as_u64().expect("height");
    c.wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css(&format!(
            "tbody#live-blocks tr[data-height='{height}']"
        )))
        .await
        .expect("the new block's row appears without a reload");
    b.shot("explorer-live").await;

    // Block, transaction, account and state pages.
    c.goto(&format!("{url}/explorer/blocks/{height}"))
        .await
        .expect("block");
    b.expect_h1(&format!("Block #{height}")).await;
    b.wait_text(&tx_id[..10]).await;
    b.shot("block").await;
    c.goto(&format!("{url}/explorer/txs/{tx_id}"))
        .await
        .expect("tx page");
    let body = b.wait_text("notary").await;
    assert!(body.contains("notary") && body.contains("anchor") && body.contains("live-doc-1"));
    assert!(body.contains("anchored"), "the receipt's event is listed");
    let qr_width = c
        .execute(
            "const i = document.querySelector('img.qr-img'); return i && i.complete ? i.naturalWidth : 0;",
            vec![],
        )
        .await
        .expect("qr");
    assert!(qr_width.as_u64().unwrap_or(0) > 0, "the QR image loads");

    // In-browser verification: passes for the real bundle …
    let (result, shown) = b.verify_in_page().await;
    assert_eq!(result, "ok", "{shown}");
    assert!(shown.contains("Verified in this browser"), "{shown}");
    assert!(shown.contains("✓"), "the checks are listed: {shown}");
    b.shot("tx-verified").await;

    // … and fails when what the server sends is tampered with (a man in the middle, say).
    c.refresh().await.expect("reload");
    c.execute(
        r#"const real = window.fetch;
           window.fetch = async (...a) => {
             const r = await real(...a);
             const j = await r.json();
             const h = j.header;
             const flip = (h[h.length - 1] === '0') ? '1' : '0';
             j.header = h.slice(0, -1) + flip;
             return new Response(JSON.stringify(j), { status: 200, headers: { 'content-type': 'application/json' } });
           };"#,
        vec![],
    )
    .await
    .expect("install tampering fetch");
    let (result, shown) = b.verify_in_page().await;
    assert_eq!(result, "fail", "{shown}");
    assert!(shown.contains("Verification failed"), "{shown}");
    b.shot("tx-tampered").await;

    let admin_key = {
        let ks = Keystore::open(node.dir.path().join("keystore")).expect("keystore");
        ks.public_key("acme-admin").expect("pk").to_text()
    };
    c.goto(&format!("{url}/explorer/accounts/{admin_key}"))
        .await
        .expect("account");
    let body = b.wait_text("acme/admin").await;
    assert!(
        body.contains("acme/admin") && body.contains("org_admin"),
        "{body}"
    );
    b.shot("account").await;
    c.goto(&format!(
        "{url}/explorer/state?contract=notary&key=doc%2Flive-doc-1"
    ))
    .await
    .expect("state");
    let body = b.wait_text("\"by\": \"acme/admin\"").await;
    assert!(body.contains("\"by\": \"acme/admin\""), "{body}");
    let (result, shown) = b.verify_in_page().await;
    assert_eq!(result, "ok", "{shown}");
    b.shot("state").await;

    // Admin pages need a signed-in user.
    c.goto(&format!("{url}/admin/members"))
        .await
        .expect("admin");
    assert!(
        c.current_url()
            .await
            .expect("url")
            .path()
            .starts_with("/signin")
    );

    // Sign in: wrong password first (message shown), then right.
    b.fill("#f-username", "acme-admin").await;
    b.fill("#f-password", "wrong password").await;
    b.click("form.form button[type='submit']").await;
    b.wait_text("Wrong username or password.").await;
    assert_eq!(
        c.find(Locator::Css("#f-password"))
            .await
            .expect("field")
            .prop("value")
            .await
            .expect("value")
            .unwrap_or_default(),
        "",
        "passwords are never echoed back"
    );
    b.shot("signin-error").await;
    let password = node.password_of("acme-admin");
    b.fill("#f-username", "acme-admin").await;
    b.fill("#f-password", &password).await;
    b.click("form.form button[type='submit']").await;
    b.wait_text("Acme Dairy Co.").await;
    assert_eq!(
        c.current_url().await.expect("url").path(),
        "/admin/members",
        "back where the user was going"
    );
    assert!(b.text_of(".user-name").await.contains("acme-admin"));
    b.shot("admin-members").await;
    let source = c.source().await.expect("source");
    assert!(!source.contains(&password), "no secret in the page");

    // A form with errors, shown next to their fields, then corrected.
    b.fill("#f-name", "Bad Name!").await;
    b.fill("#f-roles", "operator, Not-A-Role").await;
    b.fill("#f-password", "short").await;
    b.click("form.form button[type='submit']").await;
    let name_err = b.text_of("#f-name-error").await;
    assert!(name_err.contains("letters, digits"), "{name_err}");
    assert!(b.text_of("#f-roles-error").await.contains("lower-case"));
    assert!(b.text_of("#f-password-error").await.contains("At least 10"));
    assert_eq!(
        c.find(Locator::Css("#f-name"))
            .await
            .expect("name")
            .attr("aria-invalid")
            .await
            .expect("attr")
            .as_deref(),
        Some("true")
    );
    b.shot("admin-members-errors").await;
    b.fill("#f-name", "bob").await;
    b.fill("#f-roles", "operator").await;
    b.fill("#f-password", "bob's long password").await;
    b.click("form.form button[type='submit']").await;
    let body = b.wait_text("Member registered on chain.").await;
    assert!(body.contains("Member registered on chain."), "{body}");
    assert!(body.contains("acme-bob"), "bob got a web sign-in: {body}");
    b.shot("admin-members-added").await;

    // The other admin pages render.
    for (path, heading, shot) in [
        ("/admin/keys", "Keys", "admin-keys"),
        (
            "/admin/organisations",
            "Organisations",
            "admin-organisations",
        ),
        ("/admin/devices", "Devices", "admin-devices"),
        ("/admin/governance", "Governance", "admin-governance"),
    ] {
        c.goto(&format!("{url}{path}")).await.expect("admin page");
        assert!(b.text_of("h1").await.starts_with(heading), "{path}");
        b.shot(shot).await;
    }
    let orgs = {
        c.goto(&format!("{url}/admin/organisations"))
            .await
            .expect("orgs");
        b.wait_text("SwiftCold Logistics").await
    };
    assert!(orgs.contains("SwiftCold Logistics") && orgs.contains("Market Regulator"));

    // Governance: propose admitting an organisation (a field error first).
    c.goto(&format!("{url}/admin/governance"))
        .await
        .expect("gov");
    b.fill("#f-org_id", "newco").await;
    b.fill("#f-org_name", "NewCo Ltd").await;
    b.fill("#f-admin_name", "admin").await;
    b.fill("#f-admin_key", "not-a-key").await;
    b.click("form.form button[type='submit']").await;
    assert!(b.text_of("#f-admin_key-error").await.contains("public key"));
    b.fill("#f-admin_key", &admin_key).await;
    b.click("form.form button[type='submit']").await;
    // The admin key is already registered: the contract refuses with its stable code.
    let body = b.wait_text("The chain refused this").await;
    assert!(body.contains("The chain refused this"), "{body}");
    let fresh_key = chain_core::crypto::SigningKey::generate(chain_core::crypto::SigAlg::Ed25519)
        .public_key()
        .to_text();
    c.goto(&format!("{url}/admin/governance"))
        .await
        .expect("gov");
    b.fill("#f-org_id", "newco").await;
    b.fill("#f-org_name", "NewCo Ltd").await;
    b.fill("#f-admin_name", "admin").await;
    b.fill("#f-admin_key", &fresh_key).await;
    b.click("form.form button[type='submit']").await;
    let body = b.wait_text("Proposal submitted on chain.").await;
    assert!(body.contains("Proposal submitted on chain."), "{body}");
    assert!(body.contains("admit_organisation newco"), "{body}");
    b.shot("admin-governance-proposed").await;

    // Rotate bob's key: the chain records the new key, the old one is marked rotated.
    c.goto(&format!("{url}/admin/keys")).await.expect("keys");
    let bob_key = c
        .execute(
            r#"const row = [...document.querySelectorAll('tbody tr')].find(r => r.textContent.includes('bob'));
               return row ? row.querySelector("input[name='public_key']").value : null;"#,
            vec![],
        )
        .await
        .expect("bob's key");
    let bob_key = bob_key
        .as_str()
        .expect("bob has a custodial key")
        .to_string();
    c.execute(
        "document.querySelector(`form[action='/admin/keys/rotate'] input[value='${arguments[0]}']`).form.submit();",
        vec![json!(bob_key)],
    )
    .await
    .expect("rotate");
    b.wait_text("Key rotated").await;
    let acc: Value = reqwest::get(format!("{url}/api/v1/accounts/{bob_key}"))
        .await
        .expect("account")
        .json()
        .await
        .expect("json");
    assert_eq!(acc["key_status"], "rotated", "{acc}");
    b.shot("admin-keys-rotated").await;

    // Two more organisations approve: with 3 of 4 the proposal passes.
    for org in ["swiftcold", "freshmart"] {
        b.click("form[action='/signout'] button").await;
        assert!(b.text_of(".user a").await.contains("Sign in"));
        c.goto(&format!("{url}/signin?next=/admin/governance"))
            .await
            .expect("signin");
        let user = format!("{org}-admin");
        b.fill("#f-username", &user).await;
        b.fill("#f-password", &node.password_of(&user)).await;
        b.click("form.form button[type='submit']").await;
        b.expect_h1("Governance").await;
        b.click("form[action='/admin/governance/vote'] input[value='true'] ~ button")
            .await;
        b.wait_text("Vote recorded on chain.").await;
    }
    let body = b.wait_text("approved").await;
    assert!(body.contains("approved"), "{body}");
    b.shot("admin-governance-approved").await;
    c.goto(&format!("{url}/admin/organisations"))
        .await
        .expect("orgs");
    b.wait_text("NewCo Ltd").await;

    // The shell on a phone-sized screen.
    c.set_window_size(390, 844).await.expect("resize");
    c.goto(&format!("{url}/explorer/txs/{tx_id}"))
        .await
        .expect("tx");
    b.shot("tx-phone").await;
    let too_wide = c
        .execute(
            r#"if (document.documentElement.scrollWidth <= window.innerWidth + 1) return null;
               const w = [...document.querySelectorAll('body *')]
                 .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
                 .map(e => e.tagName + '.' + e.className);
               return w.slice(0, 5).join(', ');"#,
            vec![],
        )
        .await
        .expect("layout");
    assert_eq!(too_wide, Value::Null, "no sideways scrolling on a phone");
    c.set_window_size(1200, 900).await.expect("resize");

    // Sign out; sign in as bob (an operator): no admin actions, and the server refuses a
    // forged admin request even with a valid form token.
    b.click("form[action='/signout'] button").await;
    assert!(b.text_of(".user a").await.contains("Sign in"));
    c.goto(&format!("{url}/signin")).await.expect("signin");
    b.fill("#f-username", "acme-bob").await;
    b.fill("#f-password", "bob's long password").await;
    b.click("form.form button[type='submit']").await;
    b.wait_text("acme-bob").await;
    c.goto(&format!("{url}/admin/members"))
        .await
        .expect("members");
    b.wait_text("Only organisation administrators").await;
    assert!(
        c.find(Locator::Css("#f-name")).await.is_err(),
        "no add form for operators"
    );
    let status = c
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
               const csrf = document.querySelector("input[name='csrf']").value;
               fetch('/admin/members/roles', { method: 'POST',
                 headers: { 'content-type': 'application/x-www-form-urlencoded' },
                 body: new URLSearchParams({ csrf, member: 'acme/admin', roles: 'operator' }) })
                 .then(r => done(r.status), e => done(String(e)));"#,
            vec![],
        )
        .await
        .expect("forged request");
    assert_eq!(status, json!(403), "role checked on the server");
    b.shot("admin-members-operator").await;

    b.close().await;
    // The admin's roles are unchanged on chain.
    let acc: Value = reqwest::get(format!("{url}/api/v1/accounts/{admin_key}"))
        .await
        .expect("account")
        .json()
        .await
        .expect("json");
    assert_eq!(acc["roles"], json!(["org_admin"]));
}

/// Security headers, CSRF and sign-in rate limiting over plain HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_carry_security_headers_and_forms_refuse_forgeries_and_floods() {
    let node = NodeProc::start().await;
    let url = &node.url;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let r = client
        .get(format!("{url}/explorer"))
        .header("accept-language", "zh-CN,zh;q=0.9,en;q=0.5")
        .send()
        .await
        .expect("page");
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    let csp = h["content-security-policy"].to_str().expect("csp");
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-frame-options"], "DENY");
    assert!(h.contains_key("referrer-policy"));
    let csrf_cookie = h
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("trellis_csrf="))
        .expect("anonymous CSRF cookie")
        .to_string();
    assert!(csrf_cookie.contains("HttpOnly") && csrf_cookie.contains("SameSite=Strict"));
    let html = r.text().await.expect("html");
    assert!(
        html.contains("<html lang=\"zh-CN\""),
        "Accept-Language picks Chinese"
    );
    assert!(html.contains("区块浏览器"));
    // Pieces built before the page shell (search form, table cells) are translated too.
    assert!(
        html.contains(">搜索<") && !html.contains(">Search<"),
        "{html}"
    );
    assert!(!html.contains("<script>"), "no inline scripts");

    // A form post without the token is refused and changes nothing.
    let r = client
        .post(format!("{url}/signin"))
        .form(&[("username", "acme-admin"), ("password", "x")])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 403);
    let r = client
        .post(format!("{url}/admin/members"))
        .form(&[("name", "eve"), ("password", "0123456789ab")])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 403);

    // Unknown pages: a real 404 page in the shell.
    let r = client
        .get(format!("{url}/no/such/page"))
        .send()
        .await
        .expect("404");
    assert_eq!(r.status(), 404);
    assert!(r.text().await.expect("html").contains("Not found."));
    // QR images: SVG for a link, a clear refusal for oversized or missing data.
    let r = client
        .get(format!(
            "{url}/qr.svg?data=https%3A%2F%2Fexample.com%2F01%2F09506000134352"
        ))
        .send()
        .await
        .expect("qr");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/svg+xml");
    assert!(r.text().await.expect("svg").starts_with("<svg"));
    for bad in [String::new(), "x".repeat(2000)] {
        let r = client
            .get(format!("{url}/qr.svg?data={bad}"))
            .send()
            .await
            .expect("qr");
        assert_eq!(r.status(), 400);
    }
    let r = client
        .get(format!("{url}/explorer/txs/zz"))
        .send()
        .await
        .expect("bad id");
    assert_eq!(r.status(), 404);

    // Sign-in flood from one address: refused with 429 and Retry-After before long, and the
    // right password does not get through while limited.
    let token = csrf_cookie
        .split(';')
        .next()
        .and_then(|kv| kv.split_once('='))
        .map(|(_, v)| v.to_string())
        .expect("token");
    let cookie = format!("trellis_csrf={token}");
    let mut limited = None;
    for i in 0..30 {
        let r = client
            .post(format!("{url}/signin"))
            .header("cookie", &cookie)
            .form(&[
                ("csrf", token.as_str()),
                ("username", "acme-admin"),
                ("password", "guess"),
            ])
            .send()
            .await
            .expect("post");
        if r.status() == 429 {
            assert!(r.headers().contains_key("retry-after"));
            limited = Some(i);
            break;
        }
        assert_eq!(r.status(), 401);
    }
    let limited = limited.expect("sign-in attempts are rate limited");
    assert!(limited <= 10, "limited after {limited} attempts");
    let r = client
        .post(format!("{url}/signin"))
        .header("cookie", &cookie)
        .form(&[
            ("csrf", token.as_str()),
            ("username", "acme-admin"),
            ("password", node.password_of("acme-admin").as_str()),
        ])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 429);
    assert!(
        r.headers()
            .get("set-cookie")
            .is_none_or(|c| !c.to_str().unwrap_or("").starts_with("trellis_session"))
    );
}

/// The JavaScript verifier gives the same verdict and error code as the Rust verifier, on real
/// bundles and on tampered copies of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_verifier_agrees_with_the_rust_verifier() {
    // A browser is heavy on two cores: never beside a four-validator network, whose timeouts
    // it would stretch.
    let _one = crate::bft::ONE_NETWORK.lock().await;
    let node = NodeProc::start().await;
    let url = &node.url;
    let tx_id = node.anchor("agree-doc").await;
    let get = |path: String| async move {
        reqwest::get(format!("{url}{path}"))
            .await
            .expect("get")
            .json::<Value>()
            .await
            .expect("json")
    };
    let tx_bundle = get(format!("/api/v1/txs/{tx_id}/proof")).await;
    let present = get("/api/v1/state/notary/doc%2Fagree-doc".into()).await["proof"].clone();
    assert!(
        present["claim"]["value"].is_string(),
        "the anchored document is present"
    );
    let absent = get("/api/v1/state/notary/never-written".into()).await["proof"].clone();
    let genesis: Value = serde_json::from_slice(
        &std::fs::read(node.dir.path().join("genesis.json")).expect("genesis"),
    )
    .expect("json");
    let genesis: chain_core::genesis::Genesis = serde_json::from_value(genesis).expect("genesis");
    let trusted: ValidatorSet = genesis.validator_set().expect("set");
    let trusted_hex = hex::encode(trusted.encode());

    // Tampered variants: one byte of each hex field, the chain id, the format, the claim.
    let mut cases: Vec<(String, Value)> = Vec::new();
    for (name, b) in [
        ("tx", &tx_bundle),
        ("present", &present),
        ("absent", &absent),
    ] {
        cases.push((format!("{name}: as served"), b.clone()));
        for field in ["header", "commit", "validator_set"] {
            for pos in [0usize, 7, 40, 101] {
                let mut t = b.clone();
                if flip_hex(&mut t[field], pos) {
                    cases.push((format!("{name}: {field}[{pos}] flipped"), t));
                }
            }
        }
        let mut t = b.clone();
        t["chain_id"] = json!("another-chain");
        cases.push((format!("{name}: chain id"), t));
        let mut t = b.clone();
        t["format"] = json!("trellis-proof/0");
        cases.push((format!("{name}: format"), t));
    }
    for (field, positions) in [("tx", vec![0, 30, 90]), ("receipt", vec![0, 20])] {
        for pos in positions {
            let mut t = tx_bundle.clone();
            if flip_hex(&mut t["claim"][field], pos) {
                cases.push((format!("tx: claim.{field}[{pos}] flipped"), t));
            }
        }
    }
    let mut t = tx_bundle.clone();
    t["claim"]["index"] = json!(tx_bundle["claim"]["index"].as_u64().unwrap_or(0) + 1);
    cases.push(("tx: index".into(), t));
    let mut t = present.clone();
    if flip_hex(&mut t["claim"]["value"], 3) {
        cases.push(("present: value flipped".into(), t));
    }
    let mut t = absent.clone();
    t["claim"]["value"] = json!("7b7d");
    cases.push(("absent: claimed present".into(), t));
    if let Some(s) = present["claim"]["siblings"].as_array()
        && !s.is_empty()
    {
        let mut t = present.clone();
        flip_hex(&mut t["claim"]["siblings"][0], 5);
        cases.push(("present: sibling flipped".into(), t));
    }

    let b = Browser::start().await;
    // A page of the node, so the verifier script is loaded in a secure (localhost) context.
    b.c().goto(&format!("{url}/explorer")).await.expect("page");
    let mut agreed = 0;
    for (name, bundle) in &cases {
        let rust = match serde_json::from_value::<ProofBundle>(bundle.clone()) {
            Ok(pb) => match verify_bundle(&pb, &trusted) {
                Ok(_) => None,
                Err(e) => Some(e.code.to_string()),
            },
            Err(_) => Some("malformed".to_string()),
        };
        let js = b
            .c()
            .execute_async(
                r#"const [bundle, trusted, done] = arguments;
                   window.TrellisVerify.verifyBundle(bundle, trusted)
                     .then(r => done({ ok: r.ok, code: r.code }), e => done({ ok: false, code: 'threw: ' + e }));"#,
                vec![bundle.clone(), json!(trusted_hex)],
            )
            .await
            .expect("run verifier");
        let js_code = js["code"].as_str().map(str::to_string);
        assert_eq!(
            (js["ok"].as_bool(), js_code.clone()),
            (Some(rust.is_none()), rust.clone()),
            "{name}: browser says {js}, Rust says {rust:?}"
        );
        agreed += 1;
    }
    assert!(agreed >= 40, "only {agreed} cases");
    // The valid ones really were valid, and the tampered ones really failed.
    assert!(
        cases
            .iter()
            .filter(|(n, _)| n.ends_with("as served"))
            .count()
            == 3
    );
    b.close().await;
}

/// Flip the low bit of the hex digit at `pos` of a hex string value; false if too short.
fn flip_hex(v: &mut Value, pos: usize) -> bool {
    let Some(s) = v.as_str() else { return false };
    if pos >= s.len() {
        return false;
    }
    let mut bytes = s.as_bytes().to_vec();
    let d = u8::from_str_radix(&s[pos..pos + 1], 16).unwrap_or(0) ^ 1;
    bytes[pos] = format!("{d:x}").as_bytes()[0];
    *v = Value::String(String::from_utf8(bytes).unwrap_or_default());
    true
}
