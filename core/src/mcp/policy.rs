//! The policy's `mcp` section and the `mcp` grants of teams and consumers.
//!
//! ```yaml
//! mcp:
//!   servers:
//!     crm:     {url: http://crm.internal:8080/mcp}
//!     github:  {url: https://mcp.example.com/mcp, keyEnv: GITHUB_MCP_TOKEN}
//!     weather: {openapi: specs/weather.yaml, baseUrl: http://weather.internal}
//!   virtualServers:
//!     support: {tools: ["crm/*", "weather/get_forecast"]}
//! teams:
//!   support: {mcp: {tools: ["crm/*", "weather/*"]}}
//! consumers:
//!   support-bot: {team: support, mcp: {tools: ["crm/lookup_customer"]}}
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::names::valid_server;
use crate::policy::values::BaseUrl;
use crate::Error;

/// Default cap on one JSON-RPC message (request or answer).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Default time an upstream server has to answer one message.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Default tools per page of a client's `tools/list`.
pub const DEFAULT_PAGE_SIZE: usize = 100;

/// The policy's `mcp` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct McpPolicy {
    /// Upstream MCP servers (and REST APIs served as MCP tools), by name.
    #[serde(default)]
    pub servers: BTreeMap<String, McpServer>,
    /// What clients connect to, at `/mcp/<name>`.
    #[serde(default)]
    pub virtual_servers: BTreeMap<String, VirtualServer>,
    /// Approved tool definitions: `server/tool` → SHA-256 (hex) of the
    /// definition (`tollgate mcp pins` prints them). A listed definition
    /// with another digest is quarantined.
    #[serde(default)]
    pub pins: BTreeMap<String, String>,
    /// Cap on one JSON-RPC message in either direction.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// How long an upstream server has to answer one message.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Tools per page of a client's `tools/list`.
    #[serde(default = "default_page_size")]
    pub page_size: usize,
    /// What to do with a tool result the prompt firewall would block
    /// (indirect injection).
    #[serde(default)]
    pub on_injection: OnInjection,
    /// What the gateway does with the requests servers send clients.
    #[serde(default)]
    pub server_requests: ServerRequests,
}

/// Requests servers send clients in the middle of a call: a question to
/// the user (`elicitation/create`), the client's roots (`roots/list`), a
/// completion of the client's model (`sampling/createMessage`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServerRequests {
    /// Questions pass to clients that support them, judged by the prompt
    /// firewall first (default `relay`).
    #[serde(default = "relay")]
    pub elicitation: Relay,
    /// Default `relay`.
    #[serde(default = "relay")]
    pub roots: Relay,
    /// Always refused: it would run the server's text on the agent's
    /// model, outside the firewall and the budget.
    #[serde(default)]
    pub sampling: Refuse,
    /// How long a server waits for the client's answer (a person may be
    /// answering); at most the MCP route's idle timeout.
    #[serde(default = "default_answer_ms")]
    pub answer_timeout_ms: u64,
}

/// Whether requests of a kind pass to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Relay {
    Relay,
    Refuse,
}

/// A kind of request that is always refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Refuse {
    #[default]
    Refuse,
}

fn relay() -> Relay {
    Relay::Relay
}

/// Default of `serverRequests.answerTimeoutMs`: two minutes.
pub const DEFAULT_ANSWER_MS: u64 = 120_000;
/// Longest `answerTimeoutMs`: the MCP routes' idle timeout.
pub const MAX_ANSWER_MS: u64 = 300_000;

fn default_answer_ms() -> u64 {
    DEFAULT_ANSWER_MS
}

impl Default for ServerRequests {
    fn default() -> Self {
        ServerRequests {
            elicitation: Relay::Relay,
            roots: Relay::Relay,
            sampling: Refuse::Refuse,
            answer_timeout_ms: DEFAULT_ANSWER_MS,
        }
    }
}

/// What to do with a tool result that reads as instructions to the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnInjection {
    /// Replace the whole result by an error result saying why (default).
    #[default]
    Block,
    /// Replace each text the firewall alone would block.
    Redact,
    /// Pass it on; the audit record and the metric say what was found.
    Flag,
}

impl Default for McpPolicy {
    fn default() -> Self {
        McpPolicy {
            servers: BTreeMap::new(),
            virtual_servers: BTreeMap::new(),
            pins: BTreeMap::new(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            page_size: DEFAULT_PAGE_SIZE,
            on_injection: OnInjection::default(),
            server_requests: ServerRequests::default(),
        }
    }
}

fn default_max_message_bytes() -> usize {
    DEFAULT_MAX_MESSAGE_BYTES
}

fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}

fn default_page_size() -> usize {
    DEFAULT_PAGE_SIZE
}

/// One upstream: an MCP server (`url`), or a REST API (`openapi` + `baseUrl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct McpServer {
    /// The server's Streamable HTTP endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// An OpenAPI 3 document (path relative to the policy file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openapi: Option<String>,
    /// Where the REST API of `openapi` is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Environment variable holding the credential the gateway sends
    /// (`Authorization: Bearer <value>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_env: Option<String>,
    /// File holding that credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
}

impl McpServer {
    /// The upstream URL: the MCP endpoint, or the REST API's base.
    pub fn endpoint(&self) -> Option<&str> {
        self.url.as_deref().or(self.base_url.as_deref())
    }
}

/// A virtual server: the tools its clients may see (`server/tool` or `server/*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VirtualServer {
    #[serde(default)]
    pub tools: Vec<String>,
}

/// A team's or consumer's `mcp` grant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct McpGrant {
    /// Tools it may use (`server/tool` or `server/*`); empty: none.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Calls per minute per tool (`server/tool` → calls) for each caller.
    #[serde(default)]
    pub calls_per_minute: BTreeMap<String, u64>,
}

impl McpPolicy {
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty() && self.virtual_servers.is_empty()
    }

    /// Check the section (and the grants that name its servers).
    pub fn validate<'a>(&self, grants: impl Iterator<Item = (String, &'a McpGrant)>) -> Result<(), Error> {
        let err = |path: String, message: String| Err(Error::Policy { path, message });
        let answer = self.server_requests.answer_timeout_ms;
        if answer == 0 || answer > MAX_ANSWER_MS {
            let message = format!("must be between 1 and {MAX_ANSWER_MS} (the MCP routes' idle timeout)");
            return err("mcp.serverRequests.answerTimeoutMs".into(), message);
        }
        for (name, s) in &self.servers {
            let at = format!("mcp.servers.{name}");
            if !valid_server(name) {
                return err(at, "server names use lower-case letters, digits and '-' only (at most 32)".into());
            }
            match (&s.url, &s.openapi, &s.base_url) {
                (Some(url), None, None) => {
                    if let Err(m) = BaseUrl::parse(url) {
                        return err(format!("{at}.url"), m);
                    }
                }
                (None, Some(_), Some(base)) => {
                    if let Err(m) = BaseUrl::parse(base) {
                        return err(format!("{at}.baseUrl"), m);
                    }
                }
                (None, Some(_), None) => return err(format!("{at}.baseUrl"), "required with `openapi`".into()),
                _ => return err(at, "set `url` (an MCP server) or `openapi` and `baseUrl` (a REST API)".into()),
            }
            if s.key_env.is_some() && s.key_file.is_some() {
                return err(format!("{at}.keyFile"), "set keyEnv or keyFile, not both".into());
            }
        }
        for (name, vs) in &self.virtual_servers {
            if !valid_server(name) {
                return err(
                    format!("mcp.virtualServers.{name}"),
                    "virtual server names use lower-case letters, digits and '-' only (at most 32)".into(),
                );
            }
            self.check_patterns(&format!("mcp.virtualServers.{name}.tools"), &vs.tools)?;
        }
        for (at, grant) in grants {
            self.check_patterns(&format!("{at}.tools"), &grant.tools)?;
            for (tool, n) in &grant.calls_per_minute {
                self.check_patterns(&format!("{at}.callsPerMinute"), std::slice::from_ref(tool))?;
                if *n == 0 {
                    return err(format!("{at}.callsPerMinute.{tool}"), "must be positive".into());
                }
            }
        }
        for (tool, digest) in &self.pins {
            self.check_patterns("mcp.pins", std::slice::from_ref(tool))?;
            if tool.contains('*') || digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return err(
                    format!("mcp.pins.{tool}"),
                    "one tool (`server/tool`) and a SHA-256 digest (64 hex digits)".into(),
                );
            }
        }
        if self.max_message_bytes == 0 || self.max_message_bytes > crate::policy::values::MAX_BUFFER_BYTES {
            return err("mcp.maxMessageBytes".into(), "must be between 1 and 64 MiB".into());
        }
        if self.timeout_ms == 0 {
            return err("mcp.timeoutMs".into(), "must be positive".into());
        }
        if !(1..=1000).contains(&self.page_size) {
            return err("mcp.pageSize".into(), "must be between 1 and 1000".into());
        }
        Ok(())
    }

    /// Each pattern is `server/tool` or `server/*` naming a server of the section.
    fn check_patterns(&self, at: &str, patterns: &[String]) -> Result<(), Error> {
        for p in patterns {
            let Some((server, tool)) = p.split_once('/') else {
                return Err(Error::Policy {
                    path: at.into(),
                    message: format!("`{p}`: write `server/tool` or `server/*`"),
                });
            };
            if !self.servers.contains_key(server) {
                return Err(Error::Policy {
                    path: at.into(),
                    message: format!("`{p}`: no server `{server}` in mcp.servers"),
                });
            }
            if tool.is_empty() {
                return Err(Error::Policy { path: at.into(), message: format!("`{p}`: the tool is missing") });
            }
        }
        Ok(())
    }
}
