//! Document ids in automerge-repo's form: `automerge:` + bs58check(16 random bytes).

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const URL_PREFIX: &str = "automerge:";

/// Why text is not a document id.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum DocumentIdError {
    /// Not valid bs58check (bad characters or checksum).
    #[error("not a document id: bad base58check")]
    BadEncoding,
    /// Decodes, but not to 16 bytes.
    #[error("not a document id: {0} bytes instead of 16")]
    WrongLength(usize),
}

/// A document's id: 16 random bytes, shown as `automerge:<bs58check>` exactly as
/// automerge-repo does, so the same document has the same URL in both.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocumentId([u8; 16]);

impl DocumentId {
    /// An id from 16 bytes (callers bring randomness).
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Parses raw bytes of any length, failing unless there are exactly 16.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, DocumentIdError> {
        bytes
            .try_into()
            .map(Self)
            .map_err(|_| DocumentIdError::WrongLength(bytes.len()))
    }

    /// The bs58check text without the `automerge:` prefix (automerge-repo's `documentId`).
    pub fn to_bs58check(&self) -> String {
        bs58::encode(self.0).with_check().into_string()
    }
}

impl fmt::Display for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{URL_PREFIX}{}", self.to_bs58check())
    }
}

impl fmt::Debug for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DocumentId({self})")
    }
}

impl FromStr for DocumentId {
    type Err = DocumentIdError;

    /// Accepts `automerge:<id>` or the bare bs58check id.
    fn from_str(text: &str) -> Result<Self, DocumentIdError> {
        let id = text.strip_prefix(URL_PREFIX).unwrap_or(text);
        if id.len() > 64 {
            return Err(DocumentIdError::BadEncoding);
        }
        let bytes = bs58::decode(id)
            .with_check(None)
            .into_vec()
            .map_err(|_| DocumentIdError::BadEncoding)?;
        Self::from_slice(&bytes)
    }
}

impl Serialize for DocumentId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for DocumentId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes: serde_bytes::ByteBuf = Deserialize::deserialize(deserializer)?;
        Self::from_slice(&bytes).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips_and_rejects_corruption() {
        let id = DocumentId::from_bytes([7; 16]);
        let text = id.to_string();
        assert!(text.starts_with("automerge:"));
        assert_eq!(text.parse::<DocumentId>(), Ok(id));
        assert_eq!(id.to_bs58check().parse::<DocumentId>(), Ok(id));
        let mut corrupted = text.clone().into_bytes();
        let last = corrupted.len() - 1;
        corrupted[last] = if corrupted[last] == b'2' { b'3' } else { b'2' };
        let corrupted = String::from_utf8(corrupted).unwrap();
        assert_eq!(
            corrupted.parse::<DocumentId>(),
            Err(DocumentIdError::BadEncoding)
        );
        let short = bs58::encode([1u8; 8]).with_check().into_string();
        assert_eq!(
            short.parse::<DocumentId>(),
            Err(DocumentIdError::WrongLength(8))
        );
    }

    #[test]
    fn matches_automerge_repo_encoding() {
        // automerge-repo encodes a UUID's 16 bytes with bs58check (sha256d checksum).
        let id = DocumentId::from_bytes([0; 16]);
        let decoded = bs58::decode(id.to_bs58check()).into_vec().unwrap();
        assert_eq!(decoded.len(), 20);
        assert_eq!(&decoded[..16], &[0; 16]);
    }
}
