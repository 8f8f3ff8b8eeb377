//! Tollgate's pure logic, shared by the wasm filter and the ext_proc sidecar.
//!
//! Nothing here performs I/O or reads the clock: callers pass bytes in and get
//! values (or a [`Error`]) back. The crate builds for the host and for
//! `wasm32-wasip1`.

pub mod access;
pub mod api;
pub mod cache;
pub mod error;
pub mod eventstream;
pub mod filter_config;
pub mod firewall;
pub mod guard;
pub mod headers;
pub mod learn;
pub mod mcp;
pub mod moderation;
pub mod pii;
pub mod policy;
pub mod pricing;
pub mod report;
pub mod request;
pub mod restore;
pub mod sse;
pub mod translate;
pub mod usage;

pub use api::{ApiFamily, ApiKind};
pub use error::{error_body, Error};
pub use request::{parse_request, LlmRequest, TextPart, ToolDef};
pub use sse::{SseEvent, SseParser};
pub use usage::{usage_from_json, StreamUsage, Usage};
