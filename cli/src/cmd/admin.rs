//! Admin verbs: client keys.

use dfs_cli::output;
use dfs_client::{Client, Role};

use crate::args::KeyCommand;
use crate::cmd::{print_json, print_text};

pub(crate) async fn key(client: &Client, command: KeyCommand) -> anyhow::Result<()> {
    match command {
        KeyCommand::Create {
            name,
            read_only,
            admin,
        } => {
            let role = match (read_only, admin) {
                (true, _) => Role::ReadOnly,
                (_, true) => Role::Admin,
                _ => Role::ReadWrite,
            };
            let key = client.create_key(&name, role).await?;
            print_text(&format!("{}\n", key.encode()))
        }
        KeyCommand::Ls { json } => {
            let keys = client.list_keys().await?;
            if json {
                print_json(&output::keys_json(&keys))
            } else {
                print_text(&output::keys_plain(&keys))
            }
        }
        KeyCommand::Rm { name } => Ok(client.remove_key(&name).await?),
    }
}

/// `dfs df`: capacity, use and free space over the live chunkservers.
pub(crate) async fn df(client: &Client, human: bool, json: bool) -> anyhow::Result<()> {
    let status = client.status().await?;
    if json {
        print_json(&output::df_json(&status))
    } else {
        print_text(&output::df_plain(&status, human))
    }
}
