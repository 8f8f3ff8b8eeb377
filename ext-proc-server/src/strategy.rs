//! Which target of an alias a request tries first. Envoy then walks the
//! rest in the strategy's order (one aggregate cluster per possible first
//! target, rendered from the policy), so the choice is the sidecar's and the
//! retries, timeouts and circuit breaking are Envoy's.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tollgate_core::policy::{ModelRoute, Strategy};
use tollgate_core::pricing::PriceTable;

/// Weight of the newest sample in the latency average.
const ALPHA: f64 = 0.3;
/// What a failed attempt counts as, so a failing target drops behind.
pub const FAILURE_PENALTY: Duration = Duration::from_secs(10);

/// Recent latency per alias target (time to response headers, averaged).
#[derive(Debug, Default)]
pub struct Latencies {
    by_target: Mutex<HashMap<(String, usize), f64>>,
}

impl Latencies {
    pub fn record(&self, alias: &str, target: usize, took: Duration) {
        let ms = took.as_secs_f64() * 1000.0;
        let mut map = match self.by_target.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry((alias.to_string(), target)).and_modify(|avg| *avg = ALPHA * ms + (1.0 - ALPHA) * *avg).or_insert(ms);
    }

    pub fn get(&self, alias: &str, target: usize) -> Option<f64> {
        let map = match self.by_target.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.get(&(alias.to_string(), target)).copied()
    }
}

/// The first target for a request needing about `tokens` of context.
pub fn first_target(alias: &str, route: &ModelRoute, prices: &PriceTable, latencies: &Latencies, tokens: u64) -> usize {
    match route.strategy {
        Strategy::Priority => 0,
        Strategy::Weighted => {
            // Drawn by weight among the targets of the first priority level.
            let level = route.targets.iter().map(|t| t.priority).min().unwrap_or(0);
            let eligible = || route.targets.iter().enumerate().filter(move |(_, t)| t.priority == level);
            let total: u64 = eligible().map(|(_, t)| u64::from(t.weight)).sum();
            let mut pick = random_below(total.max(1));
            for (i, t) in eligible() {
                let w = u64::from(t.weight);
                if pick < w {
                    return i;
                }
                pick -= w;
            }
            0
        }
        Strategy::LeastLatency => {
            // Targets not tried yet go first (in listed order), so every target gets measured.
            (0..route.targets.len())
                .min_by(|&a, &b| {
                    let (la, lb) = (latencies.get(alias, a).unwrap_or(-1.0), latencies.get(alias, b).unwrap_or(-1.0));
                    la.total_cmp(&lb)
                })
                .unwrap_or(0)
        }
        Strategy::Cost => {
            let order = route.cost_order(prices);
            order
                .iter()
                .copied()
                .find(|&i| route.targets[i].context_tokens.is_none_or(|max| max >= tokens))
                .or_else(|| order.first().copied())
                .unwrap_or(0)
        }
    }
}

fn random_below(n: u64) -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return 0;
    }
    u64::from_le_bytes(bytes) % n
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn route(yaml: &str) -> ModelRoute {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn weighted_draws_by_weight() {
        let r = route("{strategy: weighted, targets: [{provider: a, model: x, weight: 3}, {provider: b, model: y}]}");
        let prices = PriceTable::new(&Default::default());
        let l = Latencies::default();
        let firsts: Vec<usize> = (0..4000).map(|_| first_target("s", &r, &prices, &l, 0)).collect();
        let share = firsts.iter().filter(|&&i| i == 0).count() as f64 / 4000.0;
        assert!((0.70..0.80).contains(&share), "{share}");
    }

    #[test]
    fn weights_apply_within_the_first_priority_level() {
        let r = route(
            "{strategy: weighted, targets: [{provider: c, model: z, priority: 1, weight: 100}, {provider: a, model: x, weight: 3}, {provider: b, model: y}]}",
        );
        let prices = PriceTable::new(&Default::default());
        let l = Latencies::default();
        let firsts: Vec<usize> = (0..2000).map(|_| first_target("s", &r, &prices, &l, 0)).collect();
        assert!(!firsts.contains(&0), "the fallback level takes no first attempts");
        let share = firsts.iter().filter(|&&i| i == 1).count() as f64 / 2000.0;
        assert!((0.68..0.82).contains(&share), "{share}");
        // Fallback: the rest of the level, then the next level.
        assert_eq!(r.attempt_order(2, &prices), vec![2, 1, 0]);
    }

    #[test]
    fn least_latency_tries_everything_then_the_fastest() {
        let r = route("{strategy: least-latency, targets: [{provider: a, model: x}, {provider: b, model: y}]}");
        let prices = PriceTable::new(&Default::default());
        let l = Latencies::default();
        assert_eq!(first_target("s", &r, &prices, &l, 0), 0);
        l.record("s", 0, Duration::from_millis(300));
        assert_eq!(first_target("s", &r, &prices, &l, 0), 1, "untried first");
        l.record("s", 1, Duration::from_millis(20));
        assert_eq!(first_target("s", &r, &prices, &l, 0), 1);
        l.record("s", 1, FAILURE_PENALTY);
        assert_eq!(first_target("s", &r, &prices, &l, 0), 0, "a failing target drops behind");
    }

    #[test]
    fn cost_takes_the_cheapest_that_fits() {
        let r = route(
            "{strategy: cost, targets: [{provider: a, model: gpt-4o}, {provider: b, model: gpt-4o-mini, contextTokens: 1000}]}",
        );
        let prices = PriceTable::new(&Default::default());
        let l = Latencies::default();
        assert_eq!(first_target("s", &r, &prices, &l, 500), 1);
        assert_eq!(first_target("s", &r, &prices, &l, 5000), 0);
        assert_eq!(r.attempt_order(0, &prices), vec![0, 1]);
        assert_eq!(r.attempt_order(1, &prices), vec![1, 0]);
    }
}
