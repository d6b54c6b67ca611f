//! The master's sliced walks of a subtree: `dfs count` and `dfs du` (directories,
//! files and bytes) and `dfs fsck` (every entry with its path, in tree order, from
//! the start or after a cursor). However a walk is cut into slices, it finds the
//! same; a directory removed between two slices is skipped, not a failure. Real
//! sled and a real operation log in a temp dir.

use dfs_master::namespace::summary::{Summary, SummaryWalk};
use dfs_master::namespace::tree_walk::{tree_cmp, TreeWalk};
use dfs_master::namespace::Namespace;

mod common;
use common::Real;

fn walk(ns: &Namespace, path: &str, budget: usize) -> (Summary, usize) {
    let mut w = SummaryWalk::start(ns, path).expect("start");
    let mut steps = 1;
    loop {
        if let Some(s) = w.step(ns, budget) {
            return (s, steps);
        }
        steps += 1;
        assert!(steps < 10_000, "the walk does not end");
    }
}

#[test]
fn a_subtree_counts_the_same_in_any_slices() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut real = Real::open(dir.path());
    // /t: 3 directories of 20 files, an empty one, a nested one, a link.
    for d in 0..3 {
        real.mkdir(&format!("/t/d{d}"));
        for f in 0..20 {
            real.file(&format!("/t/d{d}/f{f}"), 1000 + f);
        }
    }
    real.mkdir("/t/empty");
    real.mkdir("/t/a/b/c");
    real.file("/t/a/b/c/deep", 7);
    let m = real
        .ns
        .plan_symlink("/t/link", "/t/d0/f0", 1)
        .expect("symlink");
    real.exec(m);
    real.file("/outside", 99);

    let expect = Summary {
        // /t, d0..d2, empty, a, b, c
        dirs: 8,
        files: 60 + 1 + 1,
        bytes: 3 * (20 * 1000 + (0..20).sum::<u64>()) + 7 + "/t/d0/f0".len() as u64,
    };
    let (whole, steps) = walk(&real.ns, "/t", 1 << 20);
    assert_eq!((whole, steps), (expect, 1));
    for budget in [1, 2, 7, 20, 21, 64] {
        let (s, steps) = walk(&real.ns, "/t", budget);
        assert_eq!(s, expect, "in slices of {budget}");
        assert!(steps > 1, "slices of {budget} took one step");
    }
    // A file and a link count as themselves; a missing path is an error.
    let file = walk(&real.ns, "/t/d1/f3", 1).0;
    assert_eq!((file.dirs, file.files, file.bytes), (0, 1, 1003));
    assert_eq!(walk(&real.ns, "/", 1000).0.files, 63);
    assert!(SummaryWalk::start(&real.ns, "/nope").is_err());

    // A directory removed while the walk is under way: skipped, the rest counted.
    let mut w = SummaryWalk::start(&real.ns, "/t").expect("start");
    assert!(w.step(&real.ns, 3).is_none());
    let m = real
        .ns
        .plan_remove("/t/a", true, false, 2)
        .expect("plan rm");
    real.exec(m);
    let mut done = None;
    for _ in 0..1000 {
        done = w.step(&real.ns, 3);
        if done.is_some() {
            break;
        }
    }
    let s = done.expect("the walk ends");
    assert!(s.files >= 60 && s.files <= 62, "{s:?}");
}

/// What a walk visits, in order: each entry's path and size.
fn visits(mut w: TreeWalk, ns: &Namespace, budget: usize) -> (Vec<(String, u64)>, usize) {
    let mut seen = Vec::new();
    let mut steps = 1;
    while !w.step(ns, budget, |p, inode| {
        seen.push((p.to_string(), inode.size))
    }) {
        steps += 1;
        assert!(steps < 10_000, "the walk does not end");
    }
    (seen, steps)
}

fn files(ns: &Namespace, path: &str, budget: usize) -> (Vec<(String, u64)>, usize) {
    visits(TreeWalk::start(ns, path).expect("start"), ns, budget)
}

fn paths(v: &[(String, u64)]) -> Vec<&str> {
    v.iter().map(|(p, _)| p.as_str()).collect()
}

#[test]
fn every_entry_is_visited_once_in_tree_order_in_any_slices() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut real = Real::open(dir.path());
    real.mkdir("/a/b/c");
    real.file("/top", 1);
    real.file("/a/x", 2);
    real.file("/a/b/y", 3);
    real.file("/a/b/c/z", 4);
    real.file("/a/b/w", 5);
    // Names that sort before "/" in a plain string comparison: "/a.txt" is
    // after all of "/a/..." in tree order, before them as strings.
    real.file("/a.txt", 6);
    real.mkdir("/a-dir");
    real.file("/a-dir/q", 7);
    real.mkdir("/a/empty");
    let m = real.ns.plan_symlink("/a/link", "/a/x", 1).expect("symlink");
    real.exec(m);
    let order = vec![
        "/", "/a", "/a/b", "/a/b/c", "/a/b/c/z", "/a/b/w", "/a/b/y", "/a/empty", "/a/link", "/a/x",
        "/a-dir", "/a-dir/q", "/a.txt", "/top",
    ];
    let (whole, steps) = files(&real.ns, "/", 1 << 20);
    assert_eq!((paths(&whole), steps), (order.clone(), 1));
    for budget in [1, 2, 3, 7] {
        let (seen, steps) = files(&real.ns, "/", budget);
        assert_eq!(paths(&seen), order, "in slices of {budget}");
        assert!(steps > 1, "slices of {budget} took one step");
    }
    // Tree order is the order tree_cmp gives.
    let mut sorted = order.clone();
    sorted.sort_by(|a, b| tree_cmp(a, b));
    assert_eq!(sorted, order);

    assert_eq!(
        paths(&files(&real.ns, "/a/b", 2).0),
        ["/a/b", "/a/b/c", "/a/b/c/z", "/a/b/w", "/a/b/y"]
    );
    assert_eq!(files(&real.ns, "/a/x/", 1).0, vec![("/a/x".to_string(), 2)]);
    assert_eq!(
        paths(&files(&real.ns, "/a/link", 1).0),
        ["/a/link"],
        "a link is visited, not followed"
    );
    assert!(TreeWalk::start(&real.ns, "/nope").is_err());

    // Started after any entry, a walk visits exactly what follows it, in any
    // slices; so does one after a path that is gone, or never was.
    for (i, after) in order.iter().enumerate() {
        for budget in [1, 3, 1 << 20] {
            let w = TreeWalk::start_after(&real.ns, "/", after).expect("start after");
            let (seen, _) = visits(w, &real.ns, budget);
            assert_eq!(
                paths(&seen),
                order[i + 1..],
                "after {after}, slices of {budget}"
            );
        }
    }
    let rest = |after: &str| {
        let w = TreeWalk::start_after(&real.ns, "/", after).expect("start after");
        visits(w, &real.ns, 2).0
    };
    assert_eq!(paths(&rest("/a/b/c/gone")), order[4..]);
    assert_eq!(paths(&rest("/a/b/v")), order[5..]);
    assert_eq!(paths(&rest("/a/b/zz")), order[7..]);
    assert_eq!(paths(&rest("/a/nothing/below")), order[9..]);
    assert_eq!(paths(&rest("/zzz")), Vec::<&str>::new());
    let w = TreeWalk::start_after(&real.ns, "/a/b", "/a/b/c/z").expect("start after");
    assert_eq!(paths(&visits(w, &real.ns, 1).0), ["/a/b/w", "/a/b/y"]);
    assert!(
        TreeWalk::start_after(&real.ns, "/a/b", "/a/x").is_err(),
        "a cursor outside the walk"
    );

    // A directory removed mid-walk is skipped; the others are still visited.
    let mut w = TreeWalk::start(&real.ns, "/").expect("start");
    let mut seen = Vec::new();
    assert!(!w.step(&real.ns, 3, |p, _| seen.push(p.to_string())));
    let m = real
        .ns
        .plan_remove("/a/b", true, false, 2)
        .expect("plan rm");
    real.exec(m);
    for _ in 0..100 {
        if w.step(&real.ns, 1, |p, _| seen.push(p.to_string())) {
            break;
        }
    }
    assert!(
        seen.contains(&"/top".to_string()) && seen.contains(&"/a/x".to_string()),
        "{seen:?}"
    );
    assert!(!seen.iter().any(|p| p.starts_with("/a/b/c/")), "{seen:?}");
}
