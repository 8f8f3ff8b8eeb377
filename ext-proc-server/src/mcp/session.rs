//! The gateway's MCP session ids: signed and stateless.
//!
//! A client's session is one `Mcp-Session-Id` the gateway issues at
//! `initialize`. It carries everything a replica needs to serve the session
//! (the virtual server, the caller, the protocol version, and the session id
//! each upstream server issued), signed with HMAC-SHA-256 under a key every
//! replica shares through the limit store. So a session survives a sidecar
//! restart and moves between replicas, and an id that was forged, tampered
//! with, expired, or presented by another caller is refused.
//!
//! Form: `base64url(payload JSON) "." base64url(MAC)`, visible ASCII as the
//! transport requires. The payload is signed, not encrypted: it holds no
//! secret (upstream session ids are not credentials: the gateway holds
//! those).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// How long a session lasts after `initialize`.
pub const LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// The store namespace and field of the signing key.
pub const KEY_NAMESPACE: &str = "mcp";
pub const KEY_FIELD: &str = "session-key";
/// Longest session id accepted (a few upstream sessions fit easily).
const MAX_ID_BYTES: usize = 8 * 1024;

/// What a session id says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Virtual server.
    #[serde(rename = "v")]
    pub virtual_server: String,
    /// The caller's consumer; empty for an anonymous caller.
    #[serde(rename = "c")]
    pub consumer: String,
    /// Negotiated protocol version.
    #[serde(rename = "p")]
    pub protocol: String,
    /// Upstream server → its session.
    #[serde(rename = "u")]
    pub upstream: BTreeMap<String, Upstream>,
    /// Expiry, epoch seconds.
    #[serde(rename = "e")]
    pub expires: u64,
    /// Random, so two sessions of one caller differ.
    #[serde(rename = "n")]
    pub nonce: String,
    /// The client capabilities the gateway passes on to upstreams (those
    /// of the client the policy relays: `elicitation`, `roots`), offered
    /// again when an upstream session is opened anew.
    #[serde(rename = "k", default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub caps: serde_json::Map<String, serde_json::Value>,
}

/// One upstream server's side of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Upstream {
    /// The session id it issued (empty: it issued none).
    #[serde(rename = "s")]
    pub session: String,
    /// The protocol version it agreed to.
    #[serde(rename = "p")]
    pub protocol: String,
}

/// Why a session id is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the session id is malformed")]
    Malformed,
    #[error("the session id's signature does not verify")]
    Signature,
    #[error("the session has expired")]
    Expired,
}

/// Signs and checks session ids.
#[derive(Clone)]
pub struct Signer {
    /// Keyed once; cloned per message.
    keyed: Hmac<Sha256>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer { .. }")
    }
}

impl Signer {
    pub fn new(key: [u8; 32]) -> anyhow::Result<Signer> {
        let keyed = <Hmac<Sha256> as Mac>::new_from_slice(&key).map_err(|e| anyhow::anyhow!("session key: {e}"))?;
        Ok(Signer { keyed })
    }

    /// A signer with a new random key (no store to share one through).
    pub fn random() -> anyhow::Result<Signer> {
        Signer::new(random_key()?)
    }

    fn mac(&self, payload: &str) -> Hmac<Sha256> {
        let mut mac = self.keyed.clone();
        mac.update(b"tollgate mcp session\0");
        mac.update(payload.as_bytes());
        mac
    }

    /// A token for `value` that only this key can have made, and only for
    /// the session with `nonce` (the ids of the server requests relayed in
    /// it): `base64url(JSON) "." base64url(MAC)`.
    pub fn seal<T: Serialize>(&self, nonce: &str, value: &T) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap_or_default());
        let tag = URL_SAFE_NO_PAD.encode(self.sealed_mac(nonce, &payload).finalize().into_bytes());
        format!("{payload}.{tag}")
    }

    /// The value of a token [`Signer::seal`] made for this session.
    pub fn unseal<T: serde::de::DeserializeOwned>(&self, nonce: &str, token: &str) -> Option<T> {
        if token.len() > MAX_ID_BYTES {
            return None;
        }
        let (payload, tag) = token.split_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        self.sealed_mac(nonce, payload).verify_slice(&tag).ok()?;
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
    }

    fn sealed_mac(&self, nonce: &str, payload: &str) -> Hmac<Sha256> {
        let mut mac = self.keyed.clone();
        mac.update(b"tollgate mcp relay\0");
        mac.update(nonce.as_bytes());
        mac.update(b"\0");
        mac.update(payload.as_bytes());
        mac
    }

    /// The id of `session`.
    pub fn sign(&self, session: &Session) -> String {
        let json = serde_json::to_vec(session).unwrap_or_default();
        let payload = URL_SAFE_NO_PAD.encode(json);
        let tag = URL_SAFE_NO_PAD.encode(self.mac(&payload).finalize().into_bytes());
        format!("{payload}.{tag}")
    }

    /// The session an id stands for, if this gateway issued it and it is current.
    pub fn verify(&self, id: &str, now: SystemTime) -> Result<Session, Refused> {
        if id.len() > MAX_ID_BYTES {
            return Err(Refused::Malformed);
        }
        let (payload, tag) = id.split_once('.').ok_or(Refused::Malformed)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| Refused::Malformed)?;
        // Constant time: `verify_slice`.
        self.mac(payload).verify_slice(&tag).map_err(|_| Refused::Signature)?;
        let json = URL_SAFE_NO_PAD.decode(payload).map_err(|_| Refused::Malformed)?;
        let session: Session = serde_json::from_slice(&json).map_err(|_| Refused::Malformed)?;
        if session.expires <= epoch(now) {
            return Err(Refused::Expired);
        }
        Ok(session)
    }
}

/// Seconds since the epoch.
pub fn epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// 32 random bytes.
pub fn random_key() -> anyhow::Result<[u8; 32]> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("no randomness for the session key: {e}"))?;
    Ok(key)
}

/// A random nonce (hex).
pub fn nonce() -> String {
    let mut n = [0u8; 12];
    let _ = getrandom::fill(&mut n);
    hex::encode(n)
}

/// The key shared by every replica: the store's, set by whichever replica
/// asked first.
pub async fn shared_key(store: &crate::limits::Store) -> anyhow::Result<Signer> {
    let candidate = hex::encode(random_key()?);
    let held = store.set_value(KEY_NAMESPACE, KEY_FIELD, &candidate, true).await?;
    let bytes = hex::decode(held.trim()).map_err(|_| anyhow::anyhow!("the stored MCP session key is not hex"))?;
    let key: [u8; 32] = bytes.try_into().map_err(|_| anyhow::anyhow!("the stored MCP session key is not 32 bytes"))?;
    Signer::new(key)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session {
            virtual_server: "support".into(),
            consumer: "bot".into(),
            protocol: "2025-06-18".into(),
            upstream: BTreeMap::from([
                ("crm".into(), Upstream { session: "abc".into(), protocol: "2025-06-18".into() }),
                ("weather".into(), Upstream::default()),
            ]),
            expires: epoch(SystemTime::now()) + 60,
            nonce: nonce(),
            caps: Default::default(),
        }
    }

    #[test]
    fn sealed_tokens_open_only_in_their_session_under_the_same_key() {
        let key = random_key().unwrap();
        let (a, b) = (Signer::new(key).unwrap(), Signer::new(key).unwrap());
        let value = serde_json::json!({"s": "crm", "i": 7});
        let token = a.seal("n1", &value);
        // Another replica with the shared key opens it; nothing else does.
        assert_eq!(b.unseal::<serde_json::Value>("n1", &token), Some(value));
        assert_eq!(b.unseal::<serde_json::Value>("n2", &token), None);
        assert_eq!(Signer::random().unwrap().unseal::<serde_json::Value>("n1", &token), None);
        let (payload, tag) = token.split_once('.').unwrap();
        let other = URL_SAFE_NO_PAD.encode(br#"{"s":"weather","i":7}"#);
        assert_eq!(b.unseal::<serde_json::Value>("n1", &format!("{other}.{tag}")), None);
        assert_eq!(b.unseal::<serde_json::Value>("n1", payload), None);
        // A session token is not a relay token, nor the other way round.
        assert_eq!(a.unseal::<Session>("n1", &a.sign(&session())), None);
    }

    #[test]
    fn a_signed_session_verifies() {
        let s = Signer::random().unwrap();
        let id = s.sign(&session());
        assert!(id.bytes().all(|b| (0x21..=0x7e).contains(&b)));
        assert_eq!(s.verify(&id, SystemTime::now()).unwrap().upstream["crm"].session, "abc");
    }

    #[test]
    fn forged_tampered_and_expired_ids_are_refused() {
        let s = Signer::random().unwrap();
        let id = s.sign(&session());
        let other = Signer::random().unwrap();
        assert_eq!(other.verify(&id, SystemTime::now()), Err(Refused::Signature));
        // Change the consumer in the payload and keep the tag.
        let (payload, tag) = id.split_once('.').unwrap();
        let mut json: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        json["c"] = "admin".into();
        let forged = format!("{}.{tag}", URL_SAFE_NO_PAD.encode(serde_json::to_vec(&json).unwrap()));
        assert_eq!(s.verify(&forged, SystemTime::now()), Err(Refused::Signature));
        assert_eq!(s.verify("nonsense", SystemTime::now()), Err(Refused::Malformed));
        assert_eq!(s.verify("YQ.YQ", SystemTime::now()), Err(Refused::Signature));
        let later = SystemTime::now() + Duration::from_secs(120);
        assert_eq!(s.verify(&id, later), Err(Refused::Expired));
    }
}
