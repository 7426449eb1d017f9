//! A reader for canonical DAG-CBOR, the form every token we accept is in.
//!
//! Tokens are refused unless re-encoding gives back their exact bytes, so a reader that
//! accepts only the encoder's own output can check canonical form while it reads, in one
//! pass and without serde. It answers `None` for anything it is not sure of (floats,
//! integers beyond `i64`, deep nesting, any deviation from the shortest form or the key
//! order, invalid text); the general decoder then decides and names the problem. So
//! `Some(value)` always means: these bytes are exactly the encoding of `value`.

use std::collections::BTreeMap;

use cid::Cid;
use ipld_core::ipld::Ipld;

/// Deepest nesting read here; deeper values go to the general decoder.
const MAX_DEPTH: usize = 32;

/// Most list items reserved before they are read.
const MAX_PREALLOCATED_ITEMS: usize = 16;

/// CBOR's tag for IPLD links.
const CID_TAG: u64 = 42;

/// The value `bytes` is the canonical DAG-CBOR encoding of, or `None` when the general
/// decoder must decide.
pub(crate) fn read_canonical(bytes: &[u8]) -> Option<Ipld> {
    let mut reader = Reader { rest: bytes };
    let value = reader.value(0)?;
    reader.rest.is_empty().then_some(value)
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        if len > self.rest.len() {
            return None;
        }
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(taken)
    }

    /// A head in shortest form: major type and argument. Indefinite lengths and reserved
    /// values are refused.
    fn head(&mut self) -> Option<(u8, u64)> {
        let (&initial, rest) = self.rest.split_first()?;
        self.rest = rest;
        // Each argument size is the shortest only for values the next smaller cannot hold.
        let (argument, least) = match initial & 0x1f {
            small @ 0..=23 => (u64::from(small), 0),
            24 => (u64::from(self.take(1)?[0]), 24),
            25 => (
                u64::from(u16::from_be_bytes(self.take(2)?.try_into().ok()?)),
                0x100,
            ),
            26 => (
                u64::from(u32::from_be_bytes(self.take(4)?.try_into().ok()?)),
                0x1_0000,
            ),
            27 => (
                u64::from_be_bytes(self.take(8)?.try_into().ok()?),
                0x1_0000_0000,
            ),
            _ => return None,
        };
        (argument >= least).then_some((initial >> 5, argument))
    }

    /// The `argument` bytes a byte or text string's head announced.
    fn counted(&mut self, argument: u64) -> Option<&'a [u8]> {
        self.take(usize::try_from(argument).ok()?)
    }

    fn text(&mut self, argument: u64) -> Option<String> {
        std::str::from_utf8(self.counted(argument)?)
            .ok()
            .map(str::to_owned)
    }

    fn value(&mut self, depth: usize) -> Option<Ipld> {
        if depth > MAX_DEPTH {
            return None;
        }
        let (major, argument) = self.head()?;
        Some(match major {
            0 => Ipld::Integer(i64::try_from(argument).ok()?.into()),
            1 => Ipld::Integer((-1 - i64::try_from(argument).ok()?).into()),
            2 => Ipld::Bytes(self.counted(argument)?.to_vec()),
            3 => Ipld::String(self.text(argument)?),
            4 => {
                // Every item takes at least one byte, so the length is bounded by the input;
                // the first allocation is bounded too, or nested headers claiming thousands
                // of items each would reserve megabytes for a 64 KiB token.
                let len = usize::try_from(argument).ok()?;
                if len > self.rest.len() {
                    return None;
                }
                let mut items = Vec::with_capacity(len.min(MAX_PREALLOCATED_ITEMS));
                for _ in 0..len {
                    items.push(self.value(depth + 1)?);
                }
                Ipld::List(items)
            }
            5 => {
                let mut map = BTreeMap::new();
                let mut previous: Option<&[u8]> = None;
                // Each entry takes at least two bytes; running out of input ends the loop.
                for _ in 0..argument {
                    let (3, key_len) = self.head()? else {
                        return None;
                    };
                    let key = self.counted(key_len)?;
                    // Keys sorted by length, then bytewise, each once.
                    if previous
                        .is_some_and(|previous| (previous.len(), previous) >= (key.len(), key))
                    {
                        return None;
                    }
                    previous = Some(key);
                    let key = std::str::from_utf8(key).ok()?.to_owned();
                    let value = self.value(depth + 1)?;
                    map.insert(key, value);
                }
                Ipld::Map(map)
            }
            6 if argument == CID_TAG => {
                let (2, len) = self.head()? else {
                    return None;
                };
                let (&0, cid_bytes) = self.counted(len)?.split_first()? else {
                    return None;
                };
                let cid = Cid::try_from(cid_bytes).ok()?;
                // The encoder writes a CID back in its own form; only that form is ours.
                if cid.to_bytes() != cid_bytes {
                    return None;
                }
                Ipld::Link(cid)
            }
            7 => match argument {
                20 => Ipld::Bool(false),
                21 => Ipld::Bool(true),
                22 => Ipld::Null,
                _ => return None,
            },
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::{collection, prelude::*};

    use super::*;
    use crate::ucan::token_cid;

    fn ipld() -> impl Strategy<Value = Ipld> {
        let cids = [b"a".as_slice(), b"b", b""].map(token_cid);
        let leaf = prop_oneof![
            Just(Ipld::Null),
            any::<bool>().prop_map(Ipld::Bool),
            any::<i64>().prop_map(|n| Ipld::Integer(n.into())),
            any::<u64>().prop_map(|n| Ipld::Integer(n.into())),
            // Both ends of CBOR's integer range, one step past each, and the edges of
            // every head size.
            prop::sample::select(vec![
                -(1i128 << 64),
                -(1i128 << 64) - 1,
                (1i128 << 64) - 1,
                1i128 << 64,
                i128::from(i64::MAX),
                i128::from(i64::MIN),
                23,
                24,
                255,
                256,
                65_535,
                65_536,
                0xffff_ffff,
                0x1_0000_0000,
                -24,
                -25,
            ])
            .prop_map(Ipld::Integer),
            any::<f64>().prop_map(Ipld::Float),
            ".{0,40}".prop_map(Ipld::String),
            collection::vec(any::<u8>(), 0..300).prop_map(Ipld::Bytes),
            prop::sample::select(cids.to_vec()).prop_map(Ipld::Link),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                collection::vec(inner.clone(), 0..8).prop_map(Ipld::List),
                collection::btree_map("[a-z]{0,3}|[a-z]{20,30}", inner, 0..8).prop_map(Ipld::Map),
            ]
        })
    }

    /// Whether the reader may decline `value`: it holds a float or an integer beyond `i64`.
    fn may_decline(value: &Ipld) -> bool {
        match value {
            Ipld::Float(_) => true,
            Ipld::Integer(n) => i64::try_from(*n).is_err(),
            Ipld::List(items) => items.iter().any(may_decline),
            Ipld::Map(map) => map.values().any(may_decline),
            _ => false,
        }
    }

    /// The general path: what the reader must agree with whenever it answers.
    fn general(bytes: &[u8]) -> Option<Ipld> {
        let value: Ipld = serde_ipld_dagcbor::from_slice(bytes).ok()?;
        let canonical = serde_ipld_dagcbor::to_vec(&value).ok()?;
        (canonical == bytes).then_some(value)
    }

    proptest! {
        /// The reader reads the encoder's output back exactly (floats and integers beyond
        /// `i64` aside), and whatever it reads from altered bytes, the general path reads
        /// as the same canonical value.
        #[test]
        fn reads_what_the_encoder_wrote_and_vouches_for_nothing_else(
            value in ipld(),
            flip in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let Ok(bytes) = serde_ipld_dagcbor::to_vec(&value) else {
                return Ok(());
            };
            match read_canonical(&bytes) {
                Some(read) => prop_assert_eq!(&read, &value),
                None => prop_assert!(may_decline(&value)),
            }
            let mut changed = bytes.clone();
            changed[flip.index(bytes.len())] ^= 1 << bit;
            for candidate in [&changed[..], &bytes[..bytes.len() - 1], &[&bytes[..], &[0]].concat()] {
                if let Some(read) = read_canonical(candidate) {
                    prop_assert_eq!(Some(read), general(candidate));
                }
            }
        }
    }

    #[test]
    fn declines_every_non_shortest_or_unordered_form() {
        // 5 with a one-byte argument; an indefinite list; keys "b" before "a"; a duplicate
        // key; "aa" before "b" (length comes first); a 32-bit float; a tag other than 42;
        // invalid UTF-8; trailing bytes; a truncated string.
        for bytes in [
            &[0x18, 0x05][..],
            &[0x9f, 0xf6, 0xff],
            &[0xa2, 0x61, b'b', 0x01, 0x61, b'a', 0x02],
            &[0xa2, 0x61, b'a', 0x01, 0x61, b'a', 0x02],
            &[0xa2, 0x62, b'a', b'a', 0x01, 0x61, b'b', 0x02],
            &[0xfa, 0x3f, 0x80, 0x00, 0x00],
            &[0xc1, 0x01],
            &[0x62, 0xc3, 0x28],
            &[0x01, 0x01],
            &[0x63, b'a', b'b'],
        ] {
            assert_eq!(read_canonical(bytes), None, "{bytes:02x?}");
        }
        assert_eq!(
            read_canonical(&[0xa2, 0x61, b'b', 0x01, 0x62, b'a', b'a', 0x02]),
            general(&[0xa2, 0x61, b'b', 0x01, 0x62, b'a', b'a', 0x02])
        );
        // Every longer head for a value that fits a shorter one; a non-text map key;
        // `undefined`; `false` written as a one-byte simple value; tag 42 in long form
        // and over text.
        for bytes in [
            &[0x19, 0x00, 0xff][..],
            &[0x1a, 0x00, 0x00, 0xff, 0xff],
            &[0x1b, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff],
            &[0x38, 0x05],
            &[0x58, 0x01, 0x00],
            &[0x79, 0x00, 0x01, b'a'],
            &[0x98, 0x01, 0xf6],
            &[0xb8, 0x01, 0x61, b'a', 0xf6],
            &[0xa1, 0x01, 0x01],
            &[0xf7],
            &[0xf8, 0x14],
            &[0xd9, 0x00, 0x2a, 0x41, 0x00],
            &[0xd8, 0x2a, 0x61, b'a'],
        ] {
            assert_eq!(read_canonical(bytes), None, "{bytes:02x?}");
        }
        // The longest shortest forms are still read.
        assert_eq!(
            read_canonical(&[0x1b, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00]),
            Some(Ipld::Integer(0x1_0000_0000))
        );
    }

    #[test]
    fn reads_links_only_in_the_encoders_form() {
        let link = |cid: &[u8], prefix: &[u8]| {
            let mut bytes = vec![0xd8, 0x2a, 0x58, (prefix.len() + cid.len()) as u8];
            bytes.extend_from_slice(prefix);
            bytes.extend_from_slice(cid);
            bytes
        };
        let v1 = token_cid(b"a");
        assert_eq!(
            read_canonical(&link(&v1.to_bytes(), &[0])),
            Some(Ipld::Link(v1))
        );
        // A CIDv0 (a bare sha2-256 multihash) reads back as the general path reads it.
        let v0 = link(&v1.hash().to_bytes(), &[0]);
        assert!(read_canonical(&v0).is_some());
        assert_eq!(read_canonical(&v0), general(&v0));
        // Without the leading zero, or with a byte after the CID.
        assert_eq!(read_canonical(&link(&v1.to_bytes(), &[])), None);
        let trailing = [v1.to_bytes(), vec![0xff]].concat();
        assert_eq!(read_canonical(&link(&trailing, &[0])), None);
    }

    #[test]
    fn nesting_beyond_the_limit_is_left_to_the_general_decoder() {
        let nested = |depth: usize| [vec![0x81; depth], vec![0xf6]].concat();
        let deepest = nested(MAX_DEPTH);
        assert!(read_canonical(&deepest).is_some());
        assert_eq!(read_canonical(&deepest), general(&deepest));
        let deeper = nested(MAX_DEPTH + 1);
        assert_eq!(read_canonical(&deeper), None);
        assert!(general(&deeper).is_some());
    }
}
