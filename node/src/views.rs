//! View documents for grants limited to a subtree (`membrane grant --path`).
//!
//! Such a grant never sends the rest of the document: the owner's nodes keep a separate
//! view document (its id derived from the source and the path, the same on every device)
//! holding only the granted subtree at the same place, and serve that to the grantee.
//! Whenever the source changes, here or on another device, the view is brought up to date.

use std::collections::{BTreeMap, BTreeSet};

use membrane_protocol::{DocumentId, sync::share::projection_id};
use serde_json::{Value as Json, json};

use crate::{
    json,
    repo::{NodeError, RepoActor},
    store::Pending,
};

/// Source document → its views (view id, path).
pub(crate) type Views = BTreeMap<DocumentId, BTreeSet<(DocumentId, String)>>;

/// What the view of `path` should hold, given the source's content: the subtree at the
/// same path, inside empty maps; `{}` when the source has nothing there.
pub(crate) fn view_content(source: &Json, path: &str) -> Json {
    let Some(subtree) = source.pointer(path).cloned() else {
        return json!({});
    };
    let Ok(segments) = json::pointer_segments(path) else {
        return json!({});
    };
    segments
        .iter()
        .rev()
        .fold(subtree, |inner, key| json!({ key: inner }))
}

impl RepoActor {
    /// Rebuilds the source → views map from the live (unrevoked) path grants on record.
    pub(crate) fn views_from_registry(&self, index: &automerge::Automerge) -> Views {
        let mut views = Views::new();
        for (key, entry) in crate::repo::index_entries(index, "grant:") {
            let Some(cid) = key.strip_prefix("grant:") else {
                continue;
            };
            let text = |field| crate::repo::entry_text(index, &entry, field);
            let (Some(doc), Some(path)) = (text("doc"), text("path")) else {
                continue;
            };
            if self.revoked.contains(cid) {
                continue;
            }
            if let Ok(source) = doc.parse::<DocumentId>() {
                views
                    .entry(source)
                    .or_default()
                    .insert((projection_id(&source, &path), path));
            }
        }
        views
    }

    /// Brings the views of the sources marked stale up to date, creating missing ones.
    pub(crate) async fn refresh_views(&mut self) {
        let stale = std::mem::take(&mut self.stale_views);
        for source in stale {
            let Some(views) = self.views.get(&source).cloned() else {
                continue;
            };
            for (view, path) in views {
                if let Err(error) = self.update_view(source, view, &path).await {
                    tracing::error!(%source, %view, %path, %error, "could not update a view");
                }
            }
        }
    }

    async fn update_view(
        &mut self,
        source: DocumentId,
        view: DocumentId,
        path: &str,
    ) -> Result<Vec<Pending>, NodeError> {
        self.ensure_loaded(&[source, view]).await;
        let Some(doc) = self.hub.docs().get(&source) else {
            return Ok(Vec::new());
        };
        let wanted = view_content(&json::to_json(doc), path);
        let Some(held) = self.hub.docs().get(&view) else {
            let name = self
                .name_of(&source)
                .map(|name| format!("{name}{path} (view)"));
            let extra = json!({"view_of": source.to_string(), "path": path});
            return self.create_with_id(view, name, Some(wanted), extra).await;
        };
        if json::to_json(held) == wanted {
            return Ok(Vec::new());
        }
        // Only the granted subtree is rewritten; the maps above it stay.
        let subtree = wanted.pointer(path).cloned().unwrap_or(Json::Null);
        let path = path.to_owned();
        Ok(self
            .change(view, move |tx| {
                json::set(tx, &path, &subtree).map_err(NodeError::from)
            })
            .await?
            .into_iter()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_holds_the_subtree_at_its_place_and_nothing_else() {
        let source = json!({
            "profile": {"name": "Sarah", "address": {"street": "Elm 1", "city": "Oslo"}},
            "diary": "secret",
        });
        assert_eq!(
            view_content(&source, "/profile/address"),
            json!({"profile": {"address": {"street": "Elm 1", "city": "Oslo"}}})
        );
        assert_eq!(view_content(&source, "/nothing/here"), json!({}));
        assert_eq!(
            view_content(&json!({"a/b": {"c": 1}}), "/a~1b"),
            json!({"a/b": {"c": 1}})
        );
    }
}
