//! What a client verb runs with, and where each value came from: a flag, then an
//! environment variable, then the config file, then the built-in default (`dfs up`'s
//! stored key counts as a default). `dfs config show` prints it.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::credentials::{default_key_path, KEY_ENV, SECRET_ENV};

/// The master client verbs dial when nothing says otherwise.
pub const DEFAULT_MASTER: &str = "127.0.0.1:7070";
/// Files moved at once by `-r` transfers when nothing says otherwise.
pub const DEFAULT_PARALLEL: u32 = 8;

/// Where a setting's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Flag(&'static str),
    Env(&'static str),
    File(PathBuf),
    /// Found where `dfs up` stores it for this master.
    Stored(PathBuf),
    Default,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Flag(flag) => write!(f, "flag {flag}"),
            Source::Env(var) => write!(f, "environment ${var}"),
            Source::File(p) => write!(f, "config file {}", p.display()),
            Source::Stored(_) => f.write_str("stored by dfs up"),
            Source::Default => f.write_str("default"),
        }
    }
}

/// One setting as `dfs config show` prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    pub name: &'static str,
    /// `None`: not set (and nothing is used).
    pub value: Option<String>,
    pub source: Source,
}

/// The first value present, from flag, environment or file, else `default`.
pub fn pick<T: Clone>(
    flag: Option<(&'static str, T)>,
    env: Option<(&'static str, T)>,
    file: Option<T>,
    file_path: Option<&Path>,
    default: Option<T>,
) -> (Option<T>, Source) {
    if let Some((name, v)) = flag {
        return (Some(v), Source::Flag(name));
    }
    if let Some((name, v)) = env {
        return (Some(v), Source::Env(name));
    }
    if let (Some(v), Some(p)) = (file, file_path) {
        return (Some(v), Source::File(p.to_path_buf()));
    }
    (default, Source::Default)
}

/// Which credential a client verb proves to `master`, in the order
/// `credentials::client_identity` tries them; never the secret itself.
pub fn credential(
    key_file: Option<&Path>,
    config: &Config,
    config_path: Option<&Path>,
    master: &str,
) -> Setting {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let (value, source) = if let Some(p) = key_file {
        (
            Some(format!("key file {}", p.display())),
            Source::Flag("--key-file"),
        )
    } else if let Some(line) = env(KEY_ENV) {
        let name = line.split(':').nth(1).unwrap_or("?").to_string();
        (Some(format!("key '{name}'")), Source::Env(KEY_ENV))
    } else if env(SECRET_ENV).is_some() {
        (
            Some("the cluster secret (admin)".into()),
            Source::Env(SECRET_ENV),
        )
    } else if let (Some(p), Some(file)) = (&config.key_file, config_path) {
        (
            Some(format!("key file {}", p.display())),
            Source::File(file.to_path_buf()),
        )
    } else if let Some(p) = default_key_path(master).filter(|p| p.exists()) {
        (Some(format!("key file {}", p.display())), Source::Stored(p))
    } else {
        (None, Source::Default)
    };
    Setting {
        name: "credential",
        value,
        source,
    }
}
