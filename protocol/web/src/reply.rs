//! What a handler answers: a status, a content type and a body.

use bytes::Bytes;

/// The content type of a Prometheus scrape in the OpenMetrics text format.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Bytes,
}

impl Reply {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
        Reply {
            status,
            content_type,
            body: body.into(),
        }
    }

    pub fn html(body: impl Into<Bytes>) -> Reply {
        Reply::new(200, "text/html; charset=utf-8", body)
    }

    pub fn json(body: impl Into<Bytes>) -> Reply {
        Reply::new(200, "application/json", body)
    }

    pub fn metrics(body: impl Into<Bytes>) -> Reply {
        Reply::new(200, OPENMETRICS, body)
    }

    /// An error as JSON `{"error": ...}`, which the status page shows as is.
    pub fn error(status: u16, message: &str) -> Reply {
        let escaped: String = message
            .chars()
            .flat_map(|c| match c {
                '"' => "\\\"".chars().collect::<Vec<_>>(),
                '\\' => "\\\\".chars().collect(),
                c if (c as u32) < 0x20 => format!("\\u{:04x}", c as u32).chars().collect(),
                c => vec![c],
            })
            .collect();
        Reply::new(
            status,
            "application/json",
            format!("{{\"error\":\"{escaped}\"}}"),
        )
    }

    pub fn not_found() -> Reply {
        Reply::error(404, "not found")
    }

    pub(crate) fn reason(status: u16) -> &'static str {
        match status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            431 => "Request Header Fields Too Large",
            500 => "Internal Server Error",
            503 => "Service Unavailable",
            _ => "Unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_json_with_escapes() {
        let r = Reply::error(400, "a \"b\"\\\n");
        assert_eq!(
            r.body,
            Bytes::from("{\"error\":\"a \\\"b\\\"\\\\\\u000a\"}")
        );
    }
}
