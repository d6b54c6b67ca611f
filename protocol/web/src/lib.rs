//! dfs's HTTP side door: the master's status page and every server's `/metrics`.
//!
//! - [`server`]: a small, bounded HTTP/1.1 server: GET and HEAD only, one request per
//!   connection, headers capped and timed, connections capped. It serves
//!   observability, not data, so it needs none of a general web stack.
//! - [`request`]: the parsed request line: path and query parameters, percent-decoded.
//! - [`reply`]: what a handler answers, with the content types used here.
//! - [`metrics`]: encoding a `prometheus-client` registry for a scrape.

pub mod metrics;
pub mod reply;
pub mod request;
pub mod server;

pub use reply::Reply;
pub use request::Request;
pub use server::{serve, Handler};
