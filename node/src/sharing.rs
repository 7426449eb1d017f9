//! Sharing documents with other people: grants issued and received, their revocation, who
//! can reach a document, and the access log.
//!
//! Grants live in the person's index document, so every device of the person knows them:
//! `grant:<cid>` for grants this person issued, `shared:<cid>` for grants others gave this
//! person. Revocations share the `revocation:<cid>` entries with device revocations.

use std::collections::BTreeMap;

use libp2p::Multiaddr;
use membrane_protocol::{
    Did, capability,
    sync::share::{DELEGABLE, Level, granted_documents, is_delegable},
    ucan::{Delegation, DelegationBuilder, Ipld, UnixTime, Validator, encode_base64},
};
use serde::Serialize;
use serde_json::{Value as Json, json};

use crate::{
    json, random,
    repo::{NodeError, Reply, RepoActor, reply_when_durable},
    store::{Pending, access_log::AccessEntry},
};

/// What a grant allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Can {
    /// Receive the document.
    Read,
    /// Receive and change it.
    Write,
    /// Receive, change, and grant others access to it.
    Admin,
}

impl Can {
    fn command(self) -> &'static str {
        match self {
            Self::Read => capability::DOC_READ,
            Self::Write => capability::DOC_WRITE,
            Self::Admin => capability::DOC_ADMIN,
        }
    }

    /// `read`, `write` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Can {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "read" => Ok(Self::Read),
            "write" => Ok(Self::Write),
            "admin" => Ok(Self::Admin),
            other => Err(format!("{other:?} is not one of read, write, admin")),
        }
    }
}

/// A grant to issue.
#[derive(Debug, Clone)]
pub struct GrantRequest {
    /// Who receives it: a device's or a person's did:key.
    pub to: Did,
    /// The document, by id or name.
    pub doc: String,
    /// What it allows.
    pub can: Can,
    /// Seconds from now until it expires; `None` for no expiry.
    pub expires_in: Option<u64>,
    /// The terms the grantee accepts by using it (text or URL); travels in the grant.
    pub terms: Option<String>,
    /// A note for the person's own records; travels in the grant too.
    pub note: Option<String>,
    /// Whether the grantee may pass it on (say, from their person to their devices).
    pub delegable: bool,
    /// Limit it to this subtree (a JSON pointer such as `/profile/address`): the grantee
    /// then receives a view document holding only that subtree, read-only.
    pub path: Option<String>,
}

/// A grant just issued.
#[derive(Debug, Clone, Serialize)]
pub struct IssuedGrant {
    /// The grant's CID: how to name it in `revoke`.
    pub cid: String,
    /// The document.
    pub doc: String,
    /// For a grant limited to a subtree: the view document the grantee receives.
    pub view: Option<String>,
    /// The text to hand the grantee (`membrane accept CODE`).
    pub code: String,
    /// When it expires (Unix seconds).
    pub expires: Option<UnixTime>,
}

/// A grant this person issued, as listed by `grants`.
#[derive(Debug, Clone, Serialize)]
pub struct GrantInfo {
    /// Its CID.
    pub cid: String,
    /// The grantee.
    pub to: String,
    /// The document.
    pub doc: String,
    /// Its name, if it has one.
    pub doc_name: Option<String>,
    /// The subtree it is limited to, if any.
    pub path: Option<String>,
    /// `read`, `write` or `admin`.
    pub can: String,
    /// When it expires (Unix seconds).
    pub expires: Option<UnixTime>,
    /// The terms attached.
    pub terms: Option<String>,
    /// The note attached.
    pub note: Option<String>,
    /// The issuing device.
    pub by: String,
    /// When it was issued.
    pub at: UnixTime,
    /// Whether it was revoked.
    pub revoked: bool,
    /// When this node last served it (from the access log).
    pub last_used: Option<UnixTime>,
}

/// A grant another person gave this person, as listed by `shared`.
#[derive(Debug, Clone, Serialize)]
pub struct SharedInfo {
    /// Its CID.
    pub cid: String,
    /// The person who shares.
    pub from: String,
    /// The documents it covers, with `read` or `write`.
    pub docs: Vec<(String, String)>,
    /// When it expires.
    pub expires: Option<UnixTime>,
    /// The terms attached.
    pub terms: Option<String>,
    /// Where the sharer's devices were reachable when it was issued.
    pub addrs: Vec<String>,
    /// When it was accepted here.
    pub accepted: UnixTime,
}

/// Who can reach a document.
#[derive(Debug, Clone, Serialize)]
pub struct WhoCan {
    /// The document.
    pub doc: String,
    /// The person's devices, which hold everything.
    pub devices: Vec<String>,
    /// Live grants on it: grantee, level, expiry and the chain of issuers.
    pub grants: Vec<Json>,
}

/// What the grantee receives: the delegation chain and where to reach the sharer. Its text
/// form is `mbrgrant1` + base64url of the DAG-CBOR list `[[token…], [address…]]`.
#[derive(Debug, Clone)]
pub struct GrantCode {
    /// From the sharer's root to the grantee, root first.
    pub chain: Vec<Delegation>,
    /// The issuing device's addresses.
    pub addrs: Vec<Multiaddr>,
}

const GRANT_PREFIX: &str = "mbrgrant1";

impl GrantCode {
    /// The copyable text.
    pub fn to_text(&self) -> String {
        let value = Ipld::List(vec![
            Ipld::List(
                self.chain
                    .iter()
                    .map(|d| Ipld::Bytes(d.as_bytes().to_vec()))
                    .collect(),
            ),
            Ipld::List(
                self.addrs
                    .iter()
                    .map(|a| Ipld::String(a.to_string()))
                    .collect(),
            ),
        ]);
        let bytes = serde_ipld_dagcbor::to_vec(&value).expect("lists of bytes and text encode");
        format!("{GRANT_PREFIX}{}", encode_base64(&bytes))
    }

    /// Parses the text.
    pub fn from_text(text: &str) -> Result<Self, NodeError> {
        let bad = |why: &str| NodeError::Invalid(format!("not a grant code: {why}"));
        let body = text
            .trim()
            .strip_prefix(GRANT_PREFIX)
            .ok_or_else(|| bad("it does not start with mbrgrant1"))?;
        let bytes = membrane_protocol::ucan::decode_base64_loose(body)
            .map_err(|_| bad("it is not base64"))?;
        let value: Ipld = serde_ipld_dagcbor::from_slice(&bytes)
            .map_err(|_| bad("it is truncated or corrupt"))?;
        let Ipld::List(parts) = value else {
            return Err(bad("wrong shape"));
        };
        let [Ipld::List(tokens), Ipld::List(addrs)] = parts.as_slice() else {
            return Err(bad("wrong shape"));
        };
        let chain = tokens
            .iter()
            .map(|t| match t {
                Ipld::Bytes(b) => Delegation::decode(b).map_err(|e| bad(&e.to_string())),
                _ => Err(bad("wrong shape")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let addrs = addrs
            .iter()
            .filter_map(|a| match a {
                Ipld::String(s) => s.parse().ok(),
                _ => None,
            })
            .collect();
        Ok(Self { chain, addrs })
    }
}

/// Requests about sharing, served by the repo actor.
pub(crate) enum ShareCommand {
    Grant(GrantRequest, Reply<IssuedGrant>),
    Grants(Reply<Vec<GrantInfo>>),
    Accept(String, Reply<SharedInfo>),
    Shared(Reply<Vec<SharedInfo>>),
    Revoke(String, Reply<Vec<String>>),
    WhoCan(String, Reply<WhoCan>),
    Log(Reply<Vec<AccessEntry>>),
    VerifyLog(Reply<u64>),
}

fn tokens(chain: &[Delegation]) -> Vec<String> {
    chain.iter().map(|d| encode_base64(d.as_bytes())).collect()
}

/// Reads a `[base64 token…]` JSON list.
pub(crate) fn chain_from_json(value: &Json) -> Vec<Delegation> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Json::as_str)
        .filter_map(|t| membrane_protocol::ucan::decode_base64_loose(t).ok())
        .filter_map(|b| Delegation::decode(&b).ok())
        .collect()
}

fn meta_text(delegation: &Delegation, key: &str) -> Option<String> {
    match delegation.payload().meta.as_ref()?.get(key)? {
        Ipld::String(s) => Some(s.clone()),
        _ => None,
    }
}

impl RepoActor {
    pub(crate) async fn on_share(&mut self, command: ShareCommand) {
        match command {
            ShareCommand::Grant(request, reply) => {
                let result = self.grant(request).await;
                reply_when_durable(result, reply);
            }
            ShareCommand::Grants(reply) => {
                let _ = reply.send(self.grants().await);
            }
            ShareCommand::Accept(code, reply) => {
                let result = self.accept(&code).await;
                reply_when_durable(result, reply);
            }
            ShareCommand::Shared(reply) => {
                let _ = reply.send(Ok(self.shared()));
            }
            ShareCommand::Revoke(target, reply) => {
                let result = self.revoke_grant(&target).await;
                reply_when_durable(result, reply);
            }
            ShareCommand::WhoCan(doc, reply) => {
                let _ = reply.send(self.who_can(&doc));
            }
            ShareCommand::Log(reply) => {
                let _ = reply.send(self.store.access_log().await.map_err(NodeError::from));
            }
            ShareCommand::VerifyLog(reply) => {
                let result = match self.store.verify_access_log().await {
                    Ok(Ok(count)) => Ok(count),
                    Ok(Err(broken)) => Err(NodeError::Invalid(broken.to_string())),
                    Err(error) => Err(error.into()),
                };
                let _ = reply.send(result);
            }
        }
    }

    pub(crate) async fn grant(
        &mut self,
        request: GrantRequest,
    ) -> Result<(IssuedGrant, Vec<Pending>), NodeError> {
        let doc = self.resolve(&request.doc)?;
        if let Some(owner) = self.shared_from(&doc) {
            return Err(NodeError::Invalid(format!(
                "{doc} was shared with you by {owner}; only its owner can grant it"
            )));
        }
        let request = GrantRequest {
            path: request
                .path
                .map(|p| p.trim_end_matches('/').to_owned())
                .filter(|p| !p.is_empty()),
            ..request
        };
        if doc == self.index {
            return Err(NodeError::Invalid(
                "the index document holds the person's registry and cannot be shared".into(),
            ));
        }
        if request.to == self.root || self.is_own_device(&request.to) {
            return Err(NodeError::Invalid(
                "that is one of your own identities; your devices already hold everything".into(),
            ));
        }
        let now = self.now();
        let expires = request.expires_in.map(|secs| now.saturating_add(secs));
        let mut meta = BTreeMap::new();
        // The document's name travels too, so the grantee can call it the same.
        let name = self
            .name_of(&doc)
            .map(|name| format!("{name}{}", request.path.as_deref().unwrap_or_default()));
        if let Some(path) = &request.path
            && (!path.starts_with('/') || path == "/")
        {
            return Err(NodeError::Invalid(format!(
                "--path {path:?} must be a JSON pointer below the root, like /profile/address"
            )));
        }
        for (key, value) in [
            ("terms", &request.terms),
            ("note", &request.note),
            ("name", &name),
        ] {
            if let Some(value) = value {
                meta.insert(key.to_owned(), Ipld::String(value.clone()));
            }
        }
        if request.delegable {
            meta.insert(DELEGABLE.to_owned(), Ipld::Bool(true));
        }
        let nonce = random::bytes::<12>().map_err(|e| NodeError::Invalid(e.to_string()))?;
        let delegation = DelegationBuilder::new(
            self.device,
            request.to,
            capability::command(request.can.command()),
        )
        .subject(self.root)
        .policy(match &request.path {
            Some(path) => capability::policy_for_path(&doc.to_string(), path),
            None => capability::policy_for_document(&doc.to_string()),
        })
        .nonce(nonce.to_vec())
        .expiration(expires)
        .meta(meta)
        .sign(&self.identity.device)
        .map_err(|e| NodeError::Invalid(e.to_string()))?;
        let mut chain = self.identity.authority.clone();
        chain.push(delegation);
        // What we hand out must be what our own devices will accept.
        Validator::new(now)
            .validate_delegation_chain(&chain)
            .map_err(|e| NodeError::Invalid(format!("the grant does not validate: {e}")))?;
        let cid = chain.last().expect("just pushed").cid().to_string();
        let record = json!({
            "to": request.to.to_string(),
            "doc": doc.to_string(),
            "can": request.can.as_str(),
            "expires": expires,
            "terms": request.terms,
            "note": request.note,
            "delegable": request.delegable,
            "path": request.path,
            "by": self.device.to_string(),
            "at": now,
            "chain": tokens(&chain),
        });
        let key = format!("/grant:{cid}");
        let mut pending = Vec::new();
        if let Some(p) = self
            .change(self.index, move |tx| {
                json::set(tx, &key, &record).map_err(NodeError::from)
            })
            .await?
        {
            pending.push(p);
        }
        let code = GrantCode {
            chain,
            addrs: self.announce.clone().unwrap_or_else(|| self.listen.clone()),
        }
        .to_text();
        let view = request
            .path
            .as_ref()
            .map(|path| membrane_protocol::sync::share::projection_id(&doc, path).to_string());
        if request.path.is_some() {
            // Make the view now, so it is there when the grantee first connects.
            self.revocations_dirty = true;
            self.refresh_registry().await;
            self.refresh_views().await;
        }
        Ok((
            IssuedGrant {
                cid,
                doc: doc.to_string(),
                view,
                code,
                expires,
            },
            pending,
        ))
    }

    /// Who shared `doc` with this person, if someone did.
    pub(crate) fn shared_from(&self, doc: &membrane_protocol::DocumentId) -> Option<String> {
        use automerge::ReadDoc as _;
        let index = self.hub.docs().get(&self.index)?;
        let Ok(Some((automerge::Value::Object(_), entry))) =
            index.get(automerge::ROOT, doc.to_string())
        else {
            return None;
        };
        crate::repo::entry_text(index, &entry, "shared_from")
    }

    fn is_own_device(&self, did: &Did) -> bool {
        self.hub.docs().get(&self.index).is_some_and(|index| {
            automerge::ReadDoc::get(index, automerge::ROOT, format!("device:{did}"))
                .ok()
                .flatten()
                .is_some()
        }) || *did == self.device
    }

    fn index_entries(&self, prefix: &str) -> Vec<(String, Json)> {
        let Some(index) = self.hub.docs().get(&self.index) else {
            return Vec::new();
        };
        json::entries_with_prefix(index, prefix)
    }

    async fn grants(&self) -> Result<Vec<GrantInfo>, NodeError> {
        let log = self.store.access_log().await?;
        let mut last_used: BTreeMap<&str, UnixTime> = BTreeMap::new();
        for entry in &log {
            let slot = last_used.entry(entry.event.grant.as_str()).or_insert(0);
            *slot = (*slot).max(entry.event.at);
        }
        Ok(self
            .index_entries("grant:")
            .into_iter()
            .map(|(cid, record)| {
                let text = |field: &str| record[field].as_str().map(str::to_owned);
                let doc = text("doc").unwrap_or_default();
                GrantInfo {
                    revoked: self.revoked.contains(&cid),
                    last_used: last_used.get(cid.as_str()).copied(),
                    doc_name: doc.parse().ok().and_then(|id| self.name_of(&id)),
                    path: text("path"),
                    to: text("to").unwrap_or_default(),
                    can: text("can").unwrap_or_default(),
                    expires: record["expires"].as_u64(),
                    terms: text("terms"),
                    note: text("note"),
                    by: text("by").unwrap_or_default(),
                    at: record["at"].as_u64().unwrap_or_default(),
                    doc,
                    cid,
                }
            })
            .collect())
    }

    async fn accept(&mut self, code: &str) -> Result<(SharedInfo, Vec<Pending>), NodeError> {
        let GrantCode { mut chain, addrs } = GrantCode::from_text(code)?;
        let now = self.now();
        let valid = Validator::new(now)
            .validate_delegation_chain(&chain)
            .map_err(|e| NodeError::Invalid(format!("the grant does not validate: {e}")))?;
        let subject = *valid
            .subject()
            .ok_or_else(|| NodeError::Invalid("the grant names no person's documents".into()))?;
        if subject == self.root {
            return Err(NodeError::Invalid(
                "this grant is on your own documents; your devices already hold them".into(),
            ));
        }
        let grant = chain.last().expect("a valid chain is not empty").clone();
        if *valid.audience() == self.root {
            // Granted to the person: extend it to this device with the root key.
            if !is_delegable(&grant) {
                return Err(NodeError::Invalid(format!(
                    "this grant is for your person ({}) and may not be passed on to a \
                     device; ask for a grant to this device ({}), or for a --delegable one",
                    self.root, self.device
                )));
            }
            let root_key = self.identity.root_key.as_ref().ok_or_else(|| {
                NodeError::Invalid(format!(
                    "this grant is for your person ({}); accept it on the device that holds \
                     the root key, or ask for a grant to this device ({})",
                    self.root, self.device
                ))
            })?;
            let payload = grant.payload();
            let extension = DelegationBuilder::new(self.root, self.device, payload.command.clone())
                .subject(subject)
                .policy(payload.policy.clone())
                .expiration(payload.expiration)
                .sign(root_key)
                .map_err(|e| NodeError::Invalid(e.to_string()))?;
            chain.push(extension);
        } else if *valid.audience() != self.device {
            return Err(NodeError::Invalid(format!(
                "this grant is for {}, not for this device ({}) or its person ({})",
                valid.audience(),
                self.device,
                self.root
            )));
        }
        let valid = Validator::new(now)
            .validate_delegation_chain(&chain)
            .map_err(|e| NodeError::Invalid(format!("the grant does not validate: {e}")))?;
        let docs: Vec<(String, String)> = granted_documents(&chain, &valid)
            .into_iter()
            .map(|(doc, level)| (doc.to_string(), level_text(level).to_owned()))
            .collect();
        if docs.is_empty() {
            return Err(NodeError::Invalid("the grant covers no document".into()));
        }
        for (doc, _) in &docs {
            let id: membrane_protocol::DocumentId = doc
                .parse()
                .map_err(|_| NodeError::Invalid(format!("the grant names a bad document {doc}")))?;
            let theirs = self.shared_from(&id).as_deref() == Some(&subject.to_string());
            if id == self.index || (self.hub.docs().contains(&id) && !theirs) {
                return Err(NodeError::Invalid(format!(
                    "the grant names {doc}, which is yours or someone else's, not {subject}'s"
                )));
            }
        }
        let cid = grant.cid().to_string();
        let info = SharedInfo {
            cid: cid.clone(),
            from: subject.to_string(),
            docs,
            expires: valid.valid_until(),
            terms: meta_text(&grant, "terms"),
            addrs: addrs.iter().map(ToString::to_string).collect(),
            accepted: now,
        };
        let record = json!({
            "from": info.from,
            "docs": info.docs,
            "expires": info.expires,
            "terms": info.terms,
            "note": meta_text(&grant, "note"),
            "addrs": info.addrs,
            "accepted": now,
            "chain": tokens(&chain),
        });
        let key = format!("/shared:{cid}");
        let mut pending = Vec::new();
        if let Some(p) = self.ensure_index().await? {
            pending.push(p);
        }
        // Record whose the shared documents are (the hub never lets a grant make one of
        // ours "theirs"), named as their owner names them.
        let name = meta_text(&grant, "name");
        let names: Vec<(String, Json)> = info
            .docs
            .iter()
            .filter(|(doc, _)| {
                doc.parse()
                    .ok()
                    .is_none_or(|id| self.shared_from(&id).is_none())
            })
            .map(|(doc, _)| {
                let key = format!("/{}", doc.replace('~', "~0").replace('/', "~1"));
                (
                    key,
                    json!({"name": name, "created": now, "shared_from": info.from}),
                )
            })
            .collect();
        if let Some(p) = self
            .change(self.index, move |tx| {
                json::set(tx, &key, &record)?;
                for (key, entry) in &names {
                    json::set(tx, key, entry)?;
                }
                Ok(())
            })
            .await?
        {
            pending.push(p);
        }
        self.revocations_dirty = true;
        self.refresh_registry().await;
        Ok((info, pending))
    }

    fn shared(&self) -> Vec<SharedInfo> {
        self.index_entries("shared:")
            .into_iter()
            .map(|(cid, record)| SharedInfo {
                from: record["from"].as_str().unwrap_or_default().to_owned(),
                docs: serde_json::from_value(record["docs"].clone()).unwrap_or_default(),
                expires: record["expires"].as_u64(),
                terms: record["terms"].as_str().map(str::to_owned),
                addrs: serde_json::from_value(record["addrs"].clone()).unwrap_or_default(),
                accepted: record["accepted"].as_u64().unwrap_or_default(),
                cid,
            })
            .collect()
    }

    async fn revoke_grant(
        &mut self,
        target: &str,
    ) -> Result<(Vec<String>, Vec<Pending>), NodeError> {
        let matches: Vec<(String, Json)> = self
            .index_entries("grant:")
            .into_iter()
            .filter(|(cid, _)| cid == target || (target.len() >= 8 && cid.starts_with(target)))
            .collect();
        let (cid, record) = match matches.as_slice() {
            [one] => one.clone(),
            [] => {
                return Err(NodeError::Invalid(format!(
                    "no grant {target:?} (see `membrane grants`)"
                )));
            }
            _ => return Err(NodeError::Ambiguous(target.to_owned())),
        };
        let chain = chain_from_json(&record["chain"]);
        let pending = self
            .record_revocation(&chain, json!({ "grant": cid }))
            .await?;
        Ok((vec![cid], pending))
    }

    fn who_can(&self, doc: &str) -> Result<WhoCan, NodeError> {
        let id = self.resolve(doc)?;
        let now = self.now_read_only();
        let devices = self
            .index_entries("device:")
            .into_iter()
            .map(|(did, _)| did)
            .chain(std::iter::once(self.device.to_string()))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let grants = self
            .index_entries("grant:")
            .into_iter()
            .filter(|(cid, record)| {
                record["doc"].as_str() == Some(&id.to_string())
                    && !self.revoked.contains(cid)
                    && record["expires"].as_u64().is_none_or(|exp| exp >= now)
            })
            .map(|(cid, record)| {
                let chain = chain_from_json(&record["chain"]);
                let issuers: Vec<String> = chain
                    .iter()
                    .map(|d| d.payload().issuer.to_string())
                    .chain(chain.last().map(|d| d.payload().audience.to_string()))
                    .collect();
                json!({
                    "grant": cid,
                    "to": record["to"],
                    "can": record["can"],
                    "path": record["path"],
                    "expires": record["expires"],
                    "through": issuers,
                })
            })
            .collect();
        Ok(WhoCan {
            doc: id.to_string(),
            devices,
            grants,
        })
    }
}

fn level_text(level: Level) -> &'static str {
    match level {
        Level::Read => "read",
        Level::Write => "write",
    }
}
