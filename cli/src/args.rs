//! Command-line arguments (clap derive).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::cmd;

/// Membrane: your personal data network node.
///
/// Your contacts, calendar, fitness and purchase data live as Automerge documents on your
/// own devices, synced peer to peer; friends and vendors reach them only through signed,
/// expiring, revocable UCAN capability tokens.
#[derive(Debug, Parser)]
#[command(name = "membrane", version, propagate_version = true)]
pub(crate) struct Cli {
    /// Data directory [default: $MEMBRANE_DATA_DIR, else $XDG_DATA_HOME/membrane, else
    /// ~/.local/share/membrane].
    #[arg(long, global = true, env = "MEMBRANE_DATA_DIR", value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,

    /// Print results as JSON Lines: one `{"type": …, "data": …}` object per line.
    #[arg(long, global = true)]
    pub(crate) json: bool,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create your root identity and this device's key.
    ///
    /// Example: membrane init --data-dir ~/membrane
    Init(cmd::init::Args),
    /// Print your root DID and this device's DID and PeerId.
    ///
    /// Example: membrane id --json
    Id(cmd::id::Args),
    /// Inspect, verify and issue UCAN 1.0 tokens.
    #[command(subcommand)]
    Token(Box<cmd::token::Command>),
}
