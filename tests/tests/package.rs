//! `tollgate package wasm`: the OCI image layout written for the built filter is read
//! back by an independent implementation, skopeo (containers/image, Go), the same
//! kind of client that pushes it to a registry. skopeo inspects it, parses its
//! config and copies it into a layout of its own (`dir:`); GNU tar then unpacks the
//! copied layer, and the `plugin.wasm` inside must be byte-identical to the built
//! filter.
//!
//! Needs `skopeo` (Debian package, installed by scripts/install.sh) and the built
//! filter (`TOLLGATE_WASM`, else `target/wasm32-wasip1/wasm-release/tollgate_filter.wasm`).
//!
//! `tollgate package sidecar`: the container image written for the built binary is
//! inspected and copied by skopeo, its layers are unpacked by GNU tar into an empty
//! root file system, and the sidecar runs there (`chroot`, as the image's non-root
//! user and with the image's environment) with the embedding model from the image:
//! it answers its health endpoints, so the image holds everything it needs. Needs
//! the built `tollgate` (`TOLLGATE_BIN`, else `target/debug/tollgate`), the embedding
//! model (scripts/install.sh) and root, or user namespaces for `unshare`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;
use sha2::{Digest as _, Sha256};
use std::time::Duration;
use tollgate_ext_proc::cli::launch::{self, http_get, wait_ready, Proc};
use tollgate_ext_proc::cli::package::{
    oci_architecture, write_oci_layout, PackageOptions, MEDIA_TYPE_CONFIG, MEDIA_TYPE_LAYER, MEDIA_TYPE_MANIFEST,
    PLUGIN_FILE, SIDECAR_BINARY, SIDECAR_MODEL_DIR, SIDECAR_UID,
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
    assert_eq!(report.payload.sha256, hex(&Sha256::digest(&wasm)));
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
    assert_eq!(inspect["Layers"], serde_json::json!([report.layers[0].digest]));
    assert_eq!(inspect["Created"], "1970-01-01T00:00:00Z", "no SOURCE_DATE_EPOCH: the epoch");
    let config = json(&skopeo(&["inspect", "--config", "--raw", &src]).stdout);
    assert_eq!(config["rootfs"]["type"], "layers");

    // skopeo copies the image into a layout of its own, verifying every blob's digest
    // and size on the way; it needs no edit, so the manifest arrives unchanged.
    let copied = scratch.0.join("copied");
    skopeo(&["copy", &src, &format!("dir:{}", copied.display())]);
    let copied_manifest = std::fs::read(copied.join("manifest.json")).unwrap();
    assert_eq!(sha256_digest(&copied_manifest), report.manifest_digest);
    let layer_file = copied.join(report.layers[0].digest.trim_start_matches("sha256:"));
    let layer = std::fs::read(&layer_file).unwrap();
    assert_eq!(sha256_digest(&layer), report.layers[0].digest);
    assert_eq!(layer.len() as u64, report.layers[0].size);

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

/// The built `tollgate`, found as `tollgate_e2e::paths()` finds it (without needing
/// Envoy or the filter, which this test does not run).
fn built_tollgate() -> PathBuf {
    if let Some(p) = std::env::var_os("TOLLGATE_BIN") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let target = launch::target_dir(root);
    ["debug", "release"]
        .iter()
        .map(|profile| target.join(profile).join("tollgate"))
        .find(|p| p.is_file())
        .expect("no tollgate binary: run `cargo build -p tollgate-ext-proc --bin tollgate` or set TOLLGATE_BIN")
}

/// How to run a program inside `rootfs`: `chroot` as root (as `user`), else in a user
/// namespace that maps us to root. Neither working fails the test: the image must be
/// shown to run, not assumed to.
fn chroot_prefix(rootfs: &Path, user: &str) -> Vec<String> {
    let root = rootfs.display().to_string();
    // Absolute paths: the commands run with the image's environment, whose PATH has no sbin.
    let which = |name: &str| {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("no `{name}` command: install it (Debian package coreutils / util-linux)"))
            .display()
            .to_string()
    };
    let chroot = which("chroot");
    let probe = |prefix: &[String]| {
        Command::new(&prefix[0])
            .args(&prefix[1..])
            .args([SIDECAR_BINARY, "--version"])
            .env_clear()
            .output()
            .map(|o| (o.status.success(), String::from_utf8_lossy(&o.stderr).into_owned()))
            .unwrap_or_else(|e| (false, e.to_string()))
    };
    let as_root: Vec<String> = vec![chroot.clone(), format!("--userspec={user}"), root.clone()];
    let (ok, root_err) = probe(&as_root);
    if ok {
        return as_root;
    }
    let in_namespace: Vec<String> =
        [&which("unshare"), "--user", "--map-root-user", &chroot, &root].iter().map(|s| s.to_string()).collect();
    let (ok, ns_err) = probe(&in_namespace);
    if ok {
        return in_namespace;
    }
    panic!(
        "cannot run the image's binary in {root}: `chroot` needs root ({}) and `unshare --user --map-root-user` needs \
         unprivileged user namespaces ({}); run this test as root or enable user namespaces \
         (sysctl kernel.unprivileged_userns_clone=1)",
        root_err.trim(),
        ns_err.trim()
    );
}

/// Runs `prefix… tollgate ARGS` in the image with the image's environment only.
fn in_image(prefix: &[String], env: &[(String, String)], args: &[&str]) -> Output {
    let out = Command::new(&prefix[0])
        .args(&prefix[1..])
        .arg(SIDECAR_BINARY)
        .args(args)
        .env_clear()
        .envs(env.iter().cloned())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tollgate {} in the image failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sidecar_image_is_self_contained_and_serves_from_an_empty_root() {
    let tollgate = built_tollgate();
    let model = tollgate_ext_proc::embed::default_model_dir()
        .filter(|d| d.is_dir())
        .expect("no embedding model: run scripts/install.sh or set TOLLGATE_EMBED_MODEL");
    let scratch = Scratch::new();
    let layout = scratch.0.join("layout");
    // The image carries the built sidecar without its debug information (a
    // debug build is mostly that): the same code in an eighth of the space,
    // three times over (layer, copy, extracted root).
    let binary = scratch.0.join("tollgate");
    run("strip", &["--strip-debug", "-o", binary.to_str().unwrap(), tollgate.to_str().unwrap()]);

    let printed = run(
        tollgate.to_str().unwrap(),
        &[
            "package",
            "sidecar",
            "--out",
            layout.to_str().unwrap(),
            "--binary",
            binary.to_str().unwrap(),
            "--tag",
            "e2e",
            "--embed-model",
            model.to_str().unwrap(),
        ],
    )
    .stdout;
    let printed = String::from_utf8(printed).unwrap();
    let manifest_digest = printed
        .lines()
        .find_map(|l| l.trim().strip_prefix("manifest "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no manifest digest in:\n{printed}"))
        .to_string();
    assert!(
        printed.contains(&format!("push: skopeo copy oci:{}:e2e docker://REGISTRY/tollgate:e2e", layout.display())),
        "{printed}"
    );
    let src = format!("oci:{}:e2e", layout.display());

    // skopeo finds the tag, parses the manifest and the config.
    let raw = skopeo(&["inspect", "--raw", &src]).stdout;
    assert_eq!(sha256_digest(&raw), manifest_digest);
    let manifest = json(&raw);
    assert_eq!(manifest["mediaType"], MEDIA_TYPE_MANIFEST);
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3, "runtime, model, binary");
    assert!(layers.iter().all(|l| l["mediaType"] == MEDIA_TYPE_LAYER));
    let inspect = json(&skopeo(&["inspect", &src]).stdout);
    assert_eq!(inspect["Digest"], manifest_digest.as_str());
    assert_eq!(inspect["Architecture"], oci_architecture(std::env::consts::ARCH).unwrap());
    assert_eq!(inspect["Os"], "linux");
    let config = json(&skopeo(&["inspect", "--config", "--raw", &src]).stdout);
    let c = &config["config"];
    assert_eq!(c["Entrypoint"], serde_json::json!([SIDECAR_BINARY]));
    assert_eq!(c["Cmd"][0], "serve");
    assert_eq!(c["User"], format!("{SIDECAR_UID}:{SIDECAR_UID}"));
    assert_eq!(c["WorkingDir"], "/var/lib/tollgate");
    assert!(c["ExposedPorts"].get("10001/tcp").is_some(), "{c}");
    let env: Vec<(String, String)> = c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let (k, v) = e.as_str().unwrap().split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect();
    assert!(env.contains(&("TOLLGATE_EMBED_MODEL".into(), SIDECAR_MODEL_DIR.into())), "{env:?}");

    // skopeo copies it, checking every blob against its digest and size.
    let copied = scratch.0.join("copied");
    skopeo(&["copy", &src, &format!("dir:{}", copied.display())]);
    assert_eq!(sha256_digest(&std::fs::read(copied.join("manifest.json")).unwrap()), manifest_digest);

    // GNU tar unpacks the copied layers, bottom first, into an empty root; each
    // uncompressed layer is its diff_id.
    let rootfs = scratch.0.join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    for (layer, diff_id) in layers.iter().zip(config["rootfs"]["diff_ids"].as_array().unwrap()) {
        let file = copied.join(layer["digest"].as_str().unwrap().trim_start_matches("sha256:"));
        let file = file.to_str().unwrap();
        let sum = run("sh", &["-c", &format!("gzip -dc '{file}' | sha256sum")]).stdout;
        let sum = String::from_utf8_lossy(&sum);
        assert_eq!(format!("sha256:{}", sum.split_whitespace().next().unwrap()), diff_id.as_str().unwrap());
        run("tar", &["-xzf", file, "-C", rootfs.to_str().unwrap()]);
    }
    let inside = rootfs.join(SIDECAR_BINARY.trim_start_matches('/'));
    run("cmp", &[inside.to_str().unwrap(), binary.to_str().unwrap()]);

    // The binary runs from the image alone, as the image's user and environment.
    let prefix = chroot_prefix(&rootfs, &format!("{SIDECAR_UID}:{SIDECAR_UID}"));
    let version = in_image(&prefix, &env, &["--version"]).stdout;
    assert!(String::from_utf8_lossy(&version).starts_with("tollgate "), "{}", String::from_utf8_lossy(&version));

    // A policy where the rendered Deployment puts it, with its state in the data
    // directory, the semantic cache on (the model comes from the image).
    let grpc = tollgate_e2e::test_port().unwrap();
    let admin = tollgate_e2e::test_port().unwrap();
    let policy = serde_json::json!({
        // Its certificates for Envoy made in the data directory (a mounted
        // Secret in Kubernetes).
        "sidecar": {"grpcPort": grpc, "adminPort": admin, "tls": {"dir": "/var/lib/tollgate/tls"}},
        "providers": {"mock": {"kind": "mock", "baseUrl": "http://127.0.0.1:9"}},
        "cache": {"enabled": true, "dir": "/var/lib/tollgate/cache"},
        "audit": {"dir": "/var/lib/tollgate/audit"},
        "limits": {"dir": "/var/lib/tollgate/state"},
    });
    let policy_in_image = c["Cmd"][2].as_str().unwrap().to_string();
    assert_eq!(policy_in_image, "/etc/tollgate/policy/policy.json");
    std::fs::write(rootfs.join(policy_in_image.trim_start_matches('/')), serde_json::to_vec_pretty(&policy).unwrap())
        .unwrap();
    in_image(&prefix, &env, &["check", "--policy", &policy_in_image]);

    // `tollgate serve` as the image's Cmd runs it, on loopback test ports.
    let grpc_addr = format!("127.0.0.1:{grpc}");
    let admin_addr = format!("127.0.0.1:{admin}");
    let log = scratch.0.join("sidecar.log");
    let mut cmd = tokio::process::Command::new(&prefix[0]);
    cmd.args(&prefix[1..])
        .arg(SIDECAR_BINARY)
        .args(["serve", "--policy", &policy_in_image, "--grpc", &grpc_addr, "--admin", &admin_addr])
        .env_clear()
        .envs(env.iter().cloned());
    let mut sidecar = Proc::spawn("sidecar in the image", &mut cmd, &log).unwrap();
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    if let Err(e) = wait_ready(&mut sidecar, &admin_addr, "/healthz", Duration::from_secs(120)).await {
        panic!("{e:#}\n{}", log_text());
    }
    for path in ["/readyz", "/metrics"] {
        let (status, _) = http_get(&admin_addr, path).await.unwrap();
        assert_eq!(status, 200, "{path}\n{}", log_text());
    }
    tokio::net::TcpStream::connect(&grpc_addr).await.unwrap_or_else(|e| panic!("gRPC port: {e}\n{}", log_text()));
    // The embedding model loads from the image (TOLLGATE_EMBED_MODEL).
    let mut loaded = false;
    for _ in 0..100 {
        if log_text().contains("semantic cache tier on") {
            loaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(loaded, "the semantic cache did not load the image's model:\n{}", log_text());
    // Its state went to the data directory, writable by the image's user.
    for dir in ["audit", "cache", "state", "tls"] {
        assert!(rootfs.join("var/lib/tollgate").join(dir).is_dir(), "no /var/lib/tollgate/{dir}\n{}", log_text());
    }
    assert!(sidecar.exited().is_none(), "{}", log_text());
    drop(sidecar);
}
