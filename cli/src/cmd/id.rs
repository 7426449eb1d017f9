//! `membrane id`: who am I?

use std::path::PathBuf;

use membrane_node::{DeviceIdentity, IdentityError};
use serde_json::json;

use crate::output::Output;

/// Print your root DID and this device's DID and PeerId.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

pub(crate) fn run(_args: Args, data_dir: Option<PathBuf>, out: &mut Output) -> anyhow::Result<()> {
    let dir = super::resolve_data_dir(data_dir)?;
    let identity = match DeviceIdentity::load(&dir) {
        Err(IdentityError::NotLinked(_)) => {
            let device = DeviceIdentity::device_key(&dir)?.did();
            let data = json!({"root": null, "device": device.to_string(), "peer_id": device.to_peer_id()?.to_string(), "holds_root_key": false});
            return out.result("identity", &data, |w| {
                writeln!(w, "root:    (not linked yet: run `membrane device link {device}` on one of your devices)")?;
                writeln!(w, "device:  {device}")
            });
        }
        other => other?,
    };
    let peer_id = identity.device.public().to_peer_id();
    let data = json!({
        "root": identity.root.to_string(),
        "device": identity.device.did().to_string(),
        "peer_id": peer_id.to_string(),
        "holds_root_key": identity.root_key.is_some(),
    });
    out.result("identity", &data, |w| {
        writeln!(w, "root:    {}", identity.root)?;
        writeln!(w, "device:  {}", identity.device.did())?;
        writeln!(w, "peer id: {peer_id}")
    })
}
