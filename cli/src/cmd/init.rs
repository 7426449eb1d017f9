//! `membrane init`: create the person's root key and this device's key.

use std::path::PathBuf;

use membrane_node::{DeviceIdentity, time};
use serde_json::json;

use crate::output::Output;

/// Create your root identity and this device's key.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Make only a device key: this device will join a person's existing devices
    /// (`membrane device link` on one of them, `membrane device accept` here).
    #[arg(long)]
    join: bool,
}

pub(crate) fn run(args: Args, data_dir: Option<PathBuf>, out: &mut Output) -> anyhow::Result<()> {
    let dir = super::resolve_data_dir(data_dir)?;
    if args.join {
        let device = DeviceIdentity::init_joining(&dir)?;
        let data = json!({"data_dir": dir.path(), "device": device.did().to_string()});
        return out.result("init", &data, |w| {
            writeln!(w, "Created a device key in {}", dir.path().display())?;
            writeln!(w, "device: {}", device.did())?;
            writeln!(
                w,
                "On one of your devices run: membrane device link {}",
                device.did()
            )
        });
    }
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
