//! `membrane accept`: take a grant someone gave you.

use std::path::PathBuf;

use serde_json::json;

use crate::{control::Client, output::Output};

/// Accept a grant code from another person; your node then syncs the documents it covers
/// with their devices. Needs `membrane run`.
///
/// Example: membrane accept mbrgrant1…
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The code printed by their `membrane grant`.
    code: String,
}

pub(crate) fn run(args: Args, data_dir: Option<PathBuf>, out: &mut Output) -> anyhow::Result<()> {
    let dir = super::resolve_data_dir(data_dir)?;
    let shared = Client::connect(&dir)?.call("accept", json!({"code": args.code}))?;
    out.result("accepted", &shared, |w| {
        writeln!(
            w,
            "accepted a grant from {}",
            shared["from"].as_str().unwrap_or_default()
        )?;
        for doc in shared["docs"].as_array().into_iter().flatten() {
            writeln!(
                w,
                "  {} {}",
                doc[1].as_str().unwrap_or_default(),
                doc[0].as_str().unwrap_or_default()
            )?;
        }
        if let Some(terms) = shared["terms"].as_str() {
            writeln!(w, "their terms: {terms}")?;
        }
        Ok(())
    })
}
