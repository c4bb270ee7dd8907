//! What every command needs: settings, the data directory and its keys, an open store.

use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use anyhow::Context as _;
use ed25519_dalek::SigningKey;
use portcullis_auth::keyfile;
use portcullis_core::audit::{ActorRole, MacKey};
use portcullis_store::{AuditActor, Backend, Store, StoreConfig};

use crate::config::Settings;

#[derive(Debug)]
pub struct Context {
    pub settings: Settings,
}

impl Context {
    pub fn keys_dir(&self) -> PathBuf {
        self.settings.data_dir.join("keys")
    }

    pub fn checkpoints_dir(&self) -> PathBuf {
        self.settings.data_dir.join("checkpoints")
    }

    fn mac_key_path(&self) -> PathBuf {
        self.keys_dir().join("audit-mac.key")
    }

    fn checkpoint_key_path(&self) -> PathBuf {
        self.keys_dir().join("checkpoint.key")
    }

    /// Creates the data directory and its `keys/` (mode 0700) if missing.
    pub fn ensure_dirs(&self) -> anyhow::Result<()> {
        for dir in [self.settings.data_dir.clone(), self.keys_dir()] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .with_context(|| format!("cannot create directory {}", dir.display()))?;
        }
        Ok(())
    }

    /// The relay's QUIC stateless-reset key (`keys/relay-reset.key`, 0600), created on first
    /// start and kept, so peers recognise a restarted relay's resets (issue 16).
    pub fn relay_reset_key(&self) -> anyhow::Result<impl std::ops::Deref<Target = [u8; 32]>> {
        let path = self.keys_dir().join("relay-reset.key");
        keyfile::load_or_create(&path).with_context(|| {
            format!(
                "cannot read or create the relay's reset key {}",
                path.display()
            )
        })
    }

    /// The audit MAC key; created on first use by commands that write.
    pub fn mac_key(&self, create: bool) -> anyhow::Result<MacKey> {
        let path = self.mac_key_path();
        let bytes = if create {
            keyfile::load_or_create(&path)?
        } else {
            keyfile::load(&path).with_context(|| {
                "the audit MAC key is needed to verify the log: run this on the broker's host, \
                 or point --data-dir at a copy of its data directory"
            })?
        };
        Ok(MacKey::new(*bytes))
    }

    pub fn checkpoint_key(&self, create: bool) -> anyhow::Result<SigningKey> {
        let path = self.checkpoint_key_path();
        Ok(if create {
            keyfile::signing_key(&path)?
        } else {
            keyfile::load_signing_key(&path)?
        })
    }

    /// Opens the store for a command that changes things (the services, the admin command line)
    /// and refuses a database whose audit log is not append-only.
    ///
    /// The schema: on SQLite the broker owns its embedded file, so pending migrations are applied
    /// here. On PostgreSQL nothing but `portcullis migrate` changes the schema: the services run
    /// as an application role without DDL rights (`deploy/postgres/roles.sql`), so they only
    /// check that the schema is current and refuse to start, saying what to run, if it is not.
    pub async fn open_store(&self) -> anyhow::Result<Store> {
        let migrate = Backend::from_url(&self.settings.database_url)? == Backend::Sqlite;
        self.open_store_with(migrate).await
    }

    /// Opens the store and applies pending migrations, on either database: `portcullis
    /// migrate`, run with the schema owner's URL.
    pub async fn open_store_migrating(&self) -> anyhow::Result<Store> {
        self.open_store_with(true).await
    }

    async fn open_store_with(&self, migrate: bool) -> anyhow::Result<Store> {
        self.ensure_dirs()?;
        let mut config = StoreConfig::new(self.mac_key(true)?);
        config.migrate = migrate;
        Ok(Store::open(&self.settings.database_url, config).await?)
    }

    /// Opens an existing store as it is, for inspection (`audit verify`): creates nothing and
    /// does not insist on the guards, so a tampered database can still be examined.
    pub async fn open_store_for_inspection(&self) -> anyhow::Result<Store> {
        let url = &self.settings.database_url;
        if Backend::from_url(url)? == Backend::Sqlite {
            let path = url
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:");
            let path = path.split('?').next().unwrap_or(path);
            if !std::path::Path::new(path).exists() {
                anyhow::bail!("no database at {path}: check --data-dir or --database-url");
            }
        }
        let mut config = StoreConfig::new(self.mac_key(false)?);
        config.create_if_missing = false;
        Ok(Store::open_unguarded(url, config).await?)
    }
}

/// The local command line acts as an admin: whoever runs it has the broker's data directory.
/// The audit log names the operating-system account.
pub fn cli_actor() -> AuditActor {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(os_account);
    AuditActor {
        name: format!("cli:{user}"),
        role: ActorRole::Admin,
        source: Some("cli".into()),
    }
}

/// The name of the account running this process, from its uid and /etc/passwd (no libc call
/// needed), or `uid:N` when it has no entry there.
fn os_account() -> String {
    use std::os::unix::fs::MetadataExt;
    let Ok(uid) = std::fs::metadata("/proc/self").map(|m| m.uid()) else {
        return "unknown".into();
    };
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let id = f.nth(1)?.parse::<u32>().ok()?;
            (id == uid).then(|| name.to_owned())
        })
        .next()
        .unwrap_or_else(|| format!("uid:{uid}"))
}
