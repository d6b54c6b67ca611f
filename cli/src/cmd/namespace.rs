//! Namespace verbs that print listings: `ls`.

use dfs_cli::output;
use dfs_client::{Client, DirEntry, FileKind};

use crate::cmd::{print_json, print_text};

/// Entries asked for per page: `ls` prints each page as it comes, so memory stays
/// bounded however large the directory.
const LS_PAGE: u32 = 5_000;

/// How `ls` shows what it lists.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LsView {
    pub(crate) long: bool,
    pub(crate) recursive: bool,
    pub(crate) human: bool,
    /// PATH itself, not its entries (`-d`).
    pub(crate) directory: bool,
    pub(crate) json: bool,
}

pub(crate) async fn ls(client: &Client, path: &str, view: LsView) -> anyhow::Result<()> {
    let LsView {
        long,
        recursive,
        human,
        directory,
        json,
    } = view;
    if directory {
        let stat = client.stat(path).await?;
        let me = [DirEntry {
            name: path.to_string(),
            kind: stat.kind,
            size: stat.size,
            mtime: stat.mtime,
            replication: if stat.kind == FileKind::File {
                stat.replication
            } else {
                0
            },
        }];
        return if json {
            print_json(&output::ls_json(&me))
        } else {
            print_text(&output::ls_plain(&me, long, human))
        };
    }
    let mut array = output::JsonArray::default();
    // Depth-first like `ls -R`; an explicit stack keeps deep trees off the call stack.
    let root = path.trim_end_matches('/').to_string();
    let mut stack = vec![String::new()];
    let mut first_dir = true;
    while let Some(rel) = stack.pop() {
        let shown = if rel.is_empty() {
            path.to_string()
        } else {
            format!("{root}/{rel}")
        };
        if recursive && !json {
            let gap = if first_dir { "" } else { "\n" };
            print_text(&format!("{gap}{shown}:\n"))?;
        }
        first_dir = false;
        let mut subdirs = Vec::new();
        let mut after = None;
        loop {
            let (page, next) = client.list_page(&shown, after, LS_PAGE).await?;
            let page: Vec<DirEntry> = page
                .into_iter()
                .map(|e| {
                    if recursive && e.kind == FileKind::Dir {
                        subdirs.push(join_rel(&rel, &e.name));
                    }
                    if recursive && json {
                        DirEntry {
                            name: join_rel(&rel, &e.name),
                            ..e
                        }
                    } else {
                        e
                    }
                })
                .collect();
            if json {
                print_text(&array.items(&output::ls_json(&page))?)?;
            } else {
                print_text(&output::ls_plain(&page, long, human))?;
            }
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        for sub in subdirs.into_iter().rev() {
            stack.push(sub);
        }
    }
    if json {
        print_text(&array.end())?;
    }
    Ok(())
}

pub(crate) fn join_rel(rel: &str, name: &str) -> String {
    if rel.is_empty() {
        name.to_string()
    } else {
        format!("{rel}/{name}")
    }
}

/// `dfs rmdir`: removes `path` if it is an empty directory.
pub(crate) async fn rmdir(client: &Client, path: &str) -> anyhow::Result<()> {
    let stat = client.stat(path).await?;
    if stat.kind != FileKind::Dir {
        anyhow::bail!("{}: not a directory", stat.path);
    }
    // Not recursive: the master refuses a directory that has entries.
    client.remove(&stat.path, false, true).await?;
    Ok(())
}

/// `dfs count`.
pub(crate) async fn count(client: &Client, path: &str, json: bool) -> anyhow::Result<()> {
    let s = client.summary(path).await?;
    if json {
        print_json(&output::count_json(path, &s))
    } else {
        print_text(&output::count_plain(path, &s))
    }
}

/// `dfs du`: the total of `path`, or of each of its entries.
pub(crate) async fn du(
    client: &Client,
    path: &str,
    summarize: bool,
    human: bool,
    json: bool,
) -> anyhow::Result<()> {
    let stat = client.stat(path).await?;
    let mut rows = Vec::new();
    if summarize || stat.kind == FileKind::File {
        rows.push((stat.path.clone(), client.summary(&stat.path).await?.bytes));
    } else {
        let mut after = None;
        loop {
            let (page, next) = client.list_page(&stat.path, after, LS_PAGE).await?;
            for e in page {
                let child = join_path(&stat.path, &e.name);
                let size = match e.kind {
                    FileKind::File | FileKind::Symlink => e.size,
                    FileKind::Dir => client.summary(&child).await?.bytes,
                };
                rows.push((child, size));
            }
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
    }
    if json {
        print_json(&output::du_json(&rows))
    } else {
        print_text(&output::du_plain(&rows, human))
    }
}

/// `dfs tree`: `path` and what is below it, depth first, at most `depth` levels. Each
/// level being printed holds its directory's listing.
pub(crate) async fn tree(client: &Client, path: &str, depth: Option<usize>) -> anyhow::Result<()> {
    struct Level {
        dir: String,
        entries: std::vec::IntoIter<DirEntry>,
        prefix: String,
    }
    let stat = client.stat(path).await?;
    print_text(&format!("{}\n", stat.path))?;
    let (mut dirs, mut files) = (0u64, 0u64);
    let mut stack = Vec::new();
    if stat.kind == FileKind::Dir {
        let entries = client.list(&stat.path).await?.into_iter();
        stack.push(Level {
            dir: stat.path.clone(),
            entries,
            prefix: String::new(),
        });
    }
    while !stack.is_empty() {
        let level = stack.len();
        let Some(top) = stack.last_mut() else { break };
        let Some(e) = top.entries.next() else {
            stack.pop();
            continue;
        };
        let (branch, carry) = if top.entries.len() == 0 {
            ("└── ", "    ")
        } else {
            ("├── ", "│   ")
        };
        let is_dir = e.kind == FileKind::Dir;
        let slash = if is_dir { "/" } else { "" };
        print_text(&format!("{}{branch}{}{slash}\n", top.prefix, e.name))?;
        if !is_dir {
            files += 1;
            continue;
        }
        dirs += 1;
        if depth.is_none_or(|d| level < d) {
            let dir = join_path(&top.dir, &e.name);
            let prefix = format!("{}{carry}", top.prefix);
            let entries = client.list(&dir).await?.into_iter();
            stack.push(Level {
                dir,
                entries,
                prefix,
            });
        }
    }
    print_text(&format!(
        "\n{dirs} director{}, {files} file{}\n",
        if dirs == 1 { "y" } else { "ies" },
        if files == 1 { "" } else { "s" }
    ))
}

fn join_path(dir: &str, name: &str) -> String {
    format!("{}/{name}", dir.trim_end_matches('/'))
}
