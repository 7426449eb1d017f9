//! Which changes a node lets in, judged by their author.
//!
//! Every actor id Membrane writes with is bound to a device key: the 32-byte Ed25519 public
//! key, then a few random bytes (so a device restarted mid-session never reuses a sequence
//! number). The binding is what lets a node refuse a revoked device's changes even when
//! another, honest device relays them.
//!
//! A device's revocation carries a *cutoff*: for each document, the highest sequence number
//! of each of the device's actors that the revoking device held when it revoked. Changes up
//! to the cutoff were made while the device was trusted and stay; later ones are refused on
//! every node that knows of the revocation. Every node applies the same cutoff, so nodes
//! that learn of the revocation before the changes reach them agree on what to refuse.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    panic::{AssertUnwindSafe, catch_unwind},
};

use automerge::{ActorId, Automerge, Change, ChangeHash};

use super::DocSet;
use crate::{did::Did, document_id::DocumentId};

/// Length of an Ed25519 public key, the bound part of an actor id.
const PUBLIC_KEY_LENGTH: usize = 32;

/// The device key an actor id is bound to, if it has Membrane's shape (key, then at most 16
/// more bytes). Actor ids of other shapes belong to no device.
pub fn actor_device(actor: &ActorId) -> Option<[u8; PUBLIC_KEY_LENGTH]> {
    let bytes = actor.to_bytes();
    if !(PUBLIC_KEY_LENGTH..=PUBLIC_KEY_LENGTH + 16).contains(&bytes.len()) {
        return None;
    }
    bytes[..PUBLIC_KEY_LENGTH].try_into().ok()
}

/// For one revoked device: per document, per actor, the last sequence number it may have.
pub type Cutoff = BTreeMap<DocumentId, BTreeMap<ActorId, u64>>;

/// What the loaded documents in `docs` hold of `device`'s changes: its cutoff, were it
/// revoked now. Documents the device never wrote to are left out (their cutoff is 0). A
/// node that keeps documents on disk calls [`device_seqs`] as it loads them instead.
pub fn cutoff_of(device: &Did, docs: &DocSet) -> Cutoff {
    let mut cutoff = Cutoff::new();
    for id in docs.ids() {
        let Some(doc) = docs.get(id) else { continue };
        let actors = device_seqs(device, doc);
        if !actors.is_empty() {
            cutoff.insert(*id, actors);
        }
    }
    cutoff
}

/// The highest sequence number of each of `device`'s actors in one document: its part of
/// [`cutoff_of`], for a caller that loads documents a few at a time.
pub fn device_seqs(device: &Did, doc: &Automerge) -> BTreeMap<ActorId, u64> {
    let mut actors = BTreeMap::new();
    for meta in doc.get_changes_meta(&[]) {
        if actor_device(&meta.actor).as_ref() == Some(device.as_bytes()) {
            let seq = actors.entry(meta.actor.into_owned()).or_insert(0);
            *seq = meta.seq.max(*seq);
        }
    }
    actors
}

/// Whether `view` holds changes past `cutoff` (some actor's sequence number is higher).
///
/// A device that took a revoked device's changes before it heard of the revocation holds
/// more than the revoker saw. It publishes its own view as an amendment to the cutoff, and
/// every device merges the amendments (taking, per actor, the highest): so all devices end
/// up accepting exactly the changes some device had accepted while the device was still
/// trusted everywhere it was known, and they converge.
pub fn exceeds(view: &Cutoff, cutoff: Option<&Cutoff>) -> bool {
    view.iter().any(|(doc, actors)| {
        actors.iter().any(|(actor, seq)| {
            let known = cutoff
                .and_then(|c| c.get(doc))
                .and_then(|a| a.get(actor))
                .copied()
                .unwrap_or(0);
            *seq > known
        })
    })
}

/// A cutoff as JSON, the form kept in the person's registry:
/// `{"<document id>": {"<actor hex>": seq}}`.
pub fn cutoff_to_json(cutoff: &Cutoff) -> serde_json::Value {
    cutoff
        .iter()
        .map(|(doc, actors)| {
            let actors: serde_json::Map<String, serde_json::Value> = actors
                .iter()
                .map(|(actor, seq)| (actor.to_hex_string(), serde_json::json!(seq)))
                .collect();
            (doc.to_string(), serde_json::Value::Object(actors))
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Reads [`cutoff_to_json`]'s form, skipping parts that do not parse.
pub fn cutoff_from_json(value: &serde_json::Value) -> Cutoff {
    let mut cutoff = Cutoff::new();
    for (doc, actors) in value.as_object().into_iter().flatten() {
        let Ok(doc) = doc.parse() else { continue };
        let actors = actors
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(actor, seq)| Some((actor_from_hex(actor)?, seq.as_u64()?)))
            .collect();
        cutoff.insert(doc, actors);
    }
    cutoff
}

/// An actor id from its hex form.
pub fn actor_from_hex(text: &str) -> Option<ActorId> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Vec<u8> = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect::<Option<_>>()?;
    Some(ActorId::from(bytes))
}

/// The devices whose later changes are refused, with their cutoffs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevokedAuthors {
    devices: BTreeMap<[u8; PUBLIC_KEY_LENGTH], (Did, Cutoff)>,
}

impl RevokedAuthors {
    /// No device revoked.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether no device is revoked (the gate then costs nothing).
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// How many devices are revoked.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Adds a revoked device. Two revocations of one device (say, by two devices at once)
    /// keep, per actor, the higher cutoff: each revoker vouches for what it had seen.
    pub fn insert(&mut self, device: Did, cutoff: Cutoff) {
        let (_, known) = self
            .devices
            .entry(*device.as_bytes())
            .or_insert_with(|| (device, Cutoff::new()));
        for (doc, actors) in cutoff {
            let known = known.entry(doc).or_default();
            for (actor, seq) in actors {
                let slot = known.entry(actor).or_insert(0);
                *slot = (*slot).max(seq);
            }
        }
    }

    /// The merged cutoff of a revoked device.
    pub fn cutoff(&self, device: &Did) -> Option<&Cutoff> {
        self.devices
            .get(device.as_bytes())
            .map(|(_, cutoff)| cutoff)
    }

    /// Whether `device` is revoked.
    pub fn contains(&self, device: &Did) -> bool {
        self.devices.contains_key(device.as_bytes())
    }

    /// Why a change to `doc` by `actor` with sequence number `seq` must be refused, if it
    /// must.
    pub fn judge(&self, doc: &DocumentId, actor: &ActorId, seq: u64) -> Option<Refusal> {
        let key = actor_device(actor)?;
        let (device, cutoff) = self.devices.get(&key)?;
        let allowed = cutoff
            .get(doc)
            .and_then(|actors| actors.get(actor))
            .copied()
            .unwrap_or(0);
        (seq > allowed).then_some(Refusal::RevokedDevice {
            device: *device,
            cutoff: allowed,
        })
    }
}

/// Why a change was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Its author's device was revoked, and the change is past the revocation's cutoff.
    RevokedDevice {
        /// The revoked device.
        device: Did,
        /// The last sequence number of this actor accepted for the document.
        cutoff: u64,
    },
    /// The sender holds a read grant on the document, not a write grant.
    ReadOnly {
        /// The grant.
        grant: cid::Cid,
    },
    /// A writer from outside the person may only bring changes it authored itself, under
    /// actor ids bound to its key: no one writes as someone else.
    ForeignActor {
        /// The sender.
        sender: Did,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReadOnly { grant } => {
                write!(f, "the sender may only read this document (grant {grant})")
            }
            Self::ForeignActor { sender } => write!(
                f,
                "authored under an actor id not bound to the sender {sender}'s key"
            ),
            Self::RevokedDevice { device, cutoff } => write!(
                f,
                "authored by revoked device {device} after its revocation (cutoff seq {cutoff})"
            ),
        }
    }
}

/// A change kept out of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedChange {
    /// Its hash.
    pub hash: ChangeHash,
    /// Its author.
    pub actor: ActorId,
    /// Its sequence number.
    pub seq: u64,
    /// Why.
    pub reason: Refusal,
}

/// The outcome of screening incoming data that held refused changes: what may go in, as
/// chunks for `Automerge::load_incremental`, and what was kept out.
#[derive(Debug)]
pub(crate) struct Screened {
    pub(crate) allowed: Vec<Vec<u8>>,
    pub(crate) refused: Vec<RefusedChange>,
}

/// Screens chunks (single changes, or whole saved documents) change by change. Returns
/// `None` when every change is allowed, so the caller can use the data as it came.
pub(crate) fn screen<'a>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
    judge: impl Fn(&Change) -> Option<Refusal>,
) -> Result<Option<Screened>, String> {
    let mut allowed = Vec::new();
    let mut refused = Vec::new();
    let mut seen = BTreeSet::new();
    for chunk in chunks {
        let changes = changes_in(chunk)?;
        let verdicts: Vec<_> = changes.iter().map(&judge).collect();
        if verdicts.iter().all(Option::is_none) {
            allowed.push(chunk.to_vec());
            continue;
        }
        for (mut change, verdict) in changes.into_iter().zip(verdicts) {
            match verdict {
                None => allowed.push(change.bytes().into_owned()),
                Some(reason) => {
                    if seen.insert(change.hash()) {
                        refused.push(RefusedChange {
                            hash: change.hash(),
                            actor: change.actor_id().clone(),
                            seq: change.seq(),
                            reason,
                        });
                    }
                }
            }
        }
    }
    Ok((!refused.is_empty()).then_some(Screened { allowed, refused }))
}

/// The changes in one chunk list entry: one or more concatenated chunks (the second sync
/// message format packs all of a message's changes into one entry), each a single change,
/// a bundle, or a saved document.
pub(crate) fn changes_in(bytes: &[u8]) -> Result<Vec<Change>, String> {
    let mut changes = Vec::new();
    for chunk in split_chunks(bytes)? {
        changes.extend(changes_in_chunk(chunk)?);
    }
    Ok(changes)
}

/// Automerge's storage chunks: magic (4 bytes), checksum (4), type (1), length (uLEB128),
/// then that many bytes.
fn split_chunks(mut bytes: &[u8]) -> Result<Vec<&[u8]>, String> {
    const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
    let mut chunks = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < 10 || bytes[..4] != MAGIC {
            return Err("undecodable changes: not an Automerge chunk".into());
        }
        let (mut length, mut shift, mut at) = (0u64, 0u32, 9usize);
        loop {
            let byte = *bytes
                .get(at)
                .ok_or("undecodable changes: truncated chunk header")?;
            at += 1;
            length |= u64::from(byte & 0x7f)
                .checked_shl(shift)
                .ok_or("undecodable changes: bad chunk length")?;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return Err("undecodable changes: bad chunk length".into());
            }
        }
        let end = usize::try_from(length)
            .ok()
            .and_then(|l| at.checked_add(l))
            .filter(|end| *end <= bytes.len())
            .ok_or("undecodable changes: truncated chunk")?;
        chunks.push(&bytes[..end]);
        bytes = &bytes[end..];
    }
    Ok(chunks)
}

fn changes_in_chunk(chunk: &[u8]) -> Result<Vec<Change>, String> {
    catch_unwind(AssertUnwindSafe(|| {
        if let Ok(change) = Change::try_from(chunk) {
            return Ok(vec![change]);
        }
        if let Ok(bundle) = automerge::Bundle::try_from(chunk) {
            return bundle
                .to_changes()
                .map_err(|e| format!("undecodable changes: {e}"));
        }
        let doc = Automerge::load(chunk).map_err(|e| format!("undecodable changes: {e}"))?;
        Ok(doc.get_changes(&[]))
    }))
    .map_err(|_| "changes that crashed the decoder".to_owned())?
}

#[cfg(test)]
mod tests {
    use automerge::{AutomergeError, ROOT, transaction::Transactable as _};

    use super::*;
    use crate::key::SecretKey;

    fn bound_actor(key: &SecretKey, tail: u8) -> ActorId {
        let mut bytes = key.public().as_bytes().to_vec();
        bytes.extend([tail; 4]);
        ActorId::from(bytes)
    }

    fn edits(actor: ActorId, n: usize) -> Automerge {
        let mut doc = Automerge::new().with_actor(actor);
        for i in 0..n {
            doc.transact::<_, _, AutomergeError>(|tx| tx.put(ROOT, "n", i as i64).map(|_| ()))
                .unwrap();
        }
        doc
    }

    #[test]
    fn actors_bind_to_their_device_key_only_in_membranes_shape() {
        let key = SecretKey::from_seed([3; 32]);
        assert_eq!(
            actor_device(&bound_actor(&key, 1)),
            Some(*key.public().as_bytes())
        );
        assert_eq!(actor_device(&ActorId::from(vec![1u8; 16])), None);
        assert_eq!(actor_device(&ActorId::from(vec![1u8; 64])), None);
    }

    #[test]
    fn a_revoked_device_keeps_changes_up_to_its_cutoff() {
        let key = SecretKey::from_seed([4; 32]);
        let doc_id = DocumentId::from_bytes([9; 16]);
        let actor = bound_actor(&key, 7);
        let mut revoked = RevokedAuthors::new();
        revoked.insert(
            key.did(),
            Cutoff::from([(doc_id, BTreeMap::from([(actor.clone(), 2)]))]),
        );
        assert!(revoked.judge(&doc_id, &actor, 2).is_none());
        let stored = Cutoff::from([(doc_id, BTreeMap::from([(actor.clone(), 2)]))]);
        assert_eq!(cutoff_from_json(&cutoff_to_json(&stored)), stored);
        assert_eq!(actor_from_hex("abc"), None);
        assert!(revoked.judge(&doc_id, &actor, 3).is_some());
        // Another document of the same device: nothing was vouched for there.
        let other = DocumentId::from_bytes([8; 16]);
        assert!(revoked.judge(&other, &actor, 1).is_some());
        // Another device's actor is untouched.
        let friend = bound_actor(&SecretKey::from_seed([5; 32]), 7);
        assert!(revoked.judge(&doc_id, &friend, 99).is_none());

        // Screening four changes keeps the first two, in both chunk shapes.
        let doc = edits(actor.clone(), 4);
        let judge = |c: &Change| revoked.judge(&doc_id, c.actor_id(), c.seq());
        let mut singles: Vec<Vec<u8>> = doc
            .get_changes(&[])
            .into_iter()
            .map(|c| c.raw_bytes().to_vec())
            .collect();
        let screened = screen(singles.iter().map(Vec::as_slice), judge)
            .unwrap()
            .unwrap();
        assert_eq!(screened.allowed.len(), 2);
        assert_eq!(
            screened.refused.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [3, 4]
        );
        let saved = doc.save();
        let screened = screen([saved.as_slice()], judge).unwrap().unwrap();
        let mut rebuilt = Automerge::new();
        for chunk in &screened.allowed {
            rebuilt.load_incremental(chunk).unwrap();
        }
        assert_eq!(rebuilt.get_changes(&[]).len(), 2);
        // All allowed: nothing to rewrite.
        singles.truncate(2);
        assert!(
            screen(singles.iter().map(Vec::as_slice), judge)
                .unwrap()
                .is_none()
        );
        assert!(screen([&b"junk"[..]], judge).is_err());
        // Several changes in one entry (the second sync message format).
        let joined: Vec<u8> = doc
            .get_changes(&[])
            .iter()
            .flat_map(|c| c.raw_bytes().to_vec())
            .collect();
        let screened = screen([joined.as_slice()], judge).unwrap().unwrap();
        assert_eq!(screened.allowed.len(), 2);
        assert!(screen([&joined[..joined.len() - 3]], judge).is_err());
    }
}
