//! TLS files for a cluster: `dfs tls init` makes a self-signed cluster CA and a
//! server certificate signed by it (rcgen); servers load both, clients the CA.
//!
//! A TLS dir holds `ca.pem`, `ca.key` (0600: keep it offline once certificates are
//! made), `server.pem` and `server.key` (0600). Every server of the cluster may
//! present the same server certificate; it must name every address clients and peers
//! dial (its subject alternative names).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use dfs_protocol::net::Tls;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};

use crate::credentials::write_private;

pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";
pub const SERVER_CERT: &str = "server.pem";
pub const SERVER_KEY: &str = "server.key";

/// Names every server certificate carries, so loopback clusters work as made.
pub const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

fn san(name: &str) -> anyhow::Result<SanType> {
    Ok(match name.parse::<IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(
            name.to_string()
                .try_into()
                .with_context(|| format!("{name:?} is not a host name or IP address"))?,
        ),
    })
}

/// Makes a cluster CA and a server certificate for `names` (plus loopback) in `dir`.
/// Refuses to replace an existing CA.
pub fn init(dir: &Path, names: &[String]) -> anyhow::Result<()> {
    if dir.join(CA_CERT).exists() {
        bail!(
            "{} already holds a cluster CA; remove the directory to make a new one",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let ca_key = KeyPair::generate().context("generate the CA key")?;
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "dfs cluster CA");
    ca.distinguished_name = dn;
    let ca_cert = ca.self_signed(&ca_key).context("sign the CA")?;

    let server_key = KeyPair::generate().context("generate the server key")?;
    let mut server = CertificateParams::default();
    let mut all: Vec<String> = LOOPBACK_NAMES.iter().map(|s| s.to_string()).collect();
    for n in names {
        if !all.contains(n) {
            all.push(n.clone());
        }
    }
    server.subject_alt_names = all.iter().map(|n| san(n)).collect::<anyhow::Result<_>>()?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "dfs server");
    server.distinguished_name = dn;
    let server_cert = server
        .signed_by(&server_key, &ca_cert, &ca_key)
        .context("sign the server certificate")?;

    write_private(&dir.join(CA_KEY), ca_key.serialize_pem().trim_end())?;
    write_private(&dir.join(SERVER_KEY), server_key.serialize_pem().trim_end())?;
    write_private(&dir.join(SERVER_CERT), server_cert.pem().trim_end())?;
    // Written last: its presence means the dir is complete.
    write_private(&dir.join(CA_CERT), ca_cert.pem().trim_end())?;
    Ok(())
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// A server's TLS settings from a dir `init` made.
pub fn load_server(dir: &Path) -> anyhow::Result<Tls> {
    let tls = Tls::server(
        &read(&dir.join(CA_CERT))?,
        &read(&dir.join(SERVER_CERT))?,
        &read(&dir.join(SERVER_KEY))?,
    )
    .with_context(|| format!("TLS files in {}", dir.display()))?;
    Ok(tls)
}

/// A client's TLS settings: trust what the CA in `ca_file` signed.
pub fn load_client(ca_file: &Path) -> anyhow::Result<Tls> {
    Tls::client(&read(ca_file)?).with_context(|| format!("{}", ca_file.display()))
}

/// Where `dfs up --tls` leaves the CA for client verbs of the cluster at `master`.
pub fn default_ca_path(master: &str) -> Option<PathBuf> {
    crate::credentials::default_key_path(master).map(|p| p.with_extension("ca.pem"))
}
