//! Tollgate's proxy-wasm filter.
//!
//! A thin adapter from proxy-wasm callbacks to [`filter::Filter`], which holds
//! the per-request logic and is tested natively against a mock [`host::Host`].
//! The adapter is compiled for wasm32 only.

pub mod filter;
pub mod frames;
pub mod host;

#[cfg(target_arch = "wasm32")]
mod adapter;
