//! An OpenAPI 3 document as MCP tools (filled in below).
