//! `dfs config show`: the client settings in force and where each came from.

use std::path::Path;

use dfs_cli::settings::{self, pick, Setting, Source};
use serde_json::json;

use crate::cmd::{print_json, print_text};
use crate::Context;

pub(crate) fn show(
    ctx: &Context,
    key_file: Option<&Path>,
    tls_ca: Option<&Path>,
    json: bool,
) -> anyhow::Result<()> {
    let file_path = ctx.file_path.as_deref();
    let path_text = |p: &Path| p.display().to_string();
    let env = |name: &'static str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .map(|v| (name, v))
    };
    let mut list = vec![Setting {
        name: "master",
        value: Some(ctx.master.clone()),
        source: ctx.master_source.clone(),
    }];
    list.push(settings::credential(
        key_file,
        &ctx.file,
        file_path,
        &ctx.master,
    ));
    let (ca, ca_source) = pick(
        tls_ca.map(|p| ("--tls-ca", path_text(p))),
        env("DFS_TLS_CA"),
        ctx.file.tls_ca.as_deref().map(path_text),
        file_path,
        dfs_cli::tls::default_ca_path(&ctx.master)
            .filter(|p| p.exists())
            .map(|p| path_text(&p)),
    );
    list.push(Setting {
        name: "tls_ca",
        value: ca,
        source: ca_source,
    });
    let (replication, source) = pick(
        None,
        None,
        ctx.file.replication.map(|r| r.to_string()),
        file_path,
        None,
    );
    list.push(Setting {
        name: "replication",
        value: replication.or(Some("the cluster's default".into())),
        source,
    });
    let (parallel, source) = pick(
        None,
        None,
        ctx.file.parallel.map(|r| r.to_string()),
        file_path,
        Some(settings::DEFAULT_PARALLEL.to_string()),
    );
    list.push(Setting {
        name: "parallel",
        value: parallel,
        source,
    });
    let config_file = dfs_cli::config::client_path();
    if json {
        return print_json(&json!({
            "config_file": config_file.as_deref().map(path_text),
            "config_file_exists": file_path.is_some(),
            "settings": list.iter().map(|s| json!({
                "name": s.name,
                "value": s.value,
                "source": source_name(&s.source),
                "source_detail": s.source.to_string(),
            })).collect::<Vec<_>>(),
        }));
    }
    let mut out = String::new();
    for s in &list {
        out.push_str(&format!(
            "{:<12} {:<44} {}\n",
            s.name,
            s.value.as_deref().unwrap_or("(none)"),
            s.source
        ));
    }
    out.push_str(&match (config_file, file_path) {
        (Some(p), Some(_)) => format!("config file  {}\n", p.display()),
        (Some(p), None) => format!("config file  {} (not present)\n", p.display()),
        (None, _) => "config file  (none: neither $XDG_CONFIG_HOME nor $HOME is set)\n".into(),
    });
    print_text(&out)
}

/// A source's kind, for JSON: flag, env, file, stored or default.
fn source_name(s: &Source) -> &'static str {
    match s {
        Source::Flag(_) => "flag",
        Source::Env(_) => "env",
        Source::File(_) => "file",
        Source::Stored(_) => "stored",
        Source::Default => "default",
    }
}
