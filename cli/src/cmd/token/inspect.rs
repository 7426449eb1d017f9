//! `membrane token inspect TOKEN`

use membrane_protocol::ucan::{
    AnyToken, TokenKind, VARSIG_ED25519_DAG_CBOR, decode_any, encode_base64, json::ipld_to_json,
};
use serde_json::json;

use crate::{input, output::Output};

/// Decode a token and show its envelope, payload and CID.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The token: a file (raw bytes or base64) or base64 text.
    token: String,
}

pub(crate) fn run(args: Args, out: &mut Output) -> anyhow::Result<()> {
    let bytes = input::token_bytes(&args.token)?;
    let token = decode_any(&bytes)?;
    let (kind, cid, payload, signature, signature_valid) = match &token {
        AnyToken::Delegation(d) => (
            TokenKind::Delegation,
            d.cid(),
            d.payload_ipld(),
            d.signature().to_vec(),
            d.verify_signature().is_ok(),
        ),
        AnyToken::Invocation(i) => (
            TokenKind::Invocation,
            i.cid(),
            i.payload_ipld(),
            i.signature().to_vec(),
            i.verify_signature().is_ok(),
        ),
    };
    let payload_json = ipld_to_json(&payload);
    let data = json!({
        "kind": match kind { TokenKind::Delegation => "delegation", _ => "invocation" },
        "tag": kind.tag(),
        "cid": cid.to_string(),
        "size": bytes.len(),
        "header": encode_base64(&VARSIG_ED25519_DAG_CBOR),
        "alg": "Ed25519",
        "enc": "DAG-CBOR",
        "signature": encode_base64(&signature),
        "signature_valid": signature_valid,
        "payload": payload_json,
    });
    out.result("token", &data, |w| {
        writeln!(
            w,
            "type:      {} ({})",
            data["kind"].as_str().unwrap_or(""),
            kind.tag()
        )?;
        writeln!(w, "cid:       {cid}")?;
        writeln!(w, "size:      {} bytes", bytes.len())?;
        writeln!(w, "varsig:    Ed25519 over DAG-CBOR")?;
        let verdict = if signature_valid { "valid" } else { "INVALID" };
        writeln!(w, "signature: {verdict} (by the issuer's key)")?;
        if let Some(fields) = payload_json.as_object() {
            for (name, value) in fields {
                let shown = match (name.as_str(), value.as_u64()) {
                    ("exp" | "nbf" | "iat", Some(seconds)) => {
                        format!("{seconds} ({})", super::format_time(seconds))
                    }
                    _ => value.to_string(),
                };
                writeln!(w, "{name:<10} {shown}")?;
            }
        }
        Ok(())
    })
}
