//! Prices per model, turning usage into cost.
//!
//! Prices are USD per one million tokens. The policy's `pricing` section is
//! merged over the built-in table; a model is priced by its exact name, else
//! by the longest table entry it starts with (so dated snapshots such as
//! `gpt-4o-2024-08-06` take `gpt-4o`'s price). Costs are integers in
//! micro-dollars so shared counters stay exact.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::usage::Usage;

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
    ("o1", 15.0, 60.0, 7.5),
    ("o3", 2.0, 8.0, 0.5),
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
];

/// The price table in effect: defaults with the policy's entries over them.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceTable {
    prices: BTreeMap<String, Price>,
}

impl PriceTable {
    pub fn new(overrides: &BTreeMap<String, Price>) -> PriceTable {
        let mut prices: BTreeMap<String, Price> = DEFAULTS
            .iter()
            .map(|&(m, input, output, cached)| (m.to_string(), Price { input, output, cached_input: Some(cached) }))
            .collect();
        prices.extend(overrides.iter().map(|(k, v)| (k.clone(), *v)));
        PriceTable { prices }
    }

    /// The price of `model`: exact name, else the longest entry it starts with.
    pub fn price(&self, model: &str) -> Option<&Price> {
        self.prices.get(model).or_else(|| {
            self.prices
                .iter()
                .filter(|(name, _)| model.starts_with(name.as_str()) && model.as_bytes().get(name.len()) == Some(&b'-'))
                .max_by_key(|(name, _)| name.len())
                .map(|(_, p)| p)
        })
    }

    /// Cost of `usage` on `model` in micro-dollars (0 for an unpriced model).
    pub fn cost_micros(&self, model: &str, usage: &Usage) -> u64 {
        self.price(model).map_or(0, |p| p.cost_micros(usage))
    }
}

impl Price {
    /// Cost in micro-dollars, rounded up (a fraction of a micro-dollar still costs).
    pub fn cost_micros(&self, usage: &Usage) -> u64 {
        let cached = usage.cached_tokens.min(usage.input_tokens);
        let fresh = usage.input_tokens - cached;
        // USD per 1M tokens is exactly micro-dollars per token.
        let micros = fresh as f64 * self.input
            + cached as f64 * self.cached_input.unwrap_or(self.input)
            + usage.output_tokens as f64 * self.output;
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
        assert!(t.price("gpt-4oops").is_none());
        assert!(t.price("llama3").is_none());
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
