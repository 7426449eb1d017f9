//! The `/membrane/sync/1` wire format: DAG-CBOR frames, each sent length-prefixed on one
//! ordered stream per peer (see `docs/protocol.md`).

use automerge::ChangeHash;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::document_id::DocumentId;

/// The libp2p protocol name.
pub const PROTOCOL: &str = "/membrane/sync/1";
/// The version in `Hello`. 2 added [`DocMessage::Changes`].
pub const PROTOCOL_VERSION: u32 = 2;
/// Largest frame either side sends or accepts.
pub const MAX_FRAME_SIZE: usize = 16 * 1024 * 1024;
/// Documents are grouped into this many buckets (by the first byte of their id) when two
/// peers look for the documents on which they differ.
pub const BUCKETS: usize = 256;

/// One message on the sync stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Frame {
    /// First frame each way: who I am, proven by a delegation chain from my person's root
    /// to my device key (the key the connection is authenticated with).
    Hello {
        /// [`PROTOCOL_VERSION`].
        version: u32,
        /// UCAN delegations, root first.
        chain: Vec<ByteBuf>,
        /// Grants I hold on other persons' documents, each a chain of delegations from
        /// that person's root to my device key. Omitted when empty.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        grants: Vec<Vec<ByteBuf>>,
    },
    /// The set of (document, heads) I hold, as a count and an XOR of per-document digests.
    Summary {
        /// How many documents.
        count: u64,
        /// 16-byte XOR of the documents' digests.
        fingerprint: ByteBuf,
    },
    /// Per-bucket fingerprints, sent by the peer with the smaller DID when summaries differ.
    Buckets {
        /// [`BUCKETS`] XORs of 8-byte digests.
        fingerprints: Vec<u64>,
    },
    /// The documents in the buckets that differ: `reply` is false from the peer answering
    /// `Buckets`, true from the peer that sent them.
    Entries {
        /// The differing bucket numbers.
        buckets: ByteBuf,
        /// Every document of the sender in those buckets.
        entries: Vec<Entry>,
        /// Whether this answers an `Entries`.
        reply: bool,
    },
    /// Revocations the sender's person made, with what it takes to check them: sent to a
    /// grantee so it refuses the revoked devices (and learns of its revoked grants) too.
    Revocations {
        /// The records.
        records: Vec<RevocationRecord>,
    },
    /// Automerge sync messages and whole documents, many per frame.
    Docs {
        /// The messages.
        items: Vec<DocMessage>,
    },
}

/// A revocation and what any node needs to check it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevocationRecord {
    /// The `/ucan/revoke` invocation.
    pub token: ByteBuf,
    /// The revoker's delegation chain, root first.
    pub proofs: Vec<ByteBuf>,
    /// The revoked delegation's chain, root first.
    pub revoked: Vec<ByteBuf>,
}

/// One document in an `Entries` frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The document.
    pub doc: DocumentId,
    /// The first 8 bytes of its digest (over its id and heads).
    pub digest: u64,
}

/// A per-document message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DocMessage {
    /// An Automerge sync protocol message.
    Sync {
        /// The document.
        doc: DocumentId,
        /// `automerge::sync::Message::encode()`.
        message: ByteBuf,
    },
    /// A whole saved document, sent instead of its change history when the peer has none of
    /// it: far fewer bytes than the changes, and one message instead of a round trip.
    Snapshot {
        /// The document.
        doc: DocumentId,
        /// `Automerge::save()`.
        data: ByteBuf,
    },
    /// New changes, pushed as they are to a peer known to hold everything the sender held
    /// before them. Live editing goes this way: each Automerge sync message costs time in
    /// proportion to the document's history on both sides, and every change would need
    /// one there and one back. A receiver that lacks a change's dependencies falls back to
    /// a sync message.
    Changes {
        /// The document.
        doc: DocumentId,
        /// The sender's heads after these changes: 32-byte hashes back to back.
        heads: ByteBuf,
        /// Automerge changes back to back, dependencies first (or a saved document when
        /// the sender's copy was empty before: anything `load_incremental` takes).
        changes: ByteBuf,
    },
}

impl DocMessage {
    /// The document this message is about.
    pub fn doc(&self) -> DocumentId {
        match self {
            Self::Sync { doc, .. } | Self::Snapshot { doc, .. } | Self::Changes { doc, .. } => *doc,
        }
    }

    fn size_hint(&self) -> usize {
        match self {
            Self::Sync { message, .. } => message.len() + 32,
            Self::Snapshot { data, .. } => data.len() + 32,
            Self::Changes { heads, changes, .. } => heads.len() + changes.len() + 40,
        }
    }
}

/// Heads as [`DocMessage::Changes`] carries them.
pub fn encode_heads(heads: &[ChangeHash]) -> ByteBuf {
    ByteBuf::from(heads.iter().flat_map(|h| h.0).collect::<Vec<u8>>())
}

/// Heads from [`DocMessage::Changes`]; `None` unless the bytes are whole 32-byte hashes.
pub fn decode_heads(bytes: &[u8]) -> Option<Vec<ChangeHash>> {
    if !bytes.len().is_multiple_of(32) {
        return None;
    }
    bytes
        .chunks_exact(32)
        .map(|hash| ChangeHash::try_from(hash).ok())
        .collect()
}

/// Why bytes are not a frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum FrameError {
    /// Larger than [`MAX_FRAME_SIZE`].
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME_SIZE}")]
    TooLarge(usize),
    /// Not a frame.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

impl Frame {
    /// Encodes to DAG-CBOR.
    pub fn encode(&self) -> Vec<u8> {
        serde_ipld_dagcbor::to_vec(self).expect("frames always encode")
    }

    /// Decodes untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, FrameError> {
        if bytes.len() > MAX_FRAME_SIZE {
            return Err(FrameError::TooLarge(bytes.len()));
        }
        serde_ipld_dagcbor::from_slice(bytes)
            .map_err(|error| FrameError::Malformed(error.to_string()))
    }

    /// Packs document messages into as few `Docs` frames as fit under `limit` bytes each.
    pub fn pack_docs(items: Vec<DocMessage>, limit: usize) -> Vec<Frame> {
        let mut frames = Vec::new();
        let mut current = Vec::new();
        let mut size = 0;
        for item in items {
            let item_size = item.size_hint();
            if !current.is_empty() && size + item_size > limit {
                frames.push(Frame::Docs {
                    items: std::mem::take(&mut current),
                });
                size = 0;
            }
            size += item_size;
            current.push(item);
        }
        if !current.is_empty() {
            frames.push(Frame::Docs { items: current });
        }
        frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_garbage_is_refused() {
        let frames = [
            Frame::Hello {
                version: PROTOCOL_VERSION,
                chain: vec![ByteBuf::from(vec![1, 2, 3])],
                grants: vec![],
            },
            Frame::Hello {
                version: PROTOCOL_VERSION,
                chain: vec![],
                grants: vec![vec![ByteBuf::from(vec![4, 5])]],
            },
            Frame::Summary {
                count: 3,
                fingerprint: ByteBuf::from(vec![9; 16]),
            },
            Frame::Buckets {
                fingerprints: vec![u64::MAX; BUCKETS],
            },
            Frame::Entries {
                buckets: ByteBuf::from(vec![0, 255]),
                entries: vec![Entry {
                    doc: DocumentId::from_bytes([1; 16]),
                    digest: 42,
                }],
                reply: true,
            },
            Frame::Docs {
                items: vec![DocMessage::Snapshot {
                    doc: DocumentId::from_bytes([2; 16]),
                    data: ByteBuf::from(vec![0; 10]),
                }],
            },
        ];
        for frame in frames {
            assert_eq!(Frame::decode(&frame.encode()), Ok(frame));
        }
        assert!(matches!(
            Frame::decode(b"\xff\x00garbage"),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(Frame::decode(&[]), Err(FrameError::Malformed(_))));
    }

    #[test]
    fn packing_respects_the_limit() {
        let item = |n: u8| DocMessage::Snapshot {
            doc: DocumentId::from_bytes([n; 16]),
            data: ByteBuf::from(vec![0; 100]),
        };
        let frames = Frame::pack_docs((0..10).map(item).collect(), 300);
        assert_eq!(frames.len(), 5);
        assert!(frames.iter().all(|f| f.encode().len() < 400));
    }
}
