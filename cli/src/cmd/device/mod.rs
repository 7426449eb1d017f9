//! `membrane device …`: add devices to your personal cloud.

pub(crate) mod accept;
pub(crate) mod link;

use std::path::PathBuf;

use clap::Subcommand;

use crate::output::Output;

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// On a device you have: issue a link code that makes another device (created with
    /// `membrane init --join`) one of yours.
    ///
    /// Example: membrane device link did:key:z6Mk…
    Link(link::Args),
    /// On the new device: accept a link code.
    ///
    /// Example: membrane device accept mbrlink1…
    Accept(accept::Args),
}

pub(crate) fn run(
    command: Command,
    data_dir: Option<PathBuf>,
    out: &mut Output,
) -> anyhow::Result<()> {
    match command {
        Command::Link(args) => link::run(args, data_dir, out),
        Command::Accept(args) => accept::run(args, data_dir, out),
    }
}
