//! `membrane pair …`: add a device by scanning a QR code.

pub(crate) mod invite;
pub(crate) mod join;

use std::path::PathBuf;

use clap::Subcommand;

use crate::output::Output;

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// On a device you have (its daemon running): show a QR code for a new device and wait
    /// for it to join.
    ///
    /// Example: membrane pair invite --ttl 10m --png invite.png
    Invite(invite::Args),
    /// On the new device (after `membrane init --join`): join with the code or a picture
    /// of the QR code.
    ///
    /// Example: membrane pair join BAEQ… --name phone
    Join(join::Args),
}

pub(crate) fn run(
    command: Command,
    data_dir: Option<PathBuf>,
    out: &mut Output,
) -> anyhow::Result<()> {
    match command {
        Command::Invite(args) => invite::run(args, data_dir, out),
        Command::Join(args) => join::run(args, data_dir, out),
    }
}
