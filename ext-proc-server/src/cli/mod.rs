//! The `tollgate` command's work apart from serving requests: rendering
//! Envoy's configuration ([`envoy`]) and Kubernetes manifests ([`k8s`]),
//! packaging ([`package`]), installing and starting the components
//! ([`launch`], [`up`]), and the offline tools ([`scan`], [`embed_jsonl`]).
//! The binary itself is `main.rs` here.

pub mod embed_jsonl;
pub mod envoy;
pub mod k8s;
pub mod launch;
pub mod package;
pub mod scan;
pub mod up;
