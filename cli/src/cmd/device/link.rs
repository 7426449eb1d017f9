//! `membrane device link DID`

use std::path::PathBuf;

use membrane_node::{DeviceIdentity, time};
use membrane_protocol::Did;
use serde_json::json;

use crate::output::Output;

/// Issue a link code for a new device.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The new device's DID (`membrane id` on it).
    device: Did,
}

pub(crate) fn run(args: Args, data_dir: Option<PathBuf>, out: &mut Output) -> anyhow::Result<()> {
    let dir = super::super::resolve_data_dir(data_dir)?;
    let identity = DeviceIdentity::load(&dir)?;
    let code = identity.link(args.device, time::now())?.to_text();
    out.result(
        "link",
        &json!({"device": args.device.to_string(), "code": code}),
        |w| writeln!(w, "{code}"),
    )
}
