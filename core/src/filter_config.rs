//! The wasm filter's plugin configuration: the part of the policy the filter
//! needs, rendered to JSON by `tollgate render` and parsed once per VM.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::policy::{from_json_named, FailMode, Inspection, Policy};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FilterConfig {
    /// What to do when the filter cannot inspect a request.
    #[serde(default = "default_fail_mode")]
    pub fail_mode: FailMode,
    #[serde(default)]
    pub inspection: Inspection,
}

fn default_fail_mode() -> FailMode {
    FailMode::Closed
}

impl Default for FilterConfig {
    fn default() -> Self {
        FilterConfig { fail_mode: FailMode::Closed, inspection: Inspection::default() }
    }
}

impl FilterConfig {
    pub fn from_policy(policy: &Policy) -> FilterConfig {
        FilterConfig { fail_mode: policy.fail_mode.filter, inspection: policy.inspection.clone() }
    }

    /// Parse the plugin configuration. An empty configuration means defaults.
    pub fn from_json(bytes: &[u8]) -> Result<FilterConfig, Error> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(FilterConfig::default());
        }
        let cfg: FilterConfig = from_json_named(bytes)?;
        cfg.inspection.validate()?;
        Ok(cfg)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn empty_means_defaults_and_round_trips() {
        assert_eq!(FilterConfig::from_json(b"  ").unwrap(), FilterConfig::default());
        let cfg = FilterConfig { fail_mode: FailMode::Open, ..FilterConfig::default() };
        assert_eq!(FilterConfig::from_json(cfg.to_json().as_bytes()).unwrap(), cfg);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (r#"{"failMode":"maybe"}"#, "failMode"),
            (r#"{"inspection":{"maxBodyBytes":"big"}}"#, "inspection.maxBodyBytes"),
            (r#"{"inspection":{"maxBodyBytes":0}}"#, "inspection.maxBodyBytes"),
            (r#"{"bogus":1}"#, "bogus"),
            (r#"{"failMode":"open"} trailing"#, "(root)"),
            ("not json", "(root)"),
        ];
        for (src, want) in cases {
            match FilterConfig::from_json(src.as_bytes()) {
                Err(Error::Policy { path, .. }) => assert_eq!(path, want, "{src}"),
                other => panic!("{src}: {other:?}"),
            }
        }
    }
}
