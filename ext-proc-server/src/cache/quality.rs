//! Cache quality: how often the semantic tier would answer a paraphrase from the cache (a hit)
//! and how often it would answer a different question with a cached answer (a false hit), as a
//! function of the cosine-similarity threshold, measured on labelled sentence pairs.
//!
//! `tollgate cache-quality --pairs FILE.jsonl` runs it (see `scripts/cache-quality.sh` and
//! `docs/cache-quality.md`). The curve and the selection rule ([`curve`], [`recommend`]) are
//! plain functions of the similarities; only [`similarities`] needs the model.
//!
//! The rule: **the lowest threshold whose false-hit rate on non-paraphrases is at most
//! [`MAX_FALSE_HIT_RATE`] (1%) even at the upper end of its 95% confidence interval** (Wilson
//! score interval, so a small or lucky sample cannot pass). A false hit serves a wrong answer
//! with no sign that it is wrong, while a miss only costs one upstream call, so the false-hit
//! rate is the constraint and the hit rate is what is maximized under it. The bound never rises
//! with the threshold, so the lowest threshold that meets it is also the one with the most hits.

use std::collections::HashMap;
use std::io::BufRead;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::check::{self, Differences};
use crate::embed::{EmbedError, Embedder};

/// The bound on the false-hit rate that [`recommend`] applies.
pub const MAX_FALSE_HIT_RATE: f64 = 0.01;

/// Texts embedded per model call.
pub const DEFAULT_BATCH: usize = 32;

/// One labelled pair: `paraphrase` is true when `a` and `b` ask the same thing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Pair {
    pub a: String,
    pub b: String,
    pub paraphrase: bool,
}

/// Hit and false-hit rates at one threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CurvePoint {
    pub threshold: f32,
    /// Paraphrase pairs whose similarity is at least the threshold.
    pub hits: usize,
    /// `hits` over the paraphrase pairs (0 when there are none).
    pub hit_rate: f64,
    /// Non-paraphrase pairs whose similarity is at least the threshold.
    pub false_hits: usize,
    /// `false_hits` over the non-paraphrase pairs (0 when there are none).
    pub false_hit_rate: f64,
    /// Upper end of the 95% Wilson score interval of `false_hit_rate`: how high the rate could
    /// be given the sample size. [`recommend`] holds this to the bound.
    pub false_hit_rate_upper95: f64,
}

/// Mean and quartiles of the similarities of one label.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spread {
    pub mean: f32,
    pub p25: f32,
    pub median: f32,
    pub p75: f32,
}

/// Embedding throughput during a measurement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Throughput {
    /// Distinct texts embedded (a text in several pairs is embedded once).
    pub texts: usize,
    pub batch: usize,
    pub seconds: f64,
    pub prompts_per_second: f64,
    pub ms_per_prompt: f64,
}

/// The whole measurement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub paraphrases: usize,
    pub non_paraphrases: usize,
    pub paraphrase_similarity: Option<Spread>,
    pub non_paraphrase_similarity: Option<Spread>,
    pub max_false_hit_rate: f64,
    pub rule: String,
    pub curve: Vec<CurvePoint>,
    /// `None` when no threshold of the curve meets the bound.
    pub recommended: Option<CurvePoint>,
    pub throughput: Option<Throughput>,
    /// Pairs the cache never compares because their numbers differ (see
    /// `cache::key::numbers`), by label; they count as misses in the curve.
    pub kept_apart: KeptApart,
    /// The similarity of each pair, in input order (for analysis by label subgroups).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub similarities: Vec<f32>,
    /// With the second check (`cache::check`) as the cache runs it: pairs it
    /// finds different count as misses. `None` when not measured.
    pub checked: Option<Checked>,
    /// What the second check found for each pair, in input order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub differences: Vec<Differences>,
}

/// The curve with the second check, and what the check costs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Checked {
    pub curve: Vec<CurvePoint>,
    pub recommended: Option<CurvePoint>,
    /// Pairs the check finds different, by label.
    pub refused: KeptApart,
    /// Time of one comparison of two prompts, in microseconds.
    pub micros_p50: f64,
    pub micros_p99: f64,
    pub micros_max: f64,
}

/// Pairs kept apart by the numbers guard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct KeptApart {
    pub paraphrases: usize,
    pub non_paraphrases: usize,
}

/// Why a measurement failed.
#[derive(Debug, thiserror::Error)]
pub enum QualityError {
    #[error("line {line}: {message}")]
    Parse { line: usize, message: String },
    #[error("reading the pairs: {0}")]
    Io(#[from] std::io::Error),
    #[error("no pairs to measure")]
    Empty,
    #[error(transparent)]
    Embed(#[from] EmbedError),
}

/// The thresholds of the report: 0.70, 0.71, …, 0.98.
pub fn thresholds() -> Vec<f32> {
    (70u16..=98).map(|i| f32::from(i) / 100.0).collect()
}

/// Reads JSONL pairs (`{"a":…, "b":…, "paraphrase": true|false}` per line); blank lines are
/// skipped, and any other unreadable line is an error naming its number.
pub fn read_pairs(reader: impl BufRead) -> Result<Vec<Pair>, QualityError> {
    let mut pairs = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let pair: Pair =
            serde_json::from_str(&line).map_err(|e| QualityError::Parse { line: i + 1, message: e.to_string() })?;
        pairs.push(pair);
    }
    Ok(pairs)
}

/// Hit and false-hit rates at each threshold, from `(similarity, is_paraphrase)` per pair. A
/// pair counts at a threshold when its similarity is `>=` the threshold, as in the cache.
pub fn curve(scored: &[(f32, bool)], thresholds: &[f32]) -> Vec<CurvePoint> {
    let positives = scored.iter().filter(|(_, p)| *p).count();
    let negatives = scored.len() - positives;
    let rate = |n: usize, of: usize| if of == 0 { 0.0 } else { n as f64 / of as f64 };
    thresholds
        .iter()
        .map(|&threshold| {
            let hits = scored.iter().filter(|(s, p)| *p && *s >= threshold).count();
            let false_hits = scored.iter().filter(|(s, p)| !*p && *s >= threshold).count();
            CurvePoint {
                threshold,
                hits,
                hit_rate: rate(hits, positives),
                false_hits,
                false_hit_rate: rate(false_hits, negatives),
                false_hit_rate_upper95: wilson_upper95(false_hits, negatives),
            }
        })
        .collect()
}

/// The upper end of the 95% Wilson score interval for `k` successes in `n` trials (0 for
/// `n == 0`).
pub fn wilson_upper95(k: usize, n: usize) -> f64 {
    if n == 0 {
        return 0.0;
    }
    let (z, n, p) = (1.959_964_f64, n as f64, k as f64 / n as f64);
    let denominator = 1.0 + z * z / n;
    let centre = p + z * z / (2.0 * n);
    let margin = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    ((centre + margin) / denominator).min(1.0)
}

/// The lowest threshold whose false-hit rate is at most `max_false_hit_rate` at the upper end of
/// its 95% confidence interval; `None` when none is. Thresholds are compared as given, whatever
/// the order of `curve`.
pub fn recommend(curve: &[CurvePoint], max_false_hit_rate: f64) -> Option<&CurvePoint> {
    curve
        .iter()
        .filter(|p| p.false_hit_rate_upper95 <= max_false_hit_rate)
        .min_by(|x, y| x.threshold.total_cmp(&y.threshold))
}

/// Mean and quartiles (nearest rank) of `values`; `None` when empty.
pub fn spread(values: &[f32]) -> Option<Spread> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f32::total_cmp);
    let at = |q: f64| {
        let i = ((sorted.len() - 1) as f64 * q).round() as usize;
        sorted[i.min(sorted.len() - 1)]
    };
    let mean = (sorted.iter().map(|&v| f64::from(v)).sum::<f64>() / sorted.len() as f64) as f32;
    Some(Spread { mean, p25: at(0.25), median: at(0.5), p75: at(0.75) })
}

/// The report from similarities already computed (`scored[i]` is `(similarity, paraphrase)`).
pub fn report_from_scores(scored: &[(f32, bool)], throughput: Option<Throughput>) -> Report {
    let curve = curve(scored, &thresholds());
    let recommended = recommend(&curve, MAX_FALSE_HIT_RATE).cloned();
    let positive: Vec<f32> = scored.iter().filter(|(_, p)| *p).map(|(s, _)| *s).collect();
    let negative: Vec<f32> = scored.iter().filter(|(_, p)| !*p).map(|(s, _)| *s).collect();
    Report {
        paraphrases: positive.len(),
        non_paraphrases: negative.len(),
        paraphrase_similarity: spread(&positive),
        non_paraphrase_similarity: spread(&negative),
        max_false_hit_rate: MAX_FALSE_HIT_RATE,
        rule: format!(
            "lowest threshold whose false-hit rate on non-paraphrases is <= {:.0}% at the upper end of its 95% \
             confidence interval",
            MAX_FALSE_HIT_RATE * 100.0
        ),
        curve,
        recommended,
        throughput,
        kept_apart: KeptApart::default(),
        similarities: scored.iter().map(|(s, _)| *s).collect(),
        checked: None,
        differences: Vec::new(),
    }
}

/// Runs the second check on each pair, timing each comparison.
pub fn check_pairs(pairs: &[Pair]) -> (Vec<Differences>, Vec<f64>) {
    pairs
        .iter()
        .map(|p| {
            let started = Instant::now();
            let d = check::compare(&p.a, &p.b);
            (d, started.elapsed().as_secs_f64() * 1e6)
        })
        .unzip()
}

/// The curve when pairs the check finds different are misses.
pub fn checked(scored: &[(f32, bool)], differences: &[Differences], micros: &[f64]) -> Checked {
    let mut refused = KeptApart::default();
    let with_check: Vec<(f32, bool)> = scored
        .iter()
        .zip(differences)
        .map(|(&(sim, para), d)| {
            if d.any() {
                if para {
                    refused.paraphrases += 1;
                } else {
                    refused.non_paraphrases += 1;
                }
                (-1.0, para)
            } else {
                (sim, para)
            }
        })
        .collect();
    let curve = curve(&with_check, &thresholds());
    let recommended = recommend(&curve, MAX_FALSE_HIT_RATE).cloned();
    let mut sorted = micros.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at =
        |q: f64| sorted.get(((sorted.len().saturating_sub(1)) as f64 * q).round() as usize).copied().unwrap_or(0.0);
    Checked { curve, recommended, refused, micros_p50: at(0.5), micros_p99: at(0.99), micros_max: at(1.0) }
}

/// Cosine similarity of each pair with `embedder`. Each distinct text is embedded once, in
/// batches of `batch` texts of similar length (less padding). Also returns the throughput.
pub fn similarities(embedder: &Embedder, pairs: &[Pair], batch: usize) -> Result<(Vec<f32>, Throughput), EmbedError> {
    let batch = batch.max(1);
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut texts: Vec<&str> = Vec::new();
    for pair in pairs {
        for text in [pair.a.as_str(), pair.b.as_str()] {
            index.entry(text).or_insert_with(|| {
                texts.push(text);
                texts.len() - 1
            });
        }
    }
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| texts[i].len());

    let started = Instant::now();
    let mut vectors: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
    for chunk in order.chunks(batch) {
        let batch_texts: Vec<&str> = chunk.iter().map(|&i| texts[i]).collect();
        let embedded = embedder.embed(&batch_texts)?;
        for (&i, vector) in chunk.iter().zip(embedded) {
            vectors[i] = vector;
        }
    }
    let seconds = started.elapsed().as_secs_f64();

    let vector_of = |text: &str| index.get(text).and_then(|&i| vectors.get(i)).map(Vec::as_slice).unwrap_or(&[]);
    let sims = pairs.iter().map(|p| crate::embed::cosine(vector_of(&p.a), vector_of(&p.b))).collect();
    let n = texts.len();
    let throughput = Throughput {
        texts: n,
        batch,
        seconds,
        prompts_per_second: if seconds > 0.0 { n as f64 / seconds } else { 0.0 },
        ms_per_prompt: if n > 0 { seconds * 1000.0 / n as f64 } else { 0.0 },
    };
    Ok((sims, throughput))
}

/// Embeds the pairs and builds the report.
pub fn evaluate(embedder: &Embedder, pairs: &[Pair], batch: usize) -> Result<Report, QualityError> {
    if pairs.is_empty() {
        return Err(QualityError::Empty);
    }
    let (sims, throughput) = similarities(embedder, pairs, batch)?;
    // As the cache sees them: prompts whose numbers differ are in different
    // partitions, so never a hit whatever their similarity.
    let mut kept_apart = KeptApart::default();
    let scored: Vec<(f32, bool)> = sims
        .into_iter()
        .zip(pairs)
        .map(|(sim, p)| {
            if super::key::numbers(&p.a) != super::key::numbers(&p.b) {
                if p.paraphrase {
                    kept_apart.paraphrases += 1;
                } else {
                    kept_apart.non_paraphrases += 1;
                }
                (-1.0, p.paraphrase)
            } else {
                (sim, p.paraphrase)
            }
        })
        .collect();
    let mut report = report_from_scores(&scored, Some(throughput));
    report.kept_apart = kept_apart;
    let (differences, micros) = check_pairs(pairs);
    report.checked = Some(checked(&scored, &differences, &micros));
    report.differences = differences;
    Ok(report)
}

/// The report as a table for people.
pub fn render(report: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "pairs: {} paraphrases, {} non-paraphrases", report.paraphrases, report.non_paraphrases);
    for (label, spread) in
        [("paraphrases", &report.paraphrase_similarity), ("non-paraphrases", &report.non_paraphrase_similarity)]
    {
        if let Some(s) = spread {
            let _ = writeln!(
                out,
                "similarity of {label}: mean {:.3}, quartiles {:.3} / {:.3} / {:.3}",
                s.mean, s.p25, s.median, s.p75
            );
        }
    }
    let k = report.kept_apart;
    let _ = writeln!(
        out,
        "kept apart by their numbers (never compared, counted as misses): {} paraphrases, {} non-paraphrases",
        k.paraphrases, k.non_paraphrases
    );
    if let Some(t) = &report.throughput {
        let _ = writeln!(
            out,
            "embedding: {} texts in {:.1} s (batch {}): {:.1} prompts/s, {:.2} ms/prompt",
            t.texts, t.seconds, t.batch, t.prompts_per_second, t.ms_per_prompt
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "{:>9}  {:>14}  {:>16}  {:>11}", "THRESHOLD", "HIT RATE", "FALSE-HIT RATE", "(95% UPPER)");
    for p in &report.curve {
        let mark = if report.recommended.as_ref().is_some_and(|r| r.threshold == p.threshold) { "  <=" } else { "" };
        let _ = writeln!(
            out,
            "{:>9.2}  {:>6.1}% {:>7}  {:>6.2}% {:>8}  {:>10.2}%{mark}",
            p.threshold,
            p.hit_rate * 100.0,
            format!("({})", p.hits),
            p.false_hit_rate * 100.0,
            format!("({})", p.false_hits),
            p.false_hit_rate_upper95 * 100.0,
        );
    }
    let _ = writeln!(out);
    if let Some(c) = &report.checked {
        let _ = writeln!(
            out,
            "second check: refuses {} paraphrases and {} non-paraphrases; {:.1} µs per comparison (p50), {:.1} µs (p99)",
            c.refused.paraphrases, c.refused.non_paraphrases, c.micros_p50, c.micros_p99
        );
        match &c.recommended {
            Some(r) => {
                let _ = writeln!(
                    out,
                    "with the check: recommended threshold {:.2}: hit rate {:.1}%, false-hit rate {:.2}%",
                    r.threshold,
                    r.hit_rate * 100.0,
                    r.false_hit_rate * 100.0
                );
            }
            None => {
                let _ = writeln!(out, "with the check: no threshold up to 0.98 meets the rule");
            }
        }
    }
    match &report.recommended {
        Some(r) => {
            let _ = writeln!(
                out,
                "recommended threshold: {:.2} ({}): hit rate {:.1}%, false-hit rate {:.2}%",
                r.threshold,
                report.rule,
                r.hit_rate * 100.0,
                r.false_hit_rate * 100.0
            );
        }
        None => {
            let _ = writeln!(out, "no threshold up to 0.98 meets the rule ({})", report.rule);
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn point(curve: &[CurvePoint], t: f32) -> &CurvePoint {
        curve.iter().find(|p| (p.threshold - t).abs() < 1e-6).unwrap()
    }

    #[test]
    fn thresholds_run_from_070_to_098_by_001() {
        let t = thresholds();
        assert_eq!(t.len(), 29);
        assert!((t[0] - 0.70).abs() < 1e-6);
        assert!((t[28] - 0.98).abs() < 1e-6);
        assert!(t.windows(2).all(|w| (w[1] - w[0] - 0.01).abs() < 1e-5));
    }

    #[test]
    fn curve_counts_pairs_at_or_above_the_threshold() {
        let scored =
            [(0.95, true), (0.85, true), (0.75, true), (0.60, true), (0.90, false), (0.80, false), (0.50, false)];
        let c = curve(&scored, &[0.70, 0.80, 0.90, 0.96]);
        let p = point(&c, 0.80);
        assert_eq!((p.hits, p.false_hits), (2, 2));
        assert!((p.hit_rate - 0.5).abs() < 1e-9);
        assert!((p.false_hit_rate - 2.0 / 3.0).abs() < 1e-9);
        // A similarity equal to the threshold is a hit.
        let p = point(&c, 0.90);
        assert_eq!((p.hits, p.false_hits), (1, 1));
        let p = point(&c, 0.96);
        assert_eq!((p.hits, p.false_hits), (0, 0));
        assert_eq!(p.false_hit_rate, 0.0);
    }

    #[test]
    fn curve_never_rises_with_the_threshold() {
        let scored: Vec<(f32, bool)> = (0..200).map(|i| ((i % 100) as f32 / 100.0, i % 3 == 0)).collect();
        let c = curve(&scored, &thresholds());
        assert!(c.windows(2).all(|w| w[1].hits <= w[0].hits && w[1].false_hits <= w[0].false_hits));
    }

    #[test]
    fn curve_with_one_label_missing_has_zero_rates_for_it() {
        let c = curve(&[(0.9, true)], &[0.8]);
        assert_eq!(c[0].hit_rate, 1.0);
        assert_eq!(c[0].false_hit_rate, 0.0);
        let c = curve(&[(0.9, false)], &[0.8]);
        assert_eq!(c[0].hit_rate, 0.0);
        assert_eq!(c[0].false_hit_rate, 1.0);
    }

    #[test]
    fn recommend_picks_the_lowest_threshold_within_the_bound() {
        // 2000 non-paraphrases: 60 at 0.86, 20 at 0.88, 5 at 0.91, the rest low.
        let mut scored: Vec<(f32, bool)> = vec![(0.30, false); 1915];
        scored.extend([(0.86, false); 60]);
        scored.extend([(0.88, false); 20]);
        scored.extend([(0.91, false); 5]);
        scored.extend([(0.95, true), (0.89, true), (0.87, true), (0.80, true)]);
        let c = curve(&scored, &thresholds());
        // <= 0.86: 85/2000; 0.87..=0.88: 25/2000 = 1.25% (bound 1.84%); 0.89..=0.91: 5/2000 =
        // 0.25% (bound 0.58%); above: 0 (bound 0.19%).
        let r = recommend(&c, 0.01).unwrap();
        assert!((r.threshold - 0.89).abs() < 1e-6);
        assert_eq!(r.hits, 2);
        let r = recommend(&c, 0.02).unwrap();
        assert!((r.threshold - 0.87).abs() < 1e-6);
        let r = recommend(&c, 0.002).unwrap();
        assert!((r.threshold - 0.92).abs() < 1e-6);
        assert!(recommend(&c, 0.0).is_none());
    }

    #[test]
    fn recommend_holds_the_upper_bound_not_the_rate_to_the_limit() {
        // 1 false hit in 200 is 0.5%, but the sample cannot rule out 2.8%.
        let mut scored: Vec<(f32, bool)> = vec![(0.30, false); 199];
        scored.push((0.90, false));
        let c = curve(&scored, &thresholds());
        let at_080 = c.iter().find(|p| (p.threshold - 0.80).abs() < 1e-6).unwrap();
        assert!(at_080.false_hit_rate <= 0.01 && at_080.false_hit_rate_upper95 > 0.01);
        // Only thresholds above 0.90 (no false hit) qualify, and 0/200 still bounds at 1.9%.
        assert!(recommend(&c, 0.01).is_none());
        assert!((recommend(&c, 0.02).unwrap().threshold - 0.91).abs() < 1e-6);
    }

    #[test]
    fn recommend_is_none_when_no_threshold_meets_the_bound() {
        let scored = [(0.99, false), (0.99, true)];
        assert!(recommend(&curve(&scored, &thresholds()), 0.01).is_none());
        assert!(recommend(&[], 0.01).is_none());
    }

    #[test]
    fn recommend_ignores_the_order_of_the_curve() {
        let mut scored: Vec<(f32, bool)> = vec![(0.5, false); 2000];
        scored.push((0.9, true));
        let mut c = curve(&scored, &thresholds());
        c.reverse();
        assert!((recommend(&c, 0.01).unwrap().threshold - 0.70).abs() < 1e-6);
    }

    #[test]
    fn report_from_scores_states_counts_spread_and_recommendation() {
        let mut scored: Vec<(f32, bool)> = vec![(0.9, true), (0.8, true), (0.7, true)];
        scored.extend([(0.2, false); 1000]);
        let r = report_from_scores(&scored, None);
        assert_eq!((r.paraphrases, r.non_paraphrases), (3, 1000));
        let s = r.paraphrase_similarity.as_ref().unwrap();
        assert!((s.mean - 0.8).abs() < 1e-6);
        assert!((s.median - 0.8).abs() < 1e-6);
        assert!((r.recommended.as_ref().unwrap().threshold - 0.70).abs() < 1e-6);
        let text = render(&r);
        assert!(text.contains("recommended threshold: 0.70"), "{text}");
        assert!(text.contains("3 paraphrases, 1000 non-paraphrases"));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["curve"].as_array().unwrap().len(), 29);
        assert_eq!(json["similarities"].as_array().unwrap().len(), 1003);

        let r = report_from_scores(&[(0.9, true), (0.99, false)], None);
        assert!(r.recommended.is_none());
        assert!(render(&r).contains("no threshold up to 0.98 meets the rule"));
    }

    #[test]
    fn wilson_upper_bound_is_above_the_rate_and_shrinks_with_the_sample() {
        assert_eq!(wilson_upper95(0, 0), 0.0);
        // 16 of 2000 (0.8%): the bound is about 1.3%.
        let u = wilson_upper95(16, 2000);
        assert!(u > 0.008 && (u - 0.0130).abs() < 0.0005, "{u}");
        assert!(wilson_upper95(160, 20000) < u);
        assert!(wilson_upper95(0, 100) > 0.0 && wilson_upper95(100, 100) <= 1.0);
    }

    #[test]
    fn spread_of_nothing_is_none() {
        assert!(spread(&[]).is_none());
        let s = spread(&[0.1, 0.2, 0.3, 0.4, 0.5]).unwrap();
        assert!((s.p25 - 0.2).abs() < 1e-6 && (s.p75 - 0.4).abs() < 1e-6);
    }

    #[test]
    fn read_pairs_parses_jsonl_and_names_a_bad_line() {
        let input = "{\"a\":\"x\",\"b\":\"y\",\"paraphrase\":true}\n\n{\"a\":\"p\",\"b\":\"q\",\"paraphrase\":false}\n";
        let pairs = read_pairs(input.as_bytes()).unwrap();
        assert_eq!(pairs.len(), 2);
        assert!(pairs[0].paraphrase && !pairs[1].paraphrase);
        let err = read_pairs("{\"a\":\"x\",\"b\":\"y\",\"paraphrase\":true}\n{\"a\":1}\n".as_bytes()).unwrap_err();
        assert!(matches!(err, QualityError::Parse { line: 2, .. }), "{err}");
    }
}
