//! `membrane who-can`: who may reach a document.

use std::path::PathBuf;

use serde_json::json;

use crate::{control::Client, output::Output};

/// Show who may read or write a document: your devices, and each live grant with the
/// chain it goes through. Needs `membrane run`.
///
/// Example: membrane who-can calendar
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The document: id or name.
    doc: String,
}

pub(crate) fn run(args: Args, data_dir: Option<PathBuf>, out: &mut Output) -> anyhow::Result<()> {
    let dir = super::resolve_data_dir(data_dir)?;
    let who = Client::connect(&dir)?.call("who-can", json!({"doc": args.doc}))?;
    out.result("who-can", &who, |w| {
        writeln!(
            w,
            "{} ({})",
            args.doc,
            who["doc"].as_str().unwrap_or_default()
        )?;
        for device in who["devices"].as_array().into_iter().flatten() {
            writeln!(
                w,
                "  everything  {}  (your device)",
                device.as_str().unwrap_or_default()
            )?;
        }
        for grant in who["grants"].as_array().into_iter().flatten() {
            let through: Vec<&str> = grant["through"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d.as_str())
                .collect();
            writeln!(
                w,
                "  {:<10}  {}  via {}",
                grant["can"].as_str().unwrap_or_default(),
                grant["to"].as_str().unwrap_or_default(),
                through.join(" → ")
            )?;
        }
        Ok(())
    })
}
