//! The wasm filter's plugin configuration: the part of the policy the filter
//! needs, rendered to JSON by `tollgate render` and parsed once per VM.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::firewall::{Levels, Thresholds};
use crate::policy::{from_json_named, FailMode, Inspection, Policy};
use crate::request::{LlmRequest, TextPart};

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
    /// The trusted system prompts of model aliases that list some
    /// (`models.<alias>.trustedSystemPrompts`), as digests.
    #[serde(default, skip_serializing_if = "TrustedPrompts::is_empty")]
    pub trusted_system_prompts: TrustedPrompts,
}

/// The system prompts an operator trusts, per model alias, kept as the
/// SHA-256 (lower-case hex) of each trimmed text: a few bytes per prompt in
/// every VM's configuration, and no collision a client could aim for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TrustedPrompts(BTreeMap<String, BTreeSet<String>>);

/// The digest a trusted prompt is kept as: SHA-256 of the trimmed text, hex.
pub fn prompt_digest(text: &str) -> String {
    use std::fmt::Write;
    Sha256::digest(text.trim().as_bytes()).iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

impl TrustedPrompts {
    /// The `trustedSystemPrompts` of every alias of `policy`.
    pub fn from_policy(policy: &Policy) -> TrustedPrompts {
        let mut trusted = TrustedPrompts::default();
        for (alias, route) in &policy.models {
            for text in &route.trusted_system_prompts {
                trusted.insert(alias, text);
            }
        }
        trusted
    }

    /// Trust `text` (trimmed) as a system prompt of requests for `alias`.
    pub fn insert(&mut self, alias: &str, text: &str) {
        self.0.entry(alias.to_owned()).or_default().insert(prompt_digest(text));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `part` of a request for `model` skips the firewall: a
    /// `system` or `developer` text the alias trusts.
    pub fn trusts(&self, model: &str, part: &TextPart) -> bool {
        matches!(part.role.as_str(), "system" | "developer")
            && self.0.get(model).is_some_and(|set| set.contains(&prompt_digest(&part.text)))
    }

    /// The texts of `request` the prompt firewall scans: all of them but
    /// the trusted system prompts of the alias asked for.
    pub fn firewall_texts<'a>(&'a self, request: &'a LlmRequest) -> impl Iterator<Item = &'a str> + 'a {
        request.texts.iter().filter(|t| !self.trusts(&request.model, t)).map(|t| t.text.as_str())
    }

    fn validate(&self) -> Result<(), Error> {
        for (alias, digests) in &self.0 {
            if let Some(bad) = digests
                .iter()
                .find(|d| d.len() != 64 || !d.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            {
                return Err(Error::Policy {
                    path: format!("trustedSystemPrompts.{alias}"),
                    message: format!("`{bad}` is not a SHA-256 digest (64 lower-case hex digits)"),
                });
            }
        }
        Ok(())
    }
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
            trusted_system_prompts: TrustedPrompts::default(),
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
            trusted_system_prompts: TrustedPrompts::from_policy(policy),
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
        cfg.trusted_system_prompts.validate()?;
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
