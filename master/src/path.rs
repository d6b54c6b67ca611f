//! Path normalisation: every path the master acts on goes through here first.
//!
//! Paths are absolute; repeated slashes and `.` are dropped, `..` goes up but never
//! above `/`. Names are at most 255 bytes, whole paths at most 4096, and may not hold NUL.

use dfs_protocol::ErrorCode;

pub const MAX_NAME: usize = 255;
pub const MAX_PATH: usize = 4096;

/// The normalised components of `path` (empty for `/`).
pub fn components(path: &str) -> Result<Vec<String>, ErrorCode> {
    let invalid = |reason: &str| ErrorCode::InvalidPath {
        path: path.to_string(),
        reason: reason.to_string(),
    };
    if !path.starts_with('/') {
        return Err(invalid("must be absolute (start with '/')"));
    }
    if path.len() > MAX_PATH {
        return Err(invalid("longer than 4096 bytes"));
    }
    if path.contains('\0') {
        return Err(invalid("contains a NUL byte"));
    }
    let mut out: Vec<String> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            name if name.len() > MAX_NAME => {
                return Err(invalid("a name is longer than 255 bytes"))
            }
            name => out.push(name.to_string()),
        }
    }
    Ok(out)
}

/// The canonical spelling of normalised components.
pub fn join(components: &[String]) -> String {
    if components.is_empty() {
        "/".to_string()
    } else {
        let mut s = String::new();
        for c in components {
            s.push('/');
            s.push_str(c);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises() {
        assert_eq!(join(&components("/").unwrap()), "/");
        assert_eq!(join(&components("//a///b/./c/").unwrap()), "/a/b/c");
        assert_eq!(join(&components("/a/../../b").unwrap()), "/b");
        assert_eq!(join(&components("/ünï/ç😀").unwrap()), "/ünï/ç😀");
    }

    #[test]
    fn refuses_bad_paths() {
        assert!(components("a/b").is_err());
        assert!(components("/a\0b").is_err());
        assert!(components(&format!("/{}", "x".repeat(256))).is_err());
        assert!(components(&"/x".repeat(3000)).is_err());
    }
}
