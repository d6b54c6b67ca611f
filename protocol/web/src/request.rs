//! The part of an HTTP request a handler sees: the path and the query parameters,
//! percent-decoded, parsed from a request line that has already been length-checked.

/// A GET (or HEAD) request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub path: String,
    pub query: Vec<(String, String)>,
    /// HEAD: answer with the headers only.
    pub head: bool,
}

/// Why a request line was refused; the text goes back in a 400 or 405.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BadRequest {
    /// Not a `METHOD TARGET HTTP/1.x` line, or a target that does not decode.
    Malformed(&'static str),
    /// A method other than GET or HEAD.
    Method(String),
}

impl Request {
    /// The value of the first query parameter called `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Parses `GET /path?a=b HTTP/1.1`.
    pub fn parse_line(line: &str) -> Result<Request, BadRequest> {
        let mut parts = line.split(' ');
        let (Some(method), Some(target), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(BadRequest::Malformed("not an HTTP request line"));
        };
        if !version.starts_with("HTTP/1.") {
            return Err(BadRequest::Malformed("not HTTP/1.x"));
        }
        let head = match method {
            "GET" => false,
            "HEAD" => true,
            other => return Err(BadRequest::Method(other.chars().take(16).collect())),
        };
        if !target.starts_with('/') {
            return Err(BadRequest::Malformed("the target must be a path"));
        }
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let path = decode(path, false).ok_or(BadRequest::Malformed("bad escape in the path"))?;
        let mut params = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = decode(k, true).ok_or(BadRequest::Malformed("bad escape in the query"))?;
            let v = decode(v, true).ok_or(BadRequest::Malformed("bad escape in the query"))?;
            params.push((k, v));
        }
        Ok(Request {
            path,
            query: params,
            head,
        })
    }
}

/// Percent-decodes `s` (and `+` as a space in a query); `None` for a bad escape or
/// bytes that are not UTF-8.
fn decode(s: &str, plus_is_space: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths_and_decodes_queries() {
        let r = Request::parse_line("GET /api/ls?path=%2Fa%20b&x=1+2&flag HTTP/1.1").unwrap();
        assert_eq!(r.path, "/api/ls");
        assert_eq!(r.param("path"), Some("/a b"));
        assert_eq!(r.param("x"), Some("1 2"));
        assert_eq!(r.param("flag"), Some(""));
        assert_eq!(r.param("nope"), None);
        assert!(!r.head);
        assert!(Request::parse_line("HEAD / HTTP/1.0").unwrap().head);
    }

    #[test]
    fn refuses_what_it_does_not_serve() {
        assert_eq!(
            Request::parse_line("POST / HTTP/1.1"),
            Err(BadRequest::Method("POST".into()))
        );
        for bad in [
            "",
            "GET",
            "GET / HTTP/1.1 extra",
            "GET / SPDY/3",
            "GET http://x/ HTTP/1.1",
            "GET /%zz HTTP/1.1",
            "GET /?a=%ff HTTP/1.1",
            "GET /%4 HTTP/1.1",
        ] {
            assert!(
                matches!(Request::parse_line(bad), Err(BadRequest::Malformed(_))),
                "{bad:?}"
            );
        }
    }
}
