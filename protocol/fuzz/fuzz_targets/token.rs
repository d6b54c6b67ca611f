//! Chunk tokens as they arrive (bincode), checked against a fixed key: only the
//! genuine token may pass. Also the one-line key and secret parsers.
#![no_main]

use dfs_protocol::auth::ops;
use dfs_protocol::{ChunkHandle, ChunkToken, ChunkVersion, ClientKey, ClusterSecret};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let secret = ClusterSecret::parse(&format!("dfs-secret:{}", "7f".repeat(32))).expect("secret");
    let key = secret.token_key();
    let config = bincode::config::standard().with_limit::<4096>();
    if let Ok((token, _)) = bincode::serde::decode_from_slice::<ChunkToken, _>(data, config) {
        let genuine = ChunkToken::sign(&key, token.handle, token.version, token.ops, token.expires);
        let ok = token
            .check(&key, token.handle, token.version, token.ops, 0)
            .is_ok();
        // Only a token whose MAC the key made passes, whatever else it claims.
        assert_eq!(ok, token == genuine);
        let _ = token.check(&key, ChunkHandle::random(), ChunkVersion(1), ops::WRITE, u64::MAX);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(k) = ClientKey::parse(text) {
            assert_eq!(ClientKey::parse(&k.encode()).ok(), Some(k));
        }
        if let Ok(s) = ClusterSecret::parse(text) {
            assert_eq!(ClusterSecret::parse(&s.encode()).ok(), Some(s));
        }
    }
});
