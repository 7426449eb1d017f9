//! `membrane-bench`: one scenario, one system, one repetition per call, one JSON line per
//! measurement on stdout. `bench/run.sh` repeats, alternates with the peers and tabulates.

mod apply;
mod durable;
mod footprint;
mod report;
mod sync;
mod table;
mod tokens;
mod trace;
mod typing;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Membrane's benchmarks and the Rust peers it is measured against.
#[derive(Debug, Parser)]
#[command(name = "membrane-bench")]
struct Cli {
    /// Small sizes, for the CI job that keeps the harness from rotting.
    #[arg(long, global = true)]
    quick: bool,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// S1: replay a sequential editing trace, one commit per transaction.
    S1 {
        /// `membrane` (through the node API, durable) or `automerge-rs` (the raw crate).
        #[arg(long)]
        system: String,
        /// The gzipped trace.
        #[arg(long)]
        trace: PathBuf,
    },
    /// S3: first sync of the trace's document between two Membrane nodes.
    S3 {
        /// The gzipped trace.
        #[arg(long)]
        trace: PathBuf,
    },
    /// S4: reconnect two Membrane nodes holding many small documents (all in sync, then
    /// some changed); also S10, cold start over those documents.
    S4 {
        /// How many documents.
        #[arg(long, default_value_t = 10_000)]
        docs: usize,
        /// How many change while one node is away.
        #[arg(long, default_value_t = 100)]
        changed: usize,
    },
    /// S5: live typing by several of the person's devices through a home node (a real
    /// `membrane run` process).
    S5 {
        /// The `membrane` binary to run as the home node.
        #[arg(long)]
        membrane: PathBuf,
        /// Typists.
        #[arg(long, default_value_t = 4)]
        writers: usize,
        /// How long they type.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Characters per second each.
        #[arg(long, default_value_t = 6)]
        rate: u64,
    },
    /// S5's floor: raw Automerge applying other writers' keystrokes to the shared text
    /// from the length an S5 run ends with, one change per call and one from each other
    /// writer together.
    S5Apply {
        /// Writers taking turns at typing.
        #[arg(long, default_value_t = 16)]
        writers: usize,
        /// Characters each has typed (6 a second for 60 s).
        #[arg(long, default_value_t = 360)]
        per_writer: usize,
    },
    /// S7: verify a depth-3 delegation chain: `ucan` (cold and with verified proofs),
    /// `ed25519` (three signatures, one by one and batched), `biscuit` (three blocks).
    S7 {
        /// Verifications per measurement.
        #[arg(long, default_value_t = 2_000)]
        iterations: u32,
    },
    /// S8: durable writes: `membrane`, `redb`, `sqlite` single commits, and Membrane's group
    /// commit.
    S8 {
        /// `membrane`, `redb`, `redb-2pc`, `sqlite`, `membrane-group` (256 writers on one
        /// document) or `membrane-group-docs` (each on its own), `automerge-group` /
        /// `automerge-group-docs` (the same changes in the raw crate, in memory), and
        /// `thread-round-trip` (what waking a sleeping thread and back costs here).
        #[arg(long)]
        system: String,
        /// Commits (or, for the group commit, changes).
        #[arg(long, default_value_t = 2_000)]
        count: usize,
    },
    /// Tabulate a run's JSON lines into results.json and a Markdown table.
    Table {
        /// The raw JSON lines.
        #[arg(long)]
        input: PathBuf,
        /// Where to write the JSON summary.
        #[arg(long)]
        json: PathBuf,
        /// Where to write the Markdown table.
        #[arg(long)]
        markdown: PathBuf,
        /// A line above the table (date, machine, mode).
        #[arg(long, default_value = "")]
        header: String,
    },
    /// S9: a `membrane run` process holding many documents with 3 connected peers: its RSS
    /// after idling, and the binary's stripped size.
    S9 {
        /// The `membrane` binary to measure.
        #[arg(long)]
        membrane: PathBuf,
        /// How many documents.
        #[arg(long, default_value_t = 10_000)]
        docs: usize,
        /// Idle seconds before reading RSS.
        #[arg(long, default_value_t = 60)]
        idle: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The nodes' logs, on stderr, only when asked for (`RUST_LOG=membrane_node=debug`):
    // results go to stdout either way.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match cli.scenario {
        Scenario::S1 { system, trace } => {
            let trace = trace::load(&trace, cli.quick.then_some(5_000))?;
            match system.as_str() {
                "membrane" => runtime.block_on(trace::replay_through_node(&trace))?,
                "automerge-rs" => trace::replay_raw(&trace)?,
                other => anyhow::bail!("unknown S1 system {other:?}"),
            }
        }
        Scenario::S3 { trace } => {
            let trace = trace::load(&trace, cli.quick.then_some(5_000))?;
            runtime.block_on(sync::first_sync(&trace))?;
        }
        Scenario::S4 { docs, changed } => {
            let (docs, changed) = if cli.quick {
                (300, 10)
            } else {
                (docs, changed)
            };
            runtime.block_on(sync::reconnect(docs, changed))?;
        }
        Scenario::S5 {
            membrane,
            writers,
            seconds,
            rate,
        } => {
            let (writers, seconds) = if cli.quick {
                (2, 3)
            } else {
                (writers, seconds)
            };
            runtime.block_on(typing::run(&membrane, writers, seconds, rate))?;
        }
        Scenario::S5Apply {
            writers,
            per_writer,
        } => {
            let per_writer = if cli.quick { 20 } else { per_writer };
            apply::run(writers, per_writer)?;
        }
        Scenario::S7 { iterations } => {
            tokens::run(if cli.quick { 50 } else { iterations })?;
        }
        Scenario::S8 { system, count } => {
            let count = if cli.quick { 50 } else { count };
            match system.as_str() {
                "membrane" => runtime.block_on(durable::node_single(count))?,
                "membrane-group" => runtime.block_on(durable::node_group(count * 10, false))?,
                "membrane-group-docs" => runtime.block_on(durable::node_group(count * 10, true))?,
                "automerge-group" => durable::automerge_group(count * 10, false),
                "automerge-group-docs" => durable::automerge_group(count * 10, true),
                "redb" => durable::redb_single(count, false)?,
                "redb-2pc" => durable::redb_single(count, true)?,
                "sqlite" => durable::sqlite_single(count)?,
                "thread-round-trip" => durable::thread_round_trip(count * 10)?,
                other => anyhow::bail!("unknown S8 system {other:?}"),
            }
        }
        Scenario::Table {
            input,
            json,
            markdown,
            header,
        } => table::write(&input, &json, &markdown, &header)?,
        Scenario::S9 {
            membrane,
            docs,
            idle,
        } => {
            let (docs, idle) = if cli.quick { (300, 2) } else { (docs, idle) };
            runtime.block_on(footprint::idle(&membrane, docs, idle))?;
        }
    }
    Ok(())
}
