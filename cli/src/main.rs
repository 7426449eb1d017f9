//! `membrane`: the command-line front end of a Membrane node.
//!
//! Results go to stdout (human text, or JSON Lines with `--json`); logs go to stderr
//! (`RUST_LOG` filters them). Exit codes:
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success |
//! | 1 | the thing checked is invalid (e.g. `token verify` rejected the token) |
//! | 2 | bad command line (unknown flag, missing argument) |
//! | 3 | the command could not be carried out (no identity, unreadable file, bad input) |

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod args;
mod cmd;
mod control;
mod duration;
mod input;
mod output;
mod qr;

use std::process::ExitCode;

use clap::Parser as _;

use crate::{args::Cli, output::Output};

/// An outcome that is not an error of the tool but a "no" to the question asked.
#[derive(Debug)]
pub(crate) struct Rejected;

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("rejected")
    }
}

impl std::error::Error for Rejected {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let mut out = Output::new(cli.json);
    match cmd::run(cli, &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if output::is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) if error.is::<Rejected>() => ExitCode::from(1),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(3)
        }
    }
}
