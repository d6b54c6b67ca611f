//! The master's operation log: the record framing (length, sequence, checksum) on
//! arbitrary bytes, and the mutation decoder on arbitrary record payloads.
#![no_main]

use dfs_master::mutation::Mutation;
use dfs_master::oplog::{decode_record, encode_record};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok((_, payload, used)) = decode_record(rest) {
        let _ = Mutation::decode(payload);
        rest = &rest[used..];
    }
    // The same bytes as a payload behind a valid record header.
    let mut framed = Vec::new();
    if encode_record(1, data, &mut framed).is_ok() {
        let (seq, payload, used) = decode_record(&framed).expect("a record decodes");
        assert_eq!((seq, payload, used), (1, data, framed.len()));
    }
    if let Ok(m) = Mutation::decode(data) {
        let again = m.encode().expect("a decoded mutation encodes");
        assert_eq!(Mutation::decode(&again).ok(), Some(m));
    }
});
