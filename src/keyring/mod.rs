//! The keyring: secrets kept in files and referred to by name, as SPDK's `keyring_file` module keeps them.
//!
//! A key is a name and the absolute path of a file that only its owner — the user pollux
//! runs as — may read or write (mode `0600` or stricter; checked when the key is added and
//! again on every read, as SPDK does). The file is read when a user reads the secret
//! ([`KeyInfo::secret`], on the main reactor: nvmf reads DH-HMAC-CHAP secrets when a host's
//! keys are named and hands the poll groups copies), and the secret never enters a saved
//! configuration: configs and `keyring_get_keys` carry names and paths only. A removed key
//! is marked so in every copy of its [`KeyInfo`] (SPDK's removed keys refuse later use):
//! nvmf fails the next authentication of a host that uses it. `key0` and
//! `:key0` name the same key of the one (global) keyring; a name with another keyring before
//! the colon is refused. The keyring lives on the main reactor (where the RPC methods and
//! the configuration that names keys run) and is emptied when the application stops; users
//! resolve a name to its [`KeyInfo`] there and read the secret where they need it. Methods: `keyring_file_add_key`, `keyring_file_remove_key`,
//! `keyring_get_keys` (see `rpc.rs`).

pub mod rpc;

use std::cell::RefCell;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Why a keyring operation failed, with the errno SPDK answers it with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    #[error("Non-absolute paths are not allowed: {0}")]
    RelativePath(String),
    #[error("Could not stat key file '{path}': {reason}")]
    Stat {
        path: String,
        reason: String,
        errno: i32,
    },
    #[error("Invalid permissions for key file '{path}': 0{mode:o} (it must be owned by the user pollux runs as and be readable by it alone)")]
    Permissions { path: String, mode: u32 },
    #[error("Key '{0}' already exists")]
    Exists(String),
    #[error("Couldn't add key '{0}' to the keyring: keyring doesn't exist")]
    NoSuchKeyring(String),
    #[error("Key '{0}' does not exist")]
    NotFound(String),
    #[error("Could not read key '{name}': {reason}")]
    Read { name: String, reason: String },
}

impl KeyringError {
    /// The negative errno SPDK's RPC answers this failure with.
    pub fn errno(&self) -> i32 {
        -match self {
            Self::RelativePath(_) | Self::Permissions { .. } => libc::EPERM,
            Self::Stat { errno, .. } => *errno,
            Self::Exists(_) => libc::EEXIST,
            Self::NoSuchKeyring(_) => libc::EINVAL,
            Self::NotFound(_) => libc::ENOKEY,
            Self::Read { .. } => libc::EIO,
        }
    }
}

/// What `keyring_get_keys` shows of a key (never the secret), and whether it was removed
/// since (users that hold it see the removal, as SPDK's removed keys refuse every use).
#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub name: String,
    pub path: PathBuf,
    removed: Arc<AtomicBool>,
}

impl PartialEq for KeyInfo {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.path == other.path
            && Arc::ptr_eq(&self.removed, &other.removed)
    }
}

impl Eq for KeyInfo {}

thread_local! {
    static KEYS: RefCell<Vec<KeyInfo>> = const { RefCell::new(Vec::new()) };
}

fn with_keys<R>(f: impl FnOnce(&mut Vec<KeyInfo>) -> R) -> R {
    KEYS.with(|k| f(&mut k.borrow_mut()))
}

/// The name within the global keyring: `key0` and `:key0` are the same key.
fn key_name(name: &str) -> &str {
    name.strip_prefix(':').unwrap_or(name)
}

/// Checks that `path` is absolute, exists, belongs to this process's user and is closed to
/// group and others; returns its size.
fn check_path(path: &Path) -> Result<u64, KeyringError> {
    let shown = path.display().to_string();
    if !path.is_absolute() {
        return Err(KeyringError::RelativePath(shown));
    }
    let meta = std::fs::metadata(path).map_err(|e| KeyringError::Stat {
        path: shown.clone(),
        reason: e.to_string(),
        errno: e.raw_os_error().unwrap_or(libc::EIO),
    })?;
    if meta.mode() & 0o077 != 0 || meta.uid() != crate::sys::process::user_id() {
        return Err(KeyringError::Permissions {
            path: shown,
            mode: meta.mode(),
        });
    }
    Ok(meta.len())
}

/// Adds the key `name` kept in the file at `path`.
pub fn add_file_key(name: &str, path: &Path) -> Result<(), KeyringError> {
    if name.find(':').is_some_and(|at| at > 0) {
        return Err(KeyringError::NoSuchKeyring(name.to_string()));
    }
    check_path(path)?;
    with_keys(|keys| {
        if keys.iter().any(|k| key_name(&k.name) == key_name(name)) {
            return Err(KeyringError::Exists(name.to_string()));
        }
        keys.push(KeyInfo {
            name: name.to_string(),
            path: path.to_path_buf(),
            removed: Arc::new(AtomicBool::new(false)),
        });
        Ok(())
    })
}

/// Removes the key `name`.
pub fn remove_key(name: &str) -> Result<(), KeyringError> {
    with_keys(|keys| {
        let at = keys
            .iter()
            .position(|k| key_name(&k.name) == key_name(name))
            .ok_or_else(|| KeyringError::NotFound(name.to_string()))?;
        keys.remove(at).removed.store(true, Ordering::Release);
        Ok(())
    })
}

/// Every key, in the order they were added.
pub fn list() -> Vec<KeyInfo> {
    with_keys(|keys| keys.clone())
}

/// The key `name` (`key0` or `:key0`).
pub fn lookup(name: &str) -> Result<KeyInfo, KeyringError> {
    with_keys(|keys| {
        keys.iter()
            .find(|k| key_name(&k.name) == key_name(name))
            .cloned()
            .ok_or_else(|| KeyringError::NotFound(name.to_string()))
    })
}

/// Forgets every key (the application's shutdown).
pub fn clear() {
    with_keys(Vec::clear);
}

/// Largest key file read (the longest secret representation, a DHHC-1 secret of 64 bytes,
/// takes 101 characters).
const MAX_KEY_FILE: u64 = 4096;

impl KeyInfo {
    /// The secret, read from the key's file now (the permissions checked again), with
    /// surrounding whitespace trimmed.
    pub fn secret(&self) -> Result<String, KeyringError> {
        read_secret(&self.name, &self.path)
    }

    /// Whether the key was removed from the keyring since it was looked up (any thread).
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }
}

fn read_secret(name: &str, path: &Path) -> Result<String, KeyringError> {
    let size = check_path(path)?;
    let read_err = |reason: String| KeyringError::Read {
        name: name.to_string(),
        reason,
    };
    if size > MAX_KEY_FILE {
        return Err(read_err(format!(
            "{size} bytes, more than a key file holds ({MAX_KEY_FILE})"
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| read_err(e.to_string()))?;
    Ok(text.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn key_file(dir: &Path, name: &str, mode: u32, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn add_read_remove_and_refusals() {
        let dir = std::env::temp_dir().join(format!("pollux-keyring-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = key_file(&dir, "good", 0o600, "DHHC-1:00:secret:\n");
        let open = key_file(&dir, "open", 0o644, "x");
        add_file_key("unit-k0", &good).unwrap();
        assert_eq!(
            lookup("unit-k0").unwrap().secret().unwrap(),
            "DHHC-1:00:secret:"
        );
        assert_eq!(
            lookup(":unit-k0").unwrap().secret().unwrap(),
            "DHHC-1:00:secret:"
        );
        assert!(matches!(
            add_file_key(":unit-k0", &good),
            Err(KeyringError::Exists(_))
        ));
        let e = add_file_key("unit-k1", &open).unwrap_err();
        assert!(matches!(e, KeyringError::Permissions { .. }), "{e}");
        assert_eq!(e.errno(), -libc::EPERM);
        assert!(matches!(
            add_file_key("unit-k1", Path::new("relative/key")),
            Err(KeyringError::RelativePath(_))
        ));
        let e = add_file_key("unit-k1", &dir.join("missing")).unwrap_err();
        assert_eq!(e.errno(), -libc::ENOENT, "{e}");
        assert!(matches!(
            add_file_key("ring:unit-k1", &good),
            Err(KeyringError::NoSuchKeyring(_))
        ));
        // A file opened up after the key was added is refused when read.
        std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o640)).unwrap();
        let k0 = lookup("unit-k0").unwrap();
        assert!(matches!(k0.secret(), Err(KeyringError::Permissions { .. })));
        remove_key("unit-k0").unwrap();
        assert_eq!(remove_key("unit-k0").unwrap_err().errno(), -libc::ENOKEY);
        assert!(matches!(lookup("unit-k0"), Err(KeyringError::NotFound(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
