//! OCI packaging of the filter: `tollgate package wasm --out DIR` writes the built
//! `tollgate_filter.wasm` as an [OCI image layout] that any registry client
//! (`skopeo copy oci:DIR:TAG docker://…`, `oras cp --from-oci-layout`, `crane push`)
//! can push, and that Istio's `WasmPlugin` (`url: oci://…`) and Envoy Gateway's
//! `EnvoyExtensionPolicy` (`wasm[].code.type: Image`) can pull.
//!
//! # Which image format, and why
//!
//! Istio and Envoy Gateway share one puller (Envoy Gateway's
//! `internal/wasm/imagefetcher.go` is a copy of Istio's `pkg/wasm/imagefetcher.go`).
//! It accepts three shapes, after the [Wasm image specification]:
//!
//! 1. a Docker image (`application/vnd.docker.distribution.manifest.v2+json`) whose
//!    last layer is a `…rootfs.diff.tar.gzip` holding `plugin.wasm`;
//! 2. the **compat** variant: an OCI image whose last layer is an
//!    `application/vnd.oci.image.layer.v1.tar+gzip` holding `plugin.wasm` — what
//!    `buildah copy plugin.wasm` + `buildah commit` produce, the format both projects'
//!    "Build a Wasm image" guides document;
//! 3. the **oci** variant: exactly two layers of the custom artifact types
//!    `application/vnd.module.wasm.content.layer.v1+wasm` (the raw module) and
//!    `application/vnd.module.wasm.config.v1+json`.
//!
//! We write (2). It is pulled by both Istio and Envoy Gateway, uses only the standard
//! OCI image media types (so every registry stores it and every image tool — skopeo,
//! crane, oras, podman, docker — copies and inspects it as an ordinary image), and the
//! manifest is an image manifest, not an index: the puller resolves an index by
//! platform (`linux/amd64` by default) and would not find a wasm one. (3) needs custom
//! media types that some registries reject, and its exact two-layer shape is only
//! understood by these pullers. The manifest carries the annotation
//! `module.wasm.image/variant: compat`, which the compat spec asks for on OCI
//! tar+gzip images.
//!
//! The image config is a valid OCI image config: `architecture: wasm`, `os: wasip1`
//! (the OCI spec takes these values from Go's `GOARCH`/`GOOS`, which name this
//! target `wasm`/`wasip1`), `rootfs.diff_ids` holding the digest of the uncompressed
//! layer. The pullers ignore the platform of an image manifest; runtimes that would
//! run the image as a container warn rather than refuse.
//!
//! # Reproducible
//!
//! The same module gives byte-identical blobs: the tar entry has mode 0644, uid/gid 0,
//! no user names and mtime = the creation time; gzip has no name and mtime 0; JSON
//! is written from structs in a fixed field order. The creation time is
//! [`PackageOptions::created`], else `$SOURCE_DATE_EPOCH`, else the Unix epoch.
//!
//! [OCI image layout]: https://github.com/opencontainers/image-spec/blob/main/image-layout.md
//! [Wasm image specification]: https://github.com/solo-io/wasm/blob/master/spec/spec-compat.md

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use flate2::{Compression, GzBuilder};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

/// `imageLayoutVersion` in the `oci-layout` file.
pub const IMAGE_LAYOUT_VERSION: &str = "1.0.0";
/// Media type of `index.json`.
pub const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Media type of the image manifest.
pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of the image config.
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of the single layer: a gzipped tar holding [`PLUGIN_FILE`].
pub const MEDIA_TYPE_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The file name Istio's and Envoy Gateway's pullers look for in the layer.
pub const PLUGIN_FILE: &str = "plugin.wasm";
/// `index.json` annotation naming the tag (`skopeo … oci:DIR:TAG`).
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// Manifest annotation marking the compat variant of the Wasm image spec.
pub const VARIANT_ANNOTATION: &str = "module.wasm.image/variant";
/// The image config's `architecture` (Go's `GOARCH` for WebAssembly).
pub const ARCHITECTURE: &str = "wasm";
/// The image config's `os` (Go's `GOOS` for WASI preview 1).
pub const OS: &str = "wasip1";
/// Tag used when none is given.
pub const DEFAULT_TAG: &str = "latest";
/// Latest creation time we accept (9999-12-31T23:59:59Z): RFC 3339 has four-digit years.
const MAX_EPOCH: u64 = 253_402_300_799;

/// How to package the module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageOptions {
    /// The tag, written as `org.opencontainers.image.ref.name` in `index.json`
    /// (`oci:DIR:TAG`); a Docker tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
    pub tag: String,
    /// Creation time in seconds since the Unix epoch (config `created`, manifest
    /// annotation, tar mtime). `None`: `$SOURCE_DATE_EPOCH` if set, else 0.
    pub created: Option<u64>,
    /// Extra manifest annotations (e.g. `org.opencontainers.image.source`); they
    /// override the defaults of the same name.
    pub annotations: BTreeMap<String, String>,
}

impl Default for PackageOptions {
    fn default() -> Self {
        PackageOptions { tag: DEFAULT_TAG.to_string(), created: None, annotations: BTreeMap::new() }
    }
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageReport {
    /// The layout directory.
    pub out: PathBuf,
    /// The tag in `index.json`.
    pub tag: String,
    /// `sha256:…` of the image manifest: what a registry calls the image digest, and
    /// (without `sha256:`) the value for a `WasmPlugin`'s `sha256` field.
    pub manifest_digest: String,
    pub manifest_size: u64,
    /// `sha256:…` of the image config.
    pub config_digest: String,
    pub config_size: u64,
    /// `sha256:…` of the gzipped layer.
    pub layer_digest: String,
    pub layer_size: u64,
    /// Hex SHA-256 of the module itself.
    pub wasm_sha256: String,
    pub wasm_size: u64,
}

impl fmt::Display for PackageReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "OCI image layout: {} (tag {})", self.out.display(), self.tag)?;
        writeln!(f, "  manifest {} ({} bytes)", self.manifest_digest, self.manifest_size)?;
        writeln!(f, "  config   {} ({} bytes)", self.config_digest, self.config_size)?;
        writeln!(f, "  layer    {} ({} bytes, {MEDIA_TYPE_LAYER})", self.layer_digest, self.layer_size)?;
        writeln!(f, "  {PLUGIN_FILE} sha256:{} ({} bytes)", self.wasm_sha256, self.wasm_size)?;
        write!(
            f,
            "push: skopeo copy oci:{}:{} docker://REGISTRY/tollgate-filter:{}",
            self.out.display(),
            self.tag,
            self.tag
        )
    }
}

/// The image, in memory: three blobs and the descriptor `index.json` points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub layer: Vec<u8>,
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
    /// The uncompressed layer's digest (`rootfs.diff_ids[0]`).
    pub diff_id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor<'a> {
    media_type: &'a str,
    digest: String,
    size: u64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

impl<'a> Descriptor<'a> {
    fn of(media_type: &'a str, blob: &[u8]) -> Self {
        Descriptor { media_type, digest: sha256_digest(blob), size: blob.len() as u64, annotations: BTreeMap::new() }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest<'a> {
    schema_version: u32,
    media_type: &'a str,
    config: Descriptor<'a>,
    layers: Vec<Descriptor<'a>>,
    annotations: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct ImageConfig<'a> {
    created: &'a str,
    architecture: &'a str,
    os: &'a str,
    rootfs: RootFs,
    history: Vec<History<'a>>,
}

#[derive(Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<String>,
}

#[derive(Serialize)]
struct History<'a> {
    created: &'a str,
    created_by: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Index<'a> {
    schema_version: u32,
    media_type: &'a str,
    manifests: Vec<serde_json::Value>,
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Checks a tag: Docker's `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`, so the same name works
/// in `oci:DIR:TAG` and in a registry.
pub fn validate_tag(tag: &str) -> anyhow::Result<()> {
    let ok = (1..=128).contains(&tag.len())
        && tag
            .bytes()
            .enumerate()
            .all(|(i, b)| b.is_ascii_alphanumeric() || b == b'_' || (i > 0 && (b == b'.' || b == b'-')));
    if ok {
        Ok(())
    } else {
        bail!("invalid tag {tag:?}: use 1 to 128 of [A-Za-z0-9_.-], not starting with '.' or '-'")
    }
}

/// The creation time: `opts.created`, else `$SOURCE_DATE_EPOCH`, else 0.
fn creation_epoch(opts: &PackageOptions) -> anyhow::Result<u64> {
    let epoch = match opts.created {
        Some(t) => t,
        None => match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(v) if !v.trim().is_empty() => v
                .trim()
                .parse::<u64>()
                .map_err(|e| anyhow!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds since 1970: {e}"))?,
            _ => 0,
        },
    };
    if epoch > MAX_EPOCH {
        bail!("creation time {epoch} is after the year 9999");
    }
    Ok(epoch)
}

fn rfc3339(epoch: u64) -> anyhow::Result<String> {
    let t = UNIX_EPOCH
        .checked_add(Duration::from_secs(epoch))
        .ok_or_else(|| anyhow!("creation time {epoch} out of range"))?;
    Ok(humantime::format_rfc3339_seconds(t).to_string())
}

/// A tar archive holding exactly `plugin.wasm` (regular file, 0644, root-owned, mtime `mtime`).
fn layer_tar(wasm: &[u8], mtime: u64) -> anyhow::Result<Vec<u8>> {
    let mut header = tar::Header::new_ustar();
    header.set_path(PLUGIN_FILE).context("tar header path")?;
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(wasm.len() as u64);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::with_capacity(wasm.len() + 2048));
    builder.append(&header, wasm).context("writing the layer tar")?;
    builder.into_inner().context("finishing the layer tar")
}

/// gzip with no file name, mtime 0 and OS "unknown": the same input gives the same bytes.
fn gzip(data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut enc = GzBuilder::new().mtime(0).operating_system(255).write(Vec::new(), Compression::best());
    enc.write_all(data).context("compressing the layer")?;
    enc.finish().context("compressing the layer")
}

/// Builds the image's blobs in memory.
pub fn build_image(wasm: &[u8], opts: &PackageOptions) -> anyhow::Result<Image> {
    if !wasm.starts_with(b"\0asm") {
        bail!("not a WebAssembly module (no \\0asm magic)");
    }
    let epoch = creation_epoch(opts)?;
    let created = rfc3339(epoch)?;

    let tar = layer_tar(wasm, epoch)?;
    let diff_id = sha256_digest(&tar);
    let layer = gzip(&tar)?;

    let config = serde_json::to_vec(&ImageConfig {
        created: &created,
        architecture: ARCHITECTURE,
        os: OS,
        rootfs: RootFs { kind: "layers", diff_ids: vec![diff_id.clone()] },
        history: vec![History { created: &created, created_by: "tollgate package wasm" }],
    })?;

    let mut annotations: BTreeMap<String, String> = [
        (VARIANT_ANNOTATION, "compat"),
        ("org.opencontainers.image.title", "tollgate-filter"),
        ("org.opencontainers.image.description", "Tollgate AI gateway: proxy-wasm filter for Envoy (plugin.wasm)"),
        ("org.opencontainers.image.licenses", env!("CARGO_PKG_LICENSE")),
        ("org.opencontainers.image.version", env!("CARGO_PKG_VERSION")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    annotations.insert("org.opencontainers.image.created".to_string(), created.clone());
    annotations.extend(opts.annotations.iter().map(|(k, v)| (k.clone(), v.clone())));

    let manifest = serde_json::to_vec(&Manifest {
        schema_version: 2,
        media_type: MEDIA_TYPE_MANIFEST,
        config: Descriptor::of(MEDIA_TYPE_CONFIG, &config),
        layers: vec![Descriptor::of(MEDIA_TYPE_LAYER, &layer)],
        annotations,
    })?;
    Ok(Image { layer, config, manifest, diff_id })
}

/// Reads `out/index.json` of an existing layout and keeps its entries for other tags.
fn other_tags(out: &Path, tag: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let layout_file = out.join("oci-layout");
    if !out.exists() {
        return Ok(Vec::new());
    }
    if !out.is_dir() {
        bail!("{} exists and is not a directory", out.display());
    }
    if !layout_file.is_file() {
        let empty = std::fs::read_dir(out).with_context(|| format!("reading {}", out.display()))?.next().is_none();
        if empty {
            return Ok(Vec::new());
        }
        bail!("{} is not empty and not an OCI image layout (no oci-layout file): choose another --out", out.display());
    }
    let index_path = out.join("index.json");
    if !index_path.is_file() {
        return Ok(Vec::new());
    }
    let text = std::fs::read(&index_path).with_context(|| format!("reading {}", index_path.display()))?;
    let index: serde_json::Value =
        serde_json::from_slice(&text).with_context(|| format!("{} is not JSON", index_path.display()))?;
    let manifests = index.get("manifests").and_then(|m| m.as_array()).cloned().unwrap_or_default();
    Ok(manifests
        .into_iter()
        .filter(|d| {
            d.pointer("/annotations").and_then(|a| a.get(REF_NAME_ANNOTATION)).and_then(|n| n.as_str()) != Some(tag)
        })
        .collect())
}

fn write_blob(blobs: &Path, blob: &[u8]) -> anyhow::Result<()> {
    let digest = sha256_digest(blob);
    let path = blobs.join(digest.trim_start_matches("sha256:"));
    if std::fs::read(&path).ok().is_some_and(|existing| existing == blob) {
        return Ok(());
    }
    std::fs::write(&path, blob).with_context(|| format!("writing {}", path.display()))
}

/// Writes file `name` in `dir` through a temporary file and a rename.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
}

/// Writes the module at `wasm` as an OCI image layout in `out` (created if missing):
/// `oci-layout`, `index.json` (the manifest tagged `opts.tag`) and
/// `blobs/sha256/<digest>` for the layer, the config and the manifest.
///
/// `out` must be missing, empty, or an existing layout; in a layout, entries for other
/// tags are kept and the one for `opts.tag` is replaced.
pub fn write_oci_layout(wasm: &Path, out: &Path, opts: &PackageOptions) -> anyhow::Result<PackageReport> {
    validate_tag(&opts.tag)?;
    let module = std::fs::read(wasm).with_context(|| format!("reading {}", wasm.display()))?;
    let image = build_image(&module, opts).with_context(|| format!("packaging {}", wasm.display()))?;
    let mut manifests = other_tags(out, &opts.tag)?;

    let blobs = out.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;
    for blob in [&image.layer, &image.config, &image.manifest] {
        write_blob(&blobs, blob)?;
    }
    let layout = serde_json::json!({ "imageLayoutVersion": IMAGE_LAYOUT_VERSION });
    write_atomic(out, "oci-layout", serde_json::to_string(&layout)?.as_bytes())?;

    let mut descriptor = Descriptor::of(MEDIA_TYPE_MANIFEST, &image.manifest);
    descriptor.annotations.insert(REF_NAME_ANNOTATION.to_string(), opts.tag.clone());
    manifests.push(serde_json::to_value(&descriptor)?);
    let index = Index { schema_version: 2, media_type: MEDIA_TYPE_INDEX, manifests };
    write_atomic(out, "index.json", &serde_json::to_vec(&index)?)?;

    Ok(PackageReport {
        out: out.to_path_buf(),
        tag: opts.tag.clone(),
        manifest_digest: descriptor.digest,
        manifest_size: descriptor.size,
        config_digest: sha256_digest(&image.config),
        config_size: image.config.len() as u64,
        layer_digest: sha256_digest(&image.layer),
        layer_size: image.layer.len() as u64,
        wasm_sha256: hex::encode(Sha256::digest(&module)),
        wasm_size: module.len() as u64,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::io::Read as _;

    /// A small valid-looking module: magic, version, then arbitrary bytes.
    fn module(len: usize) -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        m.extend((0..len).map(|i| (i * 31 % 251) as u8));
        m
    }

    fn fixed() -> PackageOptions {
        PackageOptions { created: Some(1_700_000_000), ..PackageOptions::default() }
    }

    fn package(wasm: &[u8], opts: &PackageOptions) -> (tempfile::TempDir, PathBuf, PackageReport) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("in.wasm");
        std::fs::write(&src, wasm).unwrap();
        let out = dir.path().join("layout");
        let report = write_oci_layout(&src, &out, opts).unwrap();
        (dir, out, report)
    }

    fn json(path: &Path) -> Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    /// Reads a blob named by `digest` and checks that its content hashes to the name.
    fn blob(out: &Path, digest: &str) -> Vec<u8> {
        let hex = digest.strip_prefix("sha256:").unwrap();
        let bytes = std::fs::read(out.join("blobs/sha256").join(hex)).unwrap();
        assert_eq!(sha256_digest(&bytes), digest, "blob content does not match its name");
        bytes
    }

    /// Every entry of a gzipped tar: (path, mode, uid, gid, mtime, content).
    fn entries(layer: &[u8]) -> Vec<(String, u32, u64, u64, u64, Vec<u8>)> {
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(layer));
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let h = e.header().clone();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                let path = e.path().unwrap().to_string_lossy().into_owned();
                (path, h.mode().unwrap(), h.uid().unwrap(), h.gid().unwrap(), h.mtime().unwrap(), data)
            })
            .collect()
    }

    #[test]
    fn index_manifest_config_layer_chain() {
        let wasm = module(5000);
        let (_dir, out, report) = package(&wasm, &fixed());

        assert_eq!(json(&out.join("oci-layout")), serde_json::json!({"imageLayoutVersion": "1.0.0"}));
        let index = json(&out.join("index.json"));
        assert_eq!(index["schemaVersion"], 2);
        assert_eq!(index["mediaType"], MEDIA_TYPE_INDEX);
        let entries = index["manifests"].as_array().unwrap();
        assert_eq!(entries.len(), 1);
        let d = &entries[0];
        assert_eq!(d["mediaType"], MEDIA_TYPE_MANIFEST);
        assert_eq!(d["annotations"][REF_NAME_ANNOTATION], "latest");
        assert_eq!(d["digest"], report.manifest_digest.as_str());

        let manifest_bytes = blob(&out, d["digest"].as_str().unwrap());
        assert_eq!(d["size"], manifest_bytes.len() as u64);
        assert_eq!(report.manifest_size, manifest_bytes.len() as u64);
        let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
        assert_eq!(manifest["schemaVersion"], 2);
        assert_eq!(manifest["mediaType"], MEDIA_TYPE_MANIFEST);
        assert_eq!(manifest["annotations"][VARIANT_ANNOTATION], "compat");
        assert_eq!(manifest["annotations"]["org.opencontainers.image.title"], "tollgate-filter");
        assert_eq!(manifest["annotations"]["org.opencontainers.image.created"], "2023-11-14T22:13:20Z");

        let c = &manifest["config"];
        assert_eq!(c["mediaType"], MEDIA_TYPE_CONFIG);
        assert_eq!(c["digest"], report.config_digest.as_str());
        let config_bytes = blob(&out, c["digest"].as_str().unwrap());
        assert_eq!(c["size"], config_bytes.len() as u64);
        let config: Value = serde_json::from_slice(&config_bytes).unwrap();
        assert_eq!(config["architecture"], ARCHITECTURE);
        assert_eq!(config["os"], OS);
        assert_eq!(config["created"], "2023-11-14T22:13:20Z");
        assert_eq!(config["rootfs"]["type"], "layers");

        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1, "the compat variant has exactly one layer");
        let l = &layers[0];
        assert_eq!(l["mediaType"], MEDIA_TYPE_LAYER);
        assert_eq!(l["digest"], report.layer_digest.as_str());
        let layer = blob(&out, l["digest"].as_str().unwrap());
        assert_eq!(l["size"], layer.len() as u64);
        assert_eq!(report.layer_size, layer.len() as u64);

        // diff_ids: the digest of the uncompressed layer.
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&layer[..]).read_to_end(&mut tar).unwrap();
        assert_eq!(config["rootfs"]["diff_ids"], serde_json::json!([sha256_digest(&tar)]));

        // Exactly three blobs: nothing dangling.
        assert_eq!(std::fs::read_dir(out.join("blobs/sha256")).unwrap().count(), 3);
        assert_eq!(report.wasm_sha256, hex::encode(Sha256::digest(&wasm)));
        assert_eq!(report.wasm_size, wasm.len() as u64);
    }

    #[test]
    fn layer_holds_exactly_plugin_wasm_byte_identical() {
        let wasm = module(70_000);
        let (_dir, out, report) = package(&wasm, &fixed());
        let got = entries(&blob(&out, &report.layer_digest));
        assert_eq!(got.len(), 1);
        let (path, mode, uid, gid, mtime, data) = &got[0];
        assert_eq!(path, PLUGIN_FILE);
        assert_eq!((*mode, *uid, *gid, *mtime), (0o644, 0, 0, 1_700_000_000));
        assert!(data == &wasm, "plugin.wasm differs from the input");
    }

    #[test]
    fn same_module_gives_byte_identical_layouts() {
        let wasm = module(20_000);
        let (_a, out_a, ra) = package(&wasm, &fixed());
        let (_b, out_b, rb) = package(&wasm, &fixed());
        assert_eq!(ra.manifest_digest, rb.manifest_digest);
        for name in ["oci-layout", "index.json"] {
            assert_eq!(std::fs::read(out_a.join(name)).unwrap(), std::fs::read(out_b.join(name)).unwrap(), "{name}");
        }
        for digest in [&ra.manifest_digest, &ra.config_digest, &ra.layer_digest] {
            assert_eq!(blob(&out_a, digest), blob(&out_b, digest));
        }
        // In memory too, and a different module or time gives a different image.
        assert_eq!(build_image(&wasm, &fixed()).unwrap(), build_image(&wasm, &fixed()).unwrap());
        assert_ne!(build_image(&wasm, &fixed()).unwrap().layer, build_image(&module(20_001), &fixed()).unwrap().layer);
        let later = PackageOptions { created: Some(1_700_000_001), ..fixed() };
        assert_ne!(build_image(&wasm, &fixed()).unwrap().manifest, build_image(&wasm, &later).unwrap().manifest);
    }

    #[test]
    fn gzip_header_has_no_name_and_no_time() {
        let image = build_image(&module(10), &fixed()).unwrap();
        // Magic, deflate, no flags (no FNAME), mtime 0, then XFL and OS 255.
        assert_eq!(&image.layer[..4], &[0x1f, 0x8b, 8, 0]);
        assert_eq!(&image.layer[4..8], &[0, 0, 0, 0]);
        assert_eq!(image.layer[9], 255);
    }

    #[test]
    fn tag_and_annotations_are_settable() {
        let mut opts = PackageOptions { tag: "v0.1.0".into(), ..fixed() };
        opts.annotations.insert("org.opencontainers.image.source".into(), "https://example.com/tollgate".into());
        opts.annotations.insert("org.opencontainers.image.title".into(), "my-filter".into());
        let (_dir, out, report) = package(&module(100), &opts);
        assert_eq!(report.tag, "v0.1.0");
        let index = json(&out.join("index.json"));
        assert_eq!(index["manifests"][0]["annotations"][REF_NAME_ANNOTATION], "v0.1.0");
        let manifest: Value = serde_json::from_slice(&blob(&out, &report.manifest_digest)).unwrap();
        assert_eq!(manifest["annotations"]["org.opencontainers.image.source"], "https://example.com/tollgate");
        assert_eq!(manifest["annotations"]["org.opencontainers.image.title"], "my-filter");
        assert_eq!(manifest["annotations"][VARIANT_ANNOTATION], "compat");
    }

    #[test]
    fn rewriting_a_layout_replaces_the_tag_and_keeps_others() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("in.wasm");
        let out = dir.path().join("layout");
        std::fs::write(&src, module(10)).unwrap();
        let v1 = write_oci_layout(&src, &out, &PackageOptions { tag: "v1".into(), ..fixed() }).unwrap();
        std::fs::write(&src, module(20)).unwrap();
        write_oci_layout(&src, &out, &fixed()).unwrap();
        let latest = write_oci_layout(&src, &out, &fixed()).unwrap();
        let index = json(&out.join("index.json"));
        let tags: Vec<(String, String)> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["annotations"][REF_NAME_ANNOTATION].as_str().unwrap().to_string(),
                    d["digest"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(tags, vec![("v1".into(), v1.manifest_digest), ("latest".into(), latest.manifest_digest)]);
    }

    #[test]
    fn refuses_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("in.wasm");
        std::fs::write(&src, module(10)).unwrap();

        // A directory that is neither empty nor a layout.
        let busy = dir.path().join("busy");
        std::fs::create_dir(&busy).unwrap();
        std::fs::write(busy.join("notes.txt"), "keep me").unwrap();
        let err = write_oci_layout(&src, &busy, &fixed()).unwrap_err().to_string();
        assert!(err.contains("not an OCI image layout"), "{err}");

        // An empty directory is fine.
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        write_oci_layout(&src, &empty, &fixed()).unwrap();

        for tag in ["", ".hidden", "-x", "a/b", "a:b", &"x".repeat(129)] {
            let opts = PackageOptions { tag: tag.to_string(), ..fixed() };
            assert!(write_oci_layout(&src, &dir.path().join("t"), &opts).is_err(), "tag {tag:?} accepted");
        }
        validate_tag("v1.2.3-rc_1").unwrap();

        let not_wasm = dir.path().join("x.wasm");
        std::fs::write(&not_wasm, b"#!/bin/sh\n").unwrap();
        let err = format!("{:#}", write_oci_layout(&not_wasm, &dir.path().join("n"), &fixed()).unwrap_err());
        assert!(err.contains("not a WebAssembly module"), "{err}");
        let err = format!(
            "{:#}",
            write_oci_layout(&dir.path().join("missing.wasm"), &dir.path().join("m"), &fixed()).unwrap_err()
        );
        assert!(err.contains("missing.wasm"), "{err}");
    }

    #[test]
    fn default_tag_and_epoch() {
        assert_eq!(PackageOptions::default().tag, "latest");
        assert_eq!(rfc3339(0).unwrap(), "1970-01-01T00:00:00Z");
        assert!(creation_epoch(&PackageOptions { created: Some(MAX_EPOCH + 1), ..fixed() }).is_err());
        assert_eq!(creation_epoch(&fixed()).unwrap(), 1_700_000_000);
    }
}
