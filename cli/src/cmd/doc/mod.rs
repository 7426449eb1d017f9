//! `membrane doc …`: documents, through the running daemon.

pub(crate) mod get;
pub(crate) mod history;
pub(crate) mod list;
pub(crate) mod new;
pub(crate) mod set;
pub(crate) mod watch;

use std::path::PathBuf;

use clap::Subcommand;

use crate::{control::Client, output::Output};

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create a document, optionally named and filled from a JSON file.
    ///
    /// Example: membrane doc new --name calendar --content calendar.json
    New(new::Args),
    /// Print a document (or the value at a JSON pointer in it) as JSON.
    ///
    /// Example: membrane doc get calendar /monday
    Get(get::Args),
    /// Set the value at a JSON pointer; VALUE is JSON, or else a string.
    ///
    /// Example: membrane doc set calendar /monday "tennis at 6"
    Set(set::Args),
    /// List documents.
    ///
    /// Example: membrane doc list --json
    List(list::Args),
    /// Print the document each time it changes, here or on another device.
    ///
    /// Example: membrane doc watch calendar
    Watch(watch::Args),
    /// List a document's changes, oldest first.
    ///
    /// Example: membrane doc history calendar
    History(history::Args),
}

pub(crate) fn run(
    command: Command,
    data_dir: Option<PathBuf>,
    out: &mut Output,
) -> anyhow::Result<()> {
    let dir = super::resolve_data_dir(data_dir)?;
    let mut client = Client::connect(&dir)?;
    match command {
        Command::New(args) => new::run(args, &mut client, out),
        Command::Get(args) => get::run(args, &mut client, out),
        Command::Set(args) => set::run(args, &mut client, out),
        Command::List(args) => list::run(args, &mut client, out),
        Command::Watch(args) => watch::run(args, &mut client, out),
        Command::History(args) => history::run(args, &mut client, out),
    }
}
