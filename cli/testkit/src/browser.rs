//! Headless Chromium driven over WebDriver (chromedriver), for end-to-end tests of
//! the status page: load it, run script in it, wait for what it shows, screenshot.
//!
//! Chromium and chromedriver come from Debian's packages (`chromium`,
//! `chromium-driver`), which `.ci/test` installs when missing; a test that needs
//! them fails, never skips, when they are absent. Only loopback pages are loaded,
//! and Chromium's own background networking is switched off.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::http::http_request;
use crate::wait::wait_until;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// One browser session; the driver (and its browser) is killed when dropped.
#[derive(Debug)]
pub struct Browser {
    driver: tokio::process::Child,
    addr: String,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a headless session.
    pub async fn start() -> Browser {
        for tool in [CHROMEDRIVER, CHROMIUM] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: `.ci/test` installs chromium and chromium-driver \
                 (apt-get install chromium chromium-driver)"
            );
        }
        let port = crate::cluster::free_port();
        let addr = format!("127.0.0.1:{port}");
        // The profile, and every temp file Chromium makes (its TMPDIR), live in one
        // dir removed with the session, so nothing is left in /tmp.
        let profile = tempfile::tempdir().expect("profile dir");
        let driver = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .env("TMPDIR", profile.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        wait_until(
            Duration::from_secs(30),
            "chromedriver to listen",
            || async { tokio::net::TcpStream::connect(&addr).await.is_ok() },
        )
        .await;
        let args = [
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=1280,1800".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let (status, body) =
            http_request(&addr, "POST", "/session", Some(&capabilities.to_string())).await;
        assert_eq!(status, 200, "new session: {body}");
        let answer: Value = serde_json::from_str(&body).expect("session JSON");
        let session = answer["value"]["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        Browser {
            driver,
            addr,
            session,
            _profile: profile,
        }
    }

    async fn command(&self, method: &str, what: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}/{what}", self.session);
        let body = body.map(|b| b.to_string());
        let (status, answer) = http_request(&self.addr, method, &path, body.as_deref()).await;
        assert_eq!(status, 200, "{what}: {answer}");
        let v: Value = serde_json::from_str(&answer).expect("WebDriver JSON");
        v["value"].clone()
    }

    /// Loads `url` and waits for it to load.
    pub async fn goto(&self, url: &str) {
        self.command("POST", "url", Some(json!({ "url": url })))
            .await;
    }

    /// Runs `script` (a function body: `return ...`) in the page; its result.
    pub async fn eval(&self, script: &str) -> Value {
        self.command(
            "POST",
            "execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Waits up to `limit` for `script` to return true in the page (else the test fails).
    pub async fn wait_for(&self, limit: Duration, script: &str) {
        wait_until(limit, script, || async {
            self.eval(script).await == Value::Bool(true)
        })
        .await
    }

    /// Saves a PNG screenshot of the page to `path`.
    pub async fn screenshot(&self, path: &Path) -> PathBuf {
        let shot = self.command("GET", "screenshot", None).await;
        let png = decode_base64(shot.as_str().expect("base64 PNG"));
        std::fs::write(path, png).expect("write screenshot");
        path.to_path_buf()
    }

    /// Ends the session and stops the driver.
    pub async fn close(mut self) {
        let path = format!("/session/{}", self.session);
        let _ = http_request(&self.addr, "DELETE", &path, None).await;
        let _ = self.driver.kill().await;
    }
}

fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for v in text.bytes().filter_map(value) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn decodes_base64() {
        assert_eq!(super::decode_base64("aGVsbG8gd29ybGQ="), b"hello world");
        assert_eq!(super::decode_base64("iVBORw0KGgo="), b"\x89PNG\r\n\x1a\n");
    }
}
