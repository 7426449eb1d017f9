//! `membrane doc set ID PATH VALUE`

use serde_json::{Value, json};

use crate::{control::Client, output::Output};

/// Set a value.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The document's id or name.
    doc: String,
    /// A JSON pointer such as /monday or /contacts/- (append to a list).
    path: String,
    /// The value: JSON (`42`, `true`, `{"a": 1}`, `"text"`), or else taken as a string.
    value: String,
}

pub(crate) fn run(args: Args, client: &mut Client, out: &mut Output) -> anyhow::Result<()> {
    let value: Value = serde_json::from_str(&args.value).unwrap_or(Value::String(args.value));
    let done = client.call(
        "doc.set",
        json!({"doc": args.doc, "path": args.path, "value": value}),
    )?;
    out.result("set", &done, |w| writeln!(w, "saved"))
}
