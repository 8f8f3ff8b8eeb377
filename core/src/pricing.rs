//! Prices per model, turning usage into cost.
//!
//! Prices are USD per one million tokens. The policy's `pricing` section is
//! merged over the built-in table. A model is priced by, in order:
//!
//! 1. its exact name;
//! 2. an entry it is a dated snapshot of: the entry's name followed by
//!    `-YYYY-MM-DD`, `-YYYYMMDD`, `-MMDD`, `@YYYYMMDD`, `-latest` or a
//!    three-digit version `-NNN` (`gpt-4o-2024-08-06` takes `gpt-4o`'s
//!    price, `gemini-2.0-flash-001` `gemini-2.0-flash`'s). Any other suffix is
//!    another model: `o1-pro` never takes `o1`'s price, however the names
//!    look;
//! 3. a policy entry ending in `*` whose prefix it starts with, the longest
//!    such prefix first (`llama3-*`);
//! 4. the policy's `pricing.default`, when set.
//!
//! A model none of these price is *unpriced*: [`PriceTable::price`] gives
//! `None`, and the sidecar refuses it for callers under a cost limit rather
//! than count it as free. Costs are integers in micro-dollars so shared
//! counters stay exact; every sum saturates.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::usage::Usage;

/// The policy's `pricing` key that prices every model the table does not.
pub const DEFAULT_KEY: &str = "default";

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Price {
    /// USD per 1M input tokens.
    pub input: f64,
    /// USD per 1M output tokens.
    #[serde(default)]
    pub output: f64,
    /// USD per 1M cached input tokens (default: the input price).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<f64>,
}

/// Built-in list prices (USD per 1M tokens: input, output, cached input).
const DEFAULTS: &[(&str, f64, f64, f64)] = &[
    ("gpt-5", 1.25, 10.0, 0.125),
    ("gpt-5-mini", 0.25, 2.0, 0.025),
    ("gpt-5-nano", 0.05, 0.4, 0.005),
    ("gpt-4.1", 2.0, 8.0, 0.5),
    ("gpt-4.1-mini", 0.4, 1.6, 0.1),
    ("gpt-4.1-nano", 0.1, 0.4, 0.025),
    ("gpt-4o", 2.5, 10.0, 1.25),
    ("gpt-4o-mini", 0.15, 0.6, 0.075),
    ("gpt-4-turbo", 10.0, 30.0, 10.0),
    ("gpt-3.5-turbo", 0.5, 1.5, 0.5),
    ("gpt-3.5-turbo-instruct", 1.5, 2.0, 1.5),
    ("gpt-5-pro", 15.0, 120.0, 15.0),
    ("o1", 15.0, 60.0, 7.5),
    ("o1-mini", 1.1, 4.4, 0.55),
    ("o1-pro", 150.0, 600.0, 150.0),
    ("o3", 2.0, 8.0, 0.5),
    ("o3-pro", 20.0, 80.0, 20.0),
    ("o3-mini", 1.1, 4.4, 0.55),
    ("o4-mini", 1.1, 4.4, 0.275),
    ("text-embedding-3-small", 0.02, 0.0, 0.02),
    ("text-embedding-3-large", 0.13, 0.0, 0.13),
    ("text-embedding-ada-002", 0.1, 0.0, 0.1),
    ("claude-opus-4-5", 5.0, 25.0, 0.5),
    ("claude-opus-4-1", 15.0, 75.0, 1.5),
    ("claude-opus-4", 15.0, 75.0, 1.5),
    ("claude-sonnet-4-5", 3.0, 15.0, 0.3),
    ("claude-sonnet-4", 3.0, 15.0, 0.3),
    ("claude-3-7-sonnet", 3.0, 15.0, 0.3),
    ("claude-3-5-sonnet", 3.0, 15.0, 0.3),
    ("claude-haiku-4-5", 1.0, 5.0, 0.1),
    ("claude-3-5-haiku", 0.8, 4.0, 0.08),
    ("claude-3-haiku", 0.25, 1.25, 0.03),
    // Gemini: the list prices of prompts up to 200k tokens (text input).
    ("gemini-3-pro-preview", 2.0, 12.0, 0.2),
    ("gemini-2.5-pro", 1.25, 10.0, 0.125),
    ("gemini-2.5-flash", 0.3, 2.5, 0.03),
    ("gemini-2.5-flash-lite", 0.1, 0.4, 0.01),
    ("gemini-2.0-flash", 0.1, 0.4, 0.025),
    ("gemini-2.0-flash-lite", 0.075, 0.3, 0.075),
    ("gemini-embedding-001", 0.15, 0.0, 0.15),
    // Amazon Nova on Bedrock (on-demand, us-east-1); other Bedrock models
    // take their own maker's entry (`anthropic.claude-…-v1:0` → `claude-…`).
    ("nova-premier", 2.5, 12.5, 0.625),
    ("nova-pro", 0.8, 3.2, 0.2),
    ("nova-lite", 0.06, 0.24, 0.015),
    ("nova-micro", 0.035, 0.14, 0.00875),
];

/// The models of the built-in table, by their exact names.
pub fn builtin_models() -> impl Iterator<Item = &'static str> {
    DEFAULTS.iter().map(|&(m, ..)| m)
}

/// The price table in effect: defaults with the policy's entries over them.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceTable {
    prices: BTreeMap<String, Price>,
    /// Policy entries ending in `*`, by their prefix.
    patterns: BTreeMap<String, Price>,
    /// `pricing.default`.
    default: Option<Price>,
}

impl PriceTable {
    pub fn new(overrides: &BTreeMap<String, Price>) -> PriceTable {
        let mut prices: BTreeMap<String, Price> = DEFAULTS
            .iter()
            .map(|&(m, input, output, cached)| (m.to_string(), Price { input, output, cached_input: Some(cached) }))
            .collect();
        let mut patterns = BTreeMap::new();
        let mut default = None;
        for (name, price) in overrides {
            if name == DEFAULT_KEY {
                default = Some(*price);
            } else if let Some(prefix) = name.strip_suffix('*') {
                patterns.insert(prefix.to_string(), *price);
            } else {
                prices.insert(name.clone(), *price);
            }
        }
        PriceTable { prices, patterns, default }
    }

    /// The price of `model` itself (see the module docs), without `pricing.default`.
    pub fn own_price(&self, model: &str) -> Option<&Price> {
        self.named_price(model).or_else(|| self.named_price(&bedrock_base_name(model)?))
    }

    fn named_price(&self, model: &str) -> Option<&Price> {
        if let Some(p) = self.prices.get(model) {
            return Some(p);
        }
        let snapshot = self
            .prices
            .iter()
            .filter(|(name, _)| model.strip_prefix(name.as_str()).is_some_and(is_snapshot_suffix))
            .max_by_key(|(name, _)| name.len())
            .map(|(_, p)| p);
        snapshot.or_else(|| {
            self.patterns
                .iter()
                .filter(|(prefix, _)| model.starts_with(prefix.as_str()))
                .max_by_key(|(prefix, _)| prefix.len())
                .map(|(_, p)| p)
        })
    }

    /// The price `model` is charged at: its own, else `pricing.default`.
    /// `None`: the model is unpriced.
    pub fn price(&self, model: &str) -> Option<&Price> {
        self.own_price(model).or(self.default.as_ref())
    }

    /// `pricing.default`, when the policy sets it.
    pub fn default_price(&self) -> Option<&Price> {
        self.default.as_ref()
    }

    /// Cost of `usage` on `model` in micro-dollars (0 for an unpriced model:
    /// the sidecar refuses those where a cost limit applies).
    pub fn cost_micros(&self, model: &str, usage: &Usage) -> u64 {
        self.price(model).map_or(0, |p| p.cost_micros(usage))
    }
}

/// The model a Bedrock model id or ARN names, as the table names it:
/// `us.anthropic.claude-sonnet-4-5-20250929-v1:0` → `claude-sonnet-4-5-20250929`,
/// `arn:aws:bedrock:…:inference-profile/eu.amazon.nova-pro-v1:0` → `nova-pro`.
/// `None` when `model` is not one.
fn bedrock_base_name(model: &str) -> Option<String> {
    let id = if model.starts_with("arn:aws:bedrock:") { model.rsplit('/').next()? } else { model };
    let id = ["us.", "eu.", "apac.", "global.", "us-gov."].iter().find_map(|r| id.strip_prefix(r)).unwrap_or(id);
    let (_vendor, name) = id.split_once('.')?;
    let name = name.split_once(':').map_or(name, |(name, _)| name);
    let name = name.strip_suffix("-v1").or_else(|| name.strip_suffix("-v2")).unwrap_or(name);
    (name != model).then(|| name.to_owned())
}

/// Whether `rest` (what follows a table entry's name in a model name) marks
/// a dated snapshot of that entry rather than another model.
fn is_snapshot_suffix(rest: &str) -> bool {
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(date) = rest.strip_prefix('@') {
        return digits(date, 8);
    }
    let Some(rest) = rest.strip_prefix('-') else { return false };
    if rest == "latest" || digits(rest, 8) || digits(rest, 4) || digits(rest, 3) {
        return true;
    }
    let parts: Vec<&str> = rest.split('-').collect();
    matches!(parts.as_slice(), [y, m, d] if digits(y, 4) && digits(m, 2) && digits(d, 2))
}

impl Price {
    /// Cost in micro-dollars, rounded up (a fraction of a micro-dollar still costs).
    pub fn cost_micros(&self, usage: &Usage) -> u64 {
        let cached = usage.cached_tokens.min(usage.input_tokens);
        let fresh = usage.input_tokens.saturating_sub(cached);
        // USD per 1M tokens is exactly micro-dollars per token.
        let micros = fresh as f64 * self.input
            + cached as f64 * self.cached_input.unwrap_or(self.input)
            + usage.output_tokens as f64 * self.output;
        // A float cast saturates: a huge count costs u64::MAX, never wraps.
        micros.max(0.0).ceil() as u64
    }

    pub fn validate(&self) -> bool {
        [Some(self.input), Some(self.output), self.cached_input]
            .into_iter()
            .flatten()
            .all(|v| v.is_finite() && v >= 0.0)
    }
}

/// Micro-dollars as a USD amount for people and metadata.
pub fn usd(micros: u64) -> f64 {
    micros as f64 / 1_000_000.0
}

/// A USD amount as micro-dollars (for limits from the policy).
pub fn micros(usd: f64) -> u64 {
    (usd * 1_000_000.0).round().max(0.0) as u64
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn usage(input: u64, output: u64, cached: u64) -> Usage {
        Usage { input_tokens: input, output_tokens: output, cached_tokens: cached, total_tokens: input + output }
    }

    #[test]
    fn snapshots_take_the_longest_prefix() {
        let t = PriceTable::new(&BTreeMap::new());
        assert_eq!(t.price("gpt-4o-mini-2024-07-18").unwrap().input, 0.15);
        assert_eq!(t.price("gpt-4o-2024-08-06").unwrap().input, 2.5);
        assert_eq!(t.price("claude-sonnet-4-5-20250929").unwrap().output, 15.0);
        assert_eq!(t.price("gemini-2.0-flash-001").unwrap().input, 0.1);
        assert_eq!(t.price("gemini-2.0-flash-lite-001").unwrap().input, 0.075);
        assert_eq!(t.price("gemini-2.5-flash").unwrap().output, 2.5);
        assert!(t.price("gemini-2.5-flash-image").is_none(), "another model");
        assert_eq!(t.price("amazon.nova-pro-v1:0").unwrap().input, 0.8);
        assert_eq!(t.price("us.anthropic.claude-sonnet-4-5-20250929-v1:0").unwrap().output, 15.0);
        let arn =
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-haiku-4-5-20251001-v1:0";
        assert_eq!(t.price(arn).unwrap().input, 1.0);
        assert!(t.price("meta.llama3-70b-instruct-v1:0").is_none(), "not in the table");
        assert!(t.price("gpt-4oops").is_none());
        assert!(t.price("llama3").is_none());
    }

    #[test]
    fn a_family_member_never_takes_a_cheaper_members_price() {
        let t = PriceTable::new(&BTreeMap::new());
        assert_eq!(t.price("o1-pro").unwrap().input, 150.0);
        assert_eq!(t.price("o1-pro-2025-03-19").unwrap().output, 600.0);
        assert_eq!(t.price("o3-pro").unwrap().input, 20.0);
        assert_eq!(t.price("o3-pro-2025-06-10").unwrap().output, 80.0);
        assert_eq!(t.price("o1-2024-12-17").unwrap().input, 15.0);
        assert_eq!(t.price("gpt-3.5-turbo-0125").unwrap().input, 0.5);
        assert_eq!(t.price("claude-3-5-sonnet-latest").unwrap().input, 3.0);
        assert_eq!(t.price("claude-sonnet-4-5@20250929").unwrap().input, 3.0);
        // Members the table does not know are unpriced, not priced as their family.
        for other in ["o1-ultra", "o3-deep-research", "gpt-4o-realtime-preview", "claude-opus-4-7", "gpt-5-codex-max"] {
            assert!(t.price(other).is_none(), "{other}");
        }
    }

    #[test]
    fn policy_patterns_and_the_default_price_the_rest() {
        let mut o = BTreeMap::new();
        o.insert("llama3-*".to_string(), Price { input: 0.2, output: 0.2, cached_input: None });
        o.insert("llama3-70b-*".to_string(), Price { input: 0.9, output: 0.9, cached_input: None });
        let t = PriceTable::new(&o);
        assert_eq!(t.price("llama3-8b").unwrap().input, 0.2);
        assert_eq!(t.price("llama3-70b-instruct").unwrap().input, 0.9, "the longest pattern");
        assert!(t.price("mistral-large").is_none());
        assert!(t.default_price().is_none());
        o.insert(DEFAULT_KEY.to_string(), Price { input: 5.0, output: 20.0, cached_input: None });
        let t = PriceTable::new(&o);
        assert_eq!(t.price("mistral-large").unwrap().output, 20.0);
        assert!(t.own_price("mistral-large").is_none());
        assert_eq!(t.price("gpt-4o").unwrap().input, 2.5, "the default never replaces a known price");
        assert_eq!(t.cost_micros("mistral-large", &usage(1000, 100, 0)), 7000);
    }

    #[test]
    fn huge_counts_saturate() {
        let t = PriceTable::new(&BTreeMap::new());
        let huge = Usage { input_tokens: u64::MAX, output_tokens: u64::MAX, cached_tokens: 0, total_tokens: u64::MAX };
        assert_eq!(t.cost_micros("o1-pro", &huge), u64::MAX);
        let odd = Usage { input_tokens: 5, output_tokens: 0, cached_tokens: u64::MAX, total_tokens: 5 };
        assert_eq!(t.cost_micros("gpt-4o", &odd), 7, "cached never exceeds input");
        assert_eq!(micros(f64::MAX), u64::MAX);
    }

    #[test]
    fn cost_counts_cached_input_at_its_price() {
        let t = PriceTable::new(&BTreeMap::new());
        // gpt-4o: 1000 fresh * 2.5 + 1000 cached * 1.25 + 500 out * 10 = 8750 micro-dollars.
        assert_eq!(t.cost_micros("gpt-4o", &usage(2000, 500, 1000)), 8750);
        assert_eq!(t.cost_micros("unknown-model", &usage(2000, 500, 0)), 0);
    }

    #[test]
    fn policy_overrides_and_adds() {
        let mut o = BTreeMap::new();
        o.insert("gpt-4o".to_string(), Price { input: 1.0, output: 2.0, cached_input: None });
        o.insert("llama3".to_string(), Price { input: 0.1, output: 0.1, cached_input: None });
        let t = PriceTable::new(&o);
        assert_eq!(t.cost_micros("gpt-4o", &usage(1000, 1000, 500)), 3000);
        assert_eq!(t.cost_micros("llama3", &usage(10, 0, 0)), 1);
        assert_eq!(micros(2.5), 2_500_000);
        assert_eq!(usd(1_500_000), 1.5);
    }
}
