//! MCP (Model Context Protocol) gateway logic shared by the filter and the
//! sidecar: the policy's `mcp` section, JSON-RPC messages, tool names as
//! clients see them and who may use which tool, and REST APIs described by
//! OpenAPI turned into tools. Pure: no I/O.

pub mod grants;
pub mod jsonrpc;
pub mod names;
pub mod openapi;
pub mod policy;

/// Where each virtual server's OAuth protected-resource metadata (RFC 9728)
/// is served when identity comes from JWTs: `<this>/mcp/<name>`.
pub const RESOURCE_METADATA: &str = "/.well-known/oauth-protected-resource";

/// On MCP routes only: the verified JWT payload (base64url JSON), set by
/// Envoy's `jwt_authn` filter for the sidecar, which serves those routes as
/// an upstream and so sees no dynamic metadata.
pub const CLAIMS_HEADER: &str = "x-tollgate-jwt-claims";

/// On MCP routes only, where Envoy's JWT filter forwards single claims
/// rather than the payload (Envoy Gateway's `claimToHeaders`): the verified
/// token's consumer claim and team claim.
pub const CONSUMER_CLAIM_HEADER: &str = "x-tollgate-jwt-consumer";
pub const TEAM_CLAIM_HEADER: &str = "x-tollgate-jwt-team";
