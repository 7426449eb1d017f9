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
    /// Create your root identity and this device's key (or, with --join, only a device
    /// key for another of your devices to link).
    ///
    /// Example: membrane init --data-dir ~/membrane
    Init(cmd::init::Args),
    /// Print your root DID and this device's DID and PeerId.
    ///
    /// Example: membrane id --json
    Id(cmd::id::Args),
    /// Run this device's node in the foreground (Ctrl-C or SIGTERM stops it cleanly).
    ///
    /// Example: membrane run --peer /ip4/192.168.1.20/tcp/4001/p2p/12D3KooW…
    Run(cmd::run::Args),
    /// Show or change the settings `membrane run` reads from `<data dir>/config.toml`.
    ///
    /// Example: membrane config show; membrane config set listen /ip4/0.0.0.0/tcp/4001
    #[command(subcommand)]
    Config(cmd::config::Command),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    ///
    /// Example: membrane completions bash > ~/.local/share/bash-completion/completions/membrane
    Completions(cmd::completions::Args),
    /// Create, read, change and watch documents (needs `membrane run`).
    #[command(subcommand)]
    Doc(cmd::doc::Command),
    /// Show your devices and peers, each document's sync state on each device, and pending
    /// access requests (needs `membrane run`).
    ///
    /// Example: membrane status --json
    Status(cmd::status::Args),
    /// Add devices to your personal cloud.
    #[command(subcommand)]
    Device(cmd::device::Command),
    /// List your devices, or revoke one (needs `membrane run`).
    ///
    /// Example: membrane devices --json; membrane devices revoke phone
    Devices(cmd::devices::Args),
    /// Pair a new device by QR code.
    #[command(subcommand)]
    Pair(cmd::pair::Command),
    /// Inspect, verify and issue UCAN 1.0 tokens.
    #[command(subcommand)]
    Token(Box<cmd::token::Command>),
    /// Let another person read or write one document (needs `membrane run`).
    ///
    /// Example: membrane grant did:key:z6Mk… --doc calendar --can read --expires 30d
    Grant(cmd::grant::Args),
    /// List the grants you issued (needs `membrane run`).
    ///
    /// Example: membrane grants --json
    Grants(cmd::grants::Args),
    /// Accept a grant another person gave you (needs `membrane run`).
    ///
    /// Example: membrane accept mbrgrant1…
    Accept(cmd::accept::Args),
    /// List what others share with you (needs `membrane run`).
    ///
    /// Example: membrane shared
    Shared(cmd::shared::Args),
    /// Withdraw a grant (needs `membrane run`).
    ///
    /// Example: membrane revoke bafyrei…
    Revoke(cmd::revoke::Args),
    /// Show who may read or write a document (needs `membrane run`).
    ///
    /// Example: membrane who-can calendar
    WhoCan(cmd::who_can::Args),
    /// Show the access log, or verify it (needs `membrane run`).
    ///
    /// Example: membrane log --json; membrane log verify
    Log(cmd::log::Args),
    /// Ask another person for access to one of their documents (needs `membrane run`).
    ///
    /// Example: membrane request /ip4/…/tcp/4001/p2p/12D3KooW… --doc inbox --can write
    Request(cmd::request::Args),
    /// List access requests others filed with you (needs `membrane run`).
    ///
    /// Example: membrane requests --json
    Requests(cmd::requests::Args),
    /// Approve an access request: issues the grant (needs `membrane run`).
    ///
    /// Example: membrane approve 3 --expires 30d
    Approve(cmd::requests::ApproveArgs),
    /// Deny an access request (needs `membrane run`).
    ///
    /// Example: membrane deny 4 --reason "no thanks"
    Deny(cmd::requests::DenyArgs),
    /// Play the whole story on this machine with real nodes on loopback, checking each step:
    /// pairing, sync, sharing, a stranger refused, a lost phone revoked, the access log.
    ///
    /// The nodes live in a new temporary directory (never your data dir), removed at the
    /// end unless --keep. Exit code 0 if every step succeeded, 1 if one failed.
    ///
    /// Example: membrane demo; membrane demo --keep; membrane --json demo
    Demo(cmd::demo::Args),
}
