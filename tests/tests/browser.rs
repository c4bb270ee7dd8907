//! The web UI in a real browser: Debian's headless Chromium, driven over WebDriver
//! (chromedriver + fantoccini), against `portcullis serve` started from the real binary.
//!
//! A vendor enrolls (the TOTP secret read from the enrollment page, as a person would type it
//! into an authenticator) and requests access; a supervisor approves it with a TOTP step-up; an
//! auditor sees both events in the log and verifies the chain. Then the vendor connects with
//! `portcullis connect` and moves bytes; the supervisor's Grants page shows the live session,
//! its byte count rises without a reload, and the "End session" button ends it (the vendor's
//! `connect` says who ended it and why). Every page visited is saved as a PNG under
//! `target/browser-screenshots/`.
//!
//! `.ci/run` installs `chromium` and `chromium-driver`. Without them this test fails and says
//! how to install them; `PORTCULLIS_SKIP_BROWSER=1` skips it explicitly (and says so).
//!
//! The broker checks TOTP codes against the real wall clock (this is the real binary, with no
//! test clock), and a code's 30 s step works once per user. A user who needs a third code
//! therefore waits for the next step; [`Authenticator`] does that, and only then.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use fantoccini::{Client, ClientBuilder, Locator};
use portcullis_testkit::devices::EchoDevice;
use portcullis_testkit::portcullis_bin;
use sha2::Digest as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;
use common::{Authenticator, Reaped};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

static SHOTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// The broker's data directory, set up through the CLI as an admin would.
struct DataDir(PathBuf);

/// The running broker, and the key its certificate pins in the browsers.
struct Broker {
    _child: Reaped,
    base: String,
    spki_pin: String,
}

impl DataDir {
    fn admin(&self, args: &[&str]) -> String {
        let out = Command::new(portcullis_bin())
            .arg("--data-dir")
            .arg(&self.0)
            .arg("admin")
            .args(args)
            .env_remove("PORTCULLIS_DATABASE_URL")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "admin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn add_user(&self, name: &str, role: &str, org: Option<&str>) -> String {
        let mut args = vec!["user", "add", name, "--role", role, "--format", "json"];
        if let Some(org) = org {
            args.extend(["--org", org]);
        }
        let v: serde_json::Value = serde_json::from_str(&self.admin(&args)).unwrap();
        v["enrollment_code"].as_str().unwrap().to_owned()
    }

    /// The SHA-256 of the server certificate's public key, base64: what Chromium's
    /// `--ignore-certificate-errors-spki-list` pins. The browser trusts exactly this key (our
    /// dev CA is not in its store) and still refuses any other certificate.
    fn spki_pin(&self) -> String {
        let pem = std::fs::read(self.0.join("tls/server.pem")).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        let cert = pem.parse_x509().unwrap();
        let digest = sha2::Sha256::digest(cert.tbs_certificate.subject_pki.raw);
        base64::engine::general_purpose::STANDARD.encode(digest)
    }
}

#[allow(clippy::zombie_processes)] // reaped by `Reaped`'s Drop
fn start_broker(data: &DataDir) -> Broker {
    let mut child = Command::new(portcullis_bin())
        .arg("--data-dir")
        .arg(&data.0)
        .args(["serve", "--web-listen", "127.0.0.1:0"])
        .args(["--relay-listen", "127.0.0.1:0"])
        .args(["--time-zone", "Europe/Berlin"])
        .env_remove("PORTCULLIS_DATABASE_URL")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let child = Reaped(child);
    loop {
        let line = lines.next().expect("serve printed its address").unwrap();
        if let Some(rest) = line.strip_prefix("web: ") {
            let base = rest.split_whitespace().next().unwrap().to_owned();
            std::thread::spawn(move || lines.for_each(drop));
            return Broker {
                _child: child,
                base,
                spki_pin: data.spki_pin(),
            };
        }
    }
}

/// chromedriver on a free loopback port, and the browsers it starts.
struct Driver {
    _child: Reaped,
    url: String,
    profiles: tempfile::TempDir,
    screenshots: PathBuf,
}

#[allow(clippy::zombie_processes)] // reaped by `Reaped`'s Drop
async fn start_driver() -> Driver {
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = Reaped(child);
    let url = format!("http://127.0.0.1:{port}");
    // Readiness, not timing: poll until chromedriver accepts connections (bounded).
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            let screenshots = target_dir().join("browser-screenshots");
            std::fs::create_dir_all(&screenshots).unwrap();
            return Driver {
                _child: child,
                url,
                profiles: tempfile::tempdir().unwrap(),
                screenshots,
            };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("chromedriver did not start listening on {url}");
}

impl Driver {
    /// A fresh headless Chromium with its own profile (so its own cookies): one per person.
    async fn browser(&self, who: &str, spki_pin: &str) -> Client {
        let profile = self.profiles.path().join(who);
        let caps = serde_json::json!({
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.display()),
                    format!("--ignore-certificate-errors-spki-list={spki_pin}"),
                ],
            }
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("chromedriver starts a headless Chromium")
    }
}

/// One person at one browser, with the helpers a test reads like a script.
struct Person {
    name: &'static str,
    c: Client,
    base: String,
    shots: PathBuf,
}

impl Person {
    fn by_testid(id: &str) -> String {
        format!("[data-testid=\"{id}\"]")
    }

    async fn open(&mut self, path: &str) {
        self.c.goto(&format!("{}{path}", self.base)).await.unwrap();
    }

    async fn find(&self, id: &str) -> fantoccini::elements::Element {
        let found = self
            .c
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(&Self::by_testid(id)))
            .await;
        match found {
            Ok(el) => el,
            Err(e) => {
                let url = self.c.current_url().await.map(|u| u.to_string());
                let page = self.c.source().await.unwrap_or_default();
                panic!(
                    "{}: no [data-testid={id}] on {url:?}: {e}\n{page}",
                    self.name
                )
            }
        }
    }

    /// The texts of every element with `id`, once the page's URL contains `query`; read again
    /// while the page replaces them under the reader.
    async fn texts_after(&self, query: &str, id: &str) -> Vec<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let url = self.c.current_url().await.unwrap().to_string();
            if url.contains(query) {
                self.find(id).await;
                let cells = self
                    .c
                    .find_all(Locator::Css(&Self::by_testid(id)))
                    .await
                    .unwrap();
                let mut texts = Vec::new();
                let mut stale = false;
                for c in cells {
                    match c.text().await {
                        Ok(t) => texts.push(t),
                        Err(_) => stale = true,
                    }
                }
                if !stale {
                    return texts;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no page with {query} and readable {id} elements: {url}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn text(&self, id: &str) -> String {
        self.find(id).await.text().await.unwrap()
    }

    async fn fill(&self, id: &str, value: &str) {
        let el = self.find(id).await;
        el.clear().await.unwrap();
        el.send_keys(value).await.unwrap();
    }

    async fn click(&self, id: &str) {
        self.find(id).await.click().await.unwrap();
    }

    /// The page title element, after the navigation a click started has finished.
    async fn title(&self) -> String {
        self.text("page-title").await
    }

    async fn path(&self) -> String {
        self.c.current_url().await.unwrap().path().to_owned()
    }

    /// An attribute of the element with `data-testid` `id`.
    async fn attr(&self, id: &str, name: &str) -> String {
        self.find(id)
            .await
            .attr(name)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{}: [data-testid={id}] has no {name}", self.name))
    }

    /// Whether an element with `data-testid` `id` is on the page now (no waiting).
    async fn has(&self, id: &str) -> bool {
        self.c
            .find(Locator::Css(&Self::by_testid(id)))
            .await
            .is_ok()
    }

    /// Saves the page as `NN-<person>-<what>.png` and checks it is a PNG.
    async fn screenshot(&self, what: &str) {
        let png = self.c.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        // One sequence across people, so the files list in the order the story happened.
        let n = SHOTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let file = self.shots.join(format!("{n:02}-{}-{what}.png", self.name));
        std::fs::write(file, png).unwrap();
    }

    /// The enrollment page: password, then the QR code and its key, then a first code.
    async fn enroll(&mut self, code: &str, password: &str) -> Authenticator {
        self.open(&format!("/enroll?code={code}")).await;
        assert_eq!(self.text("enroll-username").await, self.name);
        self.screenshot("enroll-password").await;
        self.fill("password", password).await;
        self.fill("confirm", password).await;
        self.click("enroll-submit").await;
        let qr = self.find("qr").await;
        let svg = qr.html(true).await.unwrap();
        assert!(svg.contains("<svg"), "the QR code is rendered in the page");
        let mut app = Authenticator::from_base32(&self.text("totp-secret").await);
        self.screenshot("enroll-qr").await;
        let first = app.next_code().await;
        self.fill("totp", &first).await;
        self.click("enroll-confirm-submit").await;
        // Enrolled: back at the login form, with a notice.
        self.find("login-form").await;
        assert!(self.text("flash").await.to_lowercase().contains("enrol"));
        app
    }

    async fn login(&mut self, password: &str, app: &mut Authenticator) {
        self.open("/login").await;
        assert!(!self.text("banner").await.is_empty(), "system-use banner");
        self.fill("username", self.name).await;
        self.fill("password", password).await;
        self.screenshot("login").await;
        self.click("login-submit").await;
        self.find("mfa-form").await;
        self.screenshot("login-totp").await;
        let code = app.next_code().await;
        self.fill("totp", &code).await;
        self.click("mfa-submit").await;
        let who = self.text("whoami").await;
        assert!(who.contains(self.name), "logged in as {}: {who}", self.name);
    }
}

async fn person(driver: &Driver, broker: &Broker, name: &'static str) -> Person {
    Person {
        name,
        c: driver.browser(name, &broker.spki_pin).await,
        base: broker.base.clone(),
        shots: driver.screenshots.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vendor_requests_supervisor_approves_with_step_up_auditor_verifies_in_chromium() {
    if std::env::var_os("PORTCULLIS_SKIP_BROWSER").is_some() {
        eprintln!("SKIPPED: PORTCULLIS_SKIP_BROWSER is set; the browser test did not run");
        return;
    }
    for tool in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: `apt-get install chromium chromium-driver` (.ci/run does), \
             or set PORTCULLIS_SKIP_BROWSER=1 to skip this test knowingly"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    // Inventory and people first (the CLI writes the same database `serve` then opens).
    let setup = DataDir(dir.path().join("data"));
    setup.admin(&["org", "add", "acme"]);
    let vera_code = setup.add_user("vera", "vendor", Some("acme"));
    let sam_code = setup.add_user("sam", "supervisor", None);
    let ada_code = setup.add_user("ada", "auditor", None);
    setup.admin(&[
        "device",
        "add",
        "plc-7",
        "--address",
        "10.1.2.7",
        "--ports",
        "502,80",
        "--orgs",
        "acme",
    ]);
    // A device the tunnel really reaches, for the live session (named after plc-7, so the
    // request form still offers plc-7 first).
    let tank = EchoDevice::start().await;
    let tank_port = tank.addr().port().to_string();
    setup.admin(&[
        "device",
        "add",
        "tank-3",
        "--address",
        "127.0.0.1",
        "--ports",
        &tank_port,
        "--orgs",
        "acme",
    ]);
    let broker = start_broker(&setup);
    let driver = start_driver().await;
    let password = "correct horse battery staple plant";
    let shots = driver.screenshots.clone();
    for old in std::fs::read_dir(&shots).unwrap() {
        std::fs::remove_file(old.unwrap().path()).unwrap();
    }

    // The supervisor enrolls and logs in first: the step-up later needs a third TOTP step.
    let mut sam = person(&driver, &broker, "sam").await;
    let mut sam_app = sam.enroll(&sam_code, password).await;
    sam.login(password, &mut sam_app).await;
    assert_eq!(sam.path().await, "/queue");

    // The vendor enrolls, logs in, and asks for Modbus on plc-7 for the next hour.
    let mut vera = person(&driver, &broker, "vera").await;
    let mut vera_app = vera.enroll(&vera_code, password).await;
    vera.login(password, &mut vera_app).await;
    assert_eq!(vera.path().await, "/requests");
    vera.screenshot("requests-empty").await;
    vera.open("/devices").await;
    assert!(vera.text("devices").await.contains("plc-7"));
    vera.screenshot("devices").await;
    vera.open("/requests").await;
    vera.click("new-request").await;
    assert!(vera.text("device-select").await.contains("plc-7"));
    vera.click("device-choose").await;
    // The form offers exactly the policy's ports, in the plant's time zone.
    vera.find("port-502").await;
    vera.find("port-80").await;
    assert!(vera.text("request-form").await.contains("Europe/Berlin"));
    vera.click("port-502").await;
    vera.fill("reason", "Firmware diagnostics on the line-3 PLC")
        .await;
    vera.fill("ticket", "CASE-4711").await;
    vera.screenshot("new-request").await;
    vera.click("request-submit").await;
    let row = vera.find("request-row").await;
    let request_id = row
        .attr("data-id")
        .await
        .unwrap()
        .expect("rows carry their id");
    assert!(vera.text("requests").await.contains("plc-7"));
    assert_eq!(vera.text("state").await, "requested");
    vera.screenshot("requested").await;

    // The supervisor's queue, open since the login, shows it by itself (issue 15): the page
    // looks every 10 s and reloads because its list changed; nobody navigates.
    let row = format!("[data-testid=\"request-row\"][data-id=\"{request_id}\"]");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while sam.c.find(Locator::Css(&row)).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the queue did not show request {request_id} by itself within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(sam.path().await, "/queue");
    assert!(sam.text("requests").await.contains("Firmware diagnostics"));
    // The supervisor opens it, and approves with a fresh code.
    sam.open("/queue").await;
    sam.screenshot("queue").await;
    sam.open(&format!("/requests/{request_id}")).await;
    assert!(
        sam.text("device").await.contains("10.1.2.7"),
        "inventory data"
    );
    assert_eq!(sam.text("ports").await, "502");
    sam.screenshot("request-detail").await;
    let step_up = sam_app.next_code().await;
    sam.fill("approve-totp", &step_up).await;
    sam.click("approve-submit").await;
    assert!(
        sam.text("flash").await.to_lowercase().contains("approved"),
        "approval confirmed"
    );
    sam.screenshot("approved").await;
    sam.open("/grants").await;
    assert!(sam.text("grants").await.contains("plc-7"));
    sam.screenshot("grants").await;

    // The vendor's list now shows the grant with its countdown.
    vera.open("/requests").await;
    assert_eq!(
        vera.text("state").await,
        "active",
        "approved, and inside its window"
    );
    vera.find("countdown").await;
    vera.screenshot("granted").await;

    // The auditor finds both events, filters by device, and verifies the chain.
    let mut ada = person(&driver, &broker, "ada").await;
    let mut ada_app = ada.enroll(&ada_code, password).await;
    ada.login(password, &mut ada_app).await;
    assert_eq!(ada.path().await, "/audit");
    ada.fill("filter-device", "plc-7").await;
    ada.click("filter-submit").await;
    // The unfiltered page has an events table too: read the cells only once the filtered page
    // has loaded, and read them again if that page replaced them meanwhile (stale elements).
    let actions = ada.texts_after("device=plc-7", "event-action").await;
    for wanted in ["request.create", "request.approve"] {
        assert!(
            actions.iter().any(|a| a == wanted),
            "{wanted} in the filtered log: {actions:?}"
        );
    }
    ada.screenshot("audit-filtered").await;
    ada.click("verify-link").await;
    let verdict = ada.find("verify-result").await;
    assert_eq!(
        verdict.attr("data-intact").await.unwrap().as_deref(),
        Some("true"),
        "{}",
        verdict.text().await.unwrap()
    );
    assert_eq!(ada.title().await, "Verify the audit log");
    ada.screenshot("verify").await;

    // The vendor connects to tank-3 with the command line; the supervisor approves in the
    // browser, then watches the live session on the Grants page.
    let mut cli = common::Vendor {
        config: tempfile::tempdir().unwrap(),
        person: common::Person {
            name: "vera".into(),
            auth: vera_app,
        },
        prefix: Vec::new(),
    };
    let ca = setup.0.join("tls/ca.pem");
    cli.login_to(&broker.base, &ca, password).await;
    let live_grant = cli.request("tank-3", &tank_port, "+1h");
    sam.open(&format!("/requests/{live_grant}")).await;
    let step_up = sam_app.next_code().await;
    sam.fill("approve-totp", &step_up).await;
    sam.click("approve-submit").await;
    assert!(sam.text("flash").await.to_lowercase().contains("approved"));
    let tunnel = cli.connect(live_grant, &[], 1).await;
    let port: u16 = tank_port.parse().unwrap();
    let mut tcp = TcpStream::connect(tunnel.local(port)).await.unwrap();
    echo(&mut tcp, 4096).await;

    sam.open("/grants").await;
    assert!(sam.text("live-sessions").await.contains("tank-3"));
    assert!(sam.text("attention").await.contains("1 live"), "top bar");
    // Marked, to tell a reload (which would lose the mark) from the script's refresh.
    sam.c
        .execute("window.portcullisNoReload = true;", vec![])
        .await
        .unwrap();
    let before: u64 = sam.attr("bytes-up", "data-bytes").await.parse().unwrap();
    sam.screenshot("live-session").await;
    echo(&mut tcp, 256 * 1024).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now: u64 = sam.attr("bytes-up", "data-bytes").await.parse().unwrap();
        if now >= before + 256 * 1024 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the byte count stayed at {now} (was {before})"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let same_page = sam
        .c
        .execute("return window.portcullisNoReload === true;", vec![])
        .await
        .unwrap();
    assert_eq!(
        same_page,
        serde_json::json!(true),
        "updated without a reload"
    );
    sam.screenshot("live-session-grown").await;

    // End session: a reason (and a code, should the step-up have gone stale), then the button.
    sam.fill("end-reason", "wrong tank").await;
    if sam.has("end-totp").await {
        let code = sam_app.next_code().await;
        sam.fill("end-totp", &code).await;
    }
    sam.click("end-submit").await;
    assert!(
        sam.text("flash").await.contains("Session ended"),
        "the end is confirmed"
    );
    let (status, lines) = tunnel.exit().await;
    assert_eq!(status.code(), Some(3), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l == "session ended (ended_by_supervisor): ended by sam: wrong tank"),
        "{lines:?}"
    );
    // The row goes from the page by itself once the relay has ended the session.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while sam.has("live-session").await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ended session stayed on the page"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        sam.find("live-empty").await.is_displayed().await.unwrap(),
        "says there is none"
    );
    sam.screenshot("live-session-ended").await;

    for p in [sam, vera, ada] {
        p.c.close().await.unwrap();
    }
    let saved = std::fs::read_dir(&shots).unwrap().count();
    assert!(
        saved >= 15,
        "a screenshot of each page: {saved} in {shots:?}"
    );
}

/// Writes `n` bytes through the tunnel and reads them back from the echo device.
async fn echo(s: &mut TcpStream, n: usize) {
    let data = vec![0x42; n];
    s.write_all(&data).await.unwrap();
    let mut back = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut back))
        .await
        .expect("the echo comes back")
        .unwrap();
}
