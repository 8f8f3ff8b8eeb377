//! The wasm filter's plugin configuration: the part of the policy the filter
//! needs, rendered to JSON by `tollgate render` and parsed once per VM.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::firewall::{Levels, Thresholds};
use crate::policy::{from_json_named, FailMode, Inspection, Policy};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FilterConfig {
    /// What to do when the filter cannot inspect a request.
    #[serde(default = "default_fail_mode")]
    pub fail_mode: FailMode,
    #[serde(default)]
    pub inspection: Inspection,
    /// Firewall thresholds of model aliases that set their own.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub firewall_routes: BTreeMap<String, Thresholds>,
    /// The most lenient block threshold a team or consumer sets. The filter
    /// cannot tell who is calling, so it blocks only above this; the sidecar,
    /// which knows the caller, scans again and blocks what that caller's
    /// thresholds say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall_identity_block: Option<f64>,
}

fn default_fail_mode() -> FailMode {
    FailMode::Closed
}

impl Default for FilterConfig {
    fn default() -> Self {
        FilterConfig {
            fail_mode: FailMode::Closed,
            inspection: Inspection::default(),
            firewall_routes: BTreeMap::new(),
            firewall_identity_block: None,
        }
    }
}

impl FilterConfig {
    pub fn from_policy(policy: &Policy) -> FilterConfig {
        let firewall_routes =
            policy.models.iter().filter_map(|(alias, route)| route.firewall.map(|t| (alias.clone(), t))).collect();
        let firewall_identity_block = policy
            .teams
            .values()
            .filter_map(|t| t.firewall.and_then(|f| f.block))
            .chain(policy.consumers.values().filter_map(|c| c.firewall.and_then(|f| f.block)))
            .reduce(f64::max);
        FilterConfig {
            fail_mode: policy.fail_mode.filter,
            inspection: policy.inspection.clone(),
            firewall_routes,
            firewall_identity_block,
        }
    }

    /// The thresholds the filter applies to a request for `model`: the
    /// alias's own over the policy's, with blocking left to the sidecar up
    /// to the most lenient team or consumer threshold.
    pub fn firewall_levels(&self, model: &str) -> Levels {
        let mut levels = self.inspection.firewall.levels().over(self.firewall_routes.get(model));
        if let Some(block) = self.firewall_identity_block {
            levels.block = levels.block.max(block);
        }
        levels
    }

    /// Parse the plugin configuration. An empty configuration means defaults.
    pub fn from_json(bytes: &[u8]) -> Result<FilterConfig, Error> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(FilterConfig::default());
        }
        let cfg: FilterConfig = from_json_named(bytes)?;
        cfg.inspection.validate()?;
        let levels = cfg.inspection.firewall.levels();
        for (alias, t) in &cfg.firewall_routes {
            levels.over(Some(t)).validate_at(&format!("firewallRoutes.{alias}"))?;
        }
        if let Some(block) = cfg.firewall_identity_block.filter(|b| !(0.0..=1.0).contains(b)) {
            return Err(Error::Policy {
                path: "firewallIdentityBlock".into(),
                message: format!("must be between 0 and 1, got {block}"),
            });
        }
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
    fn firewall_levels_per_alias_and_deferred_to_the_sidecar_for_callers() {
        let yaml = "
providers: {p: {kind: openai, baseUrl: 'http://x'}}
models:
  strict: {targets: [{provider: p, model: m}], firewall: {block: 0.3, flag: 0.2, log: 0.1}}
teams: {t: {firewall: {block: 0.95}}}
";
        let policy: Policy = Policy::deserialize(serde_yaml_ng::Deserializer::from_str(yaml)).unwrap();
        let cfg = FilterConfig::from_policy(&policy);
        assert_eq!(FilterConfig::from_json(cfg.to_json().as_bytes()).unwrap(), cfg);
        // A team may be more lenient than anything else: blocks below its threshold wait for the sidecar.
        assert_eq!(cfg.firewall_levels("strict").block, 0.95);
        assert_eq!(cfg.firewall_levels("strict").flag, 0.2);
        assert_eq!(cfg.firewall_levels("other").block, 0.95);
        let alone = FilterConfig { firewall_identity_block: None, ..cfg };
        assert_eq!(alone.firewall_levels("strict").block, 0.3);
        assert_eq!(alone.firewall_levels("other").block, 0.8);
        let bad = r#"{"firewallRoutes":{"x":{"block":0.1}}}"#;
        assert!(
            matches!(FilterConfig::from_json(bad.as_bytes()), Err(Error::Policy { path, .. }) if path == "firewallRoutes.x.block")
        );
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
