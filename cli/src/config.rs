//! The configuration file: `$XDG_CONFIG_HOME/dfs/config.toml` (else
//! `~/.config/dfs/config.toml`) for client verbs, `--config FILE` for servers.
//! Values in it come after flags and environment variables.
//!
//! ```toml
//! master = "10.0.0.1:7070"                          # clients: the master to dial
//! key_file = "/home/alice/.config/dfs/alice.key"   # clients: the key to prove
//! replication = 2                                   # clients: replicas of new files
//! parallel = 16                                     # clients: files moved at once by -r
//! tls_ca = "/etc/dfs/tls/ca.pem"                    # clients: talk TLS, trusting this CA
//! secret_file = "/etc/dfs/cluster.secret"           # servers: the cluster secret
//! tls = "/etc/dfs/tls"                              # servers: TLS files (`dfs tls init`)
//! ```

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// What a config file may set. Unknown keys are errors, so a typo is never ignored.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub master: Option<String>,
    pub replication: Option<u32>,
    pub parallel: Option<u32>,
    pub key_file: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    pub secret_file: Option<PathBuf>,
    pub tls: Option<PathBuf>,
}

/// The client config file's path.
pub fn client_path() -> Option<PathBuf> {
    crate::credentials::config_dir().map(|d| d.join("config.toml"))
}

/// Reads `path`; relative paths in it are taken from the file's directory.
pub fn read(path: &Path) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    // One line, as every error of the binary: the message and where.
    let mut config: Config = toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        let at = line.map(|l| format!(" (line {l})")).unwrap_or_default();
        anyhow::anyhow!("config file {}: {}{at}", path.display(), e.message().trim())
    })?;
    if config.replication == Some(0) {
        anyhow::bail!(
            "config file {}: replication must be at least 1",
            path.display()
        );
    }
    if config.parallel.is_some_and(|n| !(1..=256).contains(&n)) {
        anyhow::bail!("config file {}: parallel must be 1 to 256", path.display());
    }
    let base = path.parent().unwrap_or(Path::new("."));
    for p in [
        &mut config.key_file,
        &mut config.tls_ca,
        &mut config.secret_file,
        &mut config.tls,
    ]
    .into_iter()
    .flatten()
    {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    }
    Ok(config)
}

/// The client config, or an empty one when there is no file.
pub fn client() -> anyhow::Result<Config> {
    match client_path().filter(|p| p.exists()) {
        Some(p) => read(&p),
        None => Ok(Config::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_paths_relative_to_the_file_and_refuses_unknown_keys() {
        let dir = tempfile::tempdir().expect("dir");
        let p = dir.path().join("config.toml");
        std::fs::write(&p, "key_file = \"alice.key\"\ntls = \"/etc/dfs/tls\"\n").expect("write");
        let c = read(&p).expect("read");
        assert_eq!(c.key_file, Some(dir.path().join("alice.key")));
        assert_eq!(c.tls, Some(PathBuf::from("/etc/dfs/tls")));
        std::fs::write(&p, "key_fiel = \"x\"\n").expect("write");
        let e = read(&p).expect_err("typo");
        assert!(format!("{e:#}").contains("key_fiel"), "{e:#}");
    }
}
