//! The operation log on real files: records round-trip, a torn tail anywhere is cut
//! off, corruption before the tail stops recovery loudly, compaction drops covered
//! segments.

use std::fs;
use std::path::{Path, PathBuf};

use dfs_master::oplog::{self, decode_record, encode_record, LogError, OpLog};
use proptest::prelude::*;

fn payloads() -> impl Strategy<Value = Vec<Vec<u8>>> {
    proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..40)
}

/// Writes `payloads` as records first_seq.. through a live log and closes it.
fn write_log(dir: &Path, first_seq: u64, payloads: &[Vec<u8>]) {
    let log = OpLog::start(dir, first_seq).expect("start");
    for (i, p) in payloads.iter().enumerate() {
        log.append(first_seq + i as u64, p).expect("append");
    }
    log.close().expect("close");
}

fn only_segment(dir: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segs.sort();
    assert_eq!(segs.len(), 1, "{segs:?}");
    segs.remove(0)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn records_round_trip(seq in any::<u64>(), payload in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let mut buf = Vec::new();
        encode_record(seq, &payload, &mut buf).unwrap();
        let (s, p, used) = decode_record(&buf).unwrap();
        prop_assert_eq!(s, seq);
        prop_assert_eq!(p, &payload[..]);
        prop_assert_eq!(used, buf.len());
    }

    #[test]
    fn any_flipped_bit_is_detected(payload in proptest::collection::vec(any::<u8>(), 1..200), bit in any::<prop::sample::Index>()) {
        let mut buf = Vec::new();
        encode_record(5, &payload, &mut buf).unwrap();
        let bit = bit.index(buf.len() * 8);
        buf[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(decode_record(&buf).is_err());
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_prefix_kept(ps in payloads(), cut in any::<prop::sample::Index>(), junk in proptest::collection::vec(any::<u8>(), 0..64), zeros in 0..3usize) {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 1, &ps);
        let seg = only_segment(dir.path());
        let mut bytes = fs::read(&seg).unwrap();
        // The records, not the zeros written ahead of them.
        let full: usize = ps.iter().map(|p| oplog::HEADER_LEN + p.len()).sum();
        let cut = cut.index(full + 1);
        bytes.truncate(cut);
        // What a crash leaves: a prefix, possibly followed by garbage or zeroes, and
        // then perhaps by the rest of the space written ahead.
        bytes.extend_from_slice(&junk);
        bytes.resize(bytes.len() + zeros * 40_000, 0);
        fs::write(&seg, &bytes).unwrap();

        let rec = oplog::recover(dir.path()).unwrap();
        // Every record that ended before the cut survives, in order, intact.
        let mut end = 0;
        let mut expect = 0;
        for p in &ps {
            end += oplog::HEADER_LEN + p.len();
            if end <= cut { expect += 1 } else { break }
        }
        prop_assert!(rec.records.len() >= expect);
        for (i, (seq, p)) in rec.records.iter().enumerate() {
            prop_assert_eq!(*seq, i as u64 + 1);
            prop_assert_eq!(p, &ps[i]);
        }
        // Recovery left a clean file: a second recovery finds the same and cuts nothing.
        let again = oplog::recover(dir.path()).unwrap();
        prop_assert_eq!(again.records.len(), rec.records.len());
        prop_assert_eq!(again.truncated, 0);
    }
}

#[test]
fn a_damaged_record_before_the_tail_stops_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let ps: Vec<Vec<u8>> = (0..10).map(|i| vec![i as u8; 50]).collect();
    write_log(dir.path(), 1, &ps);
    let seg = only_segment(dir.path());
    let mut bytes = fs::read(&seg).unwrap();
    let third = 2 * (oplog::HEADER_LEN + 50) + oplog::HEADER_LEN + 10;
    bytes[third] ^= 0xFF;
    fs::write(&seg, &bytes).unwrap();
    match oplog::recover(dir.path()) {
        Err(LogError::Corrupt { after, offset, .. }) => {
            assert_eq!(after, 2, "the last good record is named");
            assert_eq!(offset, 2 * (oplog::HEADER_LEN + 50) as u64);
        }
        other => panic!("expected a corruption error, got {other:?}"),
    }
    // Nothing was truncated: the evidence is left for a human.
    assert_eq!(fs::read(&seg).unwrap(), bytes);
}

#[test]
fn segments_chain_across_restarts_and_compaction_drops_covered_ones() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 1, &[b"a".to_vec(), b"b".to_vec()]);
    write_log(dir.path(), 3, &[b"c".to_vec()]);
    let rec = oplog::recover(dir.path()).unwrap();
    let seqs: Vec<u64> = rec.records.iter().map(|r| r.0).collect();
    assert_eq!(seqs, [1, 2, 3]);

    let log = OpLog::start(dir.path(), 4).unwrap();
    assert_eq!(log.segment_count(), 3);
    assert_eq!(
        log.compact(2).unwrap(),
        1,
        "only the segment ending at 2 is covered"
    );
    assert_eq!(log.compact(3).unwrap(), 1);
    assert_eq!(
        log.compact(100).unwrap(),
        0,
        "the live segment is never removed"
    );
    log.close().unwrap();
    assert!(oplog::recover(dir.path()).unwrap().records.is_empty());
}

#[test]
fn a_gap_in_sequence_numbers_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 1, &[b"a".to_vec()]);
    write_log(dir.path(), 5, &[b"e".to_vec()]);
    assert!(matches!(
        oplog::recover(dir.path()),
        Err(LogError::Gap {
            previous: 1,
            found: 5,
            ..
        })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_fsyncs_and_all_become_durable() {
    let dir = tempfile::tempdir().unwrap();
    let log = std::sync::Arc::new(OpLog::start(dir.path(), 1).unwrap());
    let next = std::sync::Arc::new(std::sync::Mutex::new(1u64));
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..16u64 {
        let (log, next) = (log.clone(), next.clone());
        tasks.spawn(async move {
            for i in 0..50u64 {
                let seq = {
                    let mut n = next.lock().unwrap();
                    let seq = *n;
                    log.append(seq, &(t * 1000 + i).to_be_bytes()).unwrap();
                    *n += 1;
                    seq
                };
                log.wait_durable(seq).await.unwrap();
                assert!(log.durable_seq() >= seq);
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    drop(log);
    let rec = oplog::recover(dir.path()).unwrap();
    assert_eq!(rec.records.len(), 800);
}

/// One record at a time, each waited for: the writer has mostly gone to sleep by
/// the next append, which must wake it (appends made while it writes do not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_appended_while_the_writer_sleeps_becomes_durable() {
    let dir = tempfile::tempdir().unwrap();
    let log = OpLog::start(dir.path(), 1).unwrap();
    for seq in 1..=200u64 {
        log.append(seq, &seq.to_be_bytes()).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), log.wait_durable(seq))
            .await
            .unwrap_or_else(|_| panic!("record {seq} not durable within 10 s"))
            .unwrap();
    }
    drop(log);
    assert_eq!(oplog::recover(dir.path()).unwrap().records.len(), 200);
}

#[test]
fn space_written_ahead_is_zeros_and_ends_a_segment_s_records() {
    let dir = tempfile::tempdir().unwrap();
    let ps: Vec<Vec<u8>> = (0..10).map(|i| vec![i as u8 + 1; 50]).collect();
    write_log(dir.path(), 1, &ps);
    let seg = only_segment(dir.path());
    let records = 10 * (oplog::HEADER_LEN + 50);
    let bytes = fs::read(&seg).unwrap();
    assert!(
        bytes.len() as u64 >= records as u64 + oplog::PREALLOCATE,
        "zeros written ahead: {} bytes",
        bytes.len()
    );
    assert!(bytes[records..].iter().all(|&b| b == 0));
    assert!(
        decode_record(&[0u8; oplog::HEADER_LEN]).is_err(),
        "no record is all zeros"
    );
    let rec = oplog::recover(dir.path()).unwrap();
    assert_eq!(rec.records.len(), 10);
    assert_eq!(rec.truncated, 0, "zeros are not a torn tail");

    // A later start writes a second segment; the first keeps its zeros and is read
    // through to its end all the same.
    write_log(dir.path(), 11, &ps);
    let rec = oplog::recover(dir.path()).unwrap();
    assert_eq!(rec.records.len(), 20);
    assert_eq!(rec.last_seq(), Some(20));

    // A crash in the middle of the next record leaves its start before the zeros:
    // a torn tail, cut off.
    let mut segs: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segs.sort();
    let last = segs.last().unwrap().clone();
    let mut bytes = fs::read(&last).unwrap();
    let mut next = Vec::new();
    encode_record(21, &[7; 50], &mut next).unwrap();
    bytes[records..records + 20].copy_from_slice(&next[..20]);
    fs::write(&last, &bytes).unwrap();
    let rec = oplog::recover(dir.path()).unwrap();
    assert_eq!(rec.records.len(), 20);
    assert!(rec.truncated > 0);
    assert_eq!(fs::metadata(&last).unwrap().len(), records as u64);
}
