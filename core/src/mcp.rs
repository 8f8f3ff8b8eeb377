//! MCP (Model Context Protocol) gateway logic shared by the filter and the
//! sidecar: JSON-RPC messages, tool names as clients see them, allowlists,
//! and REST APIs described by OpenAPI turned into tools. Pure: no I/O.

pub mod openapi;
