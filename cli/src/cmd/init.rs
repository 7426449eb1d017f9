//! `membrane init`: create the person's root key and this device's key.

use std::path::PathBuf;

use membrane_node::{DeviceIdentity, time};
use serde_json::json;

use crate::output::Output;

/// Create your root identity and this device's key.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

pub(crate) fn run(_args: Args, data_dir: Option<PathBuf>, out: &mut Output) -> anyhow::Result<()> {
    let dir = super::resolve_data_dir(data_dir)?;
    let identity = DeviceIdentity::init(&dir, time::now())?;
    let data = json!({
        "data_dir": dir.path(),
        "root": identity.root.to_string(),
        "device": identity.device.did().to_string(),
        "peer_id": identity.device.public().to_peer_id().to_string(),
    });
    out.result("init", &data, |w| {
        writeln!(w, "Initialized Membrane in {}", dir.path().display())?;
        writeln!(w, "root:   {}", identity.root)?;
        writeln!(w, "device: {}", identity.device.did())?;
        writeln!(
            w,
            "Secret keys are in {}/identity (mode 0600).",
            dir.path().display()
        )
    })
}
