//! Mutual TLS between Envoy and the sidecar.
//!
//! The sidecar decides who a caller is and adds provider keys to the
//! requests it routes, so it must answer only the gateway's own Envoy. Each
//! gateway has a private certificate authority that signs exactly two
//! certificates: the sidecar's (server, DNS name [`SIDECAR_NAME`]) and
//! Envoy's (client). The sidecar requires a client certificate from that
//! authority; Envoy checks the sidecar's name. Nothing else can talk to it.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

/// The DNS name in the sidecar's certificate, which Envoy checks (and sends as SNI).
pub const SIDECAR_NAME: &str = "tollgate-sidecar";
/// The DNS name in Envoy's client certificate.
pub const ENVOY_NAME: &str = "tollgate-envoy";

/// The files of a certificate directory.
pub const CA_FILE: &str = "ca.pem";
pub const SIDECAR_CERT: &str = "sidecar.pem";
pub const SIDECAR_KEY: &str = "sidecar.key";
pub const ENVOY_CERT: &str = "envoy.pem";
pub const ENVOY_KEY: &str = "envoy.key";

/// How long the generated certificates are valid, in years.
const VALID_YEARS: i32 = 10;

/// PEM text of a gateway's certificates.
#[derive(Clone)]
pub struct Bundle {
    pub ca: String,
    pub sidecar_cert: String,
    pub sidecar_key: String,
    pub envoy_cert: String,
    pub envoy_key: String,
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bundle { .. }")
    }
}

/// A new authority and the two certificates it signs. The authority's key
/// is discarded: nothing else can ever be signed by it.
pub fn generate() -> anyhow::Result<Bundle> {
    let year = current_year();
    let validity = |p: &mut CertificateParams| {
        p.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
        p.not_after = rcgen::date_time_ymd(year + VALID_YEARS, 1, 1);
    };
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name.push(DnType::CommonName, "tollgate gateway authority");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut ca);
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |name: &str, usage: ExtendedKeyUsagePurpose| -> anyhow::Result<(String, String)> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(vec![name.to_string()])?;
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![usage];
        validity(&mut p);
        Ok((p.signed_by(&key, &issuer)?.pem(), key.serialize_pem()))
    };
    let (sidecar_cert, sidecar_key) = leaf(SIDECAR_NAME, ExtendedKeyUsagePurpose::ServerAuth)?;
    let (envoy_cert, envoy_key) = leaf(ENVOY_NAME, ExtendedKeyUsagePurpose::ClientAuth)?;
    Ok(Bundle { ca: ca_cert.pem(), sidecar_cert, sidecar_key, envoy_cert, envoy_key })
}

fn current_year() -> i32 {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    1970 + (secs / 31_556_952) as i32
}

const FILES: [&str; 5] = [CA_FILE, SIDECAR_CERT, SIDECAR_KEY, ENVOY_CERT, ENVOY_KEY];

impl Bundle {
    /// The whole set, read from `dir`.
    pub fn read(dir: &Path) -> anyhow::Result<Bundle> {
        Ok(Bundle {
            ca: read_pem(dir, CA_FILE)?,
            sidecar_cert: read_pem(dir, SIDECAR_CERT)?,
            sidecar_key: read_pem(dir, SIDECAR_KEY)?,
            envoy_cert: read_pem(dir, ENVOY_CERT)?,
            envoy_key: read_pem(dir, ENVOY_KEY)?,
        })
    }

    /// Each file of the set with its text.
    fn files(&self) -> [(&'static str, &str); 5] {
        [
            (CA_FILE, &self.ca),
            (SIDECAR_CERT, &self.sidecar_cert),
            (SIDECAR_KEY, &self.sidecar_key),
            (ENVOY_CERT, &self.envoy_cert),
            (ENVOY_KEY, &self.envoy_key),
        ]
    }
}

/// One file of a certificate directory, naming it on error.
fn read_pem(dir: &Path, file: &str) -> anyhow::Result<String> {
    let path = dir.join(file);
    std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
}

/// Whether `dir` holds a complete set of certificates.
pub fn exists(dir: &Path) -> bool {
    FILES.iter().all(|f| dir.join(f).is_file())
}

/// Make the certificates in `dir` when it holds none of them (or always,
/// with `replace`). Returns whether new ones were written. A directory with
/// some of them is used as it is: a Kubernetes Secret mounts only the
/// sidecar's half (`ca.pem`, `sidecar.pem`, `sidecar.key`), and certificates
/// made anew beside an existing authority would be trusted by nobody.
pub fn ensure(dir: &Path, replace: bool) -> anyhow::Result<bool> {
    if !replace && FILES.iter().any(|f| dir.join(f).exists()) {
        return Ok(false);
    }
    write(dir, &generate()?)?;
    Ok(true)
}

/// Write a bundle into `dir` (made owner-only): keys are created owner-only
/// before any byte of them is written, and each file lands by an atomic rename.
pub fn write(dir: &Path, b: &Bundle) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    restrict_dir(dir)?;
    for (file, text) in b.files() {
        write_private(&dir.join(file), text.as_bytes())?;
    }
    Ok(())
}

#[cfg(unix)]
fn restrict_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot restrict {}", dir.display()))
}

#[cfg(not(unix))]
fn restrict_dir(_dir: &Path) -> anyhow::Result<()> {
    Ok(())
}

/// Write `bytes` to `path` through a temporary file that is owner-only
/// (mode 0600) from the moment it exists, then renamed into place.
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = temporary_path(path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let _ = std::fs::remove_file(&tmp);
    let mut f = options.open(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Where [`write_private`] writes before renaming.
pub fn temporary_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// The sidecar's TLS settings: its own certificate, and client
/// certificates required from the gateway's authority.
pub fn server_config(dir: &Path) -> anyhow::Result<tonic::transport::ServerTlsConfig> {
    // The sidecar's half only: a mounted Secret holds no more.
    let identity = tonic::transport::Identity::from_pem(read_pem(dir, SIDECAR_CERT)?, read_pem(dir, SIDECAR_KEY)?);
    let ca = tonic::transport::Certificate::from_pem(read_pem(dir, CA_FILE)?);
    Ok(tonic::transport::ServerTlsConfig::new().identity(identity).client_ca_root(ca))
}

/// The `transport_socket` Envoy uses to reach the sidecar: its client
/// certificate, the authority, and the sidecar's name checked.
pub fn envoy_transport_socket(dir: &Path) -> serde_json::Value {
    let file = |f: &str| serde_json::json!({"filename": dir.join(f).display().to_string()});
    serde_json::json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": SIDECAR_NAME,
            "common_tls_context": {
                "alpn_protocols": ["h2"],
                "tls_certificates": [{"certificate_chain": file(ENVOY_CERT), "private_key": file(ENVOY_KEY)}],
                "validation_context": {
                    "trusted_ca": file(CA_FILE),
                    "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": SIDECAR_NAME}}],
                },
            },
        },
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn writes_owner_only_files_and_keeps_existing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("tls");
        assert!(ensure(&d, false).unwrap());
        assert!(exists(&d));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            for f in [CA_FILE, SIDECAR_CERT, SIDECAR_KEY, ENVOY_CERT, ENVOY_KEY] {
                let mode = std::fs::metadata(d.join(f)).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{f}");
            }
            assert_eq!(std::fs::metadata(&d).unwrap().permissions().mode() & 0o777, 0o700);
        }
        let before = std::fs::read(d.join(SIDECAR_KEY)).unwrap();
        assert!(!ensure(&d, false).unwrap());
        assert_eq!(std::fs::read(d.join(SIDECAR_KEY)).unwrap(), before);
        assert!(ensure(&d, true).unwrap());
        assert_ne!(std::fs::read(d.join(SIDECAR_KEY)).unwrap(), before);
        assert!(server_config(&d).is_ok());

        // The sidecar's half alone (a mounted Secret) is used as it is.
        let half = dir.path().join("half");
        std::fs::create_dir_all(&half).unwrap();
        for f in [CA_FILE, SIDECAR_CERT, SIDECAR_KEY] {
            std::fs::copy(d.join(f), half.join(f)).unwrap();
        }
        assert!(!ensure(&half, false).unwrap());
        assert!(!half.join(ENVOY_KEY).exists());
        assert_eq!(std::fs::read(half.join(SIDECAR_KEY)).unwrap(), std::fs::read(d.join(SIDECAR_KEY)).unwrap());
        assert!(server_config(&half).is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn private_files_are_never_written_through_a_planted_link() {
        let dir = tempfile::tempdir().unwrap();
        let loot = dir.path().join("loot");
        std::fs::write(&loot, "").unwrap();
        let target = dir.path().join("keys.yaml");
        // Links at the temporary names, this writer's and the plain `.tmp` one.
        for tmp in [temporary_path(&target), target.with_extension("tmp")] {
            std::os::unix::fs::symlink(&loot, tmp).unwrap();
        }
        let mut store = crate::keys::KeyFile::default();
        store.create("alice", None, std::time::SystemTime::now()).unwrap();
        store.save(&target).unwrap();
        assert_eq!(std::fs::read_to_string(&loot).unwrap(), "", "nothing written through the link");
        use std::os::unix::fs::PermissionsExt as _;
        let meta = std::fs::symlink_metadata(&target).unwrap();
        assert!(meta.file_type().is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert!(std::fs::read_to_string(&target).unwrap().contains("alice"));
    }
}
