//! Signed checkpoints on disk: `<data-dir>/checkpoints/checkpoint-<seq>.json`, one per signing,
//! written by `audit checkpoint`, by the broker's schedule (`--checkpoint-every`) and at its
//! shutdown; read back by `audit verify` and the auditor's verify page.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use ed25519_dalek::{SigningKey, VerifyingKey};
use portcullis_core::audit::{ChainHead, Checkpoint, Digest};
use portcullis_store::Store;

/// The checkpoint files in `dir`, oldest first (the names carry the seq, zero-padded); none
/// when the directory does not exist yet.
pub fn files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

pub fn read(path: &Path) -> anyhow::Result<Checkpoint> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read checkpoint {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a Portcullis checkpoint", path.display()))
}

/// A checkpoint that verified: the (seq, hash) it vouches for.
pub type Vouched = (i64, Digest);

/// Verifies every file with `key`; the first that does not verify is the error, named.
pub fn vouched(files: &[PathBuf], key: &VerifyingKey) -> Result<Vec<Vouched>, BadCheckpoint> {
    files
        .iter()
        .map(|f| {
            let why = match read(f) {
                Ok(cp) => match cp.verify(key) {
                    Ok(v) => return Ok(v),
                    Err(e) => e.to_string(),
                },
                Err(e) => format!("{e:#}"),
            };
            Err(BadCheckpoint {
                file: f.clone(),
                why,
            })
        })
        .collect()
}

/// A checkpoint file that cannot be read or whose signature does not verify.
#[derive(Debug, thiserror::Error)]
#[error("checkpoint {}: {why}", file.display())]
pub struct BadCheckpoint {
    pub file: PathBuf,
    pub why: String,
}

/// The file name a checkpoint of `seq` gets in the checkpoints directory.
pub fn file_name(seq: i64) -> String {
    format!("checkpoint-{seq:012}.json")
}

/// Signs `head` and writes it to `path` through a temporary file, so a failure (a full disk)
/// never leaves a half-written checkpoint under that name.
pub fn write(
    path: &Path,
    head: &ChainHead,
    now: portcullis_core::Timestamp,
    key: &SigningKey,
) -> anyhow::Result<Checkpoint> {
    let cp = Checkpoint::sign(head, now, key);
    write_atomically(path, |w| {
        serde_json::to_writer_pretty(&mut *w, &cp)?;
        writeln!(w)?;
        Ok(())
    })?;
    Ok(cp)
}

/// Signs the store's head into `dir` unless the newest checkpoint there already covers it.
/// What the broker's schedule and its shutdown call.
pub struct Signer {
    dir: PathBuf,
    key: SigningKey,
    store: Store,
    /// The seq the newest checkpoint in `dir` covers (0: none yet).
    covered: i64,
}

/// One checkpoint the [`Signer`] wrote.
#[derive(Debug)]
pub struct Signed {
    pub seq: i64,
    pub path: PathBuf,
}

impl Signer {
    /// Reads what `dir` already holds, so a restart does not sign a head it signed before.
    pub fn new(dir: PathBuf, key: SigningKey, store: Store) -> anyhow::Result<Signer> {
        let covered = match files(&dir)?.last() {
            Some(f) => read(f)?.seq,
            None => 0,
        };
        Ok(Signer {
            dir,
            key,
            store,
            covered,
        })
    }

    /// Signs the head if events came after the newest checkpoint. Not itself an audit event:
    /// an event about a checkpoint would always sit after it, uncovered, and a cut tail of one
    /// row would go unseen. The file is the record.
    pub async fn sign_if_new(&mut self) -> anyhow::Result<Option<Signed>> {
        let head = self.store.audit_head().await?;
        if head.seq <= self.covered {
            return Ok(None);
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .create(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let path = self.dir.join(file_name(head.seq));
        let (now, key) = (self.store.now(), self.key.clone());
        let written = path.clone();
        tokio::task::spawn_blocking(move || write(&written, &head, now, &key).map(drop)).await??;
        self.covered = head.seq;
        Ok(Some(Signed {
            seq: head.seq,
            path,
        }))
    }
}

/// Writes `path` through a temporary file in the same directory and renames it into place, so
/// a failure never leaves a half-written file under the requested name.
fn write_atomically(
    path: &Path,
    body: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    {
        let mut w = std::io::BufWriter::new(tmp.as_file_mut());
        body(&mut w)?;
        w.flush()?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use portcullis_core::audit::{ActorRole, AuditDraft, MacKey};
    use portcullis_store::StoreConfig;

    use super::*;

    async fn store(dir: &Path) -> Store {
        let url = format!("sqlite://{}", dir.join("portcullis.db").display());
        Store::open(&url, StoreConfig::new(MacKey::new([7; 32])))
            .await
            .unwrap()
    }

    async fn event(store: &Store) {
        store
            .append(AuditDraft::new("ann", ActorRole::Admin, "org.add").target("org:acme"))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn signs_only_heads_no_checkpoint_covers_yet_and_remembers_across_restarts() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("checkpoints");
        let key = SigningKey::from_bytes(&[9; 32]);
        let store = store(tmp.path()).await;
        let mut signer = Signer::new(dir.clone(), key.clone(), store.clone()).unwrap();
        assert!(
            signer.sign_if_new().await.unwrap().is_none(),
            "an empty log"
        );
        event(&store).await;
        event(&store).await;
        let first = signer.sign_if_new().await.unwrap().expect("two new events");
        assert_eq!(first.seq, 2);
        assert_eq!(first.path, dir.join("checkpoint-000000000002.json"));
        assert!(signer.sign_if_new().await.unwrap().is_none(), "nothing new");
        event(&store).await;
        assert_eq!(signer.sign_if_new().await.unwrap().unwrap().seq, 3);
        let files = files(&dir).unwrap();
        assert_eq!(files.len(), 2);
        let vouched = vouched(&files, &key.verifying_key()).unwrap();
        assert_eq!(vouched[1].0, 3);
        assert_eq!(vouched[1].1, store.audit_head().await.unwrap().hash);
        // A restarted broker reads what the directory covers and does not sign it again.
        let mut again = Signer::new(dir.clone(), key, store.clone()).unwrap();
        assert!(again.sign_if_new().await.unwrap().is_none());
        store.close().await;
    }

    #[test]
    fn a_checkpoint_that_does_not_verify_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let good = tmp.path().join(file_name(1));
        let head = ChainHead {
            seq: 1,
            hash: Digest([3; 32]),
            ts: portcullis_core::Timestamp::from_unix_micros(1_000_000).unwrap(),
        };
        let key = SigningKey::from_bytes(&[9; 32]);
        write(&good, &head, head.ts, &key).unwrap();
        let other = SigningKey::from_bytes(&[8; 32]).verifying_key();
        let bad = vouched(std::slice::from_ref(&good), &other).unwrap_err();
        assert_eq!(bad.file, good);
        assert!(
            bad.to_string().contains("signature does not verify"),
            "{bad}"
        );
        let junk = tmp.path().join(file_name(2));
        std::fs::write(&junk, "{").unwrap();
        let bad = vouched(&[good, junk.clone()], &key.verifying_key()).unwrap_err();
        assert_eq!(bad.file, junk);
        assert!(
            bad.to_string().contains("is not a Portcullis checkpoint"),
            "{bad}"
        );
    }
}
