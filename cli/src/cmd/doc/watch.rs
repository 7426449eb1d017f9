//! `membrane doc watch ID`

use serde_json::json;

use crate::{control::Client, output::Output};

/// Print the document each time it changes.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The document's id or name.
    doc: String,
}

pub(crate) fn run(args: Args, client: &mut Client, out: &mut Output) -> anyhow::Result<()> {
    let started = client.start("doc.watch", json!({"doc": args.doc}))?;
    out.result("watching", &started, |w| {
        writeln!(
            w,
            "watching {} (Ctrl-C to stop)",
            started["watching"].as_str().unwrap_or_default()
        )
    })?;
    loop {
        let line = client.read()?;
        let event = line["event"].clone();
        out.result("change", &event, |w| {
            let by = event["by"].as_str().unwrap_or("?");
            writeln!(w, "changed ({by}): {}", event["content"])
        })?;
    }
}
