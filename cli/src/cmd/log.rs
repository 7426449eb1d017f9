//! `membrane log`: the access log.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::{Rejected, control::Client, output::Output};

/// Show every read and write of your documents by someone outside your devices, or check
/// that the log was not altered. Needs `membrane run`.
///
/// Example: membrane log --doc calendar; membrane log verify
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    action: Option<Action>,
    /// Only entries by this peer (device DID).
    #[arg(long, value_name = "DID")]
    by: Option<String>,
    /// Only entries about this document id.
    #[arg(long, value_name = "ID")]
    doc: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Check the log's hash chain; exit code 1 if any entry was altered or removed.
    Verify,
}

pub(crate) fn run(args: Args, data_dir: Option<PathBuf>, out: &mut Output) -> anyhow::Result<()> {
    let dir = super::resolve_data_dir(data_dir)?;
    let mut client = Client::connect(&dir)?;
    if let Some(Action::Verify) = args.action {
        let done = client.call("log.verify", json!({}))?;
        let intact = done["intact"] == true;
        out.result("log-verify", &done, |w| {
            if intact {
                let n = done["entries"].as_u64().unwrap_or_default();
                let noun = if n == 1 { "entry" } else { "entries" };
                writeln!(w, "the access log is intact: {n} {noun}")
            } else {
                writeln!(
                    w,
                    "{}",
                    done["error"]
                        .as_str()
                        .unwrap_or("the access log was altered")
                )
            }
        })?;
        return if intact { Ok(()) } else { Err(Rejected.into()) };
    }
    let log = client.call("log", json!({}))?;
    let keep = |entry: &&Value| {
        args.by.as_deref().is_none_or(|by| entry["peer"] == by)
            && args.doc.as_deref().is_none_or(|doc| entry["doc"] == doc)
    };
    let entries: Vec<Value> = log
        .as_array()
        .into_iter()
        .flatten()
        .filter(keep)
        .cloned()
        .collect();
    out.result("log", &Value::Array(entries.clone()), |w| {
        if entries.is_empty() {
            return writeln!(w, "no access by anyone outside your devices");
        }
        for entry in &entries {
            writeln!(
                w,
                "{:>5}  {}  {:<5}  {} bytes  {}  by {}  grant {}",
                entry["seq"],
                entry["at"]
                    .as_u64()
                    .map(super::token::format_time)
                    .unwrap_or_default(),
                entry["kind"].as_str().unwrap_or_default(),
                entry["bytes"],
                entry["doc"].as_str().unwrap_or_default(),
                entry["peer"].as_str().unwrap_or_default(),
                entry["grant"].as_str().unwrap_or_default(),
            )?;
        }
        Ok(())
    })
}
