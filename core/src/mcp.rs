//! MCP (Model Context Protocol) gateway logic shared by the filter and the
//! sidecar: the policy's `mcp` section, JSON-RPC messages, tool names as
//! clients see them and who may use which tool, and REST APIs described by
//! OpenAPI turned into tools. Pure: no I/O.

pub mod grants;
pub mod jsonrpc;
pub mod names;
pub mod openapi;
pub mod policy;
