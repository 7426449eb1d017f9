//! JSON views of Automerge documents: read with JSON pointers, write JSON values at paths.

use automerge::{
    AutoSerde, Automerge, ObjId, ObjType, ROOT, ReadDoc as _, ScalarValue, Value,
    transaction::{Transactable, Transaction},
};
use serde_json::Value as Json;

/// Why a path or value does not fit a document.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The path is not a JSON pointer (`/a/b/0`).
    #[error("a path is a JSON pointer such as /contacts/0/name, got {0:?}")]
    NotAPointer(String),
    /// A step of the path crosses a value that is not a map or list.
    #[error("{0:?} goes through a value that is neither a map nor a list")]
    NotAContainer(String),
    /// A list index that is not a number, or past the end.
    #[error("bad list index {0:?}")]
    BadIndex(String),
    /// Automerge refused the change.
    #[error("automerge: {0}")]
    Automerge(#[from] automerge::AutomergeError),
    /// The path is `/` (the root itself can only hold a map).
    #[error("cannot replace the whole document; set a key under it")]
    Root,
}

/// Splits a JSON pointer into unescaped segments.
pub fn pointer_segments(path: &str) -> Result<Vec<String>, PathError> {
    if path.is_empty() || path == "/" {
        return Ok(Vec::new());
    }
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| PathError::NotAPointer(path.to_owned()))?;
    Ok(rest
        .split('/')
        .map(|segment| segment.replace("~1", "/").replace("~0", "~"))
        .collect())
}

/// The whole document as JSON.
pub fn to_json(doc: &Automerge) -> Json {
    serde_json::to_value(AutoSerde::from(doc)).unwrap_or(Json::Null)
}

/// One object of a document as JSON, rendered as [`to_json`] renders the whole document,
/// without converting the rest of it.
pub fn object_to_json(doc: &Automerge, obj: &ObjId, kind: ObjType) -> Json {
    match kind {
        ObjType::Map | ObjType::Table => Json::Object(
            doc.keys(obj)
                .filter_map(|key| {
                    let (value, id) = doc.get(obj, key.as_str()).ok()??;
                    Some((key, value_to_json(doc, value, &id)))
                })
                .collect(),
        ),
        ObjType::List => Json::Array(
            (0..doc.length(obj))
                .filter_map(|i| {
                    let (value, id) = doc.get(obj, i).ok()??;
                    Some(value_to_json(doc, value, &id))
                })
                .collect(),
        ),
        ObjType::Text => Json::String(doc.text(obj).unwrap_or_default()),
    }
}

fn value_to_json(doc: &Automerge, value: Value<'_>, id: &ObjId) -> Json {
    match value {
        Value::Object(kind) => object_to_json(doc, id, kind),
        Value::Scalar(scalar) => serde_json::to_value(scalar.as_ref()).unwrap_or(Json::Null),
    }
}

/// The root entries whose keys start with `prefix` (the prefix cut off), as JSON: reads
/// only those entries, so it stays cheap on an index naming thousands of documents.
pub fn entries_with_prefix(doc: &Automerge, prefix: &str) -> Vec<(String, Json)> {
    doc.map_range(ROOT, prefix.to_owned()..)
        .take_while(|item| item.key.starts_with(prefix))
        .map(|item| {
            let id = item.id();
            let rest = item.key[prefix.len()..].to_owned();
            (rest, value_to_json(doc, item.value.into(), &id))
        })
        .collect()
}

/// The value at `path`, or `None` when there is nothing there. Walks the path and converts
/// only what it points at.
pub fn get(doc: &Automerge, path: &str) -> Result<Option<Json>, PathError> {
    if path.is_empty() || path == "/" {
        return Ok(Some(to_json(doc)));
    }
    if !path.starts_with('/') {
        return Err(PathError::NotAPointer(path.to_owned()));
    }
    let mut at = (ROOT, ObjType::Map);
    let segments = pointer_segments(path)?;
    for (i, segment) in segments.iter().enumerate() {
        let (obj, kind) = &at;
        let found = match kind {
            ObjType::Map | ObjType::Table => doc.get(obj, segment.as_str())?,
            ObjType::List => match segment.parse::<usize>() {
                Ok(index) if segment == &index.to_string() => doc.get(obj, index)?,
                _ => None,
            },
            ObjType::Text => None,
        };
        let Some((value, id)) = found else {
            return Ok(None);
        };
        match value {
            Value::Object(kind) => at = (id, kind),
            Value::Scalar(_) if i + 1 == segments.len() => {
                return Ok(Some(value_to_json(doc, value, &id)));
            }
            Value::Scalar(_) => return Ok(None),
        }
    }
    Ok(Some(object_to_json(doc, &at.0, at.1)))
}

/// Writes `value` at `path`, creating maps along the way.
pub fn set(tx: &mut Transaction<'_>, path: &str, value: &Json) -> Result<(), PathError> {
    let segments = pointer_segments(path)?;
    let Some((last, parents)) = segments.split_last() else {
        return match value {
            Json::Object(fields) => {
                for (key, field) in fields {
                    put_in_map(tx, &ROOT, key, field)?;
                }
                Ok(())
            }
            _ => Err(PathError::Root),
        };
    };
    let mut obj = ROOT;
    for segment in parents {
        obj = child_container(tx, &obj, segment, path)?;
    }
    match tx.object_type(&obj)? {
        ObjType::Map | ObjType::Table => put_in_map(tx, &obj, last, value),
        ObjType::List => {
            let length = tx.length(&obj);
            let index = if last == "-" {
                length
            } else {
                last.parse::<usize>()
                    .map_err(|_| PathError::BadIndex(last.clone()))?
            };
            if index > length {
                return Err(PathError::BadIndex(last.clone()));
            }
            insert_in_list(tx, &obj, index, value, index == length)
        }
        ObjType::Text => Err(PathError::NotAContainer(path.to_owned())),
    }
}

fn child_container(
    tx: &mut Transaction<'_>,
    obj: &ObjId,
    segment: &str,
    path: &str,
) -> Result<ObjId, PathError> {
    match tx.object_type(obj)? {
        ObjType::Map | ObjType::Table => match tx.get(obj, segment)? {
            Some((Value::Object(ObjType::Map | ObjType::List | ObjType::Table), id)) => Ok(id),
            Some(_) => Err(PathError::NotAContainer(path.to_owned())),
            None => Ok(tx.put_object(obj, segment, ObjType::Map)?),
        },
        ObjType::List => {
            let index: usize = segment
                .parse()
                .map_err(|_| PathError::BadIndex(segment.to_owned()))?;
            match tx.get(obj, index)? {
                Some((Value::Object(ObjType::Map | ObjType::List | ObjType::Table), id)) => Ok(id),
                Some(_) => Err(PathError::NotAContainer(path.to_owned())),
                None => Err(PathError::BadIndex(segment.to_owned())),
            }
        }
        ObjType::Text => Err(PathError::NotAContainer(path.to_owned())),
    }
}

fn scalar(value: &Json) -> Option<ScalarValue> {
    Some(match value {
        Json::Null => ScalarValue::Null,
        Json::Bool(b) => ScalarValue::Boolean(*b),
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => ScalarValue::Int(i),
            (None, Some(u)) => ScalarValue::Uint(u),
            _ => ScalarValue::F64(n.as_f64().unwrap_or(0.0)),
        },
        Json::String(s) => ScalarValue::Str(s.as_str().into()),
        Json::Array(_) | Json::Object(_) => return None,
    })
}

fn put_in_map(
    tx: &mut Transaction<'_>,
    obj: &ObjId,
    key: &str,
    value: &Json,
) -> Result<(), PathError> {
    match value {
        Json::Array(items) => {
            let list = tx.put_object(obj, key, ObjType::List)?;
            for (index, item) in items.iter().enumerate() {
                insert_in_list(tx, &list, index, item, true)?;
            }
        }
        Json::Object(fields) => {
            let map = tx.put_object(obj, key, ObjType::Map)?;
            for (field, item) in fields {
                put_in_map(tx, &map, field, item)?;
            }
        }
        other => tx.put(obj, key, scalar(other).expect("scalars"))?,
    }
    Ok(())
}

fn insert_in_list(
    tx: &mut Transaction<'_>,
    list: &ObjId,
    index: usize,
    value: &Json,
    append: bool,
) -> Result<(), PathError> {
    match value {
        Json::Array(items) => {
            let inner = if append {
                tx.insert_object(list, index, ObjType::List)?
            } else {
                tx.put_object(list, index, ObjType::List)?
            };
            for (i, item) in items.iter().enumerate() {
                insert_in_list(tx, &inner, i, item, true)?;
            }
        }
        Json::Object(fields) => {
            let inner = if append {
                tx.insert_object(list, index, ObjType::Map)?
            } else {
                tx.put_object(list, index, ObjType::Map)?
            };
            for (field, item) in fields {
                put_in_map(tx, &inner, field, item)?;
            }
        }
        other => {
            let value = scalar(other).expect("scalars");
            if append {
                tx.insert(list, index, value)?;
            } else {
                tx.put(list, index, value)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn set_and_get_by_pointer() {
        let mut doc = Automerge::new();
        let mut tx = doc.transaction();
        set(&mut tx, "/contacts", &json!([{"name": "Ana"}])).unwrap();
        set(&mut tx, "/contacts/-", &json!({"name": "Ben"})).unwrap();
        set(&mut tx, "/contacts/0/phone", &json!("+41 1")).unwrap();
        set(&mut tx, "/a~1b/deep", &json!(3)).unwrap();
        tx.commit();
        assert_eq!(get(&doc, "/contacts/1/name").unwrap(), Some(json!("Ben")));
        assert_eq!(
            get(&doc, "/contacts/0/phone").unwrap(),
            Some(json!("+41 1"))
        );
        assert_eq!(get(&doc, "/a~1b/deep").unwrap(), Some(json!(3)));
        assert_eq!(get(&doc, "/missing").unwrap(), None);
        let mut tx = doc.transaction();
        assert!(matches!(
            set(&mut tx, "/contacts/9", &json!(1)),
            Err(PathError::BadIndex(_))
        ));
        assert!(matches!(
            set(&mut tx, "nope", &json!(1)),
            Err(PathError::NotAPointer(_))
        ));
        assert!(matches!(
            set(&mut tx, "/contacts/0/name/x", &json!(1)),
            Err(PathError::NotAContainer(_))
        ));
    }

    #[test]
    fn parts_render_as_the_whole_does() {
        let mut doc = Automerge::new();
        let mut tx = doc.transaction();
        set(
            &mut tx,
            "/grant:a",
            &json!({"doc": "x", "n": 3, "ok": true, "f": 1.5}),
        )
        .unwrap();
        set(
            &mut tx,
            "/grant:b",
            &json!({"list": [1, "two", null, {"k": []}]}),
        )
        .unwrap();
        set(&mut tx, "/other", &json!("not a grant")).unwrap();
        let text = tx.put_object(ROOT, "grant:text", ObjType::Text).unwrap();
        tx.splice_text(&text, 0, 0, "hello").unwrap();
        tx.put(ROOT, "grant:counter", ScalarValue::counter(7))
            .unwrap();
        tx.commit();
        let whole = to_json(&doc);
        assert_eq!(object_to_json(&doc, &ROOT, ObjType::Map), whole);
        let grants = entries_with_prefix(&doc, "grant:");
        assert_eq!(grants.len(), 4);
        for (key, value) in grants {
            assert_eq!(whole[format!("grant:{key}")], value, "{key}");
        }
    }
}
