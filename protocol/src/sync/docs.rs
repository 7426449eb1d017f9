//! The documents a node holds, with the digests that let two peers find their differences
//! without listing everything.
//!
//! A document is known by its heads whether or not its content is in memory: digests and
//! fingerprints need only the heads, so a node can reconcile thousands of documents while
//! holding the content of a few. Content is loaded when something needs it (the hub asks
//! with [`crate::sync::Effect::Load`]) and unloaded, least recently used first, when the
//! driver calls [`DocSet::unload_beyond`].

use std::collections::{BTreeMap, BTreeSet};

use automerge::{Automerge, ChangeHash, ReadDoc as _};
use sha2::{Digest as _, Sha256};

use super::wire::{BUCKETS, Entry};
use crate::document_id::DocumentId;

/// 16 bytes identifying a document at a set of heads.
pub type DocDigest = [u8; 16];

struct Held {
    /// The content, when loaded (boxed: an `Automerge` is a few KiB before it holds
    /// anything, which thousands of unloaded entries would pay for nothing).
    doc: Option<Box<Automerge>>,
    heads: Vec<ChangeHash>,
    digest: DocDigest,
    /// When the content was last used (a tick of `DocSet::clock`).
    used: u64,
}

/// All documents, with per-document digests, per-bucket fingerprints and a summary
/// fingerprint kept up to date as documents change.
#[derive(Default)]
pub struct DocSet {
    docs: BTreeMap<DocumentId, Held>,
    buckets: Vec<u64>,
    fingerprint: DocDigest,
    /// Loaded documents by last use, oldest first.
    loaded: BTreeSet<(u64, DocumentId)>,
    clock: u64,
}

impl std::fmt::Debug for DocSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocSet")
            .field("docs", &self.docs.len())
            .field("loaded", &self.loaded.len())
            .finish()
    }
}

/// The digest of a document at `heads`: SHA-256 over its id and sorted heads, truncated.
pub fn digest(id: &DocumentId, heads: &[ChangeHash]) -> DocDigest {
    let mut sorted: Vec<&ChangeHash> = heads.iter().collect();
    sorted.sort();
    let mut hasher = Sha256::new();
    hasher.update(id.as_bytes());
    for head in sorted {
        hasher.update(head.0);
    }
    let full = hasher.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

fn short(digest: &DocDigest) -> u64 {
    u64::from_be_bytes(digest[..8].try_into().expect("16 bytes hold 8"))
}

fn bucket_of(id: &DocumentId) -> usize {
    usize::from(id.as_bytes()[0])
}

impl DocSet {
    /// An empty set.
    pub fn new() -> Self {
        Self {
            docs: BTreeMap::new(),
            buckets: vec![0; BUCKETS],
            fingerprint: [0; 16],
            loaded: BTreeSet::new(),
            clock: 0,
        }
    }

    fn toggle(&mut self, id: &DocumentId, digest: &DocDigest) {
        for (acc, byte) in self.fingerprint.iter_mut().zip(digest) {
            *acc ^= byte;
        }
        self.buckets[bucket_of(id)] ^= short(digest);
    }

    /// Adds (or replaces) a document, loaded.
    pub fn insert(&mut self, id: DocumentId, doc: Automerge) {
        let heads = doc.get_heads();
        self.put(id, Some(Box::new(doc)), heads);
    }

    /// Adds (or replaces) a document known only by its heads: its content stays on disk
    /// until [`DocSet::load`] brings it in.
    pub fn insert_unloaded(&mut self, id: DocumentId, heads: Vec<ChangeHash>) {
        self.put(id, None, heads);
    }

    fn put(&mut self, id: DocumentId, doc: Option<Box<Automerge>>, heads: Vec<ChangeHash>) {
        self.remove(&id);
        let digest = digest(&id, &heads);
        self.toggle(&id, &digest);
        let used = self.tick();
        if doc.is_some() {
            self.loaded.insert((used, id));
        }
        self.docs.insert(
            id,
            Held {
                doc,
                heads,
                digest,
                used,
            },
        );
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Gives a held, unloaded document its content. The heads are taken from the content
    /// (they win over what was recorded). Returns `false`, and changes nothing, when the
    /// document is not held or already loaded: content in memory may have moved on.
    pub fn load(&mut self, id: DocumentId, doc: Automerge) -> bool {
        if self.docs.get(&id).is_none_or(|held| held.doc.is_some()) {
            return false;
        }
        self.insert(id, doc);
        true
    }

    /// Removes a document.
    pub fn remove(&mut self, id: &DocumentId) -> Option<Automerge> {
        let held = self.docs.remove(id)?;
        self.toggle(id, &held.digest);
        self.loaded.remove(&(held.used, *id));
        held.doc.map(|doc| *doc)
    }

    /// A loaded document; `None` when it is not held, or held but not loaded.
    pub fn get(&self, id: &DocumentId) -> Option<&Automerge> {
        self.docs.get(id).and_then(|held| held.doc.as_deref())
    }

    /// Whether the document is held (loaded or not).
    pub fn contains(&self, id: &DocumentId) -> bool {
        self.docs.contains_key(id)
    }

    /// Whether the document is held and its content is in memory.
    pub fn is_loaded(&self, id: &DocumentId) -> bool {
        self.get(id).is_some()
    }

    /// Marks a loaded document as just used, so it is unloaded last.
    pub fn touch(&mut self, id: &DocumentId) {
        let used = self.clock + 1;
        if let Some(held) = self.docs.get_mut(id)
            && held.doc.is_some()
        {
            self.loaded.remove(&(held.used, *id));
            held.used = used;
            self.loaded.insert((used, *id));
            self.clock = used;
        }
    }

    /// How many documents are loaded.
    pub fn loaded_len(&self) -> usize {
        self.loaded.len()
    }

    /// The use clock: a document touched later has a higher `used` mark than this.
    pub fn use_mark(&self) -> u64 {
        self.clock
    }

    /// Unloads the loaded documents not used since `mark` (a [`DocSet::use_mark`] taken
    /// earlier), under the same rules as [`DocSet::unload_beyond`]. Returns how many.
    pub fn unload_unused_since(
        &mut self,
        mark: u64,
        pinned: impl Fn(&DocumentId) -> bool,
    ) -> usize {
        let idle: Vec<DocumentId> = self
            .loaded
            .range(..=(mark, DocumentId::from_bytes([u8::MAX; 16])))
            .map(|(_, id)| *id)
            .filter(|id| !pinned(id) && !self.only_in_memory(id))
            .collect();
        idle.iter().filter(|id| self.unload(id)).count()
    }

    /// Whether storage could not give this document back: it has changes queued inside
    /// Automerge for missing dependencies (a peer that sent them will not send them again
    /// in the same session), or no changes at all (nothing of it is stored).
    fn only_in_memory(&self, id: &DocumentId) -> bool {
        self.docs.get(id).is_some_and(|held| {
            held.heads.is_empty()
                || held
                    .doc
                    .as_ref()
                    .is_some_and(|doc| !doc.get_missing_deps(&[]).is_empty())
        })
    }

    /// Unloads the least recently used documents until at most `keep` are loaded, never
    /// those `pinned` names. Returns how many were unloaded. Their heads stay. A document
    /// storage could not give back (see `only_in_memory`) stays whatever the budget.
    pub fn unload_beyond(&mut self, keep: usize, pinned: impl Fn(&DocumentId) -> bool) -> usize {
        let mut unloaded = 0;
        let mut spared = Vec::new();
        while self.loaded.len() + spared.len() > keep {
            let Some((used, id)) = self.loaded.pop_first() else {
                break;
            };
            if pinned(&id) || self.only_in_memory(&id) {
                spared.push((used, id));
                continue;
            }
            if let Some(held) = self.docs.get_mut(&id) {
                held.doc = None;
                unloaded += 1;
            }
        }
        self.loaded.extend(spared);
        unloaded
    }

    /// Unloads one document (its heads stay). Returns whether it was loaded.
    pub fn unload(&mut self, id: &DocumentId) -> bool {
        match self.docs.get_mut(id) {
            Some(held) if held.doc.is_some() => {
                held.doc = None;
                self.loaded.remove(&(held.used, *id));
                true
            }
            _ => false,
        }
    }

    /// A document's current heads (loaded or not).
    pub fn heads(&self, id: &DocumentId) -> Option<&[ChangeHash]> {
        self.docs.get(id).map(|held| held.heads.as_slice())
    }

    /// Changes a loaded document, marks it used and refreshes its digest. Returns `None`
    /// if it is not held or not loaded.
    pub fn update<R>(
        &mut self,
        id: &DocumentId,
        change: impl FnOnce(&mut Automerge) -> R,
    ) -> Option<R> {
        self.touch(id);
        let held = self.docs.get_mut(id)?;
        let doc = held.doc.as_deref_mut()?;
        let result = change(doc);
        let heads = doc.get_heads();
        if heads != held.heads {
            let old = held.digest;
            let new = digest(id, &heads);
            held.heads = heads;
            held.digest = new;
            self.toggle(id, &old);
            self.toggle(id, &new);
        }
        Some(result)
    }

    /// Every document id, in order.
    pub fn ids(&self) -> impl Iterator<Item = &DocumentId> {
        self.docs.keys()
    }

    /// How many documents.
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// `(count, fingerprint)` of the whole set.
    pub fn summary(&self) -> (u64, DocDigest) {
        (self.docs.len() as u64, self.fingerprint)
    }

    /// The per-bucket fingerprints.
    pub fn bucket_fingerprints(&self) -> &[u64] {
        &self.buckets
    }

    /// The entries of every document in `buckets`.
    pub fn entries_in(&self, buckets: &[u8]) -> Vec<Entry> {
        let mut wanted = [false; BUCKETS];
        for &bucket in buckets {
            wanted[usize::from(bucket)] = true;
        }
        self.docs
            .iter()
            .filter(|(id, _)| wanted[bucket_of(id)])
            .map(|(id, held)| Entry {
                doc: *id,
                digest: short(&held.digest),
            })
            .collect()
    }

    /// Which bucket a document is in.
    pub fn bucket(id: &DocumentId) -> u8 {
        id.as_bytes()[0]
    }

    /// A document's short digest, as sent in `Entries`.
    pub fn short_digest(&self, id: &DocumentId) -> Option<u64> {
        self.docs.get(id).map(|held| short(&held.digest))
    }
}

#[cfg(test)]
mod tests {
    use automerge::{ROOT, transaction::Transactable as _};

    use super::*;

    fn doc_with(value: &str) -> Automerge {
        let mut doc = Automerge::new();
        doc.transact::<_, _, automerge::AutomergeError>(|tx| {
            tx.put(ROOT, "k", value)?;
            Ok(())
        })
        .unwrap();
        doc
    }

    #[test]
    fn fingerprints_track_content_not_history_of_inserts() {
        let (a, b) = (
            DocumentId::from_bytes([1; 16]),
            DocumentId::from_bytes([2; 16]),
        );
        let mut left = DocSet::new();
        let mut right = DocSet::new();
        let doc_a = doc_with("x");
        let doc_b = doc_with("y");
        left.insert(a, doc_a.clone());
        left.insert(b, doc_b.clone());
        right.insert(b, doc_b);
        right.insert(a, doc_a);
        assert_eq!(left.summary(), right.summary());
        assert_eq!(left.bucket_fingerprints(), right.bucket_fingerprints());

        left.update(&a, |doc| {
            doc.transact::<_, _, automerge::AutomergeError>(|tx| tx.put(ROOT, "k", "z"))
                .unwrap();
        });
        assert_ne!(left.summary(), right.summary());
        let differing: Vec<usize> = (0..BUCKETS)
            .filter(|&i| left.bucket_fingerprints()[i] != right.bucket_fingerprints()[i])
            .collect();
        assert_eq!(differing, vec![1]);
        left.remove(&a);
        right.remove(&a);
        assert_eq!(left.summary(), right.summary());
        // With one document left, the summary is that document's digest.
        assert_eq!(left.summary().1, digest(&b, right.heads(&b).unwrap()));
    }

    #[test]
    fn unloaded_documents_keep_their_digests_and_least_recently_used_go_first() {
        let ids: Vec<DocumentId> = (1..=4).map(|i| DocumentId::from_bytes([i; 16])).collect();
        let docs: Vec<Automerge> = ["a", "b", "c", "d"].iter().map(|v| doc_with(v)).collect();
        let mut all_loaded = DocSet::new();
        let mut set = DocSet::new();
        for (id, doc) in ids.iter().zip(&docs) {
            all_loaded.insert(*id, doc.clone());
            set.insert(*id, doc.clone());
        }
        set.touch(&ids[0]);
        // ids[1] is the least recently used now; ids[2] is pinned.
        assert_eq!(set.unload_beyond(2, |id| *id == ids[2]), 2);
        assert_eq!(set.loaded_len(), 2);
        assert!(!set.is_loaded(&ids[1]) && !set.is_loaded(&ids[3]));
        assert!(set.is_loaded(&ids[0]) && set.is_loaded(&ids[2]));
        assert!(set.contains(&ids[1]) && set.get(&ids[1]).is_none());
        assert_eq!(set.summary(), all_loaded.summary());
        assert_eq!(set.heads(&ids[1]), all_loaded.heads(&ids[1]));
        assert!(set.update(&ids[1], |_| ()).is_none());

        // Unused since a mark: only what was not touched after it goes.
        let mark = set.use_mark();
        set.touch(&ids[2]);
        assert_eq!(set.unload_unused_since(mark, |_| false), 1);
        assert!(set.is_loaded(&ids[2]) && !set.is_loaded(&ids[0]));
        set.touch(&ids[0]); // not loaded: no effect
        assert!(!set.is_loaded(&ids[0]));
        set.load(ids[0], docs[0].clone());

        // Loading gives the content back; a loaded document is never replaced.
        assert!(set.load(ids[1], docs[1].clone()));
        assert!(!set.load(ids[1], Automerge::new()));
        assert_eq!(set.get(&ids[1]).unwrap().get_heads(), docs[1].get_heads());
        assert!(!set.load(DocumentId::from_bytes([9; 16]), Automerge::new()));

        // Known by heads only from the start, as after a restart.
        let mut cold = DocSet::new();
        for id in &ids {
            cold.insert_unloaded(*id, all_loaded.heads(id).unwrap().to_vec());
        }
        assert_eq!(cold.summary(), all_loaded.summary());
        assert_eq!(cold.loaded_len(), 0);
        assert_eq!(cold.entries_in(&[1, 2]), all_loaded.entries_in(&[1, 2]));
    }
}
