//! Virtual keys: gateway-issued credentials for consumers.
//!
//! A key reads `tg-<id>-<secret>`. The key store file (the policy's
//! `access.keyStore`) holds, per key, its id, consumer, a salted SHA-256 of
//! the secret, and its creation, expiry and revocation; never the secret.
//! The id finds the record; the secret is compared in constant time.
//! `tollgate keys create` prints a secret once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const PREFIX: &str = "tg-";
const ID_BYTES: usize = 6;
const SECRET_BYTES: usize = 24;
const SALT_BYTES: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key store {path}: {message}")]
    Store { path: String, message: String },
    #[error("no key with id `{0}`")]
    UnknownId(String),
    #[error("cannot draw random bytes: {0}")]
    Random(String),
}

/// One key's record as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KeyRecord {
    pub id: String,
    pub consumer: String,
    /// `sha256:<salt hex>:<digest hex>`.
    pub hash: String,
    /// RFC 3339.
    pub created: String,
    /// RFC 3339; absent: never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    #[serde(default)]
    pub revoked: bool,
}

/// The key store file's content.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    #[serde(default)]
    pub keys: Vec<KeyRecord>,
}

/// Why a presented key was refused; the message the client sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Malformed,
    Unknown,
    Revoked,
    Expired,
}

impl Refusal {
    pub fn message(&self) -> &'static str {
        match self {
            Refusal::Malformed => "the API key is not a gateway key (expected `tg-...`)",
            Refusal::Unknown => "invalid API key",
            Refusal::Revoked => "this API key has been revoked",
            Refusal::Expired => "this API key has expired",
        }
    }
}

impl KeyFile {
    pub fn load(path: &Path) -> Result<KeyFile, KeyError> {
        let err = |message: String| KeyError::Store { path: path.display().to_string(), message };
        match std::fs::read_to_string(path) {
            Ok(text) if text.trim().is_empty() => Ok(KeyFile::default()),
            Ok(text) => serde_yaml_ng::from_str(&text).map_err(|e| err(e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KeyFile::default()),
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// Write atomically (temporary file, then rename), readable by the owner only.
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        let err = |message: String| KeyError::Store { path: path.display().to_string(), message };
        let yaml = serde_yaml_ng::to_string(self).map_err(|e| err(e.to_string()))?;
        let text = format!("# Tollgate virtual keys: salted hashes only. Managed by `tollgate keys`.\n{yaml}");
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
        // Owner-only from the moment the file exists, and never through a
        // file or link someone else left at the temporary name.
        crate::tls::write_private(path, text.as_bytes()).map_err(|e| err(format!("{e:#}")))
    }

    /// Add a key for `consumer`; returns the secret key (shown once) and its record.
    pub fn create(
        &mut self,
        consumer: &str,
        expires: Option<SystemTime>,
        now: SystemTime,
    ) -> Result<(String, KeyRecord), KeyError> {
        let id = loop {
            let id = hex::encode(random::<ID_BYTES>()?);
            if !self.keys.iter().any(|k| k.id == id) {
                break id;
            }
        };
        let secret = hex::encode(random::<SECRET_BYTES>()?);
        let salt = random::<SALT_BYTES>()?;
        let record = KeyRecord {
            id: id.clone(),
            consumer: consumer.to_string(),
            hash: format!("sha256:{}:{}", hex::encode(salt), hex::encode(digest(&salt, secret.as_bytes()))),
            created: humantime::format_rfc3339_seconds(now).to_string(),
            expires: expires.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
            revoked: false,
        };
        self.keys.push(record.clone());
        Ok((format!("{PREFIX}{id}-{secret}"), record))
    }

    pub fn revoke(&mut self, id: &str) -> Result<&KeyRecord, KeyError> {
        let record = self.keys.iter_mut().find(|k| k.id == id).ok_or_else(|| KeyError::UnknownId(id.to_string()))?;
        record.revoked = true;
        Ok(record)
    }
}

fn random<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(bytes)
}

fn digest(salt: &[u8], secret: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(secret);
    h.finalize().into()
}

/// A parsed stored hash.
#[derive(Debug, Clone)]
struct StoredHash {
    salt: Vec<u8>,
    digest: Vec<u8>,
}

fn parse_hash(s: &str) -> Option<StoredHash> {
    let mut parts = s.split(':');
    let (Some("sha256"), Some(salt), Some(d), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    let (salt, digest) = (hex::decode(salt).ok()?, hex::decode(d).ok()?);
    (digest.len() == 32).then_some(StoredHash { salt, digest })
}

#[derive(Debug, Clone)]
struct Entry {
    consumer: String,
    hash: StoredHash,
    expires: Option<SystemTime>,
    revoked: bool,
}

/// Keys ready for lookups.
#[derive(Debug, Clone, Default)]
pub struct KeyIndex {
    by_id: BTreeMap<String, Entry>,
}

impl KeyIndex {
    pub fn from_file(file: &KeyFile, path: &Path) -> Result<KeyIndex, KeyError> {
        let err = |message: String| KeyError::Store { path: path.display().to_string(), message };
        let mut by_id = BTreeMap::new();
        for (i, k) in file.keys.iter().enumerate() {
            let hash =
                parse_hash(&k.hash).ok_or_else(|| err(format!("keys[{i}].hash is not `sha256:<salt>:<digest>`")))?;
            let expires = match &k.expires {
                Some(t) => Some(humantime::parse_rfc3339_weak(t).map_err(|e| err(format!("keys[{i}].expires: {e}")))?),
                None => None,
            };
            let entry = Entry { consumer: k.consumer.clone(), hash, expires, revoked: k.revoked };
            if by_id.insert(k.id.clone(), entry).is_some() {
                return Err(err(format!("keys[{i}].id `{}` appears twice", k.id)));
            }
        }
        Ok(KeyIndex { by_id })
    }

    /// The consumer a presented key belongs to.
    pub fn verify(&self, presented: &str, now: SystemTime) -> Result<&str, Refusal> {
        let rest = presented.strip_prefix(PREFIX).ok_or(Refusal::Malformed)?;
        let (id, secret) = rest.split_once('-').ok_or(Refusal::Malformed)?;
        let Some(entry) = self.by_id.get(id) else {
            // Spend the same work as a real comparison so timing does not tell ids apart.
            let _ = digest(&[0u8; SALT_BYTES], secret.as_bytes()).ct_eq(&[0u8; 32]);
            return Err(Refusal::Unknown);
        };
        let ok: bool = digest(&entry.hash.salt, secret.as_bytes())[..].ct_eq(&entry.hash.digest[..]).into();
        if !ok {
            return Err(Refusal::Unknown);
        }
        if entry.revoked {
            return Err(Refusal::Revoked);
        }
        if entry.expires.is_some_and(|t| t <= now) {
            return Err(Refusal::Expired);
        }
        Ok(&entry.consumer)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// The key index the sidecar serves from, reloaded when the file changes
/// (so `tollgate keys revoke` takes effect within a second, no restart).
#[derive(Debug, Clone, Default)]
pub struct LiveKeys {
    index: Arc<RwLock<Arc<KeyIndex>>>,
    path: Option<PathBuf>,
}

impl LiveKeys {
    /// Load `path` now; a broken file is an error at start.
    pub fn open(path: Option<PathBuf>) -> Result<LiveKeys, KeyError> {
        let index = match &path {
            Some(p) => KeyIndex::from_file(&KeyFile::load(p)?, p)?,
            None => KeyIndex::default(),
        };
        Ok(LiveKeys { index: Arc::new(RwLock::new(Arc::new(index))), path })
    }

    pub fn current(&self) -> Arc<KeyIndex> {
        match self.index.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Poll the file's modification time and reload on change. A file that
    /// fails to parse keeps the previous keys and logs why.
    pub fn watch(&self, every: Duration) {
        let Some(path) = self.path.clone() else { return };
        let index = self.index.clone();
        tokio::spawn(async move {
            let mut seen = mtime(&path);
            loop {
                tokio::time::sleep(every).await;
                let now = mtime(&path);
                if now == seen {
                    continue;
                }
                seen = now;
                match KeyFile::load(&path).and_then(|f| KeyIndex::from_file(&f, &path)) {
                    Ok(fresh) => {
                        tracing::info!(keys = fresh.len(), path = %path.display(), "key store reloaded");
                        match index.write() {
                            Ok(mut guard) => *guard = Arc::new(fresh),
                            Err(poisoned) => *poisoned.into_inner() = Arc::new(fresh),
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "key store not reloaded; keeping the previous keys"),
                }
            }
        });
    }
}

fn mtime(path: &Path) -> Option<(SystemTime, u64)> {
    std::fs::metadata(path).ok().and_then(|m| Some((m.modified().ok()?, m.len())))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn create_verify_revoke_expire() {
        let now = SystemTime::now();
        let mut file = KeyFile::default();
        let (alice, rec) = file.create("alice", None, now).unwrap();
        let (bob, _) = file.create("bob", Some(now + Duration::from_secs(60)), now).unwrap();
        assert!(alice.starts_with("tg-"));
        // The store never holds the secret.
        let yaml = serde_yaml_ng::to_string(&file).unwrap();
        assert!(!yaml.contains(alice.rsplit('-').next().unwrap()));
        let path = Path::new("keys.yaml");
        let idx = KeyIndex::from_file(&file, path).unwrap();
        assert_eq!(idx.verify(&alice, now), Ok("alice"));
        assert_eq!(idx.verify(&bob, now), Ok("bob"));
        assert_eq!(idx.verify(&bob, now + Duration::from_secs(61)), Err(Refusal::Expired));
        // A wrong secret with a valid id, an unknown id, and garbage.
        let wrong = format!("tg-{}-{}", rec.id, "00".repeat(SECRET_BYTES));
        assert_eq!(idx.verify(&wrong, now), Err(Refusal::Unknown));
        assert_eq!(idx.verify("tg-ffffffffffff-abc", now), Err(Refusal::Unknown));
        assert_eq!(idx.verify("sk-live-123", now), Err(Refusal::Malformed));
        file.revoke(&rec.id).unwrap();
        let idx = KeyIndex::from_file(&file, path).unwrap();
        assert_eq!(idx.verify(&alice, now), Err(Refusal::Revoked));
        assert!(file.revoke("nope").is_err());
    }

    #[test]
    fn save_load_round_trip_and_bad_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/keys.yaml");
        let mut file = KeyFile::default();
        let (key, _) = file.create("alice", None, SystemTime::now()).unwrap();
        file.save(&path).unwrap();
        let back = KeyFile::load(&path).unwrap();
        assert_eq!(back, file);
        let idx = KeyIndex::from_file(&back, &path).unwrap();
        assert_eq!(idx.verify(&key, SystemTime::now()), Ok("alice"));
        let mut broken = back.clone();
        broken.keys[0].hash = "md5:00".into();
        let e = KeyIndex::from_file(&broken, &path).unwrap_err().to_string();
        assert!(e.contains("keys[0].hash"), "{e}");
        assert_eq!(KeyFile::load(&dir.path().join("missing.yaml")).unwrap(), KeyFile::default());
    }
}
