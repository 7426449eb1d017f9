//! S5's floor: what raw Automerge takes to apply other devices' typing to a shared text,
//! the work every S5 writer and the home node do for each keystroke they receive.
//!
//! The text is typed one character per change by `writers` actors taking turns, as in
//! S5, up to the length an S5 run ends with (360 characters per writer: 6 a second for
//! 60 s). Then a receiving copy applies fresh keystrokes with `load_incremental`, the call
//! the sync hub makes for pushed changes: one change at a time, and `writers - 1` changes
//! in one call (one from each other writer's actor, as when several arrive together;
//! here each builds on the one before rather than being concurrent).
//!
//! The text keeps growing while it is measured, by the keystrokes applied: the last
//! samples run at up to about 12% beyond the named length (16 writers).

use std::time::Instant;

use anyhow::Context as _;
use automerge::{
    ActorId, Automerge, ObjId, ObjType, ROOT, ReadDoc as _, transaction::Transactable as _,
};
use serde_json::json;

use crate::report::{emit, quantile};

/// Applies timed per case; each is a fresh change, so none is a no-op.
const SAMPLES: usize = 41;

/// One keystroke by `actor` at the end of the text: its change's bytes.
fn keystroke(typist: &mut Automerge, text: &ObjId, actor: &ActorId) -> anyhow::Result<Vec<u8>> {
    typist.set_actor(actor.clone());
    let before = typist.get_heads();
    let end = typist.length(text);
    let mut tx = typist.transaction();
    tx.splice_text(text, end, 0, "x")?;
    tx.commit();
    Ok(typist.save_after(&before))
}

/// The milliseconds of [`SAMPLES`] calls of `load_incremental` on `receiver`, each
/// applying `together` fresh keystrokes, sorted.
fn time_applies(
    typist: &mut Automerge,
    receiver: &mut Automerge,
    text: &ObjId,
    actors: &[ActorId],
    together: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut samples = Vec::with_capacity(SAMPLES);
    for sample in 0..SAMPLES {
        let mut chunk = Vec::new();
        for n in 0..together {
            let actor = &actors[(sample * together + n) % actors.len()];
            chunk.extend(keystroke(typist, text, actor)?);
        }
        let start = Instant::now();
        let applied = receiver.load_incremental(&chunk)?;
        samples.push(start.elapsed().as_secs_f64() * 1e3);
        // Automerge logs a chunk it cannot parse and returns Ok: make sure something was
        // applied (one operation per keystroke), so no sample times a no-op.
        anyhow::ensure!(
            applied == together,
            "applied {applied} operations for {together} keystrokes"
        );
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples)
}

pub(crate) fn run(writers: usize, per_writer: usize) -> anyhow::Result<()> {
    anyhow::ensure!(writers >= 2, "applying others' typing needs two writers");
    let actors: Vec<ActorId> = (0..writers)
        .map(|n| ActorId::from(format!("s5-writer-{n:04}").into_bytes()))
        .collect();
    let mut typist = Automerge::new();
    let text = {
        let mut tx = typist.transaction();
        let text = tx.put_object(ROOT, "text", ObjType::Text)?;
        tx.commit();
        text
    };
    let chars = writers * per_writer;
    for n in 0..chars {
        keystroke(&mut typist, &text, &actors[n % writers])?;
    }
    let mut receiver = Automerge::load(&typist.save()).context("loading the typed text")?;
    // The first applies after a load are slower (the receiver's structures are cold); a
    // few untimed ones keep that out of the first case.
    time_applies(&mut typist, &mut receiver, &text, &actors, 1)?;
    for (case, together) in [("one-change", 1), ("others-together", writers - 1)] {
        let samples = time_applies(&mut typist, &mut receiver, &text, &actors, together)?;
        emit(
            "S5-apply",
            "automerge-rs",
            &format!("{case}-at-{chars}-chars"),
            quantile(&samples, 0.5),
            json!({
                "chars": chars,
                "changes_per_call": together,
                "samples": samples.len(),
                "min_ms": samples[0],
                "max_ms": samples[samples.len() - 1],
            }),
        );
    }
    Ok(())
}
