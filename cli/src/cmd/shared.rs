//! `membrane shared`: what others share with you.

use std::path::PathBuf;

use serde_json::json;

use crate::{control::Client, output::Output};

/// List the documents others share with you, and on which terms. Needs `membrane run`.
///
/// Example: membrane shared --json
#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

pub(crate) fn run(_args: Args, data_dir: Option<PathBuf>, out: &mut Output) -> anyhow::Result<()> {
    let dir = super::resolve_data_dir(data_dir)?;
    let shared = Client::connect(&dir)?.call("shared", json!({}))?;
    out.result("shared", &shared, |w| {
        let list = shared.as_array().map_or(&[][..], Vec::as_slice);
        if list.is_empty() {
            return writeln!(w, "nothing is shared with you yet");
        }
        for grant in list {
            writeln!(w, "from {}", grant["from"].as_str().unwrap_or_default())?;
            for doc in grant["docs"].as_array().into_iter().flatten() {
                writeln!(
                    w,
                    "  {} {}",
                    doc[1].as_str().unwrap_or_default(),
                    doc[0].as_str().unwrap_or_default()
                )?;
            }
            if let Some(terms) = grant["terms"].as_str() {
                writeln!(w, "  terms: {terms}")?;
            }
        }
        Ok(())
    })
}
