//! The accept loop and one connection's exchange. Bounded everywhere: at most
//! `MAX_CONNECTIONS` at once, a request's head within `HEAD_LIMIT` bytes and
//! `HEAD_TIMEOUT`, the answer written within `WRITE_TIMEOUT`, one request per
//! connection. Anything else on the port gets a 4xx or is dropped; the server goes on.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::request::BadRequest;
use crate::{Reply, Request};

/// Connections served at once; more wait in the accept queue.
const MAX_CONNECTIONS: usize = 64;
/// The request line and headers together.
const HEAD_LIMIT: usize = 8 << 10;
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// A handler that takes longer is answered 503.
const HANDLER_TIMEOUT: Duration = Duration::from_secs(30);

/// Answers requests; shared by every connection.
pub type Handler =
    Arc<dyn Fn(Request) -> Pin<Box<dyn Future<Output = Reply> + Send>> + Send + Sync>;

/// Serves `listener` with `handler` until `shutdown`, then waits for the
/// connections in flight (each bounded by the timeouts above).
pub async fn serve(listener: TcpListener, handler: Handler, shutdown: CancellationToken) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let tracker = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let handler = handler.clone();
        let stop = shutdown.clone();
        tracker.spawn(
            async move {
                let _permit = permit;
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = exchange(stream, handler) => {}
                }
            }
            .instrument(tracing::debug_span!("http", %peer)),
        );
    }
    tracker.close();
    tracker.wait().await;
}

/// One request and its answer.
async fn exchange(mut stream: TcpStream, handler: Handler) {
    let reply = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)).await {
        Err(_) => Some((Reply::error(408, "request head too slow"), false)),
        Ok(Err(reply)) => reply.map(|r| (r, false)),
        Ok(Ok(request)) => {
            let head = request.head;
            let path = request.path.clone();
            let reply = tokio::time::timeout(HANDLER_TIMEOUT, handler(request))
                .await
                .unwrap_or_else(|_| Reply::error(503, "took too long"));
            tracing::debug!(%path, status = reply.status, "http request");
            Some((reply, head))
        }
    };
    if let Some((reply, head_only)) = reply {
        let _ =
            tokio::time::timeout(WRITE_TIMEOUT, write_reply(&mut stream, &reply, head_only)).await;
    }
}

/// Reads up to the end of the headers; `Err(Some(reply))` answers a bad request,
/// `Err(None)` drops a connection that closed or failed.
async fn read_head(stream: &mut TcpStream) -> Result<Request, Option<Reply>> {
    let mut buf = vec![0u8; HEAD_LIMIT];
    let mut filled = 0;
    loop {
        if let Some(end) = find_end(&buf[..filled]) {
            let head = std::str::from_utf8(&buf[..end])
                .map_err(|_| Some(Reply::error(400, "the request head is not UTF-8")))?;
            let line = head.lines().next().unwrap_or("");
            return Request::parse_line(line).map_err(|e| {
                Some(match e {
                    BadRequest::Malformed(why) => Reply::error(400, why),
                    BadRequest::Method(m) => {
                        Reply::error(405, &format!("{m} is not served here; use GET"))
                    }
                })
            });
        }
        if filled == buf.len() {
            return Err(Some(Reply::error(431, "request head too large")));
        }
        match stream.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => return Err(None),
            Ok(n) => filled += n,
        }
    }
}

/// Where the blank line that ends the head is (also a bare `\n\n`).
fn find_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = buf.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

async fn write_reply(
    stream: &mut TcpStream,
    reply: &Reply,
    head_only: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\ncache-control: no-store\r\nx-content-type-options: nosniff\r\nconnection: close\r\n\r\n",
        reply.status,
        Reply::reason(reply.status),
        reply.content_type,
        reply.body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if !head_only {
        stream.write_all(&reply.body).await?;
    }
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: std::net::SocketAddr, raw: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(raw).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_gets_and_survives_garbage() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler: Handler = Arc::new(|r: Request| {
            Box::pin(async move {
                match r.path.as_str() {
                    "/hi" => {
                        Reply::json(format!("{{\"who\":\"{}\"}}", r.param("who").unwrap_or("")))
                    }
                    _ => Reply::not_found(),
                }
            })
        });
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(listener, handler, stop.clone()));

        let ok = get(addr, b"GET /hi?who=me HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.ends_with("{\"who\":\"me\"}"), "{ok}");
        let head = get(addr, b"HEAD /hi HTTP/1.1\r\n\r\n").await;
        assert!(
            head.starts_with("HTTP/1.1 200") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        assert!(get(addr, b"GET /nope HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 404"));
        assert!(get(addr, b"POST /hi HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 405"));
        assert!(get(addr, b"\x00\x01garbage\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 400"));
        let huge = vec![b'a'; HEAD_LIMIT + 10];
        assert!(get(addr, &huge).await.starts_with("HTTP/1.1 431"));
        // A connection that says nothing and closes is simply dropped.
        drop(TcpStream::connect(addr).await.unwrap());
        assert!(get(addr, b"GET /hi HTTP/1.0\n\n")
            .await
            .starts_with("HTTP/1.1 200"));

        stop.cancel();
        server.await.unwrap();
    }
}
