//! The documents a node holds, with the digests that let two peers find their differences
//! without listing everything.

use std::collections::BTreeMap;

use automerge::{Automerge, ChangeHash};
use sha2::{Digest as _, Sha256};

use super::wire::{BUCKETS, Entry};
use crate::document_id::DocumentId;

/// 16 bytes identifying a document at a set of heads.
pub type DocDigest = [u8; 16];

struct Held {
    doc: Automerge,
    heads: Vec<ChangeHash>,
    digest: DocDigest,
}

/// All documents, with per-document digests, per-bucket fingerprints and a summary
/// fingerprint kept up to date as documents change.
#[derive(Default)]
pub struct DocSet {
    docs: BTreeMap<DocumentId, Held>,
    buckets: Vec<u64>,
    fingerprint: DocDigest,
}

impl std::fmt::Debug for DocSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocSet")
            .field("docs", &self.docs.len())
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
        }
    }

    fn toggle(&mut self, id: &DocumentId, digest: &DocDigest) {
        for (acc, byte) in self.fingerprint.iter_mut().zip(digest) {
            *acc ^= byte;
        }
        self.buckets[bucket_of(id)] ^= short(digest);
    }

    /// Adds (or replaces) a document.
    pub fn insert(&mut self, id: DocumentId, doc: Automerge) {
        self.remove(&id);
        let heads = doc.get_heads();
        let digest = digest(&id, &heads);
        self.toggle(&id, &digest);
        self.docs.insert(id, Held { doc, heads, digest });
    }

    /// Removes a document.
    pub fn remove(&mut self, id: &DocumentId) -> Option<Automerge> {
        let held = self.docs.remove(id)?;
        self.toggle(id, &held.digest);
        Some(held.doc)
    }

    /// A document.
    pub fn get(&self, id: &DocumentId) -> Option<&Automerge> {
        self.docs.get(id).map(|held| &held.doc)
    }

    /// Whether the document is held.
    pub fn contains(&self, id: &DocumentId) -> bool {
        self.docs.contains_key(id)
    }

    /// A document's current heads.
    pub fn heads(&self, id: &DocumentId) -> Option<&[ChangeHash]> {
        self.docs.get(id).map(|held| held.heads.as_slice())
    }

    /// Changes a document and refreshes its digest. Returns `None` if it is not held.
    pub fn update<R>(
        &mut self,
        id: &DocumentId,
        change: impl FnOnce(&mut Automerge) -> R,
    ) -> Option<R> {
        let held = self.docs.get_mut(id)?;
        let result = change(&mut held.doc);
        let heads = held.doc.get_heads();
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
}
