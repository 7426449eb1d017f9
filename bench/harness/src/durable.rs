//! S8: durable writes. A single change acknowledged only once on disk, one at a time:
//! through the node, in raw redb (one write transaction per record, immediate durability,
//! with redb's default commit and with two-phase commit as the node uses it)
//! and in SQLite (WAL, `synchronous=FULL`, one transaction per record). Then the node's
//! group commit: 256 writers at once, each acknowledged when its change is durable, all on
//! one document or each on its own (one document's growing history makes each Automerge
//! change cost more; many documents show the commit path itself).

use std::time::Instant;

use anyhow::Context as _;
use automerge::{ROOT, transaction::Transactable as _};
use serde_json::json;

use crate::{
    report::{emit, ms_since, quantile},
    trace::fresh_node,
};

/// The record each system stores: about the size of one small Automerge change.
fn record(i: usize) -> Vec<u8> {
    let mut bytes = format!("change {i}: ").into_bytes();
    bytes.resize(120, b'x');
    bytes
}

fn emit_rate(system: &str, case: &str, ms: f64, count: usize) {
    emit(
        "S8",
        system,
        case,
        ms,
        json!({"count": count, "per_s": count as f64 / (ms / 1e3)}),
    );
}

pub(crate) async fn node_single(count: usize) -> anyhow::Result<()> {
    let base = tempfile::tempdir()?;
    let node = fresh_node(base.path(), "node").await?;
    let doc = node.create_doc(None, None).await?;
    let start = Instant::now();
    for i in 0..count {
        node.edit(
            doc,
            Box::new(move |tx| tx.put(ROOT, "n", i as i64).map_err(|e| e.to_string())),
        )
        .await?;
    }
    let ms = ms_since(start);
    node.shutdown().await;
    emit_rate("membrane", "single-commits", ms, count);
    Ok(())
}

/// Many writers at once, each making one change and waiting for it to be durable before
/// the next (a closed loop): the node commits whatever queued while the previous commit
/// ran in one transaction. Reports the rate and the acknowledgement latency.
pub(crate) async fn node_group(count: usize, doc_each: bool) -> anyhow::Result<()> {
    const WRITERS: usize = 256;
    let base = tempfile::tempdir()?;
    let node = fresh_node(base.path(), "node").await?;
    let mut docs = Vec::with_capacity(WRITERS);
    for _ in 0..if doc_each { WRITERS } else { 1 } {
        docs.push(node.create_doc(None, None).await?);
    }
    let start = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..WRITERS {
        let node = node.clone();
        let edits = count / WRITERS + usize::from(writer < count % WRITERS);
        let doc = docs[writer % docs.len()];
        writers.spawn(async move {
            let mut latencies = Vec::with_capacity(edits);
            for i in 0..edits {
                let made = Instant::now();
                let key = format!("w{writer}");
                node.edit_queued(
                    doc,
                    Box::new(move |tx| tx.put(ROOT, key, i as i64).map_err(|e| e.to_string())),
                )
                .await?
                .durable()
                .await?;
                latencies.push(ms_since(made));
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Vec::with_capacity(count);
    while let Some(done) = writers.join_next().await {
        latencies.extend(done??);
    }
    let ms = ms_since(start);
    node.shutdown().await;
    latencies.sort_by(f64::total_cmp);
    emit(
        "S8",
        "membrane",
        if doc_each {
            "group-commit-doc-each"
        } else {
            "group-commit"
        },
        ms,
        json!({
            "count": count,
            "writers": WRITERS,
            "docs": docs.len(),
            "per_s": count as f64 / (ms / 1e3),
            "ack_p50_ms": quantile(&latencies, 0.5),
            "ack_p99_ms": quantile(&latencies, 0.99),
        }),
    );
    Ok(())
}

/// The group commit's changes made with the raw `automerge` crate in memory, one
/// transaction each, in the order the writers take turns: the ceiling for the node, which
/// makes the same transactions and stores them durably too.
pub(crate) fn automerge_group(count: usize, doc_each: bool) {
    const WRITERS: usize = 256;
    let mut docs: Vec<automerge::Automerge> = (0..if doc_each { WRITERS } else { 1 })
        .map(|_| automerge::Automerge::new())
        .collect();
    let start = Instant::now();
    let n = docs.len();
    for i in 0..count {
        let writer = i % WRITERS;
        let doc = &mut docs[writer % n];
        let mut tx = doc.transaction();
        tx.put(ROOT, format!("w{writer}"), (i / WRITERS) as i64)
            .expect("a put applies");
        tx.commit();
    }
    let ms = ms_since(start);
    emit(
        "S8",
        "automerge-rs",
        if doc_each {
            "group-commit-doc-each"
        } else {
            "group-commit"
        },
        ms,
        json!({"count": count, "writers": WRITERS, "docs": n, "per_s": count as f64 / (ms / 1e3)}),
    );
}

/// Raw redb with its default commit (one fsync, checksummed), or with two-phase commit (two
/// fsyncs), which the node uses because much of what it stores comes from peers.
pub(crate) fn redb_single(count: usize, two_phase: bool) -> anyhow::Result<()> {
    const TABLE: redb::TableDefinition<'_, u64, &[u8]> = redb::TableDefinition::new("records");
    let base = tempfile::tempdir()?;
    let db = redb::Database::create(base.path().join("raw.redb"))?;
    let start = Instant::now();
    for i in 0..count {
        let mut tx = db.begin_write()?;
        tx.set_two_phase_commit(two_phase);
        {
            let mut table = tx.open_table(TABLE)?;
            table.insert(i as u64, record(i).as_slice())?;
        }
        tx.commit()?;
    }
    let system = if two_phase { "redb-2pc" } else { "redb" };
    emit_rate(system, "single-commits", ms_since(start), count);
    Ok(())
}

pub(crate) fn sqlite_single(count: usize) -> anyhow::Result<()> {
    let base = tempfile::tempdir()?;
    let db = rusqlite::Connection::open(base.path().join("raw.sqlite"))?;
    let mode: String = db.query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))?;
    anyhow::ensure!(mode == "wal", "SQLite refused WAL mode ({mode})");
    db.execute_batch("PRAGMA synchronous=FULL; CREATE TABLE records (id INTEGER PRIMARY KEY, bytes BLOB NOT NULL);")
        .context("SQLite setup")?;
    let start = Instant::now();
    for i in 0..count {
        db.execute(
            "INSERT INTO records (id, bytes) VALUES (?1, ?2)",
            rusqlite::params![i as i64, record(i)],
        )?;
    }
    emit_rate("sqlite-wal", "single-commits", ms_since(start), count);
    Ok(())
}

/// S8's floor for any commit that crosses threads: two threads passing one message back
/// and forth, each asleep until the other wakes it. A node commit crosses threads four
/// times (caller, repo actor, store thread, acknowledging task, caller); raw redb
/// commits on the caller's thread.
pub(crate) fn thread_round_trip(count: usize) -> anyhow::Result<()> {
    let (to_echo, echo_inbox) = std::sync::mpsc::sync_channel::<usize>(1);
    let (to_caller, caller_inbox) = std::sync::mpsc::sync_channel::<usize>(1);
    let echo = std::thread::spawn(move || {
        while let Ok(n) = echo_inbox.recv() {
            if to_caller.send(n).is_err() {
                break;
            }
        }
    });
    let round = |n: usize| -> anyhow::Result<()> {
        to_echo.send(n)?;
        anyhow::ensure!(caller_inbox.recv()? == n, "the echo answered out of turn");
        Ok(())
    };
    for n in 0..count / 10 {
        round(n)?;
    }
    let start = Instant::now();
    for n in 0..count {
        round(n)?;
    }
    let ms = ms_since(start);
    drop(to_echo);
    echo.join()
        .map_err(|_| anyhow::anyhow!("the echo thread panicked"))?;
    emit(
        "S8-hop",
        "std-threads",
        "wake-round-trip",
        ms / count as f64,
        json!({"count": count, "us": ms * 1e3 / count as f64}),
    );
    Ok(())
}
