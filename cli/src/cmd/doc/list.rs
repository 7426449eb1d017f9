//! `membrane doc list`

use serde_json::json;

use crate::{control::Client, output::Output};

/// List documents.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

pub(crate) fn run(_args: Args, client: &mut Client, out: &mut Output) -> anyhow::Result<()> {
    let docs = client.call("doc.list", json!({}))?;
    out.result("documents", &docs, |w| {
        for doc in docs.as_array().into_iter().flatten() {
            let name = doc["name"].as_str().unwrap_or("-");
            writeln!(w, "{}  {name}", doc["id"].as_str().unwrap_or_default())?;
        }
        Ok(())
    })
}
