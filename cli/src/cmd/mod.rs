//! One module per subcommand; each exposes `Args` and `run`.

pub(crate) mod accept;
pub(crate) mod completions;
pub(crate) mod config;
pub(crate) mod demo;
pub(crate) mod device;
pub(crate) mod devices;
pub(crate) mod doc;
pub(crate) mod grant;
pub(crate) mod grants;
pub(crate) mod id;
pub(crate) mod init;
pub(crate) mod log;
pub(crate) mod pair;
pub(crate) mod request;
pub(crate) mod requests;
pub(crate) mod revoke;
pub(crate) mod run;
pub(crate) mod shared;
pub(crate) mod status;
pub(crate) mod token;
pub(crate) mod who_can;

use std::path::PathBuf;

use anyhow::Context as _;
use membrane_node::DataDir;

use crate::{
    args::{Cli, Command},
    output::Output,
};

pub(crate) fn run(cli: Cli, out: &mut Output) -> anyhow::Result<()> {
    let data_dir = cli.data_dir;
    match cli.command {
        Command::Init(args) => init::run(args, data_dir, out),
        Command::Id(args) => id::run(args, data_dir, out),
        Command::Run(args) => run::run(args, data_dir, out),
        Command::Config(command) => config::run(command, data_dir, out),
        Command::Completions(args) => completions::run(args, out),
        Command::Doc(command) => doc::run(command, data_dir, out),
        Command::Status(args) => status::run(args, data_dir, out),
        Command::Device(command) => device::run(command, data_dir, out),
        Command::Pair(command) => pair::run(command, data_dir, out),
        Command::Devices(args) => devices::run(args, data_dir, out),
        Command::Token(command) => token::run(*command, data_dir, out),
        Command::Grant(args) => grant::run(args, data_dir, out),
        Command::Grants(args) => grants::run(args, data_dir, out),
        Command::Accept(args) => accept::run(args, data_dir, out),
        Command::Shared(args) => shared::run(args, data_dir, out),
        Command::Revoke(args) => revoke::run(args, data_dir, out),
        Command::WhoCan(args) => who_can::run(args, data_dir, out),
        Command::Log(args) => log::run(args, data_dir, out),
        Command::Request(args) => request::run(args, data_dir, out),
        Command::Requests(args) => requests::list(args, data_dir, out),
        Command::Approve(args) => requests::approve(args, data_dir, out),
        Command::Deny(args) => requests::deny(args, data_dir, out),
        Command::Demo(args) => demo::run(args, data_dir, out),
    }
}

/// The log filter when `RUST_LOG` is not set: `membrane run` takes config.toml's
/// `log_level` (a file that does not load leaves the default; `run` then reports it).
pub(crate) fn log_filter(cli: &Cli) -> String {
    let default = || "warn".to_owned();
    if !matches!(cli.command, Command::Run(_)) {
        return default();
    }
    resolve_data_dir(cli.data_dir.clone())
        .ok()
        .and_then(|dir| crate::settings::Settings::load(&dir).ok())
        .map_or_else(default, |settings| settings.log_level)
}

/// The data dir: `--data-dir`/`MEMBRANE_DATA_DIR`, else the XDG data dir.
pub(crate) fn resolve_data_dir(explicit: Option<PathBuf>) -> anyhow::Result<DataDir> {
    if let Some(path) = explicit {
        return Ok(DataDir::new(path));
    }
    let base = match std::env::var_os("XDG_DATA_HOME").filter(|value| !value.is_empty()) {
        Some(xdg) => PathBuf::from(xdg),
        None => PathBuf::from(
            std::env::var_os("HOME")
                .context("neither --data-dir, MEMBRANE_DATA_DIR, XDG_DATA_HOME nor HOME is set")?,
        )
        .join(".local/share"),
    };
    Ok(DataDir::new(base.join("membrane")))
}
