//! Writing a file so that a reader sees the old file or the new one, never a part, with exactly
//! the mode asked for from the first instant: the one implementation behind the broker's keys and
//! certificates, the vendor client's session, the site connector's state and the auth key files.
//!
//! The bytes go to a new hidden file beside the target (created with `O_EXCL` and the mode, so
//! an owner-only file is never readable by others, not even empty), which is fsynced, then
//! renamed over the target ([`replace`]) or hard-linked to it only if it does not exist yet
//! ([`create_new`]); then the directory is fsynced so the new name survives a power cut. The
//! temporary name is removed on every way out.
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// What failed, on which file: `action` is a verb for "cannot {action} {path}".
#[derive(Debug)]
pub struct FileError {
    pub action: &'static str,
    pub path: PathBuf,
    pub source: io::Error,
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot {} {}: {}",
            self.action,
            self.path.display(),
            self.source
        )
    }
}

impl std::error::Error for FileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Writes `contents` to `path` with exactly `mode`, replacing what is there, atomically.
pub fn replace(path: &Path, contents: &[u8], mode: u32) -> Result<(), FileError> {
    let tmp = write_temp(path, contents, mode)?;
    fs::rename(&tmp.0, path).map_err(|e| error("replace", path, e))?;
    sync_dir(path)
}

/// Writes `contents` to `path` with exactly `mode`, only if `path` does not exist yet: true when
/// this call made it, false when a file was already there (left as it was).
pub fn create_new(path: &Path, contents: &[u8], mode: u32) -> Result<bool, FileError> {
    let tmp = write_temp(path, contents, mode)?;
    match fs::hard_link(&tmp.0, path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(error("create", path, e)),
    }
    drop(tmp);
    sync_dir(path)?;
    Ok(true)
}

fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

fn error(action: &'static str, path: &Path, source: io::Error) -> FileError {
    FileError {
        action,
        path: path.to_owned(),
        source,
    }
}

/// The new hidden file beside `path`, written and fsynced; removed when dropped.
fn write_temp(path: &Path, contents: &[u8], mode: u32) -> Result<TempName, FileError> {
    let mut name = OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(temp_suffix());
    let tmp = TempName(dir_of(path).join(name));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        // The mode from the first instant; the umask can only remove bits...
        .mode(mode)
        .open(&tmp.0)
        .map_err(|e| error("create", path, e))?;
    // ...and is undone here: a certificate meant to be world-readable is exactly that.
    file.set_permissions(Permissions::from_mode(mode))
        .and_then(|()| file.write_all(contents))
        .and_then(|()| file.sync_all())
        .map_err(|e| error("write", path, e))?;
    Ok(tmp)
}

fn sync_dir(path: &Path) -> Result<(), FileError> {
    File::open(dir_of(path))
        .and_then(|d| d.sync_all())
        .map_err(|e| error("sync the directory of", path, e))
}

/// A suffix no other live writer uses: process id, a per-process counter, and the clock (which
/// only guards against a leftover of a dead process with the same id).
fn temp_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(".{}.{n}.{nanos}.tmp", std::process::id())
}

/// Removes the temporary name on every way out; after a rename or link the file lives on under
/// its final name (or is gone already), so a failure to remove is ignored.
struct TempName(PathBuf);

impl Drop for TempName {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    fn leftovers(dir: &Path) -> Vec<OsString> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with('.'))
            .collect()
    }

    #[test]
    fn replace_writes_the_exact_mode_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        replace(&key, b"one", 0o600).unwrap();
        replace(&key, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&key).unwrap(), b"two");
        assert_eq!(mode(&key), 0o600);
        let cert = dir.path().join("cert.pem");
        replace(&cert, b"c", 0o644).unwrap();
        assert_eq!(mode(&cert), 0o644, "exactly the mode, whatever the umask");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn create_new_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        assert!(create_new(&key, b"first", 0o600).unwrap());
        assert!(!create_new(&key, b"second", 0o600).unwrap());
        assert_eq!(fs::read(&key).unwrap(), b"first");
        assert_eq!(mode(&key), 0o600);
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn a_missing_directory_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope").join("key");
        let e = replace(&path, b"x", 0o600).unwrap_err();
        assert_eq!(e.action, "create");
        assert_eq!(e.source.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("nope/key"), "{e}");
    }
}
