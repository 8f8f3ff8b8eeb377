//! The property checks the fuzz targets run (shared with the corpus tests
//! in `core/tests/fuzz_corpus.rs`, `wasm-filter/tests/fuzz_corpus.rs` and
//! `ext-proc-server/tests/fuzz_corpus.rs`).

#[path = "../props/core.rs"]
pub mod props;

#[path = "../props/filter.rs"]
pub mod filter;

#[path = "../props/sidecar.rs"]
pub mod sidecar;
