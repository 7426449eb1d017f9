//! A device's identity on disk.
//!
//! ```text
//! <data dir>/                      mode 0700
//!   identity/                      mode 0700
//!     device.key                   this device's secret key        (0600)
//!     root.key                     the person's root secret key    (0600; first device only)
//!     root.did                     the person's root DID (public)
//!     authority.ucan               root → device, sub = root, cmd `/`
//!     powerline.ucan               root → device, sub = null, cmd `/`
//! ```
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
const AUTHORITY: &str = "authority.ucan";
const POWERLINE: &str = "powerline.ucan";

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
    /// root → device, subject = root, command `/`.
    pub authority: Delegation,
    /// root → device, subject = null (powerline), command `/`.
    pub powerline: Delegation,
}

impl DeviceIdentity {
    /// Creates a new person (root key) and this device's key in `dir`, with the two
    /// delegations root → device. Refuses to touch a data dir that already has a key.
    pub fn init(dir: &DataDir, now: UnixTime) -> Result<Self, IdentityError> {
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
        write_new(&dir.identity_file(AUTHORITY), authority.as_bytes(), 0o644)?;
        write_new(&dir.identity_file(POWERLINE), powerline.as_bytes(), 0o644)?;
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
            authority,
            powerline,
        })
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
        let root: Did = read_text(&root_path)?
            .trim()
            .parse()
            .map_err(|error| corrupt(&root_path, error))?;
        if root_key.as_ref().is_some_and(|key| key.did() != root) {
            return Err(corrupt(&root_path, "does not match root.key"));
        }
        let authority = read_delegation(&dir.identity_file(AUTHORITY))?;
        let powerline = read_delegation(&dir.identity_file(POWERLINE))?;
        for (name, delegation, subject) in [
            (AUTHORITY, &authority, Some(root)),
            (POWERLINE, &powerline, None),
        ] {
            let payload = delegation.payload();
            if payload.issuer != root
                || payload.audience != device.did()
                || payload.subject != subject
            {
                return Err(corrupt(
                    &dir.identity_file(name),
                    "is not a delegation from the root to this device",
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
        vec![self.authority.clone(), self.powerline.clone()]
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

fn read_delegation(path: &Path) -> Result<Delegation, IdentityError> {
    let bytes = fs::read(path).map_err(io_error("read", path))?;
    Delegation::decode(&bytes).map_err(|error| corrupt(path, error))
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
            .validate_delegation_chain(&[loaded.authority.clone()])
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
        fs::write(dir.identity_file(AUTHORITY), b"garbage").unwrap();
        assert!(matches!(
            DeviceIdentity::load(&dir),
            Err(IdentityError::Corrupt { .. })
        ));
    }
}
