//! The local control socket: `<data dir>/control.sock`, mode 0600, one JSON object per line.
//!
//! Request: `{"id": 1, "method": "doc.set", "params": {…}}`.
//! Reply: `{"id": 1, "ok": …}` or `{"id": 1, "error": "…"}`; `doc.watch` then sends
//! `{"id": 1, "event": {…}}` lines until the client hangs up. Methods: `doc.new`,
//! `doc.get`, `doc.set`, `doc.list`, `doc.history`, `doc.watch`, `status`, `dial`.

use std::{io, os::unix::fs::PermissionsExt as _, path::PathBuf};

use serde_json::{Value as Json, json};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::watch,
};

use crate::{identity::DataDir, node::NodeHandle, repo::NodeError};

/// Longest request line accepted.
const MAX_LINE: usize = 1024 * 1024;

/// Where the socket lives.
pub fn socket_path(dir: &DataDir) -> PathBuf {
    dir.path().join("control.sock")
}

/// Binds the socket (removing a stale one: the caller holds the data dir lock, so no live
/// daemon owns it) with mode 0600.
pub(crate) fn bind(dir: &DataDir) -> io::Result<UnixListener> {
    let path = socket_path(dir);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

pub(crate) async fn serve(
    listener: UnixListener,
    node: NodeHandle,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let node = node.clone();
                    let shutdown = shutdown.clone();
                    tokio::spawn(async move {
                        if let Err(error) = client(stream, node, shutdown).await {
                            tracing::debug!(%error, "control client ended");
                        }
                    });
                }
                Err(error) => tracing::warn!(%error, "control socket accept failed"),
            },
        }
    }
}

async fn client(
    stream: UnixStream,
    node: NodeHandle,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut line = String::new();
    loop {
        line.clear();
        let mut limited = (&mut lines).take(MAX_LINE as u64 + 1);
        let read = tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            read = limited.read_line(&mut line) => read?,
        };
        if read == 0 {
            return Ok(());
        }
        if line.len() > MAX_LINE {
            let reply = json!({"id": null, "error": "request too large"});
            write.write_all(format!("{reply}\n").as_bytes()).await?;
            return Ok(());
        }
        let request: Json = match serde_json::from_str(&line) {
            Ok(request) => request,
            Err(error) => {
                let reply = json!({"id": null, "error": format!("not JSON: {error}")});
                write.write_all(format!("{reply}\n").as_bytes()).await?;
                continue;
            }
        };
        let id = request["id"].clone();
        let method = request["method"].as_str().unwrap_or_default().to_owned();
        let params = request["params"].clone();
        if method == "doc.watch" {
            return watch_doc(&node, id, &params, write, shutdown).await;
        }
        if method == "pair.invite" {
            return invite(&node, id, &params, write, shutdown).await;
        }
        let reply = match call(&node, &method, &params).await {
            Ok(ok) => json!({"id": id, "ok": ok}),
            Err(error) => json!({"id": id, "error": error}),
        };
        write.write_all(format!("{reply}\n").as_bytes()).await?;
    }
}

fn param<'a>(params: &'a Json, name: &str) -> Result<&'a str, String> {
    params[name]
        .as_str()
        .ok_or_else(|| format!("missing parameter {name:?}"))
}

async fn call(node: &NodeHandle, method: &str, params: &Json) -> Result<Json, String> {
    let to_text = |e: NodeError| e.to_string();
    match method {
        "doc.new" => {
            let name = params["name"].as_str().map(str::to_owned);
            let content = params.get("content").filter(|c| !c.is_null()).cloned();
            let id = node.create_doc(name, content).await.map_err(to_text)?;
            Ok(json!({"id": id.to_string()}))
        }
        "doc.get" => {
            let path = params["path"].as_str().unwrap_or("/");
            match node
                .get(param(params, "doc")?, path)
                .await
                .map_err(to_text)?
            {
                Some(value) => Ok(value),
                None => Err(format!("nothing at {path}")),
            }
        }
        "doc.set" => {
            let heads = node
                .set(
                    param(params, "doc")?,
                    param(params, "path")?,
                    params["value"].clone(),
                )
                .await
                .map_err(to_text)?;
            Ok(json!({"heads": heads}))
        }
        "doc.list" => Ok(json!(node.list().await.map_err(to_text)?)),
        "doc.history" => Ok(json!(
            node.history(param(params, "doc")?).await.map_err(to_text)?
        )),
        "status" => Ok(json!(node.status().await.map_err(to_text)?)),
        "devices" => Ok(json!(node.devices().await.map_err(to_text)?)),
        "devices.revoke" => {
            let revoked = node
                .revoke_device(param(params, "device")?)
                .await
                .map_err(to_text)?;
            Ok(json!({"revoked": revoked}))
        }
        "grant" => {
            let to = param(params, "to")?
                .parse()
                .map_err(|e| format!("the grantee is not a did:key: {e}"))?;
            let can = param(params, "can")?.parse()?;
            let text = |key: &str| params[key].as_str().map(str::to_owned);
            let request = crate::sharing::GrantRequest {
                to,
                doc: param(params, "doc")?.to_owned(),
                can,
                expires_in: params["expires_in"].as_u64(),
                terms: text("terms"),
                note: text("note"),
                delegable: params["delegable"].as_bool().unwrap_or(false),
                path: text("path"),
            };
            Ok(json!(node.grant(request).await.map_err(to_text)?))
        }
        "grants" => Ok(json!(node.grants().await.map_err(to_text)?)),
        "accept" => Ok(json!(
            node.accept(param(params, "code")?).await.map_err(to_text)?
        )),
        "shared" => Ok(json!(node.shared().await.map_err(to_text)?)),
        "revoke" => {
            let revoked = node
                .revoke_grant(param(params, "grant")?)
                .await
                .map_err(to_text)?;
            Ok(json!({"revoked": revoked}))
        }
        "who-can" => Ok(json!(
            node.who_can(param(params, "doc")?).await.map_err(to_text)?
        )),
        "request" => {
            let addr: libp2p::Multiaddr = param(params, "addr")?
                .parse()
                .map_err(|e| format!("bad address: {e}"))?;
            let can = param(params, "can")?.parse()?;
            let text = |key: &str| params[key].as_str().map(str::to_owned);
            let id = node
                .request(
                    &addr,
                    param(params, "doc")?,
                    can,
                    text("terms"),
                    text("note"),
                    params["expires_in"].as_u64(),
                )
                .await
                .map_err(|e| e.to_string())?;
            Ok(json!({"id": id}))
        }
        "asked" => Ok(json!(node.asked().await.map_err(to_text)?)),
        "requests" => Ok(json!(node.requests().await.map_err(to_text)?)),
        "approve" => {
            let id = params["id"].as_u64().ok_or("missing `id`")?;
            Ok(json!(
                node.approve(id, params["expires_in"].as_u64())
                    .await
                    .map_err(to_text)?
            ))
        }
        "deny" => {
            let id = params["id"].as_u64().ok_or("missing `id`")?;
            let reason = params["reason"].as_str().unwrap_or("denied");
            node.deny(id, reason).await.map_err(to_text)?;
            Ok(json!({"denied": id}))
        }
        "log" => Ok(json!(node.access_log().await.map_err(to_text)?)),
        "log.verify" => match node.verify_access_log().await {
            Ok(entries) => Ok(json!({"intact": true, "entries": entries})),
            Err(crate::repo::NodeError::Invalid(broken)) => {
                Ok(json!({"intact": false, "error": broken}))
            }
            Err(other) => Err(to_text(other)),
        },
        "dial" => {
            let addr = param(params, "addr")?
                .parse()
                .map_err(|e| format!("bad address: {e}"))?;
            node.dial(addr).await.map_err(to_text)?;
            Ok(json!({}))
        }
        other => Err(format!("unknown method {other:?}")),
    }
}

/// Opens an invitation, answers with its code, then reports each attempt until a device
/// joins, the invitation is burned or expires, or the client hangs up.
async fn invite(
    node: &NodeHandle,
    id: Json,
    params: &Json,
    mut write: tokio::net::unix::OwnedWriteHalf,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let ttl = params["ttl"].as_u64().unwrap_or(600);
    let name = params["name"].as_str().map(str::to_owned);
    let (ticket, mut events) = match node.invite(ttl, name).await {
        Ok(opened) => opened,
        Err(error) => {
            let reply = json!({"id": id, "error": error.to_string()});
            return write.write_all(format!("{reply}\n").as_bytes()).await;
        }
    };
    let reply = json!({"id": id, "ok": {"code": ticket.to_string(), "expires": ticket.expires}});
    write.write_all(format!("{reply}\n").as_bytes()).await?;
    let lapse = tokio::time::sleep(std::time::Duration::from_secs(ttl.saturating_add(1)));
    tokio::pin!(lapse);
    loop {
        let event = tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            _ = &mut lapse => {
                let line = json!({"id": id, "event": {"outcome": "expired"}});
                return write.write_all(format!("{line}\n").as_bytes()).await;
            }
            event = events.recv() => event,
        };
        let Some(event) = event else { return Ok(()) };
        let done = !matches!(
            event,
            crate::pairing::InviteEvent::Refused {
                still_open: true,
                ..
            }
        );
        let line = json!({"id": id, "event": event});
        write.write_all(format!("{line}\n").as_bytes()).await?;
        if done {
            return Ok(());
        }
    }
}

async fn watch_doc(
    node: &NodeHandle,
    id: Json,
    params: &Json,
    mut write: tokio::net::unix::OwnedWriteHalf,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let mut events = node.watch();
    let wanted = match param(params, "doc") {
        Ok(doc) => match node.get(doc, "/").await {
            Ok(_) => doc.to_owned(),
            Err(error) => {
                let reply = json!({"id": id, "error": error.to_string()});
                return write.write_all(format!("{reply}\n").as_bytes()).await;
            }
        },
        Err(error) => {
            let reply = json!({"id": id, "error": error});
            return write.write_all(format!("{reply}\n").as_bytes()).await;
        }
    };
    // Resolve a name to the id that events carry.
    let resolved = node
        .list()
        .await
        .ok()
        .and_then(|docs| {
            docs.into_iter()
                .find(|d| d.id == wanted || d.name.as_deref() == Some(&wanted))
        })
        .map_or(wanted.clone(), |d| d.id);
    let reply = json!({"id": id, "ok": {"watching": resolved}});
    write.write_all(format!("{reply}\n").as_bytes()).await?;
    loop {
        let event = tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            event = events.recv() => event,
        };
        match event {
            Ok(event) if event.doc == resolved => {
                let content = node.get(&resolved, "/").await.ok().flatten();
                let line = json!({"id": id, "event": {"doc": event.doc, "heads": event.heads, "by": event.by, "content": content}});
                write.write_all(format!("{line}\n").as_bytes()).await?;
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                let line = json!({"id": id, "event": {"missed": missed}});
                write.write_all(format!("{line}\n").as_bytes()).await?;
            }
            Err(_) => return Ok(()),
        }
    }
}
