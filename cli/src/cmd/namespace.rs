//! Namespace verbs that print listings: `ls`.

use dfs_cli::output;
use dfs_client::{Client, DirEntry, FileKind};

use crate::cmd::print_text;

/// Entries asked for per page: `ls` prints each page as it comes, so memory stays
/// bounded however large the directory.
const LS_PAGE: u32 = 5_000;

pub(crate) async fn ls(
    client: &Client,
    path: &str,
    long: bool,
    recursive: bool,
    json: bool,
) -> anyhow::Result<()> {
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
                print_text(&output::ls_plain(&page, long))?;
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
