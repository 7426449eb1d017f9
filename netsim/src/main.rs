//! `membrane-netsim`: run simulation scenarios from the command line.
//!
//! `membrane-netsim run --scenario sarah --seed 7` replays one history exactly;
//! `--seeds 100` runs seeds S..S+100 and prints min/median/p99; `--json FILE` writes the
//! summary. Exit code 1 when any invariant failed (each failure prints its replay command).

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use membrane_netsim::{
    Variant,
    report::Summary,
    scenario::{SCENARIOS, run},
};

/// Deterministic simulation of many Membrane nodes over a hostile network.
#[derive(Debug, Parser)]
#[command(name = "membrane-netsim", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a scenario for one seed or a range of seeds.
    Run {
        /// sarah, partition-heal, churn, scale or concurrent-traces.
        #[arg(long)]
        scenario: String,
        /// The first seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// How many seeds, from --seed on.
        #[arg(long, default_value_t = 1)]
        seeds: u64,
        /// Run the deliberately broken variant (to see the checker catch it).
        #[arg(long)]
        broken: bool,
        /// concurrent-traces only: replay just the first N transactions.
        #[arg(long, value_name = "N")]
        txns: Option<usize>,
        /// Also write the summary (and every run) as JSON here.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// Real-stack mode: ten real nodes (libp2p, redb) through hostile loopback links.
    ///
    /// Not deterministic (the OS schedules the nodes); the seed decides faults and workload.
    Real {
        /// Decides the faults and the workload.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// How many seeds, from --seed on.
        #[arg(long, default_value_t = 1)]
        seeds: u64,
        /// Also write every run's report as JSON here.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// List the scenarios.
    List,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Real { seed, seeds, json } => real(seed, seeds, json),
        Command::List => {
            for name in SCENARIOS {
                println!("{name}");
            }
            ExitCode::SUCCESS
        }
        Command::Run {
            scenario,
            seed,
            seeds,
            broken,
            txns,
            json,
        } => {
            let variant = if broken {
                Variant::IgnoreRevocations
            } else {
                Variant::Correct
            };
            let mut outcomes = Vec::new();
            for s in seed..seed.saturating_add(seeds) {
                let outcome = match (scenario.as_str(), txns) {
                    ("concurrent-traces", Some(limit)) => {
                        membrane_netsim::scenarios::traces::run_prefix(s, variant, limit)
                    }
                    _ => run(&scenario, s, variant),
                };
                match outcome {
                    Ok(outcome) => {
                        if !outcome.ok() {
                            eprintln!("seed {s} FAILED: {}", outcome.violations.join("; "));
                            eprintln!("  replay: {}", outcome.replay());
                        }
                        outcomes.push(outcome);
                    }
                    Err(error) => {
                        eprintln!("error: {error}");
                        return ExitCode::from(2);
                    }
                }
            }
            let summary = Summary::of(&scenario, &outcomes);
            println!(
                "{}: {}/{} runs passed; nodes {}; messages min/median/p99 {}/{}/{}; bytes {}/{}/{}; \
                 rounds to converge {}/{}/{}; virtual ms to converge {}/{}/{}",
                summary.scenario,
                summary.passed,
                summary.runs,
                outcomes.first().map_or(0, |o| o.nodes),
                summary.messages.min,
                summary.messages.median,
                summary.messages.p99,
                summary.bytes.min,
                summary.bytes.median,
                summary.bytes.p99,
                summary.rounds.min,
                summary.rounds.median,
                summary.rounds.p99,
                summary.time_to_converge_ms.min,
                summary.time_to_converge_ms.median,
                summary.time_to_converge_ms.p99,
            );
            if seeds == 1
                && let Some(o) = outcomes.first()
            {
                println!("trace {}", o.trace);
            }
            if let Some(path) = json {
                let body = serde_json::json!({ "summary": summary, "runs": outcomes });
                if let Err(error) = std::fs::write(&path, body.to_string()) {
                    eprintln!("error: cannot write {}: {error}", path.display());
                    return ExitCode::from(2);
                }
            }
            if summary.passed == summary.runs {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn real(seed: u64, seeds: u64, json: Option<PathBuf>) -> ExitCode {
    use membrane_netsim::real::{RealConfig, run};
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let mut reports = Vec::new();
    let mut failed = false;
    for s in seed..seed.saturating_add(seeds) {
        let base = match tempfile::tempdir() {
            Ok(base) => base,
            Err(error) => {
                eprintln!("error: cannot make a temporary directory: {error}");
                return ExitCode::from(2);
            }
        };
        match runtime.block_on(run(base.path(), &RealConfig::new(s))) {
            Ok(report) => {
                println!(
                    "seed {s}: ok; {} nodes, {} links, {} acknowledged writes, {} bytes, \
                     {} connections ({} reset, {} cut), converged {} ms after the heal, {} ms in all",
                    report.nodes,
                    report.links,
                    report.acked_writes,
                    report.bytes,
                    report.connections,
                    report.resets,
                    report.cut,
                    report.converge_ms,
                    report.total_ms
                );
                reports.push(report);
            }
            Err(error) => {
                eprintln!("seed {s} FAILED: {error}");
                eprintln!("  run again: membrane-netsim real --seed {s}");
                failed = true;
            }
        }
    }
    if let Some(path) = json
        && let Err(error) = std::fs::write(&path, serde_json::json!(reports).to_string())
    {
        eprintln!("error: cannot write {}: {error}", path.display());
        return ExitCode::from(2);
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
