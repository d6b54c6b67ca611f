//! A `prometheus-client` registry as a scrape's answer.

use prometheus_client::registry::Registry;

use crate::Reply;

/// The registry in the OpenMetrics text format, or a 500 naming why not.
pub fn scrape(registry: &Registry) -> Reply {
    let mut text = String::with_capacity(8 << 10);
    match prometheus_client::encoding::text::encode(&mut text, registry) {
        Ok(()) => Reply::metrics(text),
        Err(e) => Reply::error(500, &format!("encoding metrics: {e}")),
    }
}
