//! Secret key files in the data directory: 32 random bytes written as 64 lowercase hex digits and
//! a newline, readable by the owner only.
//!
//! Creation is atomic and race-free: the key is written and fsynced under a temporary name, then
//! hard-linked to the final name (`portcullis_files::create_new`). `link(2)` refuses to replace an existing file, so when two
//! processes race exactly one key wins, and nobody can ever read a half-written file (which a
//! plain `create_new` on the final name would allow between creating and writing).

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use rand::RngCore;
use rand::rngs::OsRng;
use zeroize::Zeroizing;

/// Key length in bytes.
pub const KEY_LEN: usize = 32;

/// Longest file we read: 64 hex digits plus generous whitespace. Anything longer is not a key,
/// and the bound keeps a wrong path (a log file, a device) from being read whole.
const MAX_FILE_LEN: usize = 256;

/// Why a key file could not be loaded or created. Every message names the file; none contains
/// key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    #[error("key file {path} does not exist")]
    NotFound { path: PathBuf },
    #[error("cannot create key file {path}: directory {dir} does not exist")]
    MissingDir { path: PathBuf, dir: PathBuf },
    #[error("key file {path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error(
        "key file {path} is readable or writable by group or others (mode {mode:04o}); run chmod 600 {path}"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("key file {path} is not a 32-byte hex key (expected exactly 64 hex digits)")]
    Malformed { path: PathBuf },
    #[error("cannot {action} key file {path}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot create key file {path}: the operating system's random source failed: {source}")]
    Random {
        path: PathBuf,
        #[source]
        source: rand::Error,
    },
}

impl KeyFileError {
    fn io(path: &Path, action: &'static str, source: io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            action,
            source,
        }
    }
}

/// Loads the key at `path`, creating it with a fresh random key first if it does not exist. The
/// directory must exist (creating it, with the right owner and mode, is the caller's job).
pub fn load_or_create(path: &Path) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyFileError> {
    match load(path) {
        Err(KeyFileError::NotFound { .. }) => {}
        loaded => return loaded,
    }
    match create(path)? {
        Some(key) => Ok(key),
        // Another process or thread created it between our load and our link: use theirs.
        None => load(path),
    }
}

/// Loads the key at `path`; never creates it (for read-only tools). Refuses a file that group or
/// others can access, and anything but 64 hex digits with optional surrounding whitespace.
pub fn load(path: &Path) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyFileError> {
    // Stat before opening so a FIFO or device at the path is refused instead of blocking open.
    let meta = fs::metadata(path).map_err(|e| not_found_or(path, "inspect", e))?;
    if !meta.is_file() {
        return Err(KeyFileError::NotAFile {
            path: path.to_owned(),
        });
    }
    let mut file = File::open(path).map_err(|e| not_found_or(path, "open", e))?;
    // Check the file we actually opened, not whatever the path pointed to a moment ago.
    let meta = file
        .metadata()
        .map_err(|e| KeyFileError::io(path, "inspect", e))?;
    if !meta.is_file() {
        return Err(KeyFileError::NotAFile {
            path: path.to_owned(),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }

    // A fixed buffer rather than a growing Vec: reallocation would leave unwiped copies.
    let mut buf = Zeroizing::new([0u8; MAX_FILE_LEN + 1]);
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(KeyFileError::io(path, "read", e)),
        }
    }
    if len > MAX_FILE_LEN {
        return Err(KeyFileError::Malformed {
            path: path.to_owned(),
        });
    }
    parse(&buf[..len]).ok_or_else(|| KeyFileError::Malformed {
        path: path.to_owned(),
    })
}

/// [`load_or_create`], as an ed25519 signing key (the file holds the 32-byte seed).
pub fn signing_key(path: &Path) -> Result<SigningKey, KeyFileError> {
    Ok(SigningKey::from_bytes(&*load_or_create(path)?))
}

/// [`load`], as an ed25519 signing key; never creates the file.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyFileError> {
    Ok(SigningKey::from_bytes(&*load(path)?))
}

fn not_found_or(path: &Path, action: &'static str, e: io::Error) -> KeyFileError {
    if e.kind() == io::ErrorKind::NotFound {
        KeyFileError::NotFound {
            path: path.to_owned(),
        }
    } else {
        KeyFileError::io(path, action, e)
    }
}

fn parse(bytes: &[u8]) -> Option<Zeroizing<[u8; KEY_LEN]>> {
    let digits = bytes.trim_ascii();
    if digits.len() != 2 * KEY_LEN {
        return None;
    }
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    hex::decode_to_slice(digits, &mut *key).ok()?;
    Some(key)
}

/// Writes a fresh key to `path` unless a file is already there. `Ok(None)` means one was (we lost
/// a race); the caller then loads it.
fn create(path: &Path) -> Result<Option<Zeroizing<[u8; KEY_LEN]>>, KeyFileError> {
    if path.file_name().is_none() {
        return Err(KeyFileError::NotAFile {
            path: path.to_owned(),
        });
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };

    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    OsRng
        .try_fill_bytes(&mut *key)
        .map_err(|source| KeyFileError::Random {
            path: path.to_owned(),
            source,
        })?;
    let text = encode(&key);

    match portcullis_files::create_new(path, &*text, 0o600) {
        Ok(true) => Ok(Some(key)),
        // We lost a race: the caller loads the other writer's key.
        Ok(false) => Ok(None),
        Err(e) if e.action == "create" && e.source.kind() == io::ErrorKind::NotFound => {
            Err(KeyFileError::MissingDir {
                path: path.to_owned(),
                dir: dir.to_owned(),
            })
        }
        Err(e) => Err(KeyFileError::io(path, e.action, e.source)),
    }
}

/// 64 lowercase hex digits and a newline, in a buffer wiped on drop.
fn encode(key: &[u8; KEY_LEN]) -> Zeroizing<[u8; 2 * KEY_LEN + 1]> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = Zeroizing::new([b'\n'; 2 * KEY_LEN + 1]);
    for (i, byte) in key.iter().enumerate() {
        text[2 * i] = DIGITS[usize::from(byte >> 4)];
        text[2 * i + 1] = DIGITS[usize::from(byte & 0x0f)];
    }
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::{Arc, Barrier};
    use std::thread;

    use super::*;

    fn write_mode(path: &Path, contents: &str, mode: u32) {
        fs::write(path, contents).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn creates_an_owner_only_hex_file_that_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit-mac.key");
        let created = load_or_create(&path).unwrap();

        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), 65);
        assert!(text.ends_with('\n'));
        assert!(
            text[..64]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_eq!(hex::decode(text.trim()).unwrap(), created.to_vec());

        assert_eq!(*load_or_create(&path).unwrap(), *created);
        assert_eq!(*load(&path).unwrap(), *created);
        // Only the key is left in the directory: no temporary files.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn two_created_keys_differ() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(&dir.path().join("a.key")).unwrap();
        let b = load_or_create(&dir.path().join("b.key")).unwrap();
        assert_ne!(*a, *b);
    }

    #[test]
    fn group_or_world_accessible_file_is_refused_with_a_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit-mac.key");
        write_mode(&path, &"ab".repeat(32), 0o644);
        let err = load_or_create(&path).unwrap_err();
        assert!(matches!(err, KeyFileError::Permissions { mode: 0o644, .. }));
        let shown = path.display();
        assert_eq!(
            err.to_string(),
            format!(
                "key file {shown} is readable or writable by group or others (mode 0644); run chmod 600 {shown}"
            )
        );
        // Refused, not rewritten.
        assert_eq!(fs::read_to_string(&path).unwrap(), "ab".repeat(32));
        for mode in [0o640, 0o620, 0o604, 0o601] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            assert!(
                matches!(load(&path), Err(KeyFileError::Permissions { .. })),
                "mode {mode:o} accepted"
            );
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(*load(&path).unwrap(), [0xab; 32]);
    }

    #[test]
    fn garbage_is_refused_without_showing_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        for bad in [
            "",
            "not a key at all",
            &"ab".repeat(31),                                    // 31 bytes
            &"ab".repeat(33),                                    // 33 bytes
            &format!("{}zz", "ab".repeat(31)),                   // right length, not hex
            &format!("{} {}", "ab".repeat(16), "ab".repeat(16)), // inner space
            &format!("0x{}", "ab".repeat(31)),
            &"ab".repeat(200), // longer than we read
        ] {
            write_mode(&path, bad, 0o600);
            let err = load_or_create(&path).unwrap_err();
            assert!(
                matches!(err, KeyFileError::Malformed { .. }),
                "{bad:?}: {err}"
            );
            assert_eq!(
                err.to_string(),
                format!(
                    "key file {} is not a 32-byte hex key (expected exactly 64 hex digits)",
                    path.display()
                )
            );
            // Not replaced by a fresh key.
            assert_eq!(fs::read_to_string(&path).unwrap(), bad);
        }
    }

    #[test]
    fn surrounding_whitespace_and_uppercase_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        let hex = "0123456789ABCDEF".repeat(4);
        write_mode(&path, &format!("  \n{hex}\r\n\n"), 0o600);
        assert_eq!(hex::encode(*load(&path).unwrap()), hex.to_lowercase());
    }

    #[test]
    fn load_never_creates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.key");
        let err = load(&path).unwrap_err();
        assert!(matches!(err, KeyFileError::NotFound { .. }));
        assert_eq!(
            err.to_string(),
            format!("key file {} does not exist", path.display())
        );
        assert!(matches!(
            load_signing_key(&path),
            Err(KeyFileError::NotFound { .. })
        ));
        assert!(!path.exists());
    }

    #[test]
    fn missing_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir");
        let path = missing.join("k.key");
        let err = load_or_create(&path).unwrap_err();
        match &err {
            KeyFileError::MissingDir { dir, .. } => assert_eq!(dir, &missing),
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains(&missing.display().to_string()));
    }

    #[test]
    fn a_directory_is_not_a_key_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            load_or_create(dir.path()),
            Err(KeyFileError::NotAFile { .. })
        ));
    }

    #[test]
    fn concurrent_creators_agree_on_one_key() {
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = Arc::new(dir.path().join(format!("race-{round}.key")));
            let threads = 8;
            let barrier = Arc::new(Barrier::new(threads));
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let (path, barrier) = (Arc::clone(&path), Arc::clone(&barrier));
                    thread::spawn(move || {
                        barrier.wait();
                        *load_or_create(&path).unwrap()
                    })
                })
                .collect();
            let keys: Vec<[u8; 32]> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            assert!(
                keys.iter().all(|k| *k == keys[0]),
                "round {round}: keys differ"
            );
            assert_eq!(*load(&path).unwrap(), keys[0]);
            assert_eq!(
                fs::read_dir(dir.path()).unwrap().count(),
                1,
                "leftover files"
            );
        }
    }

    #[test]
    fn signing_key_is_stable_and_loadable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay-signing.key");
        let created = signing_key(&path).unwrap();
        let again = signing_key(&path).unwrap();
        let loaded = load_signing_key(&path).unwrap();
        assert_eq!(created.to_bytes(), again.to_bytes());
        assert_eq!(created.verifying_key(), loaded.verifying_key());
        assert_eq!(created.to_bytes(), *load(&path).unwrap());
    }
}
