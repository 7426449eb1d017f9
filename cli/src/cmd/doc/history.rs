//! `membrane doc history ID`

use serde_json::json;

use crate::{control::Client, output::Output};

/// List a document's changes.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The document's id or name.
    doc: String,
}

pub(crate) fn run(args: Args, client: &mut Client, out: &mut Output) -> anyhow::Result<()> {
    let changes = client.call("doc.history", json!({"doc": args.doc}))?;
    out.result("history", &changes, |w| {
        for change in changes.as_array().into_iter().flatten() {
            let hash = change["hash"].as_str().unwrap_or_default();
            let actor = change["actor"].as_str().unwrap_or_default();
            writeln!(
                w,
                "{}  actor {}…  seq {}",
                &hash[..hash.len().min(12)],
                &actor[..actor.len().min(12)],
                change["seq"]
            )?;
        }
        Ok(())
    })
}
