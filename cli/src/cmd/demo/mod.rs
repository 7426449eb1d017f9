//! `membrane demo`: the seed story, live, on this machine.
//!
//! Real nodes (one data dir each, under a fresh temporary directory) talk over loopback:
//! Sarah's laptop and phone pair and sync, Tom and a shop use what she grants them, a
//! stranger is refused, the lost phone is revoked, and the access log shows it all. Every
//! step checks its outcome; the exit code is 0 only if all of them succeeded.

mod report;
mod stage;
mod story;

use std::{path::PathBuf, time::Instant};

use anyhow::Context as _;
use serde_json::json;

use self::{report::Report, stage::Stage};
use crate::{Rejected, output::Output};

/// Options of `membrane demo` (its help is on `Command::Demo`).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Leave the nodes running (until Ctrl-C) and their directory in place, and print
    /// how to reach each with the other commands.
    #[arg(long)]
    keep: bool,
}

/// Runs the demo. It makes its own directory: `--data-dir` (or `MEMBRANE_DATA_DIR`) is
/// ignored, so the demo never touches a real node's data.
pub(crate) fn run(args: Args, _data_dir: Option<PathBuf>, out: &mut Output) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(demo(args, out))
}

async fn demo(args: Args, out: &mut Output) -> anyhow::Result<()> {
    let started = Instant::now();
    let stage = Stage::create()?;
    let dir = stage.dir().to_owned();
    let intro = json!({"dir": dir, "keep": args.keep});
    let written = out.result("demo", &intro, |w| {
        writeln!(
            w,
            "Membrane demo: Sarah, her laptop and phone, her friend Tom, a sports shop and a stranger,"
        )?;
        writeln!(
            w,
            "each a real node with its own keys and store, talking over loopback."
        )?;
        let fate = if args.keep {
            "kept, with the nodes running, at the end"
        } else {
            "removed at the end; --keep keeps it"
        };
        writeln!(w, "Working in {} ({fate}).", dir.display())
    });
    if let Err(error) = written {
        stage.remove()?;
        return Err(error);
    }

    let mut report = Report::new(out);
    let told = tokio::select! {
        told = story::tell(&stage, &mut report) => told,
        () = stop_signal() => Err(anyhow::anyhow!("interrupted")),
    };
    let all_ok = report.all_ok();

    if args.keep && told.is_ok() {
        let kept = json!({"kept": dir});
        let waited = async {
            report.summary(started.elapsed(), &kept)?;
            keep_running(report.out(), &stage.directory().await).await
        }
        .await;
        // Stopped whether or not the summary and instructions could be printed.
        stage.stop_all().await;
        waited?;
        report.out().result("stopped", &json!({"dir": dir}), |w| {
            writeln!(
                w,
                "Stopped the nodes; their data stays in {}.",
                dir.display()
            )
        })?;
    } else {
        stage.stop_all().await;
        // Gone before the summary says so, and whether or not the story went well.
        let removed = stage.remove();
        told?;
        removed?;
        report.summary(started.elapsed(), &json!({"removed": dir}))?;
    }
    if all_ok { Ok(()) } else { Err(Rejected.into()) }
}

/// Prints how to reach the running nodes, then waits for Ctrl-C or SIGTERM.
async fn keep_running(out: &mut Output, nodes: &[serde_json::Value]) -> anyhow::Result<()> {
    // The program as it was invoked (`membrane`, or `target/debug/membrane` under cargo),
    // so the commands printed can be pasted as they are.
    let program = std::env::args().next().unwrap_or_else(|| "membrane".into());
    out.result("ready", &json!({"nodes": nodes}), |w| {
        writeln!(w)?;
        writeln!(w, "The nodes keep running; Ctrl-C stops them. Try:")?;
        for node in nodes {
            writeln!(
                w,
                "  {program} --data-dir {} status    # {}",
                node["data_dir"].as_str().unwrap_or_default(),
                node["role"].as_str().unwrap_or_default()
            )?;
        }
        let laptop = nodes
            .iter()
            .find(|node| node["name"] == story::LAPTOP)
            .and_then(|node| node["data_dir"].as_str())
            .unwrap_or_default();
        writeln!(w, "  {program} --data-dir {laptop} log")?;
        writeln!(w, "  {program} --data-dir {laptop} devices")?;
        writeln!(
            w,
            "The lost phone keeps redialing the laptop, and is refused each time (the warnings on stderr)."
        )
    })?;
    stop_signal().await;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn stop_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            // Without a SIGTERM handler, Ctrl-C still works.
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
