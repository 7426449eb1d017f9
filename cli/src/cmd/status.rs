//! `membrane status`

use std::path::PathBuf;

use serde_json::json;

use crate::{control::Client, output::Output};

/// Show this node's identity, peers and per-document sync state.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

pub(crate) fn run(_args: Args, data_dir: Option<PathBuf>, out: &mut Output) -> anyhow::Result<()> {
    let dir = super::resolve_data_dir(data_dir)?;
    let status = Client::connect(&dir)?.call("status", json!({}))?;
    out.result("status", &status, |w| {
        writeln!(
            w,
            "device: {}",
            status["device"].as_str().unwrap_or_default()
        )?;
        writeln!(w, "root:   {}", status["root"].as_str().unwrap_or_default())?;
        for addr in status["listen"].as_array().into_iter().flatten() {
            writeln!(w, "listening on {}", addr.as_str().unwrap_or_default())?;
        }
        let peers = status["peers"].as_array().map_or(0, Vec::len);
        writeln!(w, "devices online: {peers}")?;
        for doc in status["documents"].as_array().into_iter().flatten() {
            let synced = doc["in_sync_with"].as_array().map_or(0, Vec::len);
            let syncing = doc["syncing_with"].as_array().map_or(0, Vec::len);
            let state = match (synced, syncing) {
                (_, 0) if synced > 0 => format!("in sync with {synced} device(s)"),
                (0, 0) => "no device connected".to_owned(),
                _ => format!("syncing with {syncing} device(s)"),
            };
            let name = doc["name"].as_str().unwrap_or("-");
            writeln!(
                w,
                "{}  {name}  {state}",
                doc["id"].as_str().unwrap_or_default()
            )?;
        }
        for entry in status["quarantined"].as_array().into_iter().flatten() {
            writeln!(w, "QUARANTINED {}: {}", entry[0], entry[1])?;
        }
        let refused = status["refused"].as_array().map_or(&[][..], Vec::as_slice);
        if !refused.is_empty() {
            writeln!(w, "refused changes (latest {}):", refused.len())?;
            for r in refused.iter().rev().take(10) {
                writeln!(
                    w,
                    "  {} seq {} from {}: {}",
                    r["doc"].as_str().unwrap_or_default(),
                    r["seq"],
                    r["from"].as_str().unwrap_or_default(),
                    r["reason"].as_str().unwrap_or_default()
                )?;
            }
        }
        Ok(())
    })
}
