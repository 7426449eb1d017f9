//! `membrane device accept CODE`

use std::path::PathBuf;

use membrane_node::{DeviceIdentity, LinkBundle, time};
use serde_json::json;

use crate::output::Output;

/// Accept a link code on the new device.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The code printed by `membrane device link`.
    code: String,
}

pub(crate) fn run(args: Args, data_dir: Option<PathBuf>, out: &mut Output) -> anyhow::Result<()> {
    let dir = super::super::resolve_data_dir(data_dir)?;
    let bundle = LinkBundle::from_text(&args.code)?;
    let identity = DeviceIdentity::accept_link(&dir, &bundle, time::now())?;
    let data =
        json!({"root": identity.root.to_string(), "device": identity.device.did().to_string()});
    out.result("linked", &data, |w| {
        writeln!(w, "this device now belongs to {}", identity.root)
    })
}
