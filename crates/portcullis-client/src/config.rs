//! The stored login: broker URL, username, the CA to trust and the session token, in one file.
//!
//! The file is `session.json` in the config directory: `$PORTCULLIS_CONFIG_DIR` when set, else
//! `$XDG_CONFIG_HOME/portcullis`, else `~/.config/portcullis`. The session token is a bearer
//! credential for the vendor's account, so:
//! - the file is created with mode 0600 inside a directory created with mode 0700;
//! - it is written whole or not at all (a temporary file in the same directory, synced, then
//!   renamed over the old one), so a crash or a full disk never leaves half a session behind;
//! - a session file readable by group or others is refused, as ssh refuses such a key;
//! - the token never appears in `Debug` output.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

/// The session file's name inside the config directory.
pub const SESSION_FILE: &str = "session.json";

/// The largest session file read (a session with a CA chain is a few KiB).
const MAX_SESSION_LEN: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("not logged in: run `portcullis login <broker-url>` first")]
    NotLoggedIn,
    #[error("cannot find a config directory: set PORTCULLIS_CONFIG_DIR, XDG_CONFIG_HOME or HOME")]
    NoConfigDir,
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is damaged ({detail}): run `portcullis login <broker-url>` again")]
    Damaged { path: PathBuf, detail: String },
    #[error(
        "{path} holds your session but is accessible by group or others (mode {mode:04o}): \
         run chmod 600 {path}, then log in again to be safe"
    )]
    Permissions { path: PathBuf, mode: u32 },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ConfigError + 'a {
    move |source| ConfigError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// What `portcullis login` keeps for the other commands.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredSession {
    /// `https://host[:port]`, without a trailing slash.
    pub broker_url: String,
    pub username: String,
    /// The account's role as the broker reported it at login (`vendor`, ...).
    pub role: String,
    /// The bearer token from `POST /api/v1/auth/mfa`. Secret.
    pub session_token: String,
    /// When the broker ends the session at the latest (RFC 3339). It may end sooner: after
    /// 30 minutes without use, or at logout.
    pub expires_at: String,
    /// PEM of the CA that signs the broker's and the relay's certificates (`--ca` at login);
    /// absent: the public web PKI.
    #[serde(default)]
    pub ca_pem: Option<String>,
}

impl fmt::Debug for StoredSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredSession")
            .field("broker_url", &self.broker_url)
            .field("username", &self.username)
            .field("role", &self.role)
            .field("session_token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("ca_pem", &self.ca_pem.as_ref().map(|p| p.len()))
            .finish()
    }
}

impl Drop for StoredSession {
    fn drop(&mut self) {
        self.session_token.zeroize();
    }
}

/// The directory holding the session file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigDir {
    dir: PathBuf,
}

impl ConfigDir {
    /// The directory named by the environment (see the module docs).
    pub fn from_env() -> Result<Self, ConfigError> {
        let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
        Self::resolve(
            var("PORTCULLIS_CONFIG_DIR"),
            var("XDG_CONFIG_HOME"),
            var("HOME"),
        )
    }

    /// The choice [`ConfigDir::from_env`] makes, from the three variables' values.
    pub fn resolve(
        override_dir: Option<std::ffi::OsString>,
        xdg_config_home: Option<std::ffi::OsString>,
        home: Option<std::ffi::OsString>,
    ) -> Result<Self, ConfigError> {
        let dir = match (override_dir, xdg_config_home, home) {
            (Some(dir), _, _) => PathBuf::from(dir),
            // XDG: a relative XDG_CONFIG_HOME is invalid and must be ignored.
            (None, Some(xdg), _) if Path::new(&xdg).is_absolute() => {
                PathBuf::from(xdg).join("portcullis")
            }
            (None, _, Some(home)) => PathBuf::from(home).join(".config").join("portcullis"),
            _ => return Err(ConfigError::NoConfigDir),
        };
        Ok(Self { dir })
    }

    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn session_file(&self) -> PathBuf {
        self.dir.join(SESSION_FILE)
    }

    /// The stored session; [`ConfigError::NotLoggedIn`] when there is none.
    pub fn load_session(&self) -> Result<StoredSession, ConfigError> {
        let path = self.session_file();
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ConfigError::NotLoggedIn),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(ConfigError::Permissions { path, mode });
        }
        if !meta.is_file() || meta.len() > MAX_SESSION_LEN {
            return Err(ConfigError::Damaged {
                path,
                detail: "not a session file".into(),
            });
        }
        let mut bytes = fs::read(&path).map_err(io_err("read", &path))?;
        let parsed = serde_json::from_slice(&bytes);
        bytes.zeroize();
        parsed.map_err(|e| ConfigError::Damaged {
            path,
            detail: e.to_string(),
        })
    }

    /// Replaces the stored session atomically; returns the file written.
    pub fn save_session(&self, session: &StoredSession) -> Result<PathBuf, ConfigError> {
        let mut json = serde_json::to_vec_pretty(session).map_err(|e| ConfigError::Damaged {
            path: self.session_file(),
            detail: e.to_string(),
        })?;
        json.push(b'\n');
        let written = write_private(&self.dir, SESSION_FILE, &json);
        json.zeroize();
        written
    }

    /// Forgets the stored session (nothing to do when there is none).
    pub fn remove_session(&self) -> Result<(), ConfigError> {
        let path = self.session_file();
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", &path)(e)),
            _ => Ok(()),
        }
    }
}

/// Writes `bytes` to `dir/name` with mode 0600, atomically: a temporary file in the same
/// directory (so the rename cannot cross file systems), synced to disk, then renamed over the
/// old file, then the directory synced so the rename itself survives a crash. `dir` is created
/// with mode 0700 when missing; an existing directory keeps its mode (it may be one the user
/// chose, such as a shared folder, and the file's own mode protects the token).
pub fn write_private(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, ConfigError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err("create directory", dir))?;
    let path = dir.join(name);
    portcullis_files::replace(&path, bytes, 0o600)
        .map_err(|e| io_err(e.action, &path)(e.source))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(token: &str) -> StoredSession {
        StoredSession {
            broker_url: "https://broker.example:8443".into(),
            username: "vera".into(),
            role: "vendor".into(),
            session_token: token.into(),
            expires_at: "2026-05-01T20:00:00.000000Z".into(),
            ca_pem: Some("-----BEGIN CERTIFICATE-----\n...\n".into()),
        }
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_session_round_trips_with_mode_0600_in_a_0700_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ConfigDir::new(tmp.path().join("a/portcullis"));
        let path = dir.save_session(&session("secret-token")).unwrap();
        assert_eq!(path, dir.session_file());
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(dir.path()), 0o700);
        assert_eq!(dir.load_session().unwrap(), session("secret-token"));
    }

    #[test]
    fn saving_replaces_the_file_atomically_and_leaves_no_temporary_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ConfigDir::new(tmp.path());
        dir.save_session(&session("one")).unwrap();
        let before = fs::metadata(dir.session_file()).unwrap();
        dir.save_session(&session("two")).unwrap();
        let after = fs::metadata(dir.session_file()).unwrap();
        // A rename puts a new inode in place; an in-place rewrite would keep the old one (and
        // a reader could see it half written).
        use std::os::unix::fs::MetadataExt;
        assert_ne!(before.ino(), after.ino());
        assert_eq!(dir.load_session().unwrap().session_token, "two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![SESSION_FILE.to_owned()]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_session() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ConfigDir::new(tmp.path().join("cfg"));
        dir.save_session(&session("old")).unwrap();
        // A directory that refuses new files: the temporary file cannot be made, so the old
        // session must survive untouched. (Root ignores directory modes: skip the check there.)
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o500)).unwrap();
        let probe = fs::File::create(dir.path().join("probe")).is_ok();
        if !probe {
            assert!(dir.save_session(&session("new")).is_err());
        }
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let _ = fs::remove_file(dir.path().join("probe"));
        assert_eq!(dir.load_session().unwrap().session_token, "old");
    }

    #[test]
    fn a_missing_session_means_not_logged_in() {
        let tmp = tempfile::tempdir().unwrap();
        let e = ConfigDir::new(tmp.path()).load_session().unwrap_err();
        assert!(matches!(e, ConfigError::NotLoggedIn));
        assert_eq!(
            e.to_string(),
            "not logged in: run `portcullis login <broker-url>` first"
        );
    }

    #[test]
    fn a_session_readable_by_others_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ConfigDir::new(tmp.path());
        let path = dir.save_session(&session("t")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let e = dir.load_session().unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn a_damaged_session_asks_for_a_new_login() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ConfigDir::new(tmp.path());
        write_private(dir.path(), SESSION_FILE, b"{ not json").unwrap();
        let e = dir.load_session().unwrap_err().to_string();
        assert!(
            e.contains("damaged") && e.contains("portcullis login"),
            "{e}"
        );
    }

    #[test]
    fn removing_forgets_the_session() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ConfigDir::new(tmp.path());
        dir.save_session(&session("t")).unwrap();
        dir.remove_session().unwrap();
        dir.remove_session().unwrap();
        assert!(matches!(dir.load_session(), Err(ConfigError::NotLoggedIn)));
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        let shown = format!("{:?}", session("very-secret-token"));
        assert!(!shown.contains("very-secret-token"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn the_directory_comes_from_the_override_then_xdg_then_home() {
        let os = |s: &str| Some(std::ffi::OsString::from(s));
        let r = |a, b, c| ConfigDir::resolve(a, b, c).unwrap().path().to_owned();
        assert_eq!(r(os("/o"), os("/x"), os("/h")), PathBuf::from("/o"));
        assert_eq!(r(None, os("/x"), os("/h")), PathBuf::from("/x/portcullis"));
        assert_eq!(
            r(None, os("relative"), os("/h")),
            PathBuf::from("/h/.config/portcullis")
        );
        assert_eq!(
            r(None, None, os("/h")),
            PathBuf::from("/h/.config/portcullis")
        );
        assert!(matches!(
            ConfigDir::resolve(None, None, None),
            Err(ConfigError::NoConfigDir)
        ));
    }
}
