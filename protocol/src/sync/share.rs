//! Sessions with other people's devices: which documents a grant covers, and what each
//! side of such a session may see and change.
//!
//! A session is either with one of the person's own devices (everything syncs) or *shared*:
//! the peer holds grants on some of our documents (we *lend* them), we hold grants on some
//! of its person's documents (we *borrow* them), or both. A shared session skips
//! reconciliation of the whole document set and syncs only the documents in its [`Scope`].

use std::collections::BTreeMap;

use cid::Cid;
use ipld_core::ipld::Ipld;

use crate::{
    capability::{self, ARG_DOC, DOC_READ, DOC_WRITE},
    did::Did,
    document_id::DocumentId,
    ucan::{Delegation, UnixTime, ValidChain, policy::Statement},
};

/// What a grant lets its holder do with one document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Receive its content.
    Read,
    /// Receive it and change it.
    Write,
}

/// One of our documents a peer may use, and the grant that lets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lent {
    /// How far.
    pub level: Level,
    /// The grant: the first delegation of the chain narrower than `/` (the ones before it
    /// are our person's device authority).
    pub grant: Cid,
}

/// What a shared session may carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Our documents the peer holds grants on.
    pub lent: BTreeMap<DocumentId, Lent>,
    /// The peer's person's documents we hold grants on.
    pub borrowed: BTreeMap<DocumentId, Level>,
    /// The earliest expiry among the grants the peer presented.
    pub valid_until: Option<UnixTime>,
    /// The peer's person (its root), when the peer proved its own device authority.
    pub peer_root: Option<Did>,
}

impl Scope {
    /// Whether the session may carry `doc` at all.
    pub fn covers(&self, doc: &DocumentId) -> bool {
        self.lent.contains_key(doc) || self.borrowed.contains_key(doc)
    }

    /// Whether nothing is shared.
    pub fn is_empty(&self) -> bool {
        self.lent.is_empty() && self.borrowed.is_empty()
    }
}

/// A grant this device holds on another person's documents.
#[derive(Debug, Clone)]
pub struct HeldGrant {
    /// The delegations, the other person's root first, ending at this device.
    pub chain: Vec<Delegation>,
    /// The other person (the chain's subject).
    pub subject: Did,
    /// The documents it covers.
    pub documents: Vec<(DocumentId, Level)>,
}

/// The id of the view of `source` holding only the subtree at `path`: the same on every
/// device of the owner, so each serves the same view document.
pub fn projection_id(source: &DocumentId, path: &str) -> DocumentId {
    use sha2::{Digest as _, Sha256};
    let digest = Sha256::new()
        .chain_update(b"membrane/projection/v1")
        .chain_update(source.as_bytes())
        .chain_update(path.as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    DocumentId::from_bytes(bytes)
}

/// A grant limited to a subtree: served from a view document, read-only.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GrantedPath {
    /// The source document.
    pub source: DocumentId,
    /// The subtree (a JSON pointer).
    pub path: String,
    /// The view document that holds just that subtree ([`projection_id`]).
    pub view: DocumentId,
}

/// The documents a valid chain grants, each at the highest level it allows, and the
/// subtrees it grants. Candidates are read off the chain's `.doc == "<id>"` and
/// `.path == "<pointer>"` statements, then each is checked against the whole chain like an
/// invocation would be. A subtree grant is served as its view document, read-only (a view
/// has no way back into its source), so the view appears among the documents at
/// [`Level::Read`].
pub fn granted_documents(chain: &[Delegation], valid: &ValidChain) -> Vec<(DocumentId, Level)> {
    let (mut documents, paths) = granted(chain, valid);
    documents.extend(paths.into_iter().map(|p| (p.view, Level::Read)));
    documents
}

/// The subtrees a valid chain grants (see [`granted_documents`]).
pub fn granted_paths(chain: &[Delegation], valid: &ValidChain) -> Vec<GrantedPath> {
    granted(chain, valid).1
}

fn granted(
    chain: &[Delegation],
    valid: &ValidChain,
) -> (Vec<(DocumentId, Level)>, Vec<GrantedPath>) {
    let mut candidates = Vec::new();
    let mut paths = Vec::new();
    for delegation in chain {
        for statement in delegation.payload().policy.statements() {
            named_documents(statement, &mut candidates);
            named_paths(statement, &mut paths);
        }
    }
    candidates.sort();
    candidates.dedup();
    paths.sort();
    paths.dedup();
    let readable =
        |held: &crate::ucan::Command| capability::implies(held, &capability::command(DOC_READ));
    let mut granted_paths = Vec::new();
    for doc in &candidates {
        for path in &paths {
            let args = Ipld::Map(BTreeMap::from([
                (ARG_DOC.to_owned(), Ipld::String(doc.to_string())),
                (capability::ARG_PATH.to_owned(), Ipld::String(path.clone())),
            ]));
            // A subtree grant only: the whole document must not be granted already.
            if readable(valid.command()) && valid.allows(valid.command(), &args).is_ok() {
                granted_paths.push(GrantedPath {
                    source: *doc,
                    path: path.clone(),
                    view: projection_id(doc, path),
                });
            }
        }
    }
    let documents: Vec<(DocumentId, Level)> = candidates
        .into_iter()
        .filter_map(|doc| {
            let args = Ipld::Map(BTreeMap::from([(
                ARG_DOC.to_owned(),
                Ipld::String(doc.to_string()),
            )]));
            // Every policy in the chain must hold for this document; the level follows from
            // the chain's command (admin and write imply read: `capability::implies`).
            valid.allows(valid.command(), &args).ok()?;
            let held = valid.command();
            if capability::implies(held, &capability::command(DOC_WRITE)) {
                Some((doc, Level::Write))
            } else if capability::implies(held, &capability::command(DOC_READ)) {
                Some((doc, Level::Read))
            } else {
                None
            }
        })
        .collect();
    granted_paths.retain(|p| !documents.iter().any(|(d, _)| *d == p.source));
    (documents, granted_paths)
}

fn named_paths(statement: &Statement, out: &mut Vec<String>) {
    match statement {
        Statement::Equal(selector, Ipld::String(text)) if selector.as_str() == ".path" => {
            out.push(text.clone());
        }
        Statement::And(all) | Statement::Or(all) => {
            all.iter().for_each(|s| named_paths(s, out));
        }
        _ => {}
    }
}

fn named_documents(statement: &Statement, out: &mut Vec<DocumentId>) {
    match statement {
        Statement::Equal(selector, Ipld::String(text)) if selector.as_str() == ".doc" => {
            if let Ok(doc) = text.parse() {
                out.push(doc);
            }
        }
        Statement::And(all) => all.iter().for_each(|s| named_documents(s, out)),
        _ => {}
    }
}

/// The grant in a chain: its first delegation narrower than `/`.
pub fn grant_of(chain: &[Delegation]) -> Option<Cid> {
    grant_position(chain).map(|i| chain[i].cid())
}

fn grant_position(chain: &[Delegation]) -> Option<usize> {
    chain
        .iter()
        .position(|d| d.payload().command.as_str() != capability::ALL)
}

/// The `meta` key that marks a grant its grantee may pass on.
pub const DELEGABLE: &str = "delegable";

/// Whether a delegation says its audience may delegate it further (`meta.delegable`).
pub fn is_delegable(delegation: &Delegation) -> bool {
    delegation
        .payload()
        .meta
        .as_ref()
        .is_some_and(|meta| meta.get(DELEGABLE) == Some(&Ipld::Bool(true)))
}

/// Whether a chain passes its grant on although the grant does not allow it: UCAN lets any
/// audience re-delegate, so the issuer's wish is enforced by the verifier.
pub fn passed_on_without_leave(chain: &[Delegation]) -> bool {
    match grant_position(chain) {
        Some(i) => i + 1 < chain.len() && !is_delegable(&chain[i]),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        key::SecretKey,
        ucan::{DelegationBuilder, Validator},
    };

    #[test]
    fn a_grant_covers_the_documents_its_policy_names_at_its_level() {
        let root = SecretKey::from_seed([1; 32]);
        let friend = SecretKey::from_seed([2; 32]);
        let calendar = DocumentId::from_bytes([7; 16]);
        let inbox = DocumentId::from_bytes([8; 16]);
        let grant = |command: &str, policy| {
            DelegationBuilder::new(root.did(), friend.did(), capability::command(command))
                .policy(policy)
                .sign(&root)
                .unwrap()
        };
        let documents = |d: Delegation| {
            let chain = vec![d];
            let valid = Validator::new(0).validate_delegation_chain(&chain).unwrap();
            granted_documents(&chain, &valid)
        };
        let read = grant(
            DOC_READ,
            capability::policy_for_document(&calendar.to_string()),
        );
        assert_eq!(documents(read), [(calendar, Level::Read)]);
        let write = grant(
            DOC_WRITE,
            capability::policy_for_document(&inbox.to_string()),
        );
        assert_eq!(documents(write), [(inbox, Level::Write)]);
        // A path-limited grant covers its view document only, read-only even for writers.
        for command in [DOC_READ, DOC_WRITE] {
            let path = grant(
                command,
                capability::policy_for_path(&calendar.to_string(), "/monday"),
            );
            let view = projection_id(&calendar, "/monday");
            assert_eq!(documents(path), [(view, Level::Read)]);
        }
        assert_ne!(
            projection_id(&calendar, "/monday"),
            projection_id(&calendar, "/tuesday")
        );
        // `/membrane/doc` covers write, hence read too; admin implies write.
        for command in [capability::DOC, capability::DOC_ADMIN] {
            let all = grant(
                command,
                capability::policy_for_document(&calendar.to_string()),
            );
            assert_eq!(documents(all), [(calendar, Level::Write)]);
        }
        // A command outside documents covers none.
        let link = grant(
            capability::DEVICE_LINK,
            capability::policy_for_document(&calendar.to_string()),
        );
        assert_eq!(documents(link), []);
    }
}
