//! `membrane doc get ID [PATH]`

use serde_json::json;

use crate::{control::Client, output::Output};

/// Print a document or a value in it.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The document's id (`automerge:…`) or name.
    doc: String,
    /// A JSON pointer such as /contacts/0/name [default: the whole document].
    path: Option<String>,
}

pub(crate) fn run(args: Args, client: &mut Client, out: &mut Output) -> anyhow::Result<()> {
    let path = args.path.unwrap_or_else(|| "/".to_owned());
    let value = client.call("doc.get", json!({"doc": args.doc, "path": path}))?;
    out.result("value", &value, |w| {
        writeln!(
            w,
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        )
    })
}
