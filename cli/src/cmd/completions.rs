//! `membrane completions SHELL`: a completion script for a shell.

use clap::CommandFactory as _;
use clap_complete::Shell;
use serde_json::json;

use crate::{args::Cli, output::Output};

/// Print a script that completes membrane's subcommands and flags in your shell.
#[derive(Debug, clap::Args)]
#[command(after_help = "Install it:\n  \
    bash: membrane completions bash > ~/.local/share/bash-completion/completions/membrane\n  \
    zsh:  membrane completions zsh > ~/.zfunc/_membrane   (with fpath+=~/.zfunc before compinit)\n  \
    fish: membrane completions fish > ~/.config/fish/completions/membrane.fish")]
pub(crate) struct Args {
    /// The shell.
    #[arg(value_enum)]
    shell: Shell,
}

pub(crate) fn run(args: Args, out: &mut Output) -> anyhow::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "membrane", &mut script);
    let script = String::from_utf8(script)?;
    let data = json!({"shell": args.shell.to_string(), "script": script});
    out.result("completions", &data, |w| w.write_all(script.as_bytes()))
}
