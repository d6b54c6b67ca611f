//! Authentication material and its arithmetic: the cluster secret, client keys, the
//! challenge-response proofs of the handshake, and chunk capabilities (tokens).
//!
//! Everything is keyed blake3. Keys never cross the wire in the clear: a handshake
//! proves knowledge of a key with a MAC over a transcript that holds a fresh nonce
//! from each side, so a recorded handshake proves nothing on a new connection. The
//! key table the master pushes to chunkservers is sealed with the session key of the
//! (authenticated) heartbeat connection. `docs/security.md` is the written account.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{ChunkHandle, ChunkVersion, ServerId};

/// Bytes in the cluster secret, a client key's secret, nonces, proofs and MACs.
pub const KEY_LEN: usize = 32;
/// How the cluster secret is spelled in files and `$DFS_SECRET`.
const SECRET_PREFIX: &str = "dfs-secret:";
/// How a client key is spelled: `dfs-key:NAME:HEX`.
const KEY_PREFIX: &str = "dfs-key:";
/// Longest key name.
pub const MAX_KEY_NAME: usize = 64;

/// 32 random bytes that only their holders know. `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes([u8; KEY_LEN]);

impl SecretBytes {
    /// Fresh bytes from the operating system's generator.
    pub fn generate() -> SecretBytes {
        SecretBytes(random_bytes())
    }

    pub fn from_bytes(b: [u8; KEY_LEN]) -> SecretBytes {
        SecretBytes(b)
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn from_hex(s: &str) -> Option<SecretBytes> {
        if s.len() != KEY_LEN * 2 || !s.is_ascii() {
            return None;
        }
        let mut out = [0u8; KEY_LEN];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(SecretBytes(out))
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBytes(..)")
    }
}

/// Why a secret or key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("not a dfs cluster secret (expected one line 'dfs-secret:' and 64 hex digits)")]
    BadSecret,
    #[error("not a dfs key (expected one line 'dfs-key:NAME:' and 64 hex digits)")]
    BadKey,
    #[error("invalid key name {0:?}: use 1 to 64 letters, digits, '-', '_' or '.'")]
    BadKeyName(String),
}

/// The secret that master and chunkservers share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSecret(pub SecretBytes);

impl ClusterSecret {
    pub fn generate() -> ClusterSecret {
        ClusterSecret(SecretBytes::generate())
    }

    /// Reads the one-line form (surrounding whitespace ignored).
    pub fn parse(s: &str) -> Result<ClusterSecret, AuthError> {
        s.trim()
            .strip_prefix(SECRET_PREFIX)
            .and_then(SecretBytes::from_hex)
            .map(ClusterSecret)
            .ok_or(AuthError::BadSecret)
    }

    /// The one-line form, as written to files and read from `$DFS_SECRET`.
    pub fn encode(&self) -> String {
        format!("{SECRET_PREFIX}{}", self.0.hex())
    }

    /// The key of server-to-server links (chunkserver to master, to chunkserver).
    pub fn server_key(&self) -> [u8; KEY_LEN] {
        blake3::derive_key("dfs 2026-11 server link v1", self.0.as_bytes())
    }

    /// The key a client holding the cluster secret itself proves (it acts as admin).
    pub fn admin_key(&self) -> [u8; KEY_LEN] {
        blake3::derive_key("dfs 2026-11 admin client v1", self.0.as_bytes())
    }

    /// The key that signs and verifies chunk tokens.
    pub fn token_key(&self) -> TokenKey {
        TokenKey(blake3::derive_key(
            "dfs 2026-11 chunk token v1",
            self.0.as_bytes(),
        ))
    }
}

/// Whether `name` is a valid key name.
pub fn valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_KEY_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// A named client key as the master issues it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientKey {
    pub name: String,
    pub secret: SecretBytes,
}

impl ClientKey {
    pub fn generate(name: &str) -> Result<ClientKey, AuthError> {
        if !valid_key_name(name) {
            return Err(AuthError::BadKeyName(name.to_string()));
        }
        Ok(ClientKey {
            name: name.to_string(),
            secret: SecretBytes::generate(),
        })
    }

    /// Reads the one-line form `dfs-key:NAME:HEX`.
    pub fn parse(s: &str) -> Result<ClientKey, AuthError> {
        let rest = s.trim().strip_prefix(KEY_PREFIX).ok_or(AuthError::BadKey)?;
        let (name, hex) = rest.rsplit_once(':').ok_or(AuthError::BadKey)?;
        if !valid_key_name(name) {
            return Err(AuthError::BadKeyName(name.to_string()));
        }
        let secret = SecretBytes::from_hex(hex).ok_or(AuthError::BadKey)?;
        Ok(ClientKey {
            name: name.to_string(),
            secret,
        })
    }

    /// The one-line form, printed by `dfs key create`.
    pub fn encode(&self) -> String {
        format!("{KEY_PREFIX}{}:{}", self.name, self.secret.hex())
    }
}

/// What a client key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Reads only: listing, stat, get, status, fsck.
    ReadOnly,
    /// Reads and changes the namespace and file data.
    ReadWrite,
    /// Everything, also decommissioning, balancing and managing keys.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ReadOnly => "read-only",
            Role::ReadWrite => "read-write",
            Role::Admin => "admin",
        }
    }
}

/// Who a connecting peer claims to be (the `Auth` request); the handshake then
/// proves it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Credential {
    /// A client with a named key issued by the master.
    Key { name: String },
    /// A client holding the cluster secret itself: an admin.
    ClusterSecret,
    /// A chunkserver, with the identity kept in its data dir.
    Chunkserver { id: ServerId },
    /// The master, dialing a chunkserver.
    Master,
}

impl Credential {
    /// Canonical bytes for the transcript (independent of the wire encoding).
    fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Credential::Key { name } => {
                out.push(1);
                out.extend_from_slice(&(name.len() as u64).to_be_bytes());
                out.extend_from_slice(name.as_bytes());
            }
            Credential::ClusterSecret => out.push(2),
            Credential::Chunkserver { id } => {
                out.push(3);
                out.extend_from_slice(id.0.as_bytes());
            }
            Credential::Master => out.push(4),
        }
        out
    }
}

impl fmt::Display for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Key { name } => write!(f, "key '{name}'"),
            Credential::ClusterSecret => f.write_str("the cluster secret"),
            Credential::Chunkserver { id } => write!(f, "chunkserver {id}"),
            Credential::Master => f.write_str("the master"),
        }
    }
}

/// A peer after a successful handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// A client; `key` is `None` for a holder of the cluster secret. `fingerprint`
    /// identifies the key's secret, so a removed (or replaced) key is noticed on the
    /// connection's next request.
    Client {
        key: Option<String>,
        role: Role,
        fingerprint: [u8; KEY_LEN],
    },
    Chunkserver {
        id: ServerId,
    },
    Master,
}

impl Peer {
    /// The holder of the client key `name` (secret `key`, role `role`), with the key
    /// its proofs use: what a listener's lookup answers for `Credential::Key`.
    pub fn key_holder(name: &str, key: [u8; KEY_LEN], role: Role) -> ([u8; KEY_LEN], Peer) {
        (
            key,
            Peer::Client {
                key: Some(name.to_string()),
                role,
                fingerprint: fingerprint(&key),
            },
        )
    }

    /// A holder of the cluster secret, who acts as admin: what a listener's lookup
    /// answers for `Credential::ClusterSecret`.
    pub fn cluster_admin(secret: &ClusterSecret) -> ([u8; KEY_LEN], Peer) {
        let key = secret.admin_key();
        (
            key,
            Peer::Client {
                key: None,
                role: Role::Admin,
                fingerprint: fingerprint(&key),
            },
        )
    }

    /// A client's role; servers are not clients.
    pub fn client_role(&self) -> Option<Role> {
        match self {
            Peer::Client { role, .. } => Some(*role),
            _ => None,
        }
    }

    pub fn is_server(&self) -> bool {
        !matches!(self, Peer::Client { .. })
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Client {
                key: Some(k), role, ..
            } => write!(f, "key '{k}' ({})", role.as_str()),
            Peer::Client { key: None, .. } => f.write_str("a cluster-secret admin"),
            Peer::Chunkserver { id } => write!(f, "chunkserver {id}"),
            Peer::Master => f.write_str("the master"),
        }
    }
}

/// A short, non-secret identifier of a key's secret.
pub fn fingerprint(key: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    blake3::derive_key("dfs 2026-11 key fingerprint v1", key)
}

/// Fresh random bytes for a nonce or a key.
pub fn random_bytes() -> [u8; KEY_LEN] {
    // ThreadRng is a CSPRNG seeded from the operating system.
    use rand::RngCore;
    let mut b = [0u8; KEY_LEN];
    rand::rng().fill_bytes(&mut b);
    b
}

/// Binds a handshake's proofs to this protocol version, this credential and both
/// nonces.
pub fn transcript(
    credential: &Credential,
    client_nonce: &[u8; KEY_LEN],
    server_nonce: &[u8; KEY_LEN],
) -> [u8; KEY_LEN] {
    let mut h = blake3::Hasher::new_derive_key("dfs 2026-11 handshake transcript v1");
    h.update(&crate::PROTOCOL_VERSION.to_be_bytes());
    h.update(&credential.canonical());
    h.update(client_nonce);
    h.update(server_nonce);
    *h.finalize().as_bytes()
}

/// Which side a proof comes from; the two are never interchangeable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Server,
    Client,
    /// Not a proof: the key both sides derive for sealing data on this connection.
    Session,
}

/// The MAC one side sends to show it holds `key`.
pub fn proof(key: &[u8; KEY_LEN], side: Side, transcript: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    let label: &[u8] = match side {
        Side::Server => b"server proof",
        Side::Client => b"client proof",
        Side::Session => b"session key",
    };
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(label);
    h.update(transcript);
    *h.finalize().as_bytes()
}

/// Compares a received proof with the expected one in constant time.
pub fn proof_matches(expected: &[u8; KEY_LEN], got: &[u8; KEY_LEN]) -> bool {
    blake3::Hash::from(*expected) == blake3::Hash::from(*got)
}

/// A key's secret sealed for one connection: XOR with a pad that only the two ends
/// of the authenticated connection can compute (keyed blake3 as a PRF over the
/// table's epoch and the key's name, so no pad is used for two different secrets).
pub fn seal(
    session: &[u8; KEY_LEN],
    epoch: u64,
    name: &str,
    secret: &[u8; KEY_LEN],
) -> [u8; KEY_LEN] {
    let mut h = blake3::Hasher::new_keyed(session);
    h.update(b"key table pad");
    h.update(&epoch.to_be_bytes());
    h.update(&(name.len() as u64).to_be_bytes());
    h.update(name.as_bytes());
    let pad = h.finalize();
    let mut out = *secret;
    for (o, p) in out.iter_mut().zip(pad.as_bytes()) {
        *o ^= p;
    }
    out
}

/// Sealing is its own inverse.
pub fn unseal(
    session: &[u8; KEY_LEN],
    epoch: u64,
    name: &str,
    sealed: &[u8; KEY_LEN],
) -> [u8; KEY_LEN] {
    seal(session, epoch, name, sealed)
}

/// One client key as the master pushes it to chunkservers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedKey {
    pub name: String,
    pub role: Role,
    pub sealed: [u8; KEY_LEN],
}

/// Every client key, pushed to chunkservers when it changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyTable {
    /// Changes whenever a key is created or removed.
    pub epoch: u64,
    pub keys: Vec<SealedKey>,
}

/// A key as `dfs key ls` shows it: never its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    pub name: String,
    pub role: Role,
    /// Seconds since the Unix epoch.
    pub created: u64,
}

/// The key that signs chunk tokens (derived from the cluster secret).
#[derive(Clone)]
pub struct TokenKey([u8; KEY_LEN]);

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

/// What a chunk token permits, as bits.
pub mod ops {
    /// `ReadChunk`, `ChunkLength`.
    pub const READ: u8 = 1;
    /// `WriteChunk` (a new replica of a chunk being put).
    pub const WRITE: u8 = 2;
    /// `Append` to the primary.
    pub const APPEND: u8 = 4;
    /// The master's orders between servers: `GrantLease`, `BumpVersion`,
    /// `TruncateChunk`, `AppendForward`.
    pub const ORDER: u8 = 8;
}

/// A capability on one chunk at one version, signed by the master: chunkservers
/// check it without asking anyone.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkToken {
    pub handle: ChunkHandle,
    pub version: ChunkVersion,
    /// Bits of [`ops`].
    pub ops: u8,
    /// Seconds since the Unix epoch after which the token is refused.
    pub expires: u64,
    pub mac: [u8; KEY_LEN],
}

impl fmt::Debug for ChunkToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkToken")
            .field("handle", &self.handle)
            .field("version", &self.version)
            .field("ops", &self.ops)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is for another chunk")]
    WrongChunk,
    #[error("the token is for version {0}")]
    WrongVersion(ChunkVersion),
    #[error("the token does not permit this operation")]
    NotPermitted,
    #[error("the token expired")]
    Expired,
    #[error("the token's signature is wrong")]
    BadSignature,
}

fn token_mac(
    key: &TokenKey,
    handle: ChunkHandle,
    version: ChunkVersion,
    ops: u8,
    expires: u64,
) -> [u8; KEY_LEN] {
    let mut h = blake3::Hasher::new_keyed(&key.0);
    h.update(b"chunk token");
    h.update(handle.0.as_bytes());
    h.update(&version.0.to_be_bytes());
    h.update(&[ops]);
    h.update(&expires.to_be_bytes());
    *h.finalize().as_bytes()
}

impl ChunkToken {
    pub fn sign(
        key: &TokenKey,
        handle: ChunkHandle,
        version: ChunkVersion,
        ops: u8,
        expires: u64,
    ) -> ChunkToken {
        ChunkToken {
            handle,
            version,
            ops,
            expires,
            mac: token_mac(key, handle, version, ops, expires),
        }
    }

    /// Checks that this token lets its bearer do `op` on `handle` at `version` at
    /// `now` (seconds since the Unix epoch).
    pub fn check(
        &self,
        key: &TokenKey,
        handle: ChunkHandle,
        version: ChunkVersion,
        op: u8,
        now: u64,
    ) -> Result<(), TokenError> {
        let expected = token_mac(key, self.handle, self.version, self.ops, self.expires);
        if !proof_matches(&expected, &self.mac) {
            return Err(TokenError::BadSignature);
        }
        if self.handle != handle {
            return Err(TokenError::WrongChunk);
        }
        if self.version != version {
            return Err(TokenError::WrongVersion(self.version));
        }
        if self.ops & op != op {
            return Err(TokenError::NotPermitted);
        }
        if now > self.expires {
            return Err(TokenError::Expired);
        }
        Ok(())
    }
}

/// Seconds since the Unix epoch (token expiry is wall-clock time: servers' clocks
/// must agree within a token's lifetime).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_keys_round_trip_and_reject_garbage() {
        let s = ClusterSecret::generate();
        assert_eq!(ClusterSecret::parse(&format!(" {}\n", s.encode())), Ok(s));
        assert!(ClusterSecret::parse("dfs-secret:zz").is_err());
        assert!(ClusterSecret::parse("").is_err());
        let k = ClientKey::generate("alice").expect("key");
        assert_eq!(ClientKey::parse(&k.encode()), Ok(k.clone()));
        assert!(ClientKey::parse("dfs-key:alice").is_err());
        assert!(ClientKey::generate("a b").is_err());
        assert!(ClientKey::generate("").is_err());
        assert!(!format!("{:?}", k).contains(&k.secret.hex()));
    }

    #[test]
    fn tokens_bind_chunk_version_ops_and_time() {
        let key = ClusterSecret::generate().token_key();
        let (h, v) = (ChunkHandle::random(), ChunkVersion(3));
        let t = ChunkToken::sign(&key, h, v, ops::READ, 100);
        assert_eq!(t.check(&key, h, v, ops::READ, 100), Ok(()));
        assert_eq!(
            t.check(&key, ChunkHandle::random(), v, ops::READ, 1),
            Err(TokenError::WrongChunk)
        );
        assert_eq!(
            t.check(&key, h, ChunkVersion(4), ops::READ, 1),
            Err(TokenError::WrongVersion(v))
        );
        assert_eq!(
            t.check(&key, h, v, ops::WRITE, 1),
            Err(TokenError::NotPermitted)
        );
        assert_eq!(
            t.check(&key, h, v, ops::READ, 101),
            Err(TokenError::Expired)
        );
        let mut forged = t;
        forged.ops |= ops::WRITE;
        assert_eq!(
            forged.check(&key, h, v, ops::WRITE, 1),
            Err(TokenError::BadSignature)
        );
        let other = ClusterSecret::generate().token_key();
        assert_eq!(
            t.check(&other, h, v, ops::READ, 1),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn proofs_differ_by_side_and_nonce() {
        let key = random_bytes();
        let c = Credential::Key { name: "a".into() };
        let t1 = transcript(&c, &[1; 32], &[2; 32]);
        let t2 = transcript(&c, &[1; 32], &[3; 32]);
        assert_ne!(
            proof(&key, Side::Client, &t1),
            proof(&key, Side::Server, &t1)
        );
        assert_ne!(
            proof(&key, Side::Client, &t1),
            proof(&key, Side::Client, &t2)
        );
        let sealed = seal(&key, 7, "a", &[9; 32]);
        assert_ne!(sealed, [9; 32]);
        assert_eq!(unseal(&key, 7, "a", &sealed), [9; 32]);
    }
}
