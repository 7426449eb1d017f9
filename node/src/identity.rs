//! A device's identity on disk.
//!
//! ```text
//! <data dir>/                      mode 0700
//!   identity/                      mode 0700
//!     device.key                   this device's secret key        (0600)
//!     root.key                     the person's root secret key    (0600; first device only)
//!     root.did                     the person's root DID (public)
//!     authority.chain              delegations root → … → device, sub = root, cmd `/`
//!     powerline.chain              delegations root → … → device, sub = null, cmd `/`
//! ```
//!
//! Chains are stored one base64 token per line, root first. A device made with
//! `init --join` has only `device.key` until another device links it ([`LinkBundle`]).
//!
//! The device acts for the person through two delegations. UCAN forbids a powerline at the
//! root of a chain, so authority over the person's own data needs `authority.ucan`
//! (subject = root); `powerline.ucan` additionally passes on whatever others delegate to
//! the root later. Keys are written once, with `create_new`, so nothing overwrites a key.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use membrane_protocol::{
    Did, SecretKey, capability,
    ucan::{Delegation, DelegationBuilder, UnixTime},
};

use crate::random;

const IDENTITY_DIR: &str = "identity";
const DEVICE_KEY: &str = "device.key";
const ROOT_KEY: &str = "root.key";
const ROOT_DID: &str = "root.did";
const AUTHORITY: &str = "authority.chain";
const POWERLINE: &str = "powerline.chain";

/// Why an identity could not be created or loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// `init` on a data dir that already holds an identity.
    #[error("{0} is already initialized (it holds a device key); use another --data-dir")]
    AlreadyInitialized(PathBuf),
    /// No identity in this data dir yet.
    #[error("no Membrane identity in {0}; run `membrane init` first")]
    NotInitialized(PathBuf),
    /// A device key exists but no device of the person has linked it yet.
    #[error(
        "this device ({0}) is not linked to a person yet; on one of your devices run `membrane device link {0}`, then `membrane device accept CODE` here"
    )]
    NotLinked(String),
    /// A link bundle that does not make this device a member.
    #[error("the link code is not valid for this device: {0}")]
    BadLink(String),
    /// A file is there but its content is wrong.
    #[error("{path} is corrupt: {problem}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A file system operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The OS random source failed.
    #[error(transparent)]
    Random(#[from] random::RandomError),
    /// Signing the device delegations failed.
    #[error("cannot sign the device delegation: {0}")]
    Sign(#[from] membrane_protocol::ucan::EncodeError),
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> IdentityError {
    let path = path.to_path_buf();
    move |source| IdentityError::Io {
        action,
        path,
        source,
    }
}

/// A node's data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// A data dir at `path` (not created until needed).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { root: path.into() }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.root
    }

    fn identity_file(&self, name: &str) -> PathBuf {
        self.root.join(IDENTITY_DIR).join(name)
    }

    /// Whether an identity exists here.
    pub fn is_initialized(&self) -> bool {
        self.identity_file(DEVICE_KEY).exists()
    }
}

/// Who this device is and on whose behalf it acts.
#[derive(Debug, Clone)]
pub struct DeviceIdentity {
    /// This device's key: its libp2p identity and its DID.
    pub device: SecretKey,
    /// The person's root DID.
    pub root: Did,
    /// The root secret key, present only on the device that created it.
    pub root_key: Option<SecretKey>,
    /// root → … → device, subject = root, command `/`, root first.
    pub authority: Vec<Delegation>,
    /// root → … → device, subject = null (powerline), command `/`, root first.
    pub powerline: Vec<Delegation>,
}

/// What one device gives another to make it a device of the same person: delegation
/// chains from the root to the new device. Its text form is `mbrlink1` + base64url of the
/// DAG-CBOR list `[authority chain, powerline chain]`.
#[derive(Debug, Clone)]
pub struct LinkBundle {
    /// root → … → new device, subject = root.
    pub authority: Vec<Delegation>,
    /// root → … → new device, powerline.
    pub powerline: Vec<Delegation>,
}

const LINK_PREFIX: &str = "mbrlink1";

impl LinkBundle {
    /// The copyable text form.
    pub fn to_text(&self) -> String {
        use membrane_protocol::ucan::Ipld;
        let chain = |c: &[Delegation]| {
            Ipld::List(
                c.iter()
                    .map(|d| Ipld::Bytes(d.as_bytes().to_vec()))
                    .collect(),
            )
        };
        let value = Ipld::List(vec![chain(&self.authority), chain(&self.powerline)]);
        let bytes = serde_ipld_dagcbor::to_vec(&value).expect("a list of bytes encodes");
        format!("{LINK_PREFIX}{}", base64_url(&bytes))
    }

    /// Parses the text form.
    pub fn from_text(text: &str) -> Result<Self, IdentityError> {
        use membrane_protocol::ucan::Ipld;
        let bad = |why: &str| IdentityError::BadLink(why.to_owned());
        let body = text
            .trim()
            .strip_prefix(LINK_PREFIX)
            .ok_or_else(|| bad("it does not start with mbrlink1"))?;
        let bytes = membrane_protocol::ucan::decode_base64_loose(body)
            .map_err(|_| bad("it is not base64"))?;
        let value: Ipld = serde_ipld_dagcbor::from_slice(&bytes)
            .map_err(|_| bad("it is truncated or corrupt"))?;
        let Ipld::List(chains) = value else {
            return Err(bad("wrong shape"));
        };
        let mut decoded = Vec::new();
        for chain in chains.iter().take(2) {
            let Ipld::List(tokens) = chain else {
                return Err(bad("wrong shape"));
            };
            let mut out = Vec::new();
            for token in tokens {
                let Ipld::Bytes(token) = token else {
                    return Err(bad("wrong shape"));
                };
                out.push(
                    Delegation::decode(token).map_err(|e| IdentityError::BadLink(e.to_string()))?,
                );
            }
            decoded.push(out);
        }
        let [authority, powerline]: [Vec<Delegation>; 2] = decoded
            .try_into()
            .map_err(|_| bad("it holds fewer than two chains"))?;
        Ok(Self {
            authority,
            powerline,
        })
    }
}

/// Refuses an initialized data dir, else creates it and its identity folder (mode 0700).
fn prepare_new(dir: &DataDir) -> Result<PathBuf, IdentityError> {
    if dir.is_initialized() {
        return Err(IdentityError::AlreadyInitialized(dir.path().to_path_buf()));
    }
    let identity_dir = dir.root.join(IDENTITY_DIR);
    for path in [&dir.root, &identity_dir] {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(io_error("create directory", path))?;
    }
    Ok(identity_dir)
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl DeviceIdentity {
    /// Creates a new person (root key) and this device's key in `dir`, with the two
    /// delegations root → device. Refuses to touch a data dir that already has a key.
    pub fn init(dir: &DataDir, now: UnixTime) -> Result<Self, IdentityError> {
        let identity_dir = prepare_new(dir)?;
        let root_key = SecretKey::from_seed(random::bytes()?);
        let device = SecretKey::from_seed(random::bytes()?);
        let everything = capability::command(capability::ALL);
        let authority = DelegationBuilder::new(root_key.did(), device.did(), everything.clone())
            .subject(root_key.did())
            .nonce(random::bytes::<12>()?.to_vec())
            .not_before(Some(now))
            .sign(&root_key)?;
        let powerline = DelegationBuilder::new(root_key.did(), device.did(), everything)
            .powerline()
            .nonce(random::bytes::<12>()?.to_vec())
            .not_before(Some(now))
            .sign(&root_key)?;

        // The device key goes last: its presence is what marks the dir as initialized.
        write_new(
            &dir.identity_file(ROOT_KEY),
            root_key.to_key_file_text().as_bytes(),
            0o600,
        )?;
        write_new(
            &dir.identity_file(ROOT_DID),
            format!("{}\n", root_key.did()).as_bytes(),
            0o644,
        )?;
        write_chain(
            &dir.identity_file(AUTHORITY),
            std::slice::from_ref(&authority),
        )?;
        write_chain(
            &dir.identity_file(POWERLINE),
            std::slice::from_ref(&powerline),
        )?;
        write_new(
            &dir.identity_file(DEVICE_KEY),
            device.to_key_file_text().as_bytes(),
            0o600,
        )?;
        sync_dir(&identity_dir)?;
        Ok(Self {
            root: root_key.did(),
            root_key: Some(root_key),
            device,
            authority: vec![authority],
            powerline: vec![powerline],
        })
    }

    /// Creates only this device's key, for a device that another device will link.
    pub fn init_joining(dir: &DataDir) -> Result<SecretKey, IdentityError> {
        let identity_dir = prepare_new(dir)?;
        let device = SecretKey::from_seed(random::bytes()?);
        write_new(
            &dir.identity_file(DEVICE_KEY),
            device.to_key_file_text().as_bytes(),
            0o600,
        )?;
        sync_dir(&identity_dir)?;
        Ok(device)
    }

    /// This device's key, whether or not it is linked yet.
    pub fn device_key(dir: &DataDir) -> Result<SecretKey, IdentityError> {
        if !dir.is_initialized() {
            return Err(IdentityError::NotInitialized(dir.path().to_path_buf()));
        }
        read_key(&dir.identity_file(DEVICE_KEY))
    }

    /// Issues the chains that make `new_device` a device of this person, valid from `now`.
    /// With the root key, the root signs directly; otherwise this device extends its own
    /// chains by one link.
    pub fn link(&self, new_device: Did, now: UnixTime) -> Result<LinkBundle, IdentityError> {
        let everything = capability::command(capability::ALL);
        let extend =
            |chain: &[Delegation], powerline: bool| -> Result<Vec<Delegation>, IdentityError> {
                let (issuer, mut out) = match &self.root_key {
                    Some(root) => (root, Vec::new()),
                    None => (&self.device, chain.to_vec()),
                };
                let builder = DelegationBuilder::new(issuer.did(), new_device, everything.clone())
                    .nonce(random::bytes::<12>()?.to_vec())
                    .not_before(Some(now));
                let builder = if powerline {
                    builder.powerline()
                } else {
                    builder.subject(self.root)
                };
                out.push(builder.sign(issuer)?);
                Ok(out)
            };
        Ok(LinkBundle {
            authority: extend(&self.authority, false)?,
            powerline: extend(&self.powerline, true)?,
        })
    }

    /// Makes this (joining) device a member with chains another device issued for it.
    pub fn accept_link(
        dir: &DataDir,
        bundle: &LinkBundle,
        now: UnixTime,
    ) -> Result<Self, IdentityError> {
        let device = Self::device_key(dir)?;
        if dir.identity_file(ROOT_DID).exists() {
            return Err(IdentityError::BadLink(
                "this device is already linked".into(),
            ));
        }
        let bad = IdentityError::BadLink;
        let chain = membrane_protocol::ucan::Validator::new(now)
            .with_clock_skew(60)
            .validate_delegation_chain(&bundle.authority)
            .map_err(|e| bad(e.to_string()))?;
        if chain.audience() != &device.did() {
            return Err(bad(format!(
                "it was issued for {}, not for this device",
                chain.audience()
            )));
        }
        if chain.command().as_str() != capability::ALL {
            return Err(bad("it does not grant full device authority".into()));
        }
        let root = *chain.subject().ok_or_else(|| bad("no subject".into()))?;
        let powerline_ok = bundle.powerline.first().map(|d| d.payload().issuer) == Some(root)
            && bundle.powerline.last().map(|d| d.payload().audience) == Some(device.did());
        if !powerline_ok {
            return Err(bad(
                "the powerline chain does not lead from the root to this device".into(),
            ));
        }
        write_chain(&dir.identity_file(AUTHORITY), &bundle.authority)?;
        write_chain(&dir.identity_file(POWERLINE), &bundle.powerline)?;
        write_new(
            &dir.identity_file(ROOT_DID),
            format!("{root}\n").as_bytes(),
            0o644,
        )?;
        sync_dir(&dir.root.join(IDENTITY_DIR))?;
        Self::load(dir)
    }

    /// Loads the identity stored in `dir` and checks that it hangs together.
    pub fn load(dir: &DataDir) -> Result<Self, IdentityError> {
        if !dir.is_initialized() {
            return Err(IdentityError::NotInitialized(dir.path().to_path_buf()));
        }
        let device = read_key(&dir.identity_file(DEVICE_KEY))?;
        let root_key = match read_key(&dir.identity_file(ROOT_KEY)) {
            Ok(key) => Some(key),
            Err(IdentityError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                None
            }
            Err(other) => return Err(other),
        };
        let root_path = dir.identity_file(ROOT_DID);
        if !root_path.exists() {
            return Err(IdentityError::NotLinked(device.did().to_string()));
        }
        let root: Did = read_text(&root_path)?
            .trim()
            .parse()
            .map_err(|error| corrupt(&root_path, error))?;
        if root_key.as_ref().is_some_and(|key| key.did() != root) {
            return Err(corrupt(&root_path, "does not match root.key"));
        }
        let authority = read_chain(&dir.identity_file(AUTHORITY))?;
        let powerline = read_chain(&dir.identity_file(POWERLINE))?;
        for (name, chain, subject) in [
            (AUTHORITY, &authority, Some(root)),
            (POWERLINE, &powerline, None),
        ] {
            let (Some(first), Some(last)) = (chain.first(), chain.last()) else {
                return Err(corrupt(&dir.identity_file(name), "is empty"));
            };
            if first.payload().issuer != root
                || last.payload().audience != device.did()
                || last.payload().subject != subject
            {
                return Err(corrupt(
                    &dir.identity_file(name),
                    "is not a chain from the root to this device",
                ));
            }
        }
        Ok(Self {
            device,
            root,
            root_key,
            authority,
            powerline,
        })
    }

    /// The delegations this device holds, as a proof store for validation.
    pub fn delegations(&self) -> Vec<Delegation> {
        self.authority
            .iter()
            .chain(&self.powerline)
            .cloned()
            .collect()
    }
}

fn corrupt(path: &Path, problem: impl ToString) -> IdentityError {
    IdentityError::Corrupt {
        path: path.to_path_buf(),
        problem: problem.to_string(),
    }
}

fn read_text(path: &Path) -> Result<String, IdentityError> {
    fs::read_to_string(path).map_err(io_error("read", path))
}

/// Reads a secret key file written by `init` (or any file in that format).
pub fn read_key(path: &Path) -> Result<SecretKey, IdentityError> {
    SecretKey::from_key_file_text(&read_text(path)?).map_err(|error| corrupt(path, error))
}

fn read_chain(path: &Path) -> Result<Vec<Delegation>, IdentityError> {
    read_text(path)?
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let bytes = membrane_protocol::ucan::decode_base64_loose(line)
                .map_err(|error| corrupt(path, error))?;
            Delegation::decode(&bytes).map_err(|error| corrupt(path, error))
        })
        .collect()
}

fn write_chain(path: &Path, chain: &[Delegation]) -> Result<(), IdentityError> {
    let text: String = chain
        .iter()
        .map(|d| format!("{}\n", membrane_protocol::ucan::encode_base64(d.as_bytes())))
        .collect();
    write_new(path, text.as_bytes(), 0o644)
}

/// Writes a file that must not exist yet, durably, with `mode`.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), IdentityError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_error("create", path))?;
    file.write_all(contents).map_err(io_error("write", path))?;
    file.sync_all().map_err(io_error("sync", path))
}

fn sync_dir(path: &Path) -> Result<(), IdentityError> {
    File::open(path)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error("sync", path))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_joining_device_becomes_a_member_through_a_second_device() {
        let temp = tempfile::tempdir().unwrap();
        let (laptop_dir, phone_dir, tablet_dir) = (
            DataDir::new(temp.path().join("laptop")),
            DataDir::new(temp.path().join("phone")),
            DataDir::new(temp.path().join("tablet")),
        );
        let laptop = DeviceIdentity::init(&laptop_dir, 100).unwrap();
        let phone_key = DeviceIdentity::init_joining(&phone_dir).unwrap();
        assert!(matches!(
            DeviceIdentity::load(&phone_dir),
            Err(IdentityError::NotLinked(_))
        ));
        let code = laptop.link(phone_key.did(), 100).unwrap().to_text();
        let phone =
            DeviceIdentity::accept_link(&phone_dir, &LinkBundle::from_text(&code).unwrap(), 101)
                .unwrap();
        assert_eq!(phone.root, laptop.root);
        assert!(phone.root_key.is_none());

        // The phone (no root key) links a tablet: a chain of two.
        let tablet_key = DeviceIdentity::init_joining(&tablet_dir).unwrap();
        let bundle = phone.link(tablet_key.did(), 102).unwrap();
        assert_eq!(bundle.authority.len(), 2);
        let tablet = DeviceIdentity::accept_link(&tablet_dir, &bundle, 103).unwrap();
        assert_eq!(tablet.root, laptop.root);

        // A code for someone else is refused, and so is garbage.
        let stranger_dir = DataDir::new(temp.path().join("stranger"));
        DeviceIdentity::init_joining(&stranger_dir).unwrap();
        assert!(matches!(
            DeviceIdentity::accept_link(&stranger_dir, &bundle, 104),
            Err(IdentityError::BadLink(_))
        ));
        assert!(LinkBundle::from_text("mbrlink1AAAA").is_err());
        assert!(LinkBundle::from_text(&code[..code.len() / 2]).is_err());
    }

    use std::os::unix::fs::PermissionsExt as _;

    use membrane_protocol::ucan::Validator;

    use super::*;

    #[test]
    fn init_then_load_gives_the_same_identity_with_private_files() {
        let temp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(temp.path().join("node"));
        let created = DeviceIdentity::init(&dir, 1_800_000_000).unwrap();
        let loaded = DeviceIdentity::load(&dir).unwrap();
        assert_eq!(loaded.device.did(), created.device.did());
        assert_eq!(loaded.root, created.root);
        assert_eq!(loaded.authority, created.authority);

        for key in [DEVICE_KEY, ROOT_KEY] {
            let mode = fs::metadata(dir.identity_file(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
        let mode = fs::metadata(dir.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);

        // The device really may act for the root.
        let chain = Validator::new(1_800_000_001)
            .validate_delegation_chain(&loaded.authority)
            .unwrap();
        assert_eq!(chain.subject(), Some(&loaded.root));
        assert_eq!(chain.audience(), &loaded.device.did());
    }

    #[test]
    fn init_refuses_an_initialized_dir_and_keeps_its_keys() {
        let temp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(temp.path());
        let first = DeviceIdentity::init(&dir, 0).unwrap();
        assert!(matches!(
            DeviceIdentity::init(&dir, 0),
            Err(IdentityError::AlreadyInitialized(_))
        ));
        assert_eq!(
            DeviceIdentity::load(&dir).unwrap().device.did(),
            first.device.did()
        );
    }

    #[test]
    fn load_reports_missing_and_corrupt_identities() {
        let temp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(temp.path());
        assert!(matches!(
            DeviceIdentity::load(&dir),
            Err(IdentityError::NotInitialized(_))
        ));
        DeviceIdentity::init(&dir, 0).unwrap();
        fs::write(dir.identity_file(AUTHORITY), b"garbage!").unwrap();
        assert!(matches!(
            DeviceIdentity::load(&dir),
            Err(IdentityError::Corrupt { .. })
        ));
    }
}
