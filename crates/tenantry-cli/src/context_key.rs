//! `tenantry context-key [rotate|list|retire]`: the keys with which servers prove tenant contexts, through the migration role's connection (DATABASE_URL, or the embedded cluster's superuser). Printing the newest key stays the bare command.

use clap::{Args, Subcommand};
use tenantry_db::context_keys;

use crate::{
    local,
    output::{json, outln, table},
    Target,
};

#[derive(Debug, Args)]
pub struct ContextKeyArgs {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    command: Option<ContextKeyCommand>,
}

#[derive(Debug, Subcommand)]
enum ContextKeyCommand {
    /// Add a new key and print it (`<id>:<hex>`); the older keys keep
    /// verifying until retired, so servers can move to it one by one.
    Rotate,
    /// List the keys (ids and creation times, never the secrets).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Retire (delete) a key: contexts proven with it are refused at once,
    /// and servers still holding it answer 503. The last key cannot be retired.
    Retire {
        /// The key's id (the part before `:`).
        id: i32,
    },
}

pub async fn run(args: ContextKeyArgs) -> anyhow::Result<()> {
    let Some(command) = args.command else {
        let key = local::context_key(&args.target).await?;
        outln!("{}", key.expose());
        return Ok(());
    };
    let (client, _cluster) = local::migration_client(&args.target, "manage context keys").await?;
    match command {
        ContextKeyCommand::Rotate => {
            let key = context_keys::add(&client).await?;
            let older: Vec<String> = context_keys::list(&client)
                .await?
                .into_iter()
                .filter(|k| k.key_id != key.id())
                .map(|k| k.key_id.to_string())
                .collect();
            outln!("{}", key.expose());
            let older = match older.as_slice() {
                [] => "no older key verifies".to_owned(),
                [one] => format!("key {one} keeps verifying"),
                many => format!("keys {} keep verifying", many.join(", ")),
            };
            eprintln!(
                "added context key {id}, now the newest; {older}.\n\
                 next: restart each server with TENANTRY_CONTEXT_KEY set to the line above, \
                 then retire each older key with `tenantry context-key retire <id>`.",
                id = key.id(),
            );
        }
        ContextKeyCommand::List { json: as_json } => {
            let keys = context_keys::list(&client).await?;
            if as_json {
                json(&keys)?;
            } else {
                table(
                    &["KEY", "CREATED AT"],
                    &keys
                        .iter()
                        .map(|k| vec![k.key_id.to_string(), k.created_at.to_rfc3339()])
                        .collect::<Vec<_>>(),
                );
            }
        }
        ContextKeyCommand::Retire { id } => {
            context_keys::retire(&client, id).await?;
            outln!("retired context key {id}");
        }
    }
    Ok(())
}
