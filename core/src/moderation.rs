//! Moderation: judges model answers in the categories of the OpenAI
//! moderation taxonomy (hate, harassment, self-harm, sexual, violence) with
//! a small linear model that runs inside the filter.
//!
//! - [`features`]: the hashed word features (shared with the trainer).
//! - [`model`]: the model file and its scoring.
//! - [`Moderator`]: the policy compiled over the built-in model; the output
//!   guard ([`crate::guard`]) calls it on every segment of an answer.
//!
//! A text is judged sentence by sentence (a sentence longer than
//! [`Moderator::segment_bytes`] is cut at a space): a toxic sentence cannot
//! hide among harmless ones (a score over several sentences is diluted by
//! them, docs/moderation-quality.md). The segments of a streamed answer are
//! the ones of the same answer sent whole, so streams and JSON bodies get
//! the same verdicts, and each byte is scored once.
//!
//! The model is trained by `core/examples/moderation.rs`
//! (`scripts/train-moderation.sh`) on public data; its quality is measured
//! by `scripts/moderation-quality.sh` (docs/moderation-quality.md).

pub mod features;
pub mod model;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::pii::policy_err;
use model::{logit, Model};

/// The built-in model (`scripts/train-moderation.sh` rebuilds it).
pub static MODEL: &[u8] = include_bytes!("moderation/model.bin");

/// Number of categories.
pub const CATEGORIES: usize = 5;

/// A moderation category (OpenAI moderation taxonomy names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    Hate,
    Harassment,
    SelfHarm,
    Sexual,
    Violence,
}

impl Category {
    /// Every category, in the model's order.
    pub const ALL: [Category; CATEGORIES] =
        [Category::Hate, Category::Harassment, Category::SelfHarm, Category::Sexual, Category::Violence];

    pub fn name(self) -> &'static str {
        match self {
            Category::Hate => "hate",
            Category::Harassment => "harassment",
            Category::SelfHarm => "self-harm",
            Category::Sexual => "sexual",
            Category::Violence => "violence",
        }
    }

    pub fn from_name(name: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// What to do when a segment of an answer is judged to be in a category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModerationAction {
    /// Counted (`tollgate_moderation_total.<category>`) and logged.
    Log,
    /// Counted and recorded with the answer (`io.tollgate.output`: `flagged:moderation:<category>`).
    Flag,
    /// The segment is replaced by `[MODERATED:<category>]`.
    Redact,
    /// The whole answer is refused.
    Block,
}

/// `inspection.moderation`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ModerationPolicy {
    /// Category → action on model answers. Empty (the default): off.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub output: BTreeMap<Category, ModerationAction>,
    /// Probability above which a segment is in a category (default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f32>,
    /// Per-category thresholds, over `threshold`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub thresholds: BTreeMap<Category, f32>,
}

/// The default probability threshold.
pub const DEFAULT_THRESHOLD: f32 = 0.5;

impl ModerationPolicy {
    /// Check what serde cannot (paths relative to `inspection.moderation`).
    pub fn validate(&self) -> Result<(), Error> {
        let ok = |t: f32| t > 0.0 && t < 1.0;
        if let Some(t) = self.threshold {
            if !ok(t) {
                return Err(policy_err("threshold".into(), "must be between 0 and 1 (exclusive)"));
            }
        }
        for (c, &t) in &self.thresholds {
            if !ok(t) {
                return Err(policy_err(format!("thresholds.{}", c.name()), "must be between 0 and 1 (exclusive)"));
            }
        }
        Ok(())
    }

    pub fn is_default(&self) -> bool {
        *self == ModerationPolicy::default()
    }

    /// Whether anything is judged.
    pub fn is_on(&self) -> bool {
        !self.output.is_empty()
    }
}

/// One category a segment was judged to be in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Finding {
    pub category: Category,
    pub action: ModerationAction,
    pub probability: f32,
}

/// The moderation policy compiled over the built-in model, built once and shared.
#[derive(Debug, Clone)]
pub struct Moderator {
    model: Model<'static>,
    /// Per category: action and threshold logit.
    rules: [Option<(ModerationAction, f32)>; CATEGORIES],
    segment: usize,
}

/// Longest segment judged at once, in bytes.
pub const SEGMENT_BYTES: usize = 256;

impl Moderator {
    /// Compile `policy`; `Ok(None)` when it judges nothing.
    pub fn new(policy: &ModerationPolicy) -> Result<Option<Moderator>, Error> {
        policy.validate()?;
        if !policy.is_on() {
            return Ok(None);
        }
        let model = Model::parse(MODEL)
            .ok_or_else(|| policy_err("output".into(), "the built-in moderation model is unreadable"))?;
        let mut rules = [None; CATEGORIES];
        for (&c, &action) in &policy.output {
            let t = policy.thresholds.get(&c).copied().or(policy.threshold).unwrap_or(DEFAULT_THRESHOLD);
            rules[c as usize] = Some((action, logit(t)));
        }
        Ok(Some(Moderator { model, rules, segment: SEGMENT_BYTES }))
    }

    /// Judge segments of at most `bytes` (at least 16): the output guard
    /// keeps them within its window.
    pub fn with_segment_bytes(mut self, bytes: usize) -> Moderator {
        self.segment = bytes.max(16);
        self
    }

    /// Longest segment judged at once, in bytes.
    pub fn segment_bytes(&self) -> usize {
        self.segment
    }

    /// Whether any category refuses a whole answer.
    pub fn may_block(&self) -> bool {
        self.rules.iter().flatten().any(|(action, _)| *action == ModerationAction::Block)
    }

    /// The categories `segment` is in, under the policy (none for most text).
    pub fn judge(&self, segment: &str) -> Vec<Finding> {
        let (z, words) = self.model.judge(segment);
        let mut found = Vec::new();
        if words == 0 {
            return found;
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if let (Some((action, t)), Some(&c)) = (rule, Category::ALL.get(i)) {
                if z[i] >= *t {
                    found.push(Finding { category: c, action: *action, probability: model::sigmoid(z[i]) });
                }
            }
        }
        found
    }

    /// The end of the first segment of `text`. Unless `last` (nothing
    /// follows `text`), `None` while the segment cannot be known yet: the
    /// text is no longer than a segment and might go on.
    pub fn next_segment(&self, text: &str, last: bool) -> Option<usize> {
        next_segment(text, self.segment, last)
    }
}

/// See [`Moderator::next_segment`].
pub fn next_segment(text: &str, cap: usize, last: bool) -> Option<usize> {
    if text.is_empty() {
        return None;
    }
    // The first sentence end within the cap ends the segment: a line
    // break, or `.`, `!`, `?` followed by whitespace.
    let b = text.as_bytes();
    let head = b.get(..cap).unwrap_or(b);
    let line = memchr::memchr(b'\n', head);
    let before = head.get(..line.unwrap_or(head.len())).unwrap_or(head);
    let mut from = 0;
    while let Some(off) = before.get(from..).and_then(|rest| memchr::memchr3(b'.', b'!', b'?', rest)) {
        let i = from + off;
        if b.get(i + 1).is_some_and(u8::is_ascii_whitespace) {
            return Some(i + 1);
        }
        from = i + 1;
    }
    if let Some(i) = line {
        return Some(i + 1);
    }
    if text.len() <= cap {
        return last.then_some(text.len());
    }
    // A sentence longer than the cap: cut at its last space, else at the cap.
    let mut end = head.iter().rposition(u8::is_ascii_whitespace).map_or(cap, |i| i + 1);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    if end == 0 {
        // A first character longer than the cap (cannot happen for cap ≥ 4).
        end = text.char_indices().nth(1).map_or(text.len(), |(i, _)| i);
    }
    Some(end)
}

/// The segments of a whole text, as byte ranges.
pub fn segments(text: &str, cap: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(len) = text.get(at..).and_then(|rest| next_segment(rest, cap, true)) {
        out.push((at, at + len));
        at += len;
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_sentences_and_cover_the_text() {
        let text = "First sentence here. Second one! Third? ".repeat(20);
        let segs = segments(&text, 64);
        assert_eq!(segs.first().map(|s| s.0), Some(0));
        assert_eq!(segs.last().map(|s| s.1), Some(text.len()));
        for w in segs.windows(2) {
            assert_eq!(w[0].1, w[1].0);
        }
        for &(a, b) in &segs {
            assert!(b - a <= 64);
            if b < text.len() {
                assert!(text[..b].ends_with(['.', '!', '?']), "{:?}", &text[a..b]);
            }
        }
        // No sentence end: cut at a space; no space: at the cap, on a char boundary.
        let words = "word ".repeat(30);
        assert!(segments(&words, 64)
            .iter()
            .all(|&(a, b)| b - a <= 64 && (b == words.len() || &words[b - 1..b] == " ")));
        let wide = "é".repeat(100);
        let segs = segments(&wide, 33);
        assert!(segs.iter().all(|&(a, b)| wide.is_char_boundary(a) && wide.is_char_boundary(b) && b > a));
    }

    #[test]
    fn a_stream_sees_the_segments_of_the_whole_text() {
        let text = "One two three. Four five six seven! Eight nine ten eleven twelve. ".repeat(9);
        let whole = segments(&text, 48);
        // Fed a prefix at a time, segments are cut only once more than a
        // segment is known, and then where the whole text cuts them.
        let mut cuts = Vec::new();
        let mut judged = 0;
        for end in 1..=text.len() {
            let last = end == text.len();
            while let Some(len) = next_segment(&text[judged..end], 48, last) {
                cuts.push((judged, judged + len));
                judged += len;
            }
        }
        assert_eq!(cuts, whole);
    }

    #[test]
    fn policy_names_and_validation() {
        let p: ModerationPolicy =
            serde_json::from_str(r#"{"output":{"hate":"block","self-harm":"flag"},"thresholds":{"violence":0.7}}"#)
                .unwrap();
        assert_eq!(p.output[&Category::SelfHarm], ModerationAction::Flag);
        assert!(p.validate().is_ok() && p.is_on());
        assert!(serde_json::from_str::<ModerationPolicy>(r#"{"output":{"spam":"block"}}"#).is_err());
        let bad = ModerationPolicy { threshold: Some(1.0), ..p.clone() };
        assert!(bad.validate().is_err());
        assert!(Moderator::new(&ModerationPolicy::default()).unwrap().is_none());
        assert_eq!(Category::from_name("self-harm"), Some(Category::SelfHarm));
    }
}
