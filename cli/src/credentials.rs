//! Where the `dfs` binary finds credentials.
//!
//! Client verbs, in order: `--key-file`, `$DFS_KEY` (the key line itself),
//! `$DFS_SECRET` (the cluster secret: admin), the config file's `key_file`, then the
//! key `dfs up` stored for this master under the config dir. Servers:
//! `--secret-file`, `$DFS_SECRET`, then the config file's `secret_file`; a master with
//! none uses (or creates) `cluster.secret` in its data dir. There is
//! no default credential: without one, a client verb says how to get one.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use dfs_client::{ClientKey, ClusterSecret, Identity};

/// `$DFS_KEY`: a client key line, as `dfs key create` prints it.
pub const KEY_ENV: &str = "DFS_KEY";
/// `$DFS_SECRET`: the cluster secret itself.
pub const SECRET_ENV: &str = "DFS_SECRET";

/// The config dir: `$XDG_CONFIG_HOME/dfs`, else `~/.config/dfs`.
pub fn config_dir() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x).join("dfs"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".config").join("dfs"))
}

/// Where `dfs up` stores the admin key of the cluster at `master`.
pub fn default_key_path(master: &str) -> Option<PathBuf> {
    let name: String = master
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    config_dir().map(|d| d.join("keys").join(format!("{name}.key")))
}

fn read_line_file(path: &Path, what: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the {what} {}", path.display()))
}

/// Reads a key file (one line, as `dfs key create` prints it).
pub fn read_key_file(path: &Path) -> anyhow::Result<ClientKey> {
    let text = read_line_file(path, "key file")?;
    ClientKey::parse(&text).with_context(|| format!("{}", path.display()))
}

/// The identity a client verb proves to the cluster at `master`: `--key-file`,
/// `$DFS_KEY`, `$DFS_SECRET`, the config file's `key_file`, then the key `dfs up`
/// stored for `master`.
pub fn client_identity(
    key_file: Option<&Path>,
    config: &crate::config::Config,
    master: &str,
) -> anyhow::Result<Identity> {
    if let Some(path) = key_file {
        return Ok(Identity::key(&read_key_file(path)?));
    }
    if let Some(line) = env_value(KEY_ENV) {
        let key = ClientKey::parse(&line).context("$DFS_KEY")?;
        return Ok(Identity::key(&key));
    }
    if let Some(line) = env_value(SECRET_ENV) {
        let secret = ClusterSecret::parse(&line).context("$DFS_SECRET")?;
        return Ok(Identity::cluster_admin(&secret));
    }
    if let Some(path) = &config.key_file {
        return Ok(Identity::key(&read_key_file(path)?));
    }
    if let Some(path) = default_key_path(master).filter(|p| p.exists()) {
        return Ok(Identity::key(&read_key_file(&path)?));
    }
    bail!(
        "no credentials for {master}: set $DFS_KEY to a key from `dfs key create`, or pass --key-file \
         (`dfs up` stores an admin key where client verbs find it; a server admin may use $DFS_SECRET)"
    )
}

/// The cluster secret a server was given, if any: `--secret-file`, then
/// `$DFS_SECRET`, then the config file's `secret_file`.
pub fn server_secret(
    secret_file: Option<&Path>,
    config: &crate::config::Config,
) -> anyhow::Result<Option<ClusterSecret>> {
    if let Some(path) = secret_file {
        let text = read_line_file(path, "secret file")?;
        return Ok(Some(
            ClusterSecret::parse(&text).with_context(|| format!("{}", path.display()))?,
        ));
    }
    if let Some(line) = env_value(SECRET_ENV) {
        return Ok(Some(ClusterSecret::parse(&line).context("$DFS_SECRET")?));
    }
    match &config.secret_file {
        Some(path) => {
            let text = read_line_file(path, "secret file")?;
            Ok(Some(
                ClusterSecret::parse(&text).with_context(|| format!("{}", path.display()))?,
            ))
        }
        None => Ok(None),
    }
}

fn env_value(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Writes a key or secret line to `path`, readable by its owner only, replacing
/// what was there atomically.
pub fn write_private(path: &Path, line: &str) -> anyhow::Result<()> {
    dfs_master::secret::write_private(path, &format!("{line}\n"), true)?;
    Ok(())
}
