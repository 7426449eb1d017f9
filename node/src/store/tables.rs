//! Every redb table, with a versioned name so a later schema can migrate beside it.

use redb::TableDefinition;

/// `"schema"` → version number.
pub(crate) const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta-v1");
/// Document id → metadata (JSON: name, created).
pub(crate) const DOCS: TableDefinition<'_, &[u8; 16], &[u8]> = TableDefinition::new("docs-v1");
/// Document id → last compacted snapshot (`Automerge::save()`).
pub(crate) const SNAPSHOTS: TableDefinition<'_, &[u8; 16], &[u8]> =
    TableDefinition::new("doc-snapshots-v1");
/// Document id → its heads (32-byte change hashes back to back) as of its last stored
/// data, written in the same transaction as that data: enough to reconcile without
/// loading the document.
pub(crate) const DOC_HEADS: TableDefinition<'_, &[u8; 16], &[u8]> =
    TableDefinition::new("doc-heads-v1");
/// (document id, sequence) → incremental chunk appended after the snapshot.
pub(crate) const CHUNKS: TableDefinition<'_, (&[u8; 16], u64), &[u8]> =
    TableDefinition::new("doc-chunks-v1");
/// (peer device key, document id) → persisted Automerge sync state.
pub(crate) const SYNC_STATES: TableDefinition<'_, (&[u8; 32], &[u8; 16]), &[u8]> =
    TableDefinition::new("sync-states-v1");
/// Document id → why it was quarantined (its data stays in the tables above).
pub(crate) const QUARANTINE: TableDefinition<'_, &[u8; 16], &str> =
    TableDefinition::new("quarantine-v1");
/// Delegation CID bytes → token bytes.
pub(crate) const DELEGATIONS: TableDefinition<'_, &[u8], &[u8]> =
    TableDefinition::new("delegations-v1");
/// Revoked delegation CID bytes → revocation token bytes.
pub(crate) const REVOCATIONS: TableDefinition<'_, &[u8], &[u8]> =
    TableDefinition::new("revocations-v1");
/// Device DID → registry entry (JSON).
pub(crate) const DEVICES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("devices-v1");

/// Position (from 1) → access log entry (JSON, hash-chained; see `access_log`).
pub(crate) const ACCESS_LOG: TableDefinition<'_, u64, &[u8]> =
    TableDefinition::new("access-log-v1");
/// Request number → an access request from someone outside the person (JSON).
pub(crate) const REQUESTS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("requests-v1");
/// Key in [`META`]: the latest time the node has seen.
pub(crate) const CLOCK_FLOOR: &str = "clock-floor";

/// The schema version these tables describe.
pub(crate) const SCHEMA_VERSION: u64 = 1;
