//! The web console (docs/console.md) in a real headless Chromium, driven through
//! chromedriver (WebDriver, `fantoccini`), against a real `vt server` with real microVMs:
//! sign in as the console user, create a workspace from the default template and see it
//! become running without a reload, open it in a new tab and see code-server's workbench on
//! the workspace origin, add a port, be refused a workspace that fits nowhere and stop the
//! one the refusal names with its button, delete it (through the confirmation); then a
//! deployed busybox service: its env page with a deploy's phases and an instance's live log.
//! Screenshots of each page go to a directory the test prints (under the target directory).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{acme_with_busybox, spawn_vt_server_captured, vt_at};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// `chromium` and `chromedriver` on PATH, or why not (a skip, or a failure under `CI=true`).
fn chromium_or_skip() -> Option<(PathBuf, PathBuf)> {
    let find = |name: &str| {
        std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|f| f.is_file()))
    };
    if let (Some(browser), Some(driver)) = (find("chromium"), find("chromedriver")) {
        return Some((browser, driver));
    }
    let why = "the console test needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; scripts/test.sh does)";
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why}");
    }
    eprintln!("SKIPPED: {why}");
    None
}

/// chromedriver in its own process group, stopped with everything it started (Chromium)
/// when dropped, so a failing test leaves no browser behind.
struct Driver(Child);

impl Driver {
    fn start(binary: &Path, port: u16) -> Driver {
        use std::os::unix::process::CommandExt as _;
        let child = Command::new(binary)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        Driver(child)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        std::thread::sleep(Duration::from_millis(500));
        let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
        let _ = self.0.wait();
    }
}

/// Everything the test does in the browser, with the screenshots it saves.
struct Browser {
    c: Client,
    shots: PathBuf,
}

impl Browser {
    /// The first element `css` matches, waited for up to `within`.
    async fn wait(&self, css: &str, within: Duration) -> fantoccini::elements::Element {
        let began = Instant::now();
        loop {
            if let Ok(e) = self.c.find(Locator::Css(css)).await {
                return e;
            }
            if began.elapsed() > within {
                let _ = self.shot("failed").await;
                let text = self.text("body").await;
                panic!("`{css}` did not appear within {within:?}; the page says:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Wait until `css`'s text contains `needle`.
    async fn wait_text(&self, css: &str, needle: &str, within: Duration) -> String {
        let began = Instant::now();
        loop {
            let text = self.text(css).await;
            if text.contains(needle) {
                return text;
            }
            if began.elapsed() > within {
                let _ = self.shot("failed").await;
                panic!("`{css}` did not show {needle:?} within {within:?}; it shows:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Wait until nothing matches `css`.
    async fn wait_gone(&self, css: &str, within: Duration) {
        let began = Instant::now();
        while self.c.find(Locator::Css(css)).await.is_ok() {
            if began.elapsed() > within {
                let _ = self.shot("failed").await;
                panic!("`{css}` was still there after {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn text(&self, css: &str) -> String {
        match self.c.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    async fn click(&self, css: &str) {
        self.wait(css, Duration::from_secs(10)).await.click().await.unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Replace what the input `css` holds with `text`, by keystrokes (as a person would: the
    /// app sees each change, which WebDriver's clear does not make it see).
    async fn retype(&self, css: &str, text: &str) {
        use fantoccini::key::Key;
        let input = self.wait(css, Duration::from_secs(5)).await;
        input.send_keys(&(Key::Control + "a")).await.unwrap();
        input.send_keys(&Key::Backspace.to_string()).await.unwrap();
        input.send_keys(text).await.unwrap();
        assert_eq!(input.prop("value").await.unwrap().as_deref(), Some(text), "{css}");
    }

    async fn js(&self, script: &str) -> Value {
        self.c.execute(script, vec![]).await.unwrap_or_else(|e| panic!("{script}: {e}"))
    }

    async fn shot(&self, name: &str) -> PathBuf {
        let png = self.c.screenshot().await.unwrap();
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// A mark in the page's JavaScript state: if it is still there later, the page was not reloaded.
    async fn mark(&self) -> Value {
        self.js("window.__vtMark = window.__vtMark || String(Math.random()); return window.__vtMark;").await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_drives_workspaces_and_shows_a_service_in_chromium() {
    if vt_runtime::testing::guest_or_skip("the console test", &["/bin/busybox"]).is_none() {
        return;
    }
    let Some((chromium, chromedriver)) = chromium_or_skip() else { return };
    let Some(layout) = common::workspace_template() else { return };
    let began = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = common::plain_server_args(
        &data,
        &["--workspace-template", layout.to_str().unwrap(), "--workspace-access-every", "1s"],
    );
    let (_server, url, output) =
        spawn_vt_server_captured(dir.path(), &args.iter().map(String::as_str).collect::<Vec<_>>());
    let text = String::from_utf8_lossy(&output.lock().unwrap()).into_owned();
    let ws_origin = text
        .lines()
        .find_map(|l| l.strip_prefix("workspaces on "))
        .and_then(|l| l.split_once("/workspace/").map(|(origin, _)| origin.to_owned()))
        .unwrap_or_else(|| panic!("no workspace origin announced: {text}"));
    let password = std::fs::read_to_string(data.join("console-password")).unwrap().trim().to_owned();

    // A busybox service that prints a numbered line every second: its env page shows it.
    let image = acme_with_busybox(dir.path(), &data, &url);
    let manifest = dir.path().join("vt.toml");
    std::fs::write(
        &manifest,
        "schema_version = 1\n\n[processes.web]\ncommand = [\"/bin/sh\", \"-c\", \"i=0; while true; do i=$((i+1)); echo tick $i; sleep 1; done\"]\nresources = { cpu = 0.5, memory_mib = 256 }\n",
    )
    .unwrap();
    vt_at(dir.path(), &data, &url, &["deploy", "--wait", "--image", &image, "--manifest", manifest.to_str().unwrap()]);
    let service_ready = began.elapsed();

    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();
    println!("screenshots in {}", shots.display());

    // Dropped after the driver (which takes its Chromium with it), so nothing writes to it then.
    let profile = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let _driver = Driver::start(&chromedriver, port);
    let caps = json!({
        "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1366,900", format!("--user-data-dir={}", profile.path().display())],
        }
    });
    let caps: serde_json::Map<String, Value> = caps.as_object().unwrap().clone();
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = {
        let began = Instant::now();
        loop {
            match ClientBuilder::new(connector.clone())
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(c) => break c,
                Err(_) if began.elapsed() < Duration::from_secs(20) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("chromedriver did not start a session: {e}"),
            }
        }
    };
    let b = Browser { c: client, shots: shots.clone() };
    let result = drive(&b, &url, &ws_origin, &password).await;
    let _ = b.c.close().await;
    let steps = result.unwrap_or_else(|e| panic!("{}", e.replace(&password, "[console password]")));
    println!(
        "console test: service deployed in {service_ready:?}; {steps}; whole test {:?}\nscreenshots: {}",
        began.elapsed(),
        shots.display()
    );
}

/// The browser part; returns the timings it measured.
async fn drive(b: &Browser, url: &str, ws_origin: &str, password: &str) -> Result<String, String> {
    let api = url.strip_prefix("http://").unwrap();
    // Sign in: the console user's credentials in the first navigation answer its basic challenge;
    // the browser keeps them for the realm, and the app's /v1 calls use them (docs/console.md).
    b.c.goto(&format!("http://vt:{password}@{api}/app/workspaces")).await.map_err(|e| e.to_string())?;
    b.wait("#ws-name", Duration::from_secs(20)).await;
    b.wait("#no-workspaces", Duration::from_secs(20)).await;
    let mark = b.mark().await;
    assert_eq!(b.text("#ws-org").await, "acme");

    // Create `dev` (2 vCPUs, 2 GiB of memory, a 2 GiB home: the disk budget counts it whole)
    // and watch it become running, with no reload.
    b.retype("#ws-name", "dev").await;
    b.retype("#ws-memory", "2048").await;
    b.retype("#ws-disk", "2").await;
    b.shot("01-workspaces-create-form").await;
    let created = Instant::now();
    b.click("#ws-create").await;
    b.wait("#create-progress", Duration::from_secs(20)).await;
    b.wait("#ws-dev", Duration::from_secs(20)).await;
    b.shot("02-workspace-starting").await;
    b.wait("#ws-dev[data-status=running]", Duration::from_secs(600)).await;
    let running_in = created.elapsed();
    b.wait_text("#create-progress", "ready", Duration::from_secs(5)).await;
    assert_eq!(b.mark().await, mark, "the page was reloaded");
    b.shot("03-workspace-running").await;

    // An API error is shown with its message and request id: the name is taken.
    b.wait("#ws-name", Duration::from_secs(5)).await.send_keys("dev").await.map_err(|e| e.to_string())?;
    b.click("#ws-create").await;
    let error = b.wait_text("form.create .error", "name_taken", Duration::from_secs(20)).await;
    assert!(error.contains("request id req_"), "{error}");

    // Open: a new tab on the workspace origin (a link, nothing loaded into this origin).
    let link = b.wait("#ws-dev a.open", Duration::from_secs(5)).await;
    let href = link.attr("href").await.map_err(|e| e.to_string())?.unwrap_or_default();
    assert_eq!(href, format!("{ws_origin}/workspace/dev/"));
    assert_eq!(link.attr("target").await.map_err(|e| e.to_string())?.as_deref(), Some("_blank"));
    let console_tab = b.c.window().await.map_err(|e| e.to_string())?;
    link.click().await.map_err(|e| e.to_string())?;
    let began = Instant::now();
    let tab = loop {
        let windows = b.c.windows().await.map_err(|e| e.to_string())?;
        if let Some(w) = windows.into_iter().find(|w| *w != console_tab) {
            break w;
        }
        assert!(began.elapsed() < Duration::from_secs(10), "no new tab opened");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    b.c.switch_to_window(tab).await.map_err(|e| e.to_string())?;
    // The workspace origin asks for the console user itself (its own basic challenge): a person
    // types the password into the browser's prompt; headless Chromium gets it in the URL.
    let ws_host = ws_origin.strip_prefix("http://").unwrap();
    b.c.goto(&format!("http://vt:{password}@{ws_host}/workspace/dev/?folder=/home/vt"))
        .await
        .map_err(|e| e.to_string())?;
    let opened = Instant::now();
    b.wait(".monaco-workbench", Duration::from_secs(300)).await;
    let workbench_in = opened.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    b.shot("04-workspace-code-server").await;
    // Where the tab is, without the credentials it was given (never printed).
    let here = b.c.current_url().await.map_err(|e| e.to_string())?;
    let at = format!("{}:{}{}", here.host_str().unwrap_or(""), here.port().unwrap_or(0), here.path());
    assert_eq!(at, format!("{ws_host}/workspace/dev/"), "the workbench's tab");
    b.c.close_window().await.map_err(|e| e.to_string())?;
    b.c.switch_to_window(console_tab).await.map_err(|e| e.to_string())?;

    // A port: added from the row's panel, listed with its link and the 502 note.
    b.click("#ws-dev button.ports").await;
    b.wait("#ports-dev .port-input", Duration::from_secs(5))
        .await
        .send_keys("3000")
        .await
        .map_err(|e| e.to_string())?;
    b.click("#ports-dev .port-add").await;
    let ports = b.wait_text("#ports-dev", "/workspace/dev/port/3000/", Duration::from_secs(20)).await;
    assert!(ports.contains("502"), "{ports}");
    let port_link = b.wait("#ports-dev a[href$='/workspace/dev/port/3000/']", Duration::from_secs(5)).await;
    assert_eq!(port_link.attr("target").await.map_err(|e| e.to_string())?.as_deref(), Some("_blank"));
    b.shot("05-workspace-port").await;
    // By keyboard: Enter adds a second one; its Remove button takes it away again.
    b.retype("#ports-dev .port-input", "3001").await;
    b.wait("#ports-dev .port-input", Duration::from_secs(5))
        .await
        .send_keys(&fantoccini::key::Key::Enter.to_string())
        .await
        .map_err(|e| e.to_string())?;
    b.wait_text("#ports-dev", "/workspace/dev/port/3001/", Duration::from_secs(20)).await;
    b.click("#ports-dev button[aria-label='Remove port 3001']").await;
    let began = Instant::now();
    while b.text("#ports-dev").await.contains("/port/3001/") {
        assert!(began.elapsed() < Duration::from_secs(20), "port 3001 was not removed");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(b.text("#ports-dev").await.contains("/workspace/dev/port/3000/"));

    // A workspace that fits on no node: the capacity rejection names the running workspace
    // accessed least recently, with a button that stops it (the row's Stop calls the same API).
    assert!(b.c.find(Locator::Css("#ws-dev button.stop")).await.is_ok(), "a running workspace offers Stop");
    b.retype("#ws-name", "big").await;
    b.retype("#ws-memory", "262144").await;
    b.click("#ws-create").await;
    let error = b.wait_text("form.create .error", "capacity_exhausted", Duration::from_secs(20)).await;
    assert!(error.contains("vt workspace stop dev"), "{error}");
    assert_eq!(b.text("#stop-lru").await, "Stop dev");
    b.shot("06-workspace-capacity").await;
    b.click("#stop-lru").await;
    b.wait("#ws-dev[data-status=stopped]", Duration::from_secs(180)).await;
    assert!(b.c.find(Locator::Css("#ws-big")).await.is_err(), "a rejected workspace is not listed");
    // The creation's progress is shown until the workspace moves on.
    b.wait_gone("#create-progress", Duration::from_secs(5)).await;

    // Delete, through the confirmation that says it is irreversible: Escape cancels it (the
    // focus is on Cancel), the second time it is confirmed.
    b.click("#ws-dev button.delete").await;
    b.wait("dialog.confirm[open]", Duration::from_secs(5)).await;
    let focused = b.c.active_element().await.map_err(|e| e.to_string())?;
    assert_eq!(focused.text().await.map_err(|e| e.to_string())?, "Cancel");
    focused.send_keys(&fantoccini::key::Key::Escape.to_string()).await.map_err(|e| e.to_string())?;
    b.wait_gone("dialog.confirm", Duration::from_secs(5)).await;
    b.wait("#ws-dev[data-status=stopped]", Duration::from_secs(1)).await;
    b.click("#ws-dev button.delete").await;
    let dialog = b.wait_text("dialog.confirm", "irreversible", Duration::from_secs(5)).await;
    assert!(dialog.contains("Delete workspace dev?"), "{dialog}");
    b.shot("07-workspace-delete-confirm").await;
    b.click("#confirm-button").await;
    b.wait("#no-workspaces", Duration::from_secs(180)).await;
    assert_eq!(b.mark().await, mark, "the page was reloaded");

    // Services: orgs → acme → web → prod, by links (no reload).
    b.click("#nav-services").await;
    b.click("#orgs a").await;
    b.wait_text("#apps", "web", Duration::from_secs(10)).await;
    b.click("#apps a").await;
    b.wait_text("#envs", "prod", Duration::from_secs(10)).await;
    b.click("#envs a").await;
    b.wait(".deploy .phase.reached[data-phase=healthy]", Duration::from_secs(30)).await;
    let deploys = b.text("#deploys").await;
    for phase in ["scheduled", "image_ready", "booted", "healthy"] {
        assert!(deploys.contains(phase), "{deploys}");
    }
    assert!(b.text("#describe").await.contains("none"), "desired and running match");
    b.wait_text("#instances", "running", Duration::from_secs(30)).await;
    b.shot("08-env").await;

    // An instance's log, followed: a line, then a newer one, without reloading.
    b.click("#instances button.follow-log").await;
    let first = b.wait_text("#live-log", "tick ", Duration::from_secs(30)).await;
    let last =
        |t: &str| t.lines().filter_map(|l| l.rsplit("tick ").next()?.trim().parse::<u64>().ok()).max().unwrap_or(0);
    let seen = last(&first);
    let began = Instant::now();
    while last(&b.text("#live-log").await) <= seen {
        assert!(began.elapsed() < Duration::from_secs(30), "no new log line after tick {seen}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    b.shot("09-env-live-log").await;

    // The org's event stream.
    b.click(".crumbs a[href='/app/orgs/acme']").await;
    b.click("#org-events").await;
    b.wait_text("#events", "workspace.deleted", Duration::from_secs(20)).await;
    b.shot("10-org-events").await;
    assert_eq!(b.mark().await, mark, "the page was reloaded");

    // Nothing of the workspace origin (or any other) was loaded into the console's origin.
    let origins =
        b.js("return [...new Set(performance.getEntriesByType('resource').map(e => new URL(e.name).origin))];").await;
    assert_eq!(origins, json!([url]), "resources the console loaded");
    Ok(format!("workspace running in {running_in:?}, workbench shown in {workbench_in:?}"))
}
