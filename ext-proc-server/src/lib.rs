//! Tollgate's ext_proc sidecar and the `tollgate` command.
//!
//! - [`processor`]: per-phase handlers over a per-stream state (no sockets);
//! - [`server`]: the tonic `ExternalProcessor` service, health and admin HTTP;
//! - [`envoy`]: renders Envoy's bootstrap and the filter configuration from the policy;
//! - [`launch`]: finds, installs and starts the components (`tollgate up`, tests).

pub mod audit;
pub mod auditing;
pub mod aws;
pub mod budget;
pub mod cache;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod embed;
pub mod extproc;
pub mod home;
pub mod identity;
pub mod keys;
pub mod limits;
pub mod mcp;
pub mod meter;
pub mod metrics;
pub mod otel;
pub mod processor;
pub mod review;
pub mod server;
pub mod shared;
pub mod strategy;
pub mod stream_usage;
pub mod tls;
pub mod tokens;
pub mod translation;
pub mod upstream;
pub mod vertex;
