//! A minimal HTTP GET for tests of the status page and `/metrics`: raw bytes over
//! loopback TCP, so a test sees exactly what a browser or Prometheus would.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `GET path` from `addr`: the status code and the body. Panics on a connection
/// failure or an answer that is not HTTP (a test failure).
pub async fn http_get(addr: &str, path: &str) -> (u16, String) {
    http_request(addr, "GET", path, None).await
}

/// `METHOD path` to `addr` with an optional JSON body: the status code and the body.
pub async fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    json: Option<&str>,
) -> (u16, String) {
    let exchange = async {
        let mut s = TcpStream::connect(addr)
            .await
            .expect("connect to the http port");
        let body = json.unwrap_or("");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(request.as_bytes()).await.expect("send");
        // Read to the end, or (a server that keeps the connection open, such as
        // chromedriver) to the length its head announced.
        let mut raw = Vec::new();
        let mut piece = [0u8; 16 << 10];
        loop {
            if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
                let length = head.lines().find_map(|l| {
                    l.strip_prefix("content-length:")
                        .and_then(|v| v.trim().parse::<usize>().ok())
                });
                if length.is_some_and(|n| raw.len() >= split + 4 + n) {
                    break;
                }
            }
            let n = s.read(&mut piece).await.expect("read the answer");
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&piece[..n]);
        }
        raw
    };
    let raw = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .expect("an answer within 30 s");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let body = &raw[split + 4..];
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    // A chunked answer (chromedriver's) is joined back together.
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_vec()
    };
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&rest[..eol]);
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        let after = &rest[eol + 2..];
        if n == 0 || after.len() < n {
            break;
        }
        out.extend_from_slice(&after[..n]);
        rest = after[n..].strip_prefix(b"\r\n").unwrap_or(&after[n..]);
    }
    out
}

/// The value of the Prometheus sample `name` (with its labels, exactly as printed)
/// in a `/metrics` page.
pub fn metric_sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}
