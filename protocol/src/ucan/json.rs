//! JSON views of IPLD values, in the DAG-JSON conventions: bytes as `{"/": {"bytes": b64}}`
//! and links as `{"/": "bafy…"}`. Used for policies typed on the command line and for
//! showing tokens to people.

use std::collections::BTreeMap;

use base64::Engine as _;
use ipld_core::ipld::Ipld;
use serde_json::{Map, Value};

/// Deepest JSON nesting converted.
const MAX_DEPTH: usize = 64;

/// Why JSON could not become IPLD.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum JsonError {
    /// Nested too deeply.
    #[error("JSON nested deeper than {MAX_DEPTH}")]
    TooDeep,
    /// A `{"/": …}` form that is neither bytes nor a CID.
    #[error("malformed DAG-JSON `/` form")]
    BadSlashForm,
}

/// Converts JSON to IPLD: integers stay integers, other numbers become floats.
pub fn json_to_ipld(value: &Value) -> Result<Ipld, JsonError> {
    convert_in(value, 0)
}

fn convert_in(value: &Value, depth: usize) -> Result<Ipld, JsonError> {
    if depth > MAX_DEPTH {
        return Err(JsonError::TooDeep);
    }
    Ok(match value {
        Value::Null => Ipld::Null,
        Value::Bool(b) => Ipld::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Ipld::Integer(i128::from(i)),
            (None, Some(u)) => Ipld::Integer(i128::from(u)),
            _ => Ipld::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Ipld::String(s.clone()),
        Value::Array(items) => Ipld::List(
            items
                .iter()
                .map(|item| convert_in(item, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => {
            if let Some(slash) = map.get("/").filter(|_| map.len() == 1) {
                return slash_form(slash);
            }
            Ipld::Map(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), convert_in(v, depth + 1)?)))
                    .collect::<Result<BTreeMap<_, _>, _>>()?,
            )
        }
    })
}

fn slash_form(slash: &Value) -> Result<Ipld, JsonError> {
    match slash {
        Value::String(text) => text
            .parse::<cid::Cid>()
            .map(Ipld::Link)
            .map_err(|_| JsonError::BadSlashForm),
        Value::Object(inner) => match inner.get("bytes") {
            Some(Value::String(b64)) if inner.len() == 1 => super::decode_base64_loose(b64)
                .map(Ipld::Bytes)
                .map_err(|_| JsonError::BadSlashForm),
            _ => Err(JsonError::BadSlashForm),
        },
        _ => Err(JsonError::BadSlashForm),
    }
}

/// Converts IPLD to JSON for display (DAG-JSON style; unpadded standard base64 bytes).
pub fn ipld_to_json(value: &Ipld) -> Value {
    match value {
        Ipld::Null => Value::Null,
        Ipld::Bool(b) => Value::Bool(*b),
        Ipld::Integer(i) => i64::try_from(*i)
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(i.to_string())),
        Ipld::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        Ipld::String(s) => Value::String(s.clone()),
        Ipld::Bytes(bytes) => {
            let mut inner = Map::new();
            inner.insert(
                "bytes".into(),
                Value::String(base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)),
            );
            let mut outer = Map::new();
            outer.insert("/".into(), Value::Object(inner));
            Value::Object(outer)
        }
        Ipld::List(items) => Value::Array(items.iter().map(ipld_to_json).collect()),
        Ipld::Map(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), ipld_to_json(v)))
                .collect(),
        ),
        Ipld::Link(cid) => {
            let mut outer = Map::new();
            outer.insert("/".into(), Value::String(cid.to_string()));
            Value::Object(outer)
        }
    }
}
