//! The prompt-injection firewall.
//!
//! Rules (a built-in pack plus policy rules) are compiled once in
//! [`Firewall::new`]: regexes into one [`RegexSet`], phrases into one
//! Aho-Corasick automaton. [`Firewall::scan`] normalizes the text (see
//! [`normalize`]), runs both matchers, runs the obfuscation detectors on the
//! original text, decodes base64 runs and hidden tag characters and scans
//! them too, and scores the matched rules: `score = 1 - Π(1 - weight)`.
//!
//! Four rule ids are built-in detectors rather than patterns:
//! [`BASE64_PAYLOAD`] (a rule matched inside decoded base64),
//! [`ZERO_WIDTH`] (invisible characters inside words, or text smuggled in
//! tag characters), [`HOMOGLYPH`] (a word mixing Latin with Cyrillic or
//! Greek look-alikes) and [`CLASSIFIER`] (the learned classifier of
//! [`model`]: its weight for a text is its judgment, capped by the rule's
//! weight). A policy rule with one of these ids and neither `regex` nor
//! `phrases` enables (or re-weights) that detector; `disable` turns it off.

pub mod model;
mod normalize;
mod pack;

use std::sync::{Arc, Mutex};

use aho_corasick::{AhoCorasick, MatchKind};
use regex::{Regex, RegexSet};
use serde::{Deserialize, Serialize};

use crate::error::Error;

pub use normalize::normalize;
pub use pack::default_rules;

/// Detector id: a rule matched inside base64-decoded content.
pub const BASE64_PAYLOAD: &str = "encoding.base64_payload";
/// Detector id: invisible characters inside words, or tag-character smuggling.
pub const ZERO_WIDTH: &str = "obfuscation.zero_width";
/// Detector id: a word mixing Latin with Cyrillic/Greek look-alikes.
pub const HOMOGLYPH: &str = "obfuscation.homoglyph";
/// Detector id: the learned classifier ([`model`]).
pub const CLASSIFIER: &str = model::RULE;
/// All built-in detector ids.
pub const DETECTOR_IDS: [&str; 4] = [BASE64_PAYLOAD, ZERO_WIDTH, HOMOGLYPH, CLASSIFIER];

/// How deep decoded content (base64, tag characters) is scanned again.
const MAX_DECODE_DEPTH: u8 = 2;

/// One firewall rule. Regexes and phrases match the normalized text
/// (lowercase, see [`normalize`]); phrases match at word boundaries.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rule {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phrases: Vec<String>,
    /// Contribution to the score, `0..=1`.
    pub weight: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
}

/// The built-in rule pack to start from.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Pack {
    #[default]
    Default,
    None,
}

/// Firewall settings (`inspection.firewall` in the policy).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FirewallPolicy {
    #[serde(default)]
    pub pack: Pack,
    /// Extra rules; a rule with the id of a pack rule replaces it.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Rule ids to turn off (pack or policy rules).
    #[serde(default)]
    pub disable: Vec<String>,
    #[serde(default = "default_block")]
    pub block: f64,
    #[serde(default = "default_flag")]
    pub flag: f64,
    #[serde(default = "default_log")]
    pub log: f64,
}

fn default_block() -> f64 {
    0.8
}
fn default_flag() -> f64 {
    0.5
}
fn default_log() -> f64 {
    0.3
}

/// A route's, team's or consumer's own firewall thresholds, over those of
/// `inspection.firewall` (unset ones keep the value they override).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Thresholds {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<f64>,
}

/// The thresholds in force for one request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Levels {
    pub block: f64,
    pub flag: f64,
    pub log: f64,
}

impl Levels {
    /// These levels with `t`'s set values in their place.
    pub fn over(self, t: Option<&Thresholds>) -> Levels {
        let Some(t) = t else { return self };
        Levels {
            block: t.block.unwrap_or(self.block),
            flag: t.flag.unwrap_or(self.flag),
            log: t.log.unwrap_or(self.log),
        }
    }

    /// The action for `score` (`matched`: whether any rule matched).
    pub fn action(self, score: f64, matched: bool) -> FirewallAction {
        if !matched {
            FirewallAction::Allow
        } else if score + EPS >= self.block {
            FirewallAction::Block
        } else if score + EPS >= self.flag {
            FirewallAction::Flag
        } else if score + EPS >= self.log {
            FirewallAction::Log
        } else {
            FirewallAction::Allow
        }
    }

    /// Check range and order (`log <= flag <= block`), naming `prefix.<field>`.
    pub fn validate_at(self, prefix: &str) -> Result<(), Error> {
        let path = |field: &str| if prefix.is_empty() { field.to_string() } else { format!("{prefix}.{field}") };
        let err = |field: &str, message: String| Error::Policy { path: path(field), message };
        for (name, v) in [("log", self.log), ("flag", self.flag), ("block", self.block)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(err(name, format!("must be between 0 and 1, got {v}")));
            }
        }
        if self.flag < self.log {
            return Err(err("flag", format!("must be at least log ({})", self.log)));
        }
        if self.block < self.flag {
            return Err(err("block", format!("must be at least flag ({})", self.flag)));
        }
        Ok(())
    }
}

impl FirewallPolicy {
    /// The policy's own thresholds.
    pub fn levels(&self) -> Levels {
        Levels { block: self.block, flag: self.flag, log: self.log }
    }
}

impl Default for FirewallPolicy {
    fn default() -> Self {
        FirewallPolicy {
            pack: Pack::Default,
            rules: Vec::new(),
            disable: Vec::new(),
            block: default_block(),
            flag: default_flag(),
            log: default_log(),
        }
    }
}

impl FirewallPolicy {
    /// Parse and validate a JSON firewall policy.
    pub fn from_json(bytes: &[u8]) -> Result<FirewallPolicy, Error> {
        let policy: FirewallPolicy = crate::policy::parse::from_json_named(bytes)?;
        policy.validate()?;
        Ok(policy)
    }

    /// Validate; error paths are relative (`rules[2].regex`).
    pub fn validate(&self) -> Result<(), Error> {
        self.validate_at("")
    }

    /// Validate, prefixing error paths with `prefix`
    /// (`inspection.firewall` gives `inspection.firewall.rules[2].regex`).
    pub fn validate_at(&self, prefix: &str) -> Result<(), Error> {
        self.effective_rules(prefix).map(|_| ())
    }

    /// The pack rules with policy rules applied (replaced or appended) and
    /// disabled rules removed, after checking everything.
    fn effective_rules(&self, prefix: &str) -> Result<Vec<Rule>, Error> {
        let path = |field: String| if prefix.is_empty() { field } else { format!("{prefix}.{field}") };
        let err = |field: String, message: String| Error::Policy { path: path(field), message };
        self.levels().validate_at(prefix)?;
        let mut seen = std::collections::BTreeSet::new();
        for (i, r) in self.rules.iter().enumerate() {
            let at = |f: &str| if f.is_empty() { format!("rules[{i}]") } else { format!("rules[{i}].{f}") };
            if r.id.is_empty() || !r.id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
                return Err(err(at("id"), "ids use letters, digits, '.', '_' and '-' only".into()));
            }
            if !seen.insert(r.id.as_str()) {
                return Err(err(at("id"), format!("duplicate rule id `{}`", r.id)));
            }
            if !(0.0..=1.0).contains(&r.weight) {
                return Err(err(at("weight"), format!("must be between 0 and 1, got {}", r.weight)));
            }
            let is_detector = DETECTOR_IDS.contains(&r.id.as_str());
            match (&r.regex, r.phrases.is_empty()) {
                (Some(_), false) => return Err(err(at(""), "set either regex or phrases, not both".into())),
                (None, true) if !is_detector => {
                    return Err(err(at(""), "set one of regex or phrases".into()));
                }
                (Some(_), true) | (None, false) if is_detector => {
                    return Err(err(
                        at(if r.regex.is_some() { "regex" } else { "phrases" }),
                        format!("`{}` is a built-in detector: set only weight and category", r.id),
                    ));
                }
                _ => {}
            }
            if let Some(re) = &r.regex {
                if re.is_empty() {
                    return Err(err(at("regex"), "must not be empty".into()));
                }
                if let Err(e) = Regex::new(re) {
                    return Err(err(at("regex"), e.to_string()));
                }
            }
            for (j, p) in r.phrases.iter().enumerate() {
                if normalize(p).is_empty() {
                    return Err(err(at(&format!("phrases[{j}]")), "is empty after normalization".into()));
                }
            }
        }
        let mut rules = match self.pack {
            Pack::Default => default_rules(),
            Pack::None => Vec::new(),
        };
        for r in &self.rules {
            match rules.iter_mut().find(|p| p.id == r.id) {
                Some(slot) => *slot = r.clone(),
                None => rules.push(r.clone()),
            }
        }
        for (i, id) in self.disable.iter().enumerate() {
            if !rules.iter().any(|r| &r.id == id) {
                return Err(err(format!("disable[{i}]"), format!("unknown rule id `{id}`")));
            }
        }
        rules.retain(|r| !self.disable.contains(&r.id));
        Ok(rules)
    }
}

/// What to do with a request, by score.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum FirewallAction {
    Allow,
    Log,
    Flag,
    Block,
}

impl FirewallAction {
    pub fn as_str(self) -> &'static str {
        match self {
            FirewallAction::Allow => "allow",
            FirewallAction::Log => "log",
            FirewallAction::Flag => "flag",
            FirewallAction::Block => "block",
        }
    }
}

/// The outcome of a scan.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// `1 - Π(1 - weight)` over the matched rules; 0 when none matched.
    pub score: f64,
    pub action: FirewallAction,
    /// Matched rule ids, highest weight first (ties by id).
    pub rules: Vec<String>,
}

impl Verdict {
    /// The same scan judged at other thresholds (a route's or an identity's).
    pub fn at(mut self, levels: Levels) -> Verdict {
        self.action = levels.action(self.score, !self.rules.is_empty());
        self
    }

    /// The error to return to the client when the action is `Block`.
    pub fn error(&self) -> Option<Error> {
        if self.action != FirewallAction::Block {
            return None;
        }
        let rule = self.rules.first().cloned().unwrap_or_default();
        Some(Error::Blocked {
            message: format!("request blocked by the prompt firewall (rule `{rule}`, score {:.2})", self.score),
            rule,
        })
    }
}

#[derive(Debug, Clone)]
struct CompiledRule {
    id: String,
    weight: f64,
}

#[derive(Debug, Clone, Copy)]
struct PhraseInfo {
    rule: usize,
    start_boundary: bool,
    end_boundary: bool,
}

/// A compiled firewall; build once, share, scan per request.
#[derive(Debug, Clone)]
pub struct Firewall {
    rules: Vec<CompiledRule>,
    regexes: Option<RegexSet>,
    regex_rule: Vec<usize>,
    phrases: Option<AhoCorasick>,
    phrase_info: Vec<PhraseInfo>,
    base64: Option<usize>,
    zero_width: Option<usize>,
    homoglyph: Option<usize>,
    /// The learned classifier and its rule's index (its weight caps the judgment).
    classifier: Option<(usize, Arc<model::Model>)>,
    levels: Levels,
}

/// Tolerance for comparing scores with thresholds.
const EPS: f64 = 1e-9;

impl Firewall {
    /// Validate `policy` and compile its rules.
    pub fn new(policy: &FirewallPolicy) -> Result<Firewall, Error> {
        let rules = policy.effective_rules("")?;
        let mut compiled = Vec::with_capacity(rules.len());
        let (mut patterns, mut regex_rule) = (Vec::new(), Vec::new());
        let (mut phrases, mut phrase_info) = (Vec::new(), Vec::new());
        let (mut base64, mut zero_width, mut homoglyph, mut classifier) = (None, None, None, None);
        for (i, r) in rules.iter().enumerate() {
            compiled.push(CompiledRule { id: r.id.clone(), weight: r.weight });
            if let Some(re) = &r.regex {
                patterns.push(re.as_str());
                regex_rule.push(i);
            }
            for p in &r.phrases {
                let n = normalize(p);
                let start_boundary = n.chars().next().is_some_and(char::is_alphanumeric);
                let end_boundary = n.chars().last().is_some_and(char::is_alphanumeric);
                phrases.push(n);
                phrase_info.push(PhraseInfo { rule: i, start_boundary, end_boundary });
            }
            if r.regex.is_none() && r.phrases.is_empty() {
                match r.id.as_str() {
                    BASE64_PAYLOAD => base64 = Some(i),
                    ZERO_WIDTH => zero_width = Some(i),
                    HOMOGLYPH => homoglyph = Some(i),
                    CLASSIFIER => classifier = Some(i),
                    _ => {}
                }
            }
        }
        let regexes = if patterns.is_empty() {
            None
        } else {
            Some(RegexSet::new(&patterns).map_err(|e| Error::Policy { path: "rules".into(), message: e.to_string() })?)
        };
        let phrases = if phrases.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::Standard)
                    .build(&phrases)
                    .map_err(|e| Error::Policy { path: "rules".into(), message: e.to_string() })?,
            )
        };
        Ok(Firewall {
            rules: compiled,
            regexes,
            regex_rule,
            phrases,
            phrase_info,
            base64,
            zero_width,
            homoglyph,
            classifier: match classifier {
                Some(i) => Some((
                    i,
                    shipped_model().ok_or_else(|| Error::Policy {
                        path: "rules".into(),
                        message: "the built-in classifier's model does not load".into(),
                    })?,
                )),
                None => None,
            },
            levels: policy.levels(),
        })
    }

    /// [`Firewall::new`], reusing the firewall last built from an equal
    /// policy: the default pack compiles to automata over thousands of
    /// phrases, and a policy reload that leaves the firewall alone (a new
    /// alias, a PII pattern) should not wait for them again.
    pub fn shared(policy: &FirewallPolicy) -> Result<Arc<Firewall>, Error> {
        static LAST: Mutex<Option<(FirewallPolicy, Arc<Firewall>)>> = Mutex::new(None);
        if let Some((_, firewall)) = LAST.lock().ok().as_deref().and_then(Option::as_ref).filter(|(p, _)| p == policy) {
            return Ok(Arc::clone(firewall));
        }
        let firewall = Arc::new(Firewall::new(policy)?);
        if let Ok(mut last) = LAST.lock() {
            *last = Some((policy.clone(), Arc::clone(&firewall)));
        }
        Ok(firewall)
    }

    /// The policy's thresholds (a route's or an identity's may differ: see
    /// [`Verdict::at`]).
    pub fn levels(&self) -> Levels {
        self.levels
    }

    /// Ids of the active rules, in evaluation order.
    pub fn rule_ids(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.id.as_str())
    }

    /// Scan one text.
    pub fn scan(&self, text: &str) -> Verdict {
        self.scan_all([text])
    }

    /// Scan all user-controlled texts of a request as one: each rule counts
    /// once however many texts it matched.
    pub fn scan_all<'a>(&self, texts: impl IntoIterator<Item = &'a str>) -> Verdict {
        let mut hits = vec![false; self.rules.len()];
        if self.rules.is_empty() {
            // No rule, no detector (`pack: none`): nothing to normalize for.
            return self.verdict(&hits, 0.0);
        }
        // The classifier's highest weight over the texts.
        let mut judged = 0.0;
        for text in texts {
            self.scan_into(text, &mut hits, &mut judged, 0);
        }
        self.verdict(&hits, judged)
    }

    fn scan_into(&self, text: &str, hits: &mut [bool], judged: &mut f64, depth: u8) {
        let norm = normalize(text);
        if let Some((_, model)) = self.classifier.as_ref().filter(|_| judgeable(&norm)) {
            *judged = judged.max(model.text_weight(&norm));
        }
        // Most prompts match no rule at all: a search that can stop at the
        // first match (and skip ahead on literals) rules that out several
        // times faster than the overlapping search for every match.
        if let Some(set) = self.regexes.as_ref().filter(|set| set.is_match(&norm)) {
            for m in set.matches(&norm).iter() {
                if let Some(&r) = self.regex_rule.get(m) {
                    hits[r] = true;
                }
            }
        }
        if let Some(ac) = &self.phrases {
            let bytes = norm.as_bytes();
            for m in ac.find_overlapping_iter(&norm) {
                let Some(info) = self.phrase_info.get(m.pattern().as_usize()) else { continue };
                if hits[info.rule] {
                    continue;
                }
                let before_ok = !info.start_boundary || !ends_with_word_char(&norm[..m.start()]);
                let after_ok = !info.end_boundary || m.end() >= bytes.len() || !starts_with_word_char(&norm[m.end()..]);
                if before_ok && after_ok {
                    hits[info.rule] = true;
                }
            }
        }
        // Invisible, tag and Greek/Cyrillic characters are all outside ASCII:
        // most prompts skip the three Unicode checks below in one fast pass.
        let ascii = text.is_ascii();
        if let Some(r) = self.zero_width.filter(|_| !ascii) {
            if !hits[r] && normalize::has_zero_width_in_word(text) {
                hits[r] = true;
            }
        }
        if let Some(r) = self.homoglyph.filter(|_| !ascii) {
            if !hits[r] && normalize::has_homoglyph_mixing(text) {
                hits[r] = true;
            }
        }
        if depth >= MAX_DECODE_DEPTH {
            return;
        }
        if let Some(hidden) = (!ascii).then(|| normalize::tag_payload(text)).flatten() {
            if let Some(r) = self.zero_width {
                hits[r] = true;
            }
            self.scan_into(&hidden, hits, judged, depth + 1);
        }
        for decoded in normalize::base64_payloads(text) {
            let mut inner = vec![false; self.rules.len()];
            self.scan_into(&decoded, &mut inner, judged, depth + 1);
            if inner.iter().any(|&h| h) {
                for (h, i) in hits.iter_mut().zip(&inner) {
                    *h |= *i;
                }
                if let Some(r) = self.base64 {
                    hits[r] = true;
                }
            }
        }
    }

    /// The verdict on the rules `hits` marks and the classifier's judgment (its highest weight
    /// over the texts, counted when it reaches [`CLASSIFIER_FLOOR`]).
    fn verdict(&self, hits: &[bool], judged: f64) -> Verdict {
        // The classifier's rule is never among `hits`: it is a detector without patterns.
        let mut matched: Vec<&CompiledRule> = self.rules.iter().zip(hits).filter(|(_, &h)| h).map(|(r, _)| r).collect();
        matched.sort_by(|a, b| b.weight.total_cmp(&a.weight).then_with(|| a.id.cmp(&b.id)));
        let keep: f64 = matched.iter().map(|r| 1.0 - r.weight).product();
        let by_rules = self.levels.action(1.0 - keep, !matched.is_empty());
        let mut rules: Vec<String> = matched.into_iter().map(|r| r.id.clone()).collect();
        let mut score = 1.0 - keep;
        if let Some((i, _)) = &self.classifier {
            let weight = judged * self.rules.get(*i).map_or(0.0, |r| r.weight);
            if weight >= CLASSIFIER_FLOOR {
                score = 1.0 - keep * (1.0 - weight);
                // Named first (in `x-tollgate-blocked-by`) when it is what raised the action.
                if self.levels.action(score, true) > by_rules {
                    rules.insert(0, CLASSIFIER.into());
                } else {
                    rules.push(CLASSIFIER.into());
                }
            }
        }
        let score = score.clamp(0.0, 1.0);
        let action = self.levels.action(score, !rules.is_empty());
        Verdict { score, action, rules }
    }
}

/// Below this weight (the default `log` level) the classifier's judgment is not counted: a
/// faint judgment stacked on one weak rule would flag ordinary requests that happen to share
/// a word with an attack.
pub const CLASSIFIER_FLOOR: f64 = 0.3;

/// Fewest words the classifier judges. A word or two is no instruction to
/// anyone, and a model of word and byte features is least sure where it has
/// fewest: alone, `mode` read as `developer mode` and `confirm` as a
/// jailbreak's "confirm you understand". Short attacks are the rules' (their
/// phrases match texts of any length).
pub const CLASSIFIER_MIN_WORDS: usize = 3;

/// Whether a normalized text has words enough for the classifier, counted
/// as runs of letters and digits (`[ADMIN_MODE] safety=disabled` is four)
/// or as pieces between spaces (a jailbreak in Morse code has no letters).
fn judgeable(norm: &str) -> bool {
    let enough = CLASSIFIER_MIN_WORDS - 1;
    norm.split_whitespace().nth(enough).is_some()
        || norm.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).nth(enough).is_some()
}

/// The shipped classifier, parsed once per process.
fn shipped_model() -> Option<Arc<model::Model>> {
    static MODEL: std::sync::OnceLock<Option<Arc<model::Model>>> = std::sync::OnceLock::new();
    MODEL.get_or_init(|| model::Model::shipped().map(Arc::new)).clone()
}

fn ends_with_word_char(s: &str) -> bool {
    s.chars().next_back().is_some_and(char::is_alphanumeric)
}

fn starts_with_word_char(s: &str) -> bool {
    s.chars().next().is_some_and(char::is_alphanumeric)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn shared_reuses_the_firewall_of_an_equal_policy_only() {
        let default = FirewallPolicy::default();
        let a = Firewall::shared(&default).unwrap();
        let b = Firewall::shared(&default.clone()).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let stricter = FirewallPolicy { block: 0.6, ..FirewallPolicy::default() };
        let c = Firewall::shared(&stricter).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(c.levels().block, 0.6);
        assert!(Firewall::shared(&FirewallPolicy { block: 2.0, ..FirewallPolicy::default() }).is_err());
    }

    #[test]
    fn pack_compiles_and_ids_are_unique() {
        let fw = Firewall::new(&FirewallPolicy::default()).unwrap();
        let ids: Vec<&str> = fw.rule_ids().collect();
        let mut dedup = ids.clone();
        dedup.sort_unstable();
        dedup.dedup();
        assert_eq!(ids.len(), dedup.len());
        for id in DETECTOR_IDS {
            assert!(ids.contains(&id));
        }
        for r in default_rules() {
            if let Some(re) = r.regex {
                Regex::new(&re).unwrap();
            }
        }
    }

    #[test]
    fn base64_only_fires_with_a_match_inside() {
        let fw = Firewall::new(&FirewallPolicy::default()).unwrap();
        // "the quarterly report is attached here" in base64: decodes, matches nothing.
        let v = fw.scan("see dGhlIHF1YXJ0ZXJseSByZXBvcnQgaXMgYXR0YWNoZWQgaGVyZQ==");
        assert_eq!(v.action, FirewallAction::Allow, "{v:?}");
    }
}
