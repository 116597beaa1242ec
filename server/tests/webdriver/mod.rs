//! The browser test's WebDriver plumbing: chromedriver as a child process, and a thin layer
//! over `fantoccini` (the W3C WebDriver client) whose methods panic with the call that failed,
//! as a test wants, and poll the page for a condition.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

/// Where the browser and its driver are, as `scripts/setup-chromium.sh` found them (installing
/// the Debian packages when missing). Panics with the script's own reason when they cannot be
/// had: a browser test that cannot run fails, it never skips.
pub struct Browsers {
    pub chromium: PathBuf,
    pub chromedriver: PathBuf,
}

pub fn setup_browsers() -> Browsers {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/setup-chromium.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser test needs headless Chromium and chromedriver (Debian packages chromium and chromium-driver), and {} could not provide them: {}",
        script.display(),
        stderr.trim()
    );
    let find = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("{} printed no {key}= line: {stdout}", script.display()))
    };
    Browsers {
        chromium: find("CHROMIUM"),
        chromedriver: find("CHROMEDRIVER"),
    }
}

/// A chromedriver child process, killed when dropped (also when a test panics).
pub struct Driver {
    child: Child,
    pub url: String,
}

impl Drop for Driver {
    /// Ends chromedriver and the browsers it started: they share its process group, so a
    /// test that panics before closing its session leaves no Chromium behind.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    pub async fn start(chromedriver: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// A headless Chromium session that accepts the dev CA's self-signed certificates. Retried
    /// for up to 20 s while chromedriver starts listening.
    pub async fn session(&self, chromium: &Path) -> Session {
        let caps = json!({
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": chromium.to_string_lossy(),
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--no-first-run", "--disable-dev-shm-usage", "--window-size=1280,1100"
                ]
            }
        });
        let Value::Object(caps) = caps else {
            unreachable!("a JSON object literal")
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&self.url)
                .await
            {
                Ok(client) => return Session { client },
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!(
                    "no WebDriver session from chromedriver at {}: {e}",
                    self.url
                ),
            }
        }
    }
}

/// One browser session.
pub struct Session {
    client: Client,
}

impl Session {
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("WebDriver goto {url}: {e}"));
    }

    /// The first element matching a CSS selector.
    pub async fn find(&self, css: &str) -> Element {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("WebDriver find {css}: {e}"))
    }

    /// Every element matching a CSS selector.
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        self.client
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("WebDriver find_all {css}: {e}"))
    }

    pub async fn click(&self, element: &Element) {
        element
            .click()
            .await
            .unwrap_or_else(|e| panic!("WebDriver click: {e}"));
    }

    pub async fn clear(&self, element: &Element) {
        element
            .clear()
            .await
            .unwrap_or_else(|e| panic!("WebDriver clear: {e}"));
    }

    pub async fn type_text(&self, element: &Element, text: &str) {
        element
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("WebDriver send_keys: {e}"));
    }

    pub async fn text(&self, element: &Element) -> String {
        element
            .text()
            .await
            .unwrap_or_else(|e| panic!("WebDriver text: {e}"))
    }

    pub async fn attribute(&self, element: &Element, name: &str) -> Option<String> {
        element
            .attr(name)
            .await
            .unwrap_or_else(|e| panic!("WebDriver attribute {name}: {e}"))
    }

    /// Runs `script` (a function body) in the page and returns its value.
    pub async fn script(&self, script: &str) -> Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("WebDriver script {script}: {e}"))
    }

    /// Polls `script` until it returns `true`.
    pub async fn wait_for(&self, script: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.script(script).await != Value::Bool(true) {
            if Instant::now() > deadline {
                let page = self.script("return document.body.innerText").await;
                panic!("timed out waiting for {what}; the page reads: {page}");
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    pub async fn resize(&self, width: u32, height: u32) {
        self.client
            .set_window_size(width, height)
            .await
            .unwrap_or_else(|e| panic!("WebDriver resize: {e}"));
    }

    /// Saves a PNG screenshot of the viewport.
    pub async fn screenshot(&self, path: &Path) {
        let png = self
            .client
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("WebDriver screenshot: {e}"));
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}
