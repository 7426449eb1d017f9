//! Strict reading and writing of payload maps shared by delegations and invocations.

use std::collections::BTreeMap;

use cid::Cid;
use ipld_core::ipld::Ipld;

use super::{Command, DecodeError, MAX_SAFE_INTEGER, UnixTime};
use crate::did::Did;

/// A payload map read field by field; fields never read are unknown fields.
///
/// It borrows the map: values are copied out only where the payload keeps them.
pub(crate) struct Fields<'a> {
    map: &'a BTreeMap<String, Ipld>,
    /// The fields read so far that were present.
    read: Vec<&'static str>,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(map: &'a BTreeMap<String, Ipld>) -> Self {
        Self {
            map,
            read: Vec::with_capacity(map.len()),
        }
    }

    fn take(&mut self, field: &'static str) -> Option<&'a Ipld> {
        let value = self.map.get(field)?;
        self.read.push(field);
        Some(value)
    }

    fn required(&mut self, field: &'static str) -> Result<&'a Ipld, DecodeError> {
        self.take(field).ok_or(DecodeError::MissingField(field))
    }

    pub(crate) fn did(&mut self, field: &'static str) -> Result<Did, DecodeError> {
        match self.required(field)? {
            Ipld::String(text) => {
                Did::parse_in_token(text).map_err(|e| DecodeError::bad_did(field, e))
            }
            _ => Err(DecodeError::bad_field(field, "expected a DID string")),
        }
    }

    /// A field that must be present and may be null.
    pub(crate) fn nullable_did(&mut self, field: &'static str) -> Result<Option<Did>, DecodeError> {
        match self.required(field)? {
            Ipld::Null => Ok(None),
            Ipld::String(text) => Did::parse_in_token(text)
                .map(Some)
                .map_err(|e| DecodeError::bad_did(field, e)),
            _ => Err(DecodeError::bad_field(
                field,
                "expected a DID string or null",
            )),
        }
    }

    pub(crate) fn optional_did(&mut self, field: &'static str) -> Result<Option<Did>, DecodeError> {
        match self.take(field) {
            None => Ok(None),
            Some(Ipld::String(text)) => Did::parse_in_token(text)
                .map(Some)
                .map_err(|e| DecodeError::bad_did(field, e)),
            Some(_) => Err(DecodeError::bad_field(field, "expected a DID string")),
        }
    }

    pub(crate) fn command(&mut self) -> Result<Command, DecodeError> {
        match self.required("cmd")? {
            Ipld::String(text) => text.parse().map_err(|e| DecodeError::bad_field("cmd", e)),
            _ => Err(DecodeError::bad_field("cmd", "expected a string")),
        }
    }

    pub(crate) fn bytes(&mut self, field: &'static str) -> Result<Vec<u8>, DecodeError> {
        match self.required(field)? {
            Ipld::Bytes(bytes) => Ok(bytes.clone()),
            _ => Err(DecodeError::bad_field(field, "expected bytes")),
        }
    }

    /// `exp`: present, integer or null.
    pub(crate) fn nullable_time(
        &mut self,
        field: &'static str,
    ) -> Result<Option<UnixTime>, DecodeError> {
        match self.required(field)? {
            Ipld::Null => Ok(None),
            value => time_value(field, value).map(Some),
        }
    }

    pub(crate) fn optional_time(
        &mut self,
        field: &'static str,
    ) -> Result<Option<UnixTime>, DecodeError> {
        self.take(field)
            .map(|value| time_value(field, value))
            .transpose()
    }

    pub(crate) fn map(
        &mut self,
        field: &'static str,
    ) -> Result<BTreeMap<String, Ipld>, DecodeError> {
        match self.required(field)? {
            Ipld::Map(map) => Ok(map.clone()),
            _ => Err(DecodeError::bad_field(field, "expected a map")),
        }
    }

    pub(crate) fn optional_map(
        &mut self,
        field: &'static str,
    ) -> Result<Option<BTreeMap<String, Ipld>>, DecodeError> {
        match self.take(field) {
            None => Ok(None),
            Some(Ipld::Map(map)) => Ok(Some(map.clone())),
            Some(_) => Err(DecodeError::bad_field(field, "expected a map")),
        }
    }

    pub(crate) fn list(&mut self, field: &'static str) -> Result<&'a [Ipld], DecodeError> {
        match self.required(field)? {
            Ipld::List(list) => Ok(list),
            _ => Err(DecodeError::bad_field(field, "expected a list")),
        }
    }

    pub(crate) fn links(&mut self, field: &'static str) -> Result<Vec<Cid>, DecodeError> {
        self.list(field)?
            .iter()
            .map(|item| match item {
                Ipld::Link(cid) => Ok(*cid),
                _ => Err(DecodeError::bad_field(
                    field,
                    "expected a list of CID links",
                )),
            })
            .collect()
    }

    pub(crate) fn optional_link(
        &mut self,
        field: &'static str,
    ) -> Result<Option<Cid>, DecodeError> {
        match self.take(field) {
            None => Ok(None),
            Some(Ipld::Link(cid)) => Ok(Some(*cid)),
            Some(_) => Err(DecodeError::bad_field(field, "expected a CID link")),
        }
    }

    /// Fails on the first field (in map order) the caller did not read.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.read.len() == self.map.len() {
            return Ok(());
        }
        match self
            .map
            .keys()
            .find(|key| !self.read.contains(&key.as_str()))
        {
            None => Ok(()),
            Some(unknown) => Err(DecodeError::UnknownField(unknown.clone())),
        }
    }
}

fn time_value(field: &'static str, value: &Ipld) -> Result<UnixTime, DecodeError> {
    match *value {
        Ipld::Integer(seconds) if (0..=i128::from(MAX_SAFE_INTEGER)).contains(&seconds) => {
            Ok(seconds as UnixTime)
        }
        Ipld::Integer(_) => Err(DecodeError::bad_field(field, "outside 0..=2^53-1")),
        _ => Err(DecodeError::bad_field(field, "expected an integer")),
    }
}

/// Builds a payload map; the DAG-CBOR encoder orders keys canonically.
#[derive(Default)]
pub(crate) struct MapBuilder(BTreeMap<String, Ipld>);

impl MapBuilder {
    pub(crate) fn put(mut self, field: &str, value: Ipld) -> Self {
        self.0.insert(field.to_owned(), value);
        self
    }

    pub(crate) fn put_some(self, field: &str, value: Option<Ipld>) -> Self {
        match value {
            Some(value) => self.put(field, value),
            None => self,
        }
    }

    pub(crate) fn build(self) -> BTreeMap<String, Ipld> {
        self.0
    }
}

pub(crate) fn did_value(did: &Did) -> Ipld {
    Ipld::String(did.to_string())
}

pub(crate) fn time_ipld(seconds: UnixTime) -> Ipld {
    Ipld::Integer(i128::from(seconds))
}
