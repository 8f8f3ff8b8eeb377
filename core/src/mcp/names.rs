//! Tool names as clients see them.
//!
//! A virtual server joins the tools of several upstream servers, so a client
//! sees `<server>_<tool>`. Server names match `[a-z0-9-]+` (no `_`), so the
//! first `_` always separates the server from the tool. OpenAI's and
//! Anthropic's function calling accept `^[a-zA-Z0-9_-]{1,64}$`; an upstream
//! tool whose name would not fit (other characters, or too long) gets a
//! stable form instead: its name with every other character replaced by `_`,
//! cut to fit, then `_` and the first 8 hex digits of the SHA-256 of the
//! upstream name. Never a silent truncation: two upstream names always give
//! two client names unless their digests' prefixes collide, and the caller
//! of [`exposed`] hides both tools of a listing when that happens.

use sha2::{Digest, Sha256};

/// The longest tool name function calling accepts.
pub const MAX_NAME: usize = 64;
/// The longest server name, leaving room for a tool's name.
pub const MAX_SERVER_NAME: usize = 32;
/// Hex digits of the digest suffix.
const SUFFIX_HEX: usize = 8;

/// Whether `name` is a valid server name: `[a-z0-9-]{1,32}`.
pub fn valid_server(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SERVER_NAME
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Whether function calling accepts `name`: `^[a-zA-Z0-9_-]{1,64}$`.
pub fn valid_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The name a client sees for `tool` of `server`.
pub fn exposed(server: &str, tool: &str) -> String {
    let plain = format!("{server}_{tool}");
    if valid_tool_name(&plain) {
        return plain;
    }
    let digest = Sha256::digest(tool.as_bytes());
    let mut suffix = String::with_capacity(SUFFIX_HEX);
    for b in digest.iter().take(SUFFIX_HEX / 2) {
        suffix.push_str(&format!("{b:02x}"));
    }
    // server + '_' + kept + '_' + suffix <= MAX_NAME
    let room = MAX_NAME.saturating_sub(server.len() + 2 + SUFFIX_HEX);
    let kept: String = tool
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .take(room)
        .collect();
    format!("{server}_{kept}_{suffix}")
}

/// The server part of a client's tool name, and the rest: `crm_lookup` →
/// (`crm`, `lookup`). The rest is the upstream name only when the name was
/// not rewritten; the caller looks the name up in the server's listing.
pub fn split(exposed: &str) -> Option<(&str, &str)> {
    let (server, rest) = exposed.split_once('_')?;
    (valid_server(server) && !rest.is_empty()).then_some((server, rest))
}

/// `server/tool`, the form grants and pins use.
pub fn qualified(server: &str, tool: &str) -> String {
    format!("{server}/{tool}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_joined() {
        assert_eq!(exposed("crm", "lookup_customer"), "crm_lookup_customer");
        assert_eq!(split("crm_lookup_customer"), Some(("crm", "lookup_customer")));
        assert_eq!(split("my-crm_get-x"), Some(("my-crm", "get-x")));
        assert_eq!(split("nounderscore"), None);
        assert_eq!(split("CRM_x"), None);
    }

    #[test]
    fn names_that_do_not_fit_get_a_stable_digest_suffix() {
        let dotted = exposed("fs", "files.read");
        assert!(valid_tool_name(&dotted), "{dotted}");
        assert!(dotted.starts_with("fs_files_read_"), "{dotted}");
        assert_eq!(dotted, exposed("fs", "files.read"), "stable");
        // `files.read` and `files_read` stay apart.
        assert_ne!(dotted, exposed("fs", "files_read"));
        let long = "a".repeat(80);
        let a = exposed("github", &long);
        let b = exposed("github", &format!("{long}b"));
        assert!(valid_tool_name(&a) && valid_tool_name(&b));
        assert_eq!(a.len(), MAX_NAME);
        assert_ne!(a, b, "two long names sharing a prefix stay apart");
        assert_eq!(split(&a).unwrap().0, "github");
        let unicode = exposed("x", "wetter_für_morgen");
        assert!(valid_tool_name(&unicode), "{unicode}");
    }

    #[test]
    fn server_names() {
        assert!(valid_server("crm") && valid_server("my-crm2"));
        assert!(!valid_server("my_crm") && !valid_server("") && !valid_server("Crm") && !valid_server(&"a".repeat(33)));
    }
}
