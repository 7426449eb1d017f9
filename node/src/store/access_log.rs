//! The access log: every use of the person's documents by someone outside the person,
//! appended in order and hash-chained, so an edit anywhere in it shows.
//!
//! Entry `n` stores the hash of entry `n - 1` (`prev`) and its own hash, SHA-256 over `prev`
//! and the entry's other fields in a fixed order. Changing, removing or reordering any
//! entry breaks the chain from there on; [`verify`] finds the first break.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// What happened, as the node reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEvent {
    /// When (Unix seconds).
    pub at: u64,
    /// Who (DID of the peer's device).
    pub peer: String,
    /// Through which grant (CID).
    pub grant: String,
    /// Which document.
    pub doc: String,
    /// `read` (content sent) or `write` (changes applied).
    pub kind: String,
    /// Bytes of document data.
    pub bytes: u64,
}

/// One entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEntry {
    /// Position, from 1.
    pub seq: u64,
    /// The event.
    #[serde(flatten)]
    pub event: AccessEvent,
    /// The previous entry's hash (hex; zeros for the first).
    pub prev: String,
    /// This entry's hash (hex).
    pub hash: String,
}

/// The hash before the first entry.
pub const GENESIS: [u8; 32] = [0; 32];

/// An entry's hash.
pub fn entry_hash(seq: u64, event: &AccessEvent, prev: &[u8; 32]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"membrane/access-log/v1");
    hasher.update(prev);
    hasher.update(seq.to_be_bytes());
    hasher.update(event.at.to_be_bytes());
    for field in [&event.peer, &event.grant, &event.doc, &event.kind] {
        // Length-prefixed, so no two field lists hash alike.
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    hasher.update(event.bytes.to_be_bytes());
    hasher.finalize().into()
}

/// Makes the entry that follows `prev` (at position `seq`).
pub fn chain(seq: u64, event: AccessEvent, prev: &[u8; 32]) -> (AccessEntry, [u8; 32]) {
    let hash = entry_hash(seq, &event, prev);
    let entry = AccessEntry {
        seq,
        event,
        prev: hex(prev),
        hash: hex(&hash),
    };
    (entry, hash)
}

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the access log was altered at entry {seq}: {reason}")]
pub struct LogBroken {
    /// The first entry that does not check out.
    pub seq: u64,
    /// What is wrong with it.
    pub reason: String,
}

/// Checks stored entries (key, raw bytes) in key order. Returns how many there are.
pub fn verify(rows: impl IntoIterator<Item = (u64, Vec<u8>)>) -> Result<u64, LogBroken> {
    let mut prev = GENESIS;
    let mut expected = 1;
    for (key, bytes) in rows {
        let broken = |reason: &str| LogBroken {
            seq: key,
            reason: reason.to_owned(),
        };
        if key != expected {
            return Err(broken(&format!("expected entry {expected} here")));
        }
        let entry: AccessEntry =
            serde_json::from_slice(&bytes).map_err(|_| broken("unreadable entry"))?;
        if entry.seq != key {
            return Err(broken("its position does not match its key"));
        }
        if entry.prev != hex(&prev) {
            return Err(broken("it does not follow the entry before it"));
        }
        let hash = entry_hash(entry.seq, &entry.event, &prev);
        if entry.hash != hex(&hash) {
            return Err(broken("its content does not match its hash"));
        }
        prev = hash;
        expected += 1;
    }
    Ok(expected - 1)
}

/// Parses a stored hash.
pub fn unhex(text: &str) -> Option<[u8; 32]> {
    let bytes: Vec<u8> = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect::<Option<_>>()?;
    bytes.try_into().ok()
}

/// Lower-case hex (the node's one encoder, in `repo.rs`).
pub(crate) fn hex(bytes: &[u8]) -> String {
    crate::repo::hex(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u64) -> AccessEvent {
        AccessEvent {
            at: 1_800_000_000 + n,
            peer: "did:key:z6MkFriend".into(),
            grant: "bafyGrant".into(),
            doc: "automerge:Calendar".into(),
            kind: "read".into(),
            bytes: 100 + n,
        }
    }

    fn log(n: u64) -> Vec<(u64, Vec<u8>)> {
        let mut prev = GENESIS;
        (1..=n)
            .map(|seq| {
                let (entry, hash) = chain(seq, event(seq), &prev);
                prev = hash;
                (seq, serde_json::to_vec(&entry).unwrap())
            })
            .collect()
    }

    #[test]
    fn an_untouched_log_verifies_and_any_edit_is_found() {
        assert_eq!(verify(log(5)), Ok(5));
        assert_eq!(verify(Vec::new()), Ok(0));

        // Change one field of entry 3.
        let mut edited = log(5);
        let mut entry: AccessEntry = serde_json::from_slice(&edited[2].1).unwrap();
        entry.event.bytes = 1;
        edited[2].1 = serde_json::to_vec(&entry).unwrap();
        assert_eq!(verify(edited).unwrap_err().seq, 3);

        // Rewrite entry 3 with a fresh hash: entry 4 no longer follows it.
        let mut rehashed = log(5);
        let mut entry: AccessEntry = serde_json::from_slice(&rehashed[2].1).unwrap();
        entry.event.peer = "did:key:z6MkSomeoneElse".into();
        let prev = unhex(&entry.prev).unwrap();
        let (entry, _) = chain(3, entry.event, &prev);
        rehashed[2].1 = serde_json::to_vec(&entry).unwrap();
        assert_eq!(verify(rehashed).unwrap_err().seq, 4);

        // Drop entry 2.
        let mut dropped = log(5);
        dropped.remove(1);
        assert_eq!(verify(dropped).unwrap_err().seq, 3);

        // Drop the last entry: the rest still verifies (a truncated tail is only visible
        // against the count shown before, which `membrane log verify` prints).
        let mut truncated = log(5);
        truncated.pop();
        assert_eq!(verify(truncated), Ok(4));
    }
}
