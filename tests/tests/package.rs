//! `tollgate package wasm`: the OCI image layout written for the built filter is read
//! back by an independent implementation, skopeo (containers/image, Go), the same
//! kind of client that pushes it to a registry. skopeo inspects it, parses its
//! config and copies it into a layout of its own (`dir:`); GNU tar then unpacks the
//! copied layer, and the `plugin.wasm` inside must be byte-identical to the built
//! filter.
//!
//! Needs `skopeo` (Debian package, installed by scripts/install.sh) and the built
//! filter (`TOLLGATE_WASM`, else `target/wasm32-wasip1/wasm-release/tollgate_filter.wasm`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tollgate_ext_proc::launch;
use tollgate_ext_proc::package::{
    write_oci_layout, PackageOptions, MEDIA_TYPE_CONFIG, MEDIA_TYPE_LAYER, MEDIA_TYPE_MANIFEST, PLUGIN_FILE,
};

/// The built filter, found as `tollgate_e2e::paths()` finds it (without needing Envoy
/// or the `tollgate` binary, which this test does not run).
fn built_wasm() -> PathBuf {
    let wasm = match std::env::var_os("TOLLGATE_WASM") {
        Some(p) => PathBuf::from(p),
        None => {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
            launch::target_dir(root).join("wasm32-wasip1").join("wasm-release").join(launch::WASM_FILE)
        }
    };
    assert!(wasm.is_file(), "no filter at {}: run scripts/test.sh or set TOLLGATE_WASM", wasm.display());
    wasm
}

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tollgate-package-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a tool; a missing tool fails with how to install it, a failing one with its stderr.
fn run(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run {program} ({e}): install it with scripts/install.sh (Debian package `{program}`)")
    });
    assert!(
        out.status.success(),
        "{program} {} failed ({}):\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// skopeo, with the signature policy out of the way: these copies are local
/// (layout to directory) and involve no signatures, so the host's
/// /etc/containers/policy.json must not decide the outcome.
fn skopeo(args: &[&str]) -> Output {
    let mut all = vec!["--insecure-policy"];
    all.extend_from_slice(args);
    run("skopeo", &all)
}

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

#[test]
fn skopeo_reads_back_the_layout_and_the_module_is_byte_identical() {
    let wasm_path = built_wasm();
    let wasm = std::fs::read(&wasm_path).unwrap();
    let scratch = Scratch::new();
    let layout = scratch.0.join("layout");
    let report = write_oci_layout(&wasm_path, &layout, &PackageOptions::default()).unwrap();
    assert_eq!(report.tag, "latest");
    assert_eq!(report.wasm_sha256, hex(&Sha256::digest(&wasm)));
    let src = format!("oci:{}:latest", layout.display());

    // The manifest skopeo resolves from index.json by tag is ours, byte for byte.
    let raw = skopeo(&["inspect", "--raw", &src]).stdout;
    assert_eq!(sha256_digest(&raw), report.manifest_digest, "skopeo resolved another manifest");
    let manifest = json(&raw);
    assert_eq!(manifest["mediaType"], MEDIA_TYPE_MANIFEST);
    assert_eq!(manifest["config"]["mediaType"], MEDIA_TYPE_CONFIG);
    assert_eq!(manifest["layers"].as_array().map(Vec::len), Some(1));
    assert_eq!(manifest["layers"][0]["mediaType"], MEDIA_TYPE_LAYER);

    // Without --raw skopeo also parses the image config.
    let inspect = json(&skopeo(&["inspect", &src]).stdout);
    assert_eq!(inspect["Digest"], report.manifest_digest.as_str());
    assert_eq!(inspect["Architecture"], "wasm");
    assert_eq!(inspect["Os"], "wasip1");
    assert_eq!(inspect["Layers"], serde_json::json!([report.layer_digest]));
    assert_eq!(inspect["Created"], "1970-01-01T00:00:00Z", "no SOURCE_DATE_EPOCH: the epoch");
    let config = json(&skopeo(&["inspect", "--config", "--raw", &src]).stdout);
    assert_eq!(config["rootfs"]["type"], "layers");

    // skopeo copies the image into a layout of its own, verifying every blob's digest
    // and size on the way; it needs no edit, so the manifest arrives unchanged.
    let copied = scratch.0.join("copied");
    skopeo(&["copy", &src, &format!("dir:{}", copied.display())]);
    let copied_manifest = std::fs::read(copied.join("manifest.json")).unwrap();
    assert_eq!(sha256_digest(&copied_manifest), report.manifest_digest);
    let layer_file = copied.join(report.layer_digest.trim_start_matches("sha256:"));
    let layer = std::fs::read(&layer_file).unwrap();
    assert_eq!(sha256_digest(&layer), report.layer_digest);
    assert_eq!(layer.len() as u64, report.layer_size);

    // GNU tar unpacks the copied layer: exactly plugin.wasm, identical to the build.
    let listing = run("tar", &["-tzf", layer_file.to_str().unwrap()]).stdout;
    assert_eq!(String::from_utf8_lossy(&listing).lines().collect::<Vec<_>>(), vec![PLUGIN_FILE]);
    let extracted = scratch.0.join("extracted");
    std::fs::create_dir(&extracted).unwrap();
    run("tar", &["-xzf", layer_file.to_str().unwrap(), "-C", extracted.to_str().unwrap()]);
    let plugin = std::fs::read(extracted.join(PLUGIN_FILE)).unwrap();
    assert_eq!(plugin.len(), wasm.len(), "plugin.wasm has another size than the built filter");
    assert!(plugin == wasm, "plugin.wasm differs from the built filter");
}

#[test]
fn a_tagged_layout_is_reproducible_and_found_by_its_tag() {
    let wasm_path = built_wasm();
    let scratch = Scratch::new();
    let opts = PackageOptions { tag: "v0.1.0".to_string(), created: Some(1_700_000_000), ..PackageOptions::default() };
    let a = write_oci_layout(&wasm_path, &scratch.0.join("a"), &opts).unwrap();
    let b = write_oci_layout(&wasm_path, &scratch.0.join("b"), &opts).unwrap();
    assert_eq!(a.manifest_digest, b.manifest_digest, "the same filter gave two images");
    for name in ["index.json", "oci-layout"] {
        assert_eq!(
            std::fs::read(scratch.0.join("a").join(name)).unwrap(),
            std::fs::read(scratch.0.join("b").join(name)).unwrap()
        );
    }

    let inspect = json(&skopeo(&["inspect", &format!("oci:{}:v0.1.0", scratch.0.join("a").display())]).stdout);
    assert_eq!(inspect["Digest"], a.manifest_digest.as_str());
    assert_eq!(inspect["Created"], "2023-11-14T22:13:20Z");
    // No other tag was written.
    let missing = Command::new("skopeo")
        .args(["--insecure-policy", "inspect", "--raw", &format!("oci:{}:latest", scratch.0.join("a").display())])
        .output()
        .unwrap();
    assert!(!missing.status.success(), "skopeo found a `latest` tag that was never written");
}
