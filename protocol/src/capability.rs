//! Membrane's command and policy vocabulary on top of UCAN (see `docs/capabilities.md`).
//!
//! Subjects are persons' root DIDs: Sarah's documents are resources of Sarah's root. The
//! commands form a tree, and a command covers everything below it:
//!
//! ```text
//! /                                  everything (a person's own devices hold this)
//! └── /membrane
//!     ├── /membrane/doc
//!     │   ├── /membrane/doc/read     receive a document's content
//!     │   ├── /membrane/doc/write    change it (write does not imply read: see below)
//!     │   └── /membrane/doc/admin    grant and revoke others' access to it
//!     ├── /membrane/inbox
//!     │   └── /membrane/inbox/append add an entry to an inbox document, nothing else
//!     └── /membrane/device
//!         └── /membrane/device/link  add a device to the person's set
//! ```
//!
//! UCAN's hierarchy is by path, so `/membrane/doc` covers read, write and admin. Beyond the
//! hierarchy, Membrane treats `write` and `admin` as also allowing `read` of the same
//! documents (a writer must see what it merges with): [`implies`] encodes that.
//!
//! Policies select over the invocation arguments `.doc` (document id), `.path` (a JSON
//! pointer within it, e.g. `/profile/address`) and `.type` (document type, e.g.
//! `calendar`).

use crate::ucan::{Command, Policy};

/// Everything.
pub const ALL: &str = "/";
/// Every document operation.
pub const DOC: &str = "/membrane/doc";
/// Receive a document's content.
pub const DOC_READ: &str = "/membrane/doc/read";
/// Change a document.
pub const DOC_WRITE: &str = "/membrane/doc/write";
/// Grant and revoke access to a document.
pub const DOC_ADMIN: &str = "/membrane/doc/admin";
/// Add entries to an inbox document.
pub const INBOX_APPEND: &str = "/membrane/inbox/append";
/// Add a device to the person's set.
pub const DEVICE_LINK: &str = "/membrane/device/link";

/// Argument naming the document.
pub const ARG_DOC: &str = "doc";
/// Argument naming a path within the document (JSON pointer).
pub const ARG_PATH: &str = "path";
/// Argument naming the document type.
pub const ARG_TYPE: &str = "type";

/// Parses one of the constants above (or any valid command).
///
/// # Panics
///
/// On text that is not a valid command: this is for the fixed constants of this module,
/// never for input (parse that with `str::parse::<Command>`).
pub fn command(text: &str) -> Command {
    text.parse()
        .unwrap_or_else(|error| panic!("{text:?} is not a valid command: {error}"))
}

/// Whether holding `held` lets one do `wanted`: UCAN path coverage, plus
/// write/admin ⇒ read and admin ⇒ write on documents.
pub fn implies(held: &Command, wanted: &Command) -> bool {
    if held.covers(wanted) {
        return true;
    }
    let (held, wanted) = (held.as_str(), wanted.as_str());
    matches!(
        (held, wanted),
        (DOC_WRITE, DOC_READ) | (DOC_ADMIN, DOC_READ) | (DOC_ADMIN, DOC_WRITE)
    )
}

/// The policy limiting a grant to one document: `[["==", ".doc", id]]`.
pub fn policy_for_document(document_id: &str) -> Policy {
    Policy::from_json(&serde_json::json!([["==", ".doc", document_id]]).to_string())
        .expect("a fixed, valid policy")
}

/// The policy limiting a grant to one document and a subtree of it:
/// `[["==", ".doc", id], ["like", ".path", "<prefix>*"]]`, with `*` in the prefix escaped.
pub fn policy_for_path(document_id: &str, path_prefix: &str) -> Policy {
    let escaped = path_prefix.replace('\\', "\\\\").replace('*', "\\*");
    let pattern = format!("{}*", escaped.trim_end_matches('/').to_owned() + "/");
    let exact = path_prefix.trim_end_matches('/');
    Policy::from_json(
        &serde_json::json!([
            ["==", ".doc", document_id],
            ["or", [["==", ".path", exact], ["like", ".path", pattern]]]
        ])
        .to_string(),
    )
    .expect("a fixed, valid policy")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ucan::json::json_to_ipld;

    #[test]
    fn write_and_admin_imply_read_but_not_the_reverse() {
        assert!(implies(&command(DOC_WRITE), &command(DOC_READ)));
        assert!(implies(&command(DOC_ADMIN), &command(DOC_WRITE)));
        assert!(implies(&command(DOC), &command(DOC_ADMIN)));
        assert!(implies(&command(ALL), &command(DEVICE_LINK)));
        assert!(!implies(&command(DOC_READ), &command(DOC_WRITE)));
        assert!(!implies(&command(INBOX_APPEND), &command(DOC_WRITE)));
        assert!(!implies(&command(DOC_WRITE), &command(INBOX_APPEND)));
    }

    #[test]
    fn path_policy_covers_the_subtree_only() {
        let policy = policy_for_path("automerge:abc", "/profile/address");
        let args = |path: &str| {
            json_to_ipld(&serde_json::json!({"doc": "automerge:abc", "path": path})).unwrap()
        };
        assert!(policy.matches(&args("/profile/address")));
        assert!(policy.matches(&args("/profile/address/street")));
        assert!(!policy.matches(&args("/profile/addresses")));
        assert!(!policy.matches(&args("/profile")));
        let other_doc =
            json_to_ipld(&serde_json::json!({"doc": "automerge:xyz", "path": "/profile/address"}))
                .unwrap();
        assert!(!policy.matches(&other_doc));
    }
}
