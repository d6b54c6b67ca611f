//! A chunkserver's meta file, with a valid trailing checksum so the fuzzer reaches
//! the body decoder; also as found on disk (the checksum check itself).
#![no_main]

use dfs_chunkserver::store::decode_meta;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_meta(data);
    let mut sealed = data.to_vec();
    sealed.extend_from_slice(blake3::hash(data).as_bytes());
    let _ = decode_meta(&sealed);
});
