//! `membrane doc new [--name N] [--json FILE]`

use std::path::PathBuf;

use anyhow::Context as _;
use serde_json::json;

use crate::{control::Client, output::Output};

/// Create a document.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// A name to find it by (`membrane doc get NAME`).
    #[arg(long)]
    name: Option<String>,
    /// Initial content: a JSON object from this file (`-` for stdin). (`--json` is the
    /// global switch for JSON output.)
    #[arg(long, value_name = "FILE")]
    content: Option<PathBuf>,
}

pub(crate) fn run(args: Args, client: &mut Client, out: &mut Output) -> anyhow::Result<()> {
    let content = match &args.content {
        None => None,
        Some(path) => {
            let text = if path.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?
            };
            let value: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?;
            anyhow::ensure!(
                value.is_object(),
                "{}: a document's content is a JSON object",
                path.display()
            );
            Some(value)
        }
    };
    let created = client.call("doc.new", json!({"name": args.name, "content": content}))?;
    out.result("document", &created, |w| {
        writeln!(w, "{}", created["id"].as_str().unwrap_or_default())
    })
}
