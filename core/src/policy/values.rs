//! The policy's plain values that sections elsewhere in the crate embed as
//! well: the fail mode (`access`), the buffer bounds and the base URL
//! (`mcp`). They depend on nothing of the crate, so those modules can use
//! them while the policy embeds their sections.

use serde::{Deserialize, Serialize};

/// Default cap on a buffered request body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Default cap on the response bytes the filter keeps to count usage.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// Default cap on a single server-sent event.
pub const DEFAULT_MAX_SSE_EVENT_BYTES: usize = 256 * 1024;
/// Default bound on one request's placeholder map.
pub const DEFAULT_MAX_MASK_BYTES: usize = 64 * 1024;
/// Hard ceiling for any configurable buffer.
pub const MAX_BUFFER_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    /// Let the request through uninspected.
    Open,
    /// Reject the request.
    Closed,
}

/// A parsed provider base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash ("" for none).
    pub path: String,
}

impl BaseUrl {
    /// `host[:port]` as the provider expects it in `Host` (no default port).
    pub fn authority(&self) -> String {
        let default_port = if self.tls { 443 } else { 80 };
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        if self.port == default_port {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The URL of `path` (which starts with `/`) under this base.
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}{path}", if self.tls { "https" } else { "http" }, self.authority(), self.path)
    }

    pub fn parse(url: &str) -> Result<BaseUrl, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(format!("`{url}` must start with http:// or https://"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.contains('@') || path.contains(['?', '#']) {
            return Err(format!("`{url}` must not carry credentials, a query or a fragment"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !p.contains(']') => {
                let port = p.parse::<u16>().map_err(|_| format!("`{url}` has an invalid port `{p}`"))?;
                (h, port)
            }
            _ => (authority, if tls { 443 } else { 80 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || port == 0 {
            return Err(format!("`{url}` has no host or port"));
        }
        Ok(BaseUrl { tls, host: host.to_string(), port, path: path.to_string() })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn base_url_parsing() {
        let u = BaseUrl::parse("https://api.openai.com").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port, u.path.as_str()), (true, "api.openai.com", 443, ""));
        let u = BaseUrl::parse("http://127.0.0.1:8000/proxy/").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port, u.path.as_str()), (false, "127.0.0.1", 8000, "/proxy"));
        let u = BaseUrl::parse("http://[::1]:8080").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 8080));
        assert!(BaseUrl::parse("http://user@x").is_err());
        assert!(BaseUrl::parse("http://:80").is_err());
    }
}
