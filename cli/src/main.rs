//! `membrane`: the command-line front end of a Membrane node.
//!
//! Results go to stdout (human text, or JSON Lines with `--json`); logs go to stderr
//! (`RUST_LOG` filters them). Exit codes:
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success |
//! | 1 | the thing checked is invalid (e.g. `token verify` rejected the token) |
//! | 2 | bad command line (unknown flag, missing argument, bad `config set` key or value) |
//! | 3 | the command could not be carried out (no identity, no daemon running, a daemon already running, unreadable file, bad input) |
//!
//! Every error is one line on stderr, `error: …`, saying what to do about it.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod args;
mod cmd;
mod control;
mod duration;
mod input;
mod output;
mod progress;
mod qr;
mod settings;

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

/// A command-line argument that clap could not check by itself (a `config set` value, whose
/// kind depends on the key): exit 2, like clap's own errors.
#[derive(Debug)]
pub(crate) struct BadArgument(pub(crate) String);

impl std::fmt::Display for BadArgument {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadArgument {}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(&error),
    };
    tracing_subscriber::fmt()
        .with_writer(progress::log_writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(cmd::log_filter(&cli))),
        )
        .init();
    let mut out = Output::new(cli.json);
    let outcome = cmd::run(cli, &mut out);
    progress::clear();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if output::is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) if error.is::<Rejected>() => ExitCode::from(1),
        Err(error) => {
            let one_line = format!("{error:#}").replace('\n', " ");
            eprintln!("error: {one_line}");
            if error.chain().any(|cause| cause.is::<BadArgument>()) {
                ExitCode::from(2)
            } else {
                ExitCode::from(3)
            }
        }
    }
}

/// Prints a clap error as one line, `error: …; see `membrane … --help``, and returns exit
/// code 2. `--help` and `--version` print as usual (exit 0), as does the help shown when a
/// subcommand is missing (exit 2).
fn usage_error(error: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = error.print();
        return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2));
    }
    let rendered = error.render().to_string();
    let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("bad command line");
    let mut message = first.strip_prefix("error: ").unwrap_or(first).to_owned();
    let mut extras = Vec::new();
    for line in lines {
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            continue;
        }
        let line = line.strip_prefix("tip: ").unwrap_or(line);
        extras.push(
            line.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
        );
    }
    if !extras.is_empty() {
        if message.ends_with(':') {
            message = format!("{message} {}", extras.join(", "));
        } else {
            message = format!("{message} ({})", extras.join("; "));
        }
    }
    eprintln!(
        "error: {message}; see `{} --help`",
        command_path(std::env::args().skip(1))
    );
    ExitCode::from(2)
}

/// `membrane` and the subcommands named in `args`, for "see `membrane doc get --help`".
fn command_path(args: impl Iterator<Item = String>) -> String {
    use clap::CommandFactory as _;
    let root = Cli::command();
    let mut command = &root;
    let mut path = vec!["membrane".to_owned()];
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        if let Some(flag) = arg.strip_prefix("--") {
            // Skip the value of an option that takes one (`--data-dir DIR`).
            let takes_value = !flag.contains('=')
                && root
                    .get_arguments()
                    .chain(command.get_arguments())
                    .find(|a| a.get_long() == Some(flag))
                    .is_some_and(|a| a.get_action().takes_values());
            if takes_value {
                args.next();
            }
            continue;
        }
        match command.find_subcommand(&arg) {
            Some(sub) => {
                path.push(sub.get_name().to_owned());
                command = sub;
            }
            None if arg.starts_with('-') => {}
            None => break,
        }
    }
    path.join(" ")
}
