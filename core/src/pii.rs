//! PII detection and reversible masking.
//!
//! [`MaskMap`] is the per-request map between placeholders (`<EMAIL_ADDRESS_1>`)
//! and the original values; it lives only in the request's context and is
//! bounded in bytes. [`PiiScanner`] finds entities and applies per-type actions.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::error::Error;

mod card;
mod phone;

/// Placeholders look like `<TYPE_N>`: `<`, an upper-case type name
/// (`A-Z`, `0-9`, `_`), `_`, a decimal counter, `>`.
pub const PLACEHOLDER_OPEN: char = '<';
pub const PLACEHOLDER_CLOSE: char = '>';

/// The per-request placeholder map.
#[derive(Debug, Clone, Default)]
pub struct MaskMap {
    by_placeholder: HashMap<String, String>,
    by_value: HashMap<(String, String), String>,
    counters: HashMap<String, u32>,
    bytes: usize,
    max_bytes: usize,
    max_placeholder_len: usize,
}

impl MaskMap {
    /// A map that may hold at most `max_bytes` of placeholders and values.
    pub fn new(max_bytes: usize) -> MaskMap {
        MaskMap { max_bytes, ..MaskMap::default() }
    }

    /// The placeholder for `value` of type `entity` (upper-case, e.g.
    /// `EMAIL_ADDRESS`): the same value always gets the same placeholder.
    pub fn placeholder(&mut self, entity: &str, value: &str) -> Result<String, Error> {
        let key = (entity.to_string(), value.to_string());
        if let Some(p) = self.by_value.get(&key) {
            return Ok(p.clone());
        }
        let n = self.counters.get(entity).copied().unwrap_or(0) + 1;
        let placeholder = format!("{PLACEHOLDER_OPEN}{entity}_{n}{PLACEHOLDER_CLOSE}");
        let cost = 2 * (placeholder.len() + value.len()) + entity.len();
        if self.bytes + cost > self.max_bytes {
            return Err(Error::InspectionLimit { limit: self.max_bytes });
        }
        self.bytes += cost;
        self.counters.insert(entity.to_string(), n);
        self.max_placeholder_len = self.max_placeholder_len.max(placeholder.len());
        self.by_placeholder.insert(placeholder.clone(), value.to_string());
        self.by_value.insert(key, placeholder.clone());
        Ok(placeholder)
    }

    /// The original value behind a complete placeholder.
    pub fn original(&self, placeholder: &str) -> Option<&str> {
        self.by_placeholder.get(placeholder).map(String::as_str)
    }

    /// Whether some placeholder in the map starts with `s` (and `s` is not
    /// already a whole placeholder). Used to hold back a possible split.
    pub fn could_be_prefix(&self, s: &str) -> bool {
        !s.is_empty()
            && s.len() < self.max_placeholder_len
            && s.starts_with(PLACEHOLDER_OPEN)
            && self.by_placeholder.keys().any(|p| p.len() > s.len() && p.starts_with(s))
    }

    /// Length in bytes of the longest placeholder (0 when empty).
    pub fn max_placeholder_len(&self) -> usize {
        self.max_placeholder_len
    }

    pub fn is_empty(&self) -> bool {
        self.by_placeholder.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_placeholder.len()
    }

    /// Bytes accounted against the bound.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Every (placeholder, original) pair.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.by_placeholder.iter().map(|(p, v)| (p.as_str(), v.as_str()))
    }

    /// Replace every complete placeholder in `text` by its original.
    /// Unknown `<...>` sequences are left as they are.
    pub fn restore_str<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if self.is_empty() || !text.contains(PLACEHOLDER_OPEN) {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        let mut changed = false;
        while let Some(open) = rest.find(PLACEHOLDER_OPEN) {
            out.push_str(&rest[..open]);
            let tail = &rest[open..];
            let close = tail.find(PLACEHOLDER_CLOSE).filter(|&c| c < self.max_placeholder_len);
            match close.and_then(|c| self.original(&tail[..=c]).map(|v| (c, v))) {
                Some((c, value)) => {
                    out.push_str(value);
                    rest = &tail[c + 1..];
                    changed = true;
                }
                None => {
                    out.push(PLACEHOLDER_OPEN);
                    rest = &tail[PLACEHOLDER_OPEN.len_utf8()..];
                }
            }
        }
        out.push_str(rest);
        if changed {
            Cow::Owned(out)
        } else {
            Cow::Borrowed(text)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod mask_map_tests {
    use super::*;

    #[test]
    fn same_value_same_placeholder_and_restore() {
        let mut m = MaskMap::new(4096);
        let a = m.placeholder("EMAIL_ADDRESS", "a@x.io").unwrap();
        let b = m.placeholder("EMAIL_ADDRESS", "b@x.io").unwrap();
        assert_eq!(a, "<EMAIL_ADDRESS_1>");
        assert_eq!(b, "<EMAIL_ADDRESS_2>");
        assert_eq!(m.placeholder("EMAIL_ADDRESS", "a@x.io").unwrap(), a);
        assert_eq!(m.placeholder("PHONE_NUMBER", "555").unwrap(), "<PHONE_NUMBER_1>");
        assert_eq!(m.restore_str("to <EMAIL_ADDRESS_2>, <X_1> and <EMAIL_ADDRESS_1><"), "to b@x.io, <X_1> and a@x.io<");
        assert!(m.could_be_prefix("<EMAIL_ADD"));
        assert!(!m.could_be_prefix("<EMAIL_ADDRESS_1>"));
        assert!(!m.could_be_prefix("<FOO"));
        assert!(!m.could_be_prefix("EMAIL"));
    }

    #[test]
    fn bounded() {
        let mut m = MaskMap::new(40);
        assert!(m.placeholder("SECRET", "sk-1").is_ok());
        assert_eq!(m.placeholder("SECRET", "sk-2-long-long-long"), Err(Error::InspectionLimit { limit: 40 }));
        assert!(m.bytes() <= 40);
    }
}

// ---------------------------------------------------------------------------
// Detection: policy, scanner, findings, masking.
//
// One pass of a `RegexSet` over the text tells which detectors can fire; only
// those run their own regex, and every candidate is then validated in code
// (checksums, ranges, word boundaries) before it becomes a `Finding`.
// Dictionary terms of custom entities go through one Aho-Corasick automaton.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::str::FromStr;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::{Regex, RegexSet};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::request::{request_from_json, ParsedRequest, TextKind, MAX_DEPTH};

pub const EMAIL_ADDRESS: &str = "EMAIL_ADDRESS";
pub const PHONE_NUMBER: &str = "PHONE_NUMBER";
pub const CREDIT_CARD: &str = "CREDIT_CARD";
pub const US_SSN: &str = "US_SSN";
pub const IBAN_CODE: &str = "IBAN_CODE";
pub const IP_ADDRESS: &str = "IP_ADDRESS";
/// API keys, tokens, private keys.
pub const SECRET: &str = "SECRET";

/// The built-in entity types (Presidio's names plus `SECRET`).
pub const BUILTIN_ENTITIES: [&str; 7] =
    [EMAIL_ADDRESS, PHONE_NUMBER, CREDIT_CARD, US_SSN, IBAN_CODE, IP_ADDRESS, SECRET];

/// What to do with a detected value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PiiAction {
    /// Replace by a reversible placeholder (`<EMAIL_ADDRESS_1>`), restored in the response.
    Mask,
    /// Replace by `[REDACTED_<TYPE>]`, irreversibly.
    Redact,
    /// Refuse the request.
    Block,
    /// Leave the text alone; only report the finding.
    Log,
}

/// Which entities to look for and what to do with each.
///
/// The default masks every built-in entity, `SECRET` included (masking keeps
/// keys away from the provider while the client still gets them back in the
/// answer; use `block` to refuse such requests instead).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PiiPolicy {
    /// Built-in entity name → action. Entities not listed are not detected.
    #[serde(default = "default_entities")]
    pub entities: BTreeMap<String, PiiAction>,
    #[serde(default)]
    pub custom: Vec<CustomEntity>,
}

/// A user-defined entity: regexes and/or dictionary terms.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CustomEntity {
    /// `UPPER_SNAKE`, used in placeholders (`<PROJECT_1>`).
    pub name: String,
    /// Regular expressions (Rust `regex` syntax).
    #[serde(default)]
    pub patterns: Vec<String>,
    /// Dictionary terms, matched ASCII-case-insensitively as whole words.
    #[serde(default)]
    pub terms: Vec<String>,
    pub action: PiiAction,
}

fn default_entities() -> BTreeMap<String, PiiAction> {
    BUILTIN_ENTITIES.iter().map(|e| (e.to_string(), PiiAction::Mask)).collect()
}

impl Default for PiiPolicy {
    fn default() -> PiiPolicy {
        PiiPolicy { entities: default_entities(), custom: Vec::new() }
    }
}

pub(crate) fn policy_err(path: String, message: impl Into<String>) -> Error {
    Error::Policy { path, message: message.into() }
}

/// Every name is a built-in entity type; the error names `entities.<NAME>`.
pub(crate) fn check_builtin_names<'a>(names: impl IntoIterator<Item = &'a String>) -> Result<(), Error> {
    match names.into_iter().find(|n| !BUILTIN_ENTITIES.contains(&n.as_str())) {
        Some(name) => Err(policy_err(
            format!("entities.{name}"),
            format!("unknown entity; expected one of {}", BUILTIN_ENTITIES.join(", ")),
        )),
        None => Ok(()),
    }
}

fn upper_snake(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('A'..='Z')) && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

impl PiiPolicy {
    /// Check what serde cannot. Paths are relative to the PII policy
    /// (`entities.FOO`, `custom[0].patterns[1]`).
    pub fn validate(&self) -> Result<(), Error> {
        check_builtin_names(self.entities.keys())?;
        for (i, c) in self.custom.iter().enumerate() {
            if !upper_snake(&c.name) {
                return Err(policy_err(format!("custom[{i}].name"), "names are UPPER_SNAKE (A-Z, 0-9, _)"));
            }
            if BUILTIN_ENTITIES.contains(&c.name.as_str()) || self.custom[..i].iter().any(|o| o.name == c.name) {
                return Err(policy_err(format!("custom[{i}].name"), format!("entity `{}` is defined twice", c.name)));
            }
            if c.patterns.is_empty() && c.terms.is_empty() {
                return Err(policy_err(format!("custom[{i}]"), "give at least one pattern or term"));
            }
            for (j, t) in c.terms.iter().enumerate() {
                if t.trim().is_empty() {
                    return Err(policy_err(format!("custom[{i}].terms[{j}]"), "terms must not be empty"));
                }
            }
            for (j, p) in c.patterns.iter().enumerate() {
                compile_custom(p).map_err(|m| policy_err(format!("custom[{i}].patterns[{j}]"), m))?;
            }
        }
        Ok(())
    }
}

/// How much an action keeps from the provider, for merging overlapping findings.
fn strength(action: PiiAction) -> u8 {
    match action {
        PiiAction::Block => 3,
        PiiAction::Redact => 2,
        PiiAction::Mask => 1,
        PiiAction::Log => 0,
    }
}

fn compile_custom(pattern: &str) -> Result<Regex, String> {
    let re = regex::RegexBuilder::new(pattern).size_limit(1 << 20).build().map_err(|e| e.to_string())?;
    if re.is_match("") {
        return Err("pattern matches the empty string".into());
    }
    Ok(re)
}

/// One detected value: `text[start..end]` (UTF-8 byte offsets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub entity: String,
    pub start: usize,
    pub end: usize,
    pub action: PiiAction,
}

/// Whether any finding changed the text (mask or redact), i.e. the body must
/// be re-serialized.
pub fn needs_rewrite(findings: &[Finding]) -> bool {
    findings.iter().any(|f| matches!(f.action, PiiAction::Mask | PiiAction::Redact))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Pem,
    Jwt,
    OpenAi,
    AwsId,
    AwsSecret,
    GitHub,
    Slack,
    Google,
    Bearer,
    Card,
    Iban,
    Ssn,
    Email,
    Ipv6,
    Ipv4,
    Phone,
    Custom,
}

/// Built-in detectors: kind, entity, candidate regex (validated in code).
const BUILTIN_DETECTORS: &[(Kind, &str, &str)] = &[
    (
        Kind::Pem,
        SECRET,
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----(?:[\sA-Za-z0-9+/=:,\-\\]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|[\sA-Za-z0-9+/=\\]*)",
    ),
    (Kind::Jwt, SECRET, r"eyJ[A-Za-z0-9_\-]{2,}\.eyJ[A-Za-z0-9_\-]{2,}\.[A-Za-z0-9_\-]*"),
    (Kind::OpenAi, SECRET, r"sk-[A-Za-z0-9_\-]{20,}"),
    (Kind::AwsId, SECRET, r"(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}"),
    (
        Kind::AwsSecret,
        SECRET,
        r#"(?i:aws)[A-Za-z_\-]{0,30}(?i:secret)[A-Za-z_\-]{0,20}["']?\s*[:=]\s*["']?[A-Za-z0-9/+=]{40}"#,
    ),
    (Kind::GitHub, SECRET, r"(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,}"),
    (Kind::Slack, SECRET, r"xox[bpars]-[A-Za-z0-9\-]{10,}"),
    (Kind::Google, SECRET, r"AIza[0-9A-Za-z_\-]{35}"),
    (Kind::Bearer, SECRET, r"(?i:bearer)\s+[A-Za-z0-9\-._~+/]{16,}=*"),
    (Kind::Card, CREDIT_CARD, card::PATTERN),
    (Kind::Iban, IBAN_CODE, r"[A-Z]{2}[0-9]{2}(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,4})?)"),
    (Kind::Ssn, US_SSN, r"[0-9]{3}-[0-9]{2}-[0-9]{4}|[0-9]{3} [0-9]{2} [0-9]{4}"),
    (
        Kind::Email,
        EMAIL_ADDRESS,
        r"[A-Za-z0-9\p{Latin}._%+\-]+@(?:[A-Za-z0-9\p{Latin}](?:[A-Za-z0-9\p{Latin}\-]*[A-Za-z0-9\p{Latin}])?\.)+[A-Za-z]{2,24}",
    ),
    (Kind::Ipv6, IP_ADDRESS, r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:\.[0-9]{1,3}){0,3}"),
    (Kind::Ipv4, IP_ADDRESS, r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}"),
    (Kind::Phone, PHONE_NUMBER, phone::PATTERN),
];

struct Detector {
    kind: Kind,
    entity: usize,
    action: PiiAction,
    re: Regex,
}

/// The PII detectors of one policy, compiled once and reused for every request.
pub struct PiiScanner {
    /// Entity names: index → name.
    entities: Vec<String>,
    detectors: Vec<Detector>,
    set: Option<RegexSet>,
    /// Dictionary terms; pattern id → (entity index, action).
    terms: Option<(AhoCorasick, Vec<(usize, PiiAction)>)>,
}

impl std::fmt::Debug for PiiScanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PiiScanner")
            .field("entities", &self.entities)
            .field("detectors", &self.detectors.len())
            .finish()
    }
}

impl PiiScanner {
    /// Validate `policy` and compile its detectors.
    pub fn new(policy: &PiiPolicy) -> Result<PiiScanner, Error> {
        policy.validate()?;
        let mut entities: Vec<String> = Vec::new();
        let mut detectors = Vec::new();
        for (kind, entity, pattern) in BUILTIN_DETECTORS {
            let Some(&action) = policy.entities.get(*entity) else { continue };
            let idx = match entities.iter().position(|e| e == entity) {
                Some(i) => i,
                None => {
                    entities.push(entity.to_string());
                    entities.len() - 1
                }
            };
            let re = Regex::new(pattern).map_err(|e| policy_err(format!("entities.{entity}"), e.to_string()))?;
            detectors.push(Detector { kind: *kind, entity: idx, action, re });
        }
        let mut term_list: Vec<&str> = Vec::new();
        let mut term_targets = Vec::new();
        for (i, c) in policy.custom.iter().enumerate() {
            entities.push(c.name.clone());
            let idx = entities.len() - 1;
            for (j, p) in c.patterns.iter().enumerate() {
                let re = compile_custom(p).map_err(|m| policy_err(format!("custom[{i}].patterns[{j}]"), m))?;
                detectors.push(Detector { kind: Kind::Custom, entity: idx, action: c.action, re });
            }
            for t in &c.terms {
                term_list.push(t.trim());
                term_targets.push((idx, c.action));
            }
        }
        let set = if detectors.is_empty() {
            None
        } else {
            let set = regex::RegexSetBuilder::new(detectors.iter().map(|d| d.re.as_str()))
                .size_limit(64 << 20)
                .dfa_size_limit(8 << 20)
                .build()
                .map_err(|e| policy_err("custom".into(), e.to_string()))?;
            Some(set)
        };
        let terms = if term_list.is_empty() {
            None
        } else {
            let ac = AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::LeftmostLongest)
                .build(&term_list)
                .map_err(|e| policy_err("custom".into(), e.to_string()))?;
            Some((ac, term_targets))
        };
        Ok(PiiScanner { entities, detectors, set, terms })
    }

    /// Every finding in `text`: sorted by offset, non-overlapping. On overlap
    /// a `SECRET` wins, then the longer match, then the earlier one; the
    /// winner then covers what the others covered too (nothing of a value
    /// that overlapped another is left in clear), and takes their action
    /// when it is stronger (block, then redact, then mask, then log).
    pub fn find(&self, text: &str) -> Vec<Finding> {
        let mut cands: Vec<Cand> = Vec::new();
        // Most texts hold no value at all: a search that stops at the first
        // match rules that out several times faster than the overlapping one.
        if let Some(set) = self.set.as_ref().filter(|set| set.is_match(text)) {
            let hits = set.matches(text);
            for i in hits.iter() {
                let Some(d) = self.detectors.get(i) else { continue };
                for m in d.re.find_iter(text) {
                    if d.kind == Kind::Phone {
                        let (entity, action, rank) = (d.entity, d.action, d.kind as u8);
                        phone::find(text, m.start(), m.end(), &mut |start, end| {
                            cands.push(Cand { start, end, entity, action, rank });
                        });
                    } else if let Some((s, e)) = validate(d.kind, text, m.start(), m.end()) {
                        cands.push(Cand { start: s, end: e, entity: d.entity, action: d.action, rank: d.kind as u8 });
                    }
                }
            }
        }
        if let Some((ac, targets)) = &self.terms {
            for m in ac.find_iter(text) {
                let (s, e) = (m.start(), m.end());
                let before = text[..s].chars().next_back().is_some_and(is_word);
                let after = text[e..].chars().next().is_some_and(is_word);
                if before || after {
                    continue;
                }
                if let Some(&(entity, action)) = targets.get(m.pattern().as_usize()) {
                    cands.push(Cand { start: s, end: e, entity, action, rank: Kind::Custom as u8 });
                }
            }
        }
        if cands.is_empty() {
            return Vec::new();
        }
        let secret = self.entities.iter().position(|e| e == SECRET);
        cands.sort_by_key(|c| (Some(c.entity) != secret, std::cmp::Reverse(c.end - c.start), c.start, c.rank));
        let mut kept: Vec<Cand> = Vec::with_capacity(cands.len());
        let mut clashed: Vec<Cand> = Vec::new();
        for c in cands {
            let at = kept.partition_point(|k| k.start < c.start);
            let clash_before = at > 0 && kept.get(at - 1).is_some_and(|k| k.end > c.start);
            let clash_after = kept.get(at).is_some_and(|k| k.start < c.end);
            if !clash_before && !clash_after {
                kept.insert(at, c);
            } else {
                clashed.push(c);
            }
        }
        for c in clashed {
            // The kept findings it overlaps become one, over all of them.
            let first = kept.partition_point(|k| k.end <= c.start);
            let last = kept.partition_point(|k| k.start < c.end);
            let Some(group) = kept.get(first..last).filter(|g| !g.is_empty()) else { continue };
            let mut merged =
                group.iter().copied().fold(c, |m, k| if strength(k.action) >= strength(m.action) { k } else { m });
            merged.start = c.start.min(group[0].start);
            merged.end = c.end.max(group[group.len() - 1].end);
            kept.splice(first..last, [merged]);
        }
        kept.into_iter()
            .map(|c| Finding {
                entity: self.entities.get(c.entity).cloned().unwrap_or_default(),
                start: c.start,
                end: c.end,
                action: c.action,
            })
            .collect()
    }

    /// Apply the policy's actions to `text`. Findings are appended to
    /// `report` (not on `Err`). Text that needs no change is returned borrowed.
    pub fn mask_text<'a>(
        &self,
        text: &'a str,
        map: &mut MaskMap,
        report: &mut Vec<Finding>,
    ) -> Result<Cow<'a, str>, Error> {
        let findings = self.find(text);
        if findings.is_empty() {
            return Ok(Cow::Borrowed(text));
        }
        if let Some(b) = findings.iter().find(|f| f.action == PiiAction::Block) {
            return Err(blocked(&b.entity));
        }
        let mut out: Option<String> = None;
        let mut last = 0;
        for f in &findings {
            if !matches!(f.action, PiiAction::Mask | PiiAction::Redact) {
                continue;
            }
            let o = out.get_or_insert_with(|| String::with_capacity(text.len() + 16));
            o.push_str(&text[last..f.start]);
            if f.action == PiiAction::Mask {
                o.push_str(&map.placeholder(&f.entity, &text[f.start..f.end])?);
            } else {
                o.push_str("[REDACTED_");
                o.push_str(&f.entity);
                o.push(']');
            }
            last = f.end;
        }
        report.extend(findings);
        Ok(match out {
            Some(mut o) => {
                o.push_str(&text[last..]);
                Cow::Owned(o)
            }
            None => Cow::Borrowed(text),
        })
    }

    /// Mask every text of a parsed request in place (`parsed.json`), then
    /// refresh `parsed.request` if anything changed. In JSON texts (an
    /// Anthropic `tool_use` block's `input`, tool-call `arguments` strings)
    /// every object key and string value is masked, and an `arguments`
    /// string is written back as valid JSON. Offsets in the returned findings
    /// are relative to the string (or key) they were found in. On `Err` (a
    /// `block` finding, the map's bound) `parsed` may be partly rewritten
    /// and must be discarded.
    pub fn mask_request(&self, parsed: &mut ParsedRequest, map: &mut MaskMap) -> Result<Vec<Finding>, Error> {
        let mut report = Vec::new();
        let mut changed = false;
        for (i, ptr) in parsed.text_pointers.iter().enumerate() {
            let kind = parsed.text_kinds.get(i).copied().unwrap_or(TextKind::Plain);
            let Some(v) = parsed.json.pointer_mut(ptr) else { continue };
            changed |= match (kind, v) {
                (TextKind::JsonString, Value::String(s)) => self.mask_json_string(s, map, &mut report)?,
                (_, v) => self.mask_value(v, 0, map, &mut report)?,
            };
        }
        if changed {
            let (model, stream) = (std::mem::take(&mut parsed.request.model), parsed.request.stream);
            parsed.request = request_from_json(parsed.request.api, &parsed.json)?;
            if parsed.request.api.model_in_path() {
                // The model and the streaming flag are the path's.
                (parsed.request.model, parsed.request.stream) = (model, stream);
            }
        }
        Ok(report)
    }

    /// Mask the keys and strings of the JSON `s` holds, each string token
    /// rewritten in place as a JSON string: everything else (order, spacing,
    /// numbers) stays as the client wrote it and the result is still valid
    /// JSON. Not JSON after all: masked as text.
    fn mask_json_string(&self, s: &mut String, map: &mut MaskMap, report: &mut Vec<Finding>) -> Result<bool, Error> {
        if serde_json::from_str::<serde::de::IgnoredAny>(s).is_err() {
            return self.mask_string(s, map, report);
        }
        let mut out = String::with_capacity(s.len() + 16);
        let mut changed = false;
        let mut rest = s.as_str();
        while let Some(open) = rest.find('"') {
            let (before, tail) = rest.split_at(open);
            out.push_str(before);
            // Valid JSON: every string token is closed and decodes.
            let Some(token) = string_token(tail) else { return self.mask_string(s, map, report) };
            let Ok(text) = serde_json::from_str::<String>(token) else { return self.mask_string(s, map, report) };
            match self.mask_text(&text, map, report)? {
                Cow::Owned(masked) => {
                    out.push_str(&serde_json::to_string(&masked).map_err(|e| Error::InvalidJson(e.to_string()))?);
                    changed = true;
                }
                Cow::Borrowed(_) => out.push_str(token),
            }
            rest = tail.get(token.len()..).unwrap_or_default();
        }
        out.push_str(rest);
        if changed {
            *s = out;
        }
        Ok(changed)
    }

    fn mask_string(&self, s: &mut String, map: &mut MaskMap, report: &mut Vec<Finding>) -> Result<bool, Error> {
        match self.mask_text(s, map, report)? {
            Cow::Owned(o) => {
                *s = o;
                Ok(true)
            }
            Cow::Borrowed(_) => Ok(false),
        }
    }

    /// Mask every string of `v`, object keys included.
    fn mask_value(
        &self,
        v: &mut Value,
        depth: usize,
        map: &mut MaskMap,
        report: &mut Vec<Finding>,
    ) -> Result<bool, Error> {
        if depth > MAX_DEPTH {
            // The parser refuses deeper texts; nothing deeper is masked unseen.
            return Err(Error::InvalidRequest(format!("a text nests deeper than {MAX_DEPTH} levels")));
        }
        match v {
            Value::String(s) => self.mask_string(s, map, report),
            Value::Array(items) => {
                let mut changed = false;
                for item in items {
                    changed |= self.mask_value(item, depth + 1, map, report)?;
                }
                Ok(changed)
            }
            Value::Object(obj) => {
                let mut changed = false;
                for item in obj.values_mut() {
                    changed |= self.mask_value(item, depth + 1, map, report)?;
                }
                let mut renamed = Vec::new();
                for key in obj.keys() {
                    if let Cow::Owned(new) = self.mask_text(key, map, report)? {
                        renamed.push((key.clone(), new));
                    }
                }
                for (old, new) in renamed {
                    if obj.contains_key(&new) {
                        return Err(Error::InvalidRequest(format!(
                            "an object key masks to `{new}`, which the object already has"
                        )));
                    }
                    if let Some(item) = obj.remove(&old) {
                        obj.insert(new, item);
                        changed = true;
                    }
                }
                Ok(changed)
            }
            _ => Ok(false),
        }
    }
}

/// The JSON string token `tail` starts with (quotes included), if closed.
fn string_token(tail: &str) -> Option<&str> {
    let b = tail.as_bytes();
    let mut i = 1;
    while let Some(&c) = b.get(i) {
        match c {
            b'\\' => i += 2,
            b'"' => return tail.get(..=i),
            _ => i += 1,
        }
    }
    None
}

fn blocked(entity: &str) -> Error {
    let human = entity.to_ascii_lowercase().replace('_', " ");
    Error::Blocked {
        rule: entity.to_string(),
        message: format!("request contains {human} which the policy does not allow"),
    }
}

#[derive(Clone, Copy)]
struct Cand {
    start: usize,
    end: usize,
    entity: usize,
    action: PiiAction,
    rank: u8,
}

// ---------------------------------------------------------------------------
// Validators: each takes a regex candidate and returns the final span or None.

/// Word characters for dictionary terms (any script).
fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Word characters next to numbers, codes and keys: ASCII only, so values
/// glued to CJK or other non-Latin text are still found.
fn is_aword(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn prev(text: &str, i: usize) -> Option<char> {
    text.get(..i).and_then(|s| s.chars().next_back())
}

fn next(text: &str, i: usize) -> Option<char> {
    text.get(i..).and_then(|s| s.chars().next())
}

/// The candidate is not glued to a longer number or word:
/// no word character next to it, and no `.`/`-`/`/`/`:` joining it to digits.
fn number_bounded(text: &str, s: usize, e: usize) -> bool {
    let b = text.as_bytes();
    if let Some(p) = prev(text, s) {
        if is_aword(p)
            || (matches!(p, '.' | '-' | '/' | ':' | '+') && s >= 2 && b.get(s - 2).is_some_and(u8::is_ascii_digit))
        {
            return false;
        }
    }
    if let Some(n) = next(text, e) {
        if is_aword(n) || (matches!(n, '.' | '-' | '/' | ':') && b.get(e + 1).is_some_and(u8::is_ascii_digit)) {
            return false;
        }
    }
    true
}

fn word_bounded(text: &str, s: usize, e: usize) -> bool {
    !prev(text, s).is_some_and(is_aword) && !next(text, e).is_some_and(is_aword)
}

fn validate(kind: Kind, text: &str, s: usize, e: usize) -> Option<(usize, usize)> {
    let cand = text.get(s..e)?;
    let ok = |c: bool| if c { Some((s, e)) } else { None };
    match kind {
        Kind::Email => email(text, s, e),
        // Phone candidates may hold several numbers: see `find`.
        Kind::Phone => None,
        Kind::Card => ok(number_bounded(text, s, e) && card::card(cand)),
        Kind::Ssn => ok(number_bounded(text, s, e) && ssn(cand)),
        Kind::Iban => iban(text, s, e),
        Kind::Ipv4 => ok(ipv4_bounded(text, s, e) && ipv4(cand)),
        Kind::Ipv6 => ok(ipv6_bounded(text, s, e) && ipv6(cand)),
        Kind::Pem => {
            let trimmed = cand.trim_end_matches(|c: char| c.is_whitespace() || c == '\\');
            Some((s, s + trimmed.len()))
        }
        Kind::Jwt => ok(token_bounded(text, s, e, "-_") && jwt(cand)),
        Kind::OpenAi => ok(token_bounded(text, s, e, "-_") && letters_and_digits(&cand[3..])),
        Kind::AwsId | Kind::Google => ok(word_bounded(text, s, e)),
        Kind::GitHub => ok(token_bounded(text, s, e, "_") && cand.len() <= 255),
        Kind::Slack => ok(token_bounded(text, s, e, "-") && letters_and_digits(&cand[5..])),
        Kind::AwsSecret => {
            if next(text, e).is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '+' | '=')) {
                return None;
            }
            if prev(text, s).is_some_and(|c| c.is_ascii_alphanumeric()) {
                return None;
            }
            Some((e.checked_sub(40)?, e))
        }
        Kind::Bearer => {
            if prev(text, s).is_some_and(is_aword) {
                return None;
            }
            let token_start = s + cand.find(char::is_whitespace)?;
            let rest = &text[token_start..e];
            let token_start = token_start + (rest.len() - rest.trim_start().len());
            let token = text.get(token_start..e)?;
            if next(text, e).is_some_and(is_aword) || !letters_and_digits(token) {
                return None;
            }
            Some((token_start, e))
        }
        Kind::Custom => {
            if s == e {
                None
            } else {
                Some((s, e))
            }
        }
    }
}

/// No character of the token's own alphabet (ASCII alphanumerics plus `extra`) on either side.
fn token_bounded(text: &str, s: usize, e: usize, extra: &str) -> bool {
    let inside = |c: char| c.is_ascii_alphanumeric() || extra.contains(c);
    !prev(text, s).is_some_and(inside) && !next(text, e).is_some_and(inside)
}

fn letters_and_digits(s: &str) -> bool {
    s.bytes().any(|b| b.is_ascii_digit()) && s.bytes().any(|b| b.is_ascii_alphabetic())
}

fn email(text: &str, s: usize, e: usize) -> Option<(usize, usize)> {
    let cand = text.get(s..e)?;
    let trimmed = cand.trim_start_matches('.');
    let s = s + (cand.len() - trimmed.len());
    let at = trimmed.find('@')?;
    let local = &trimmed[..at];
    if local.is_empty() || local.len() > 64 || local.ends_with('.') || local.contains("..") || trimmed.len() > 254 {
        return None;
    }
    // The regex starts as far left as it can: only a second '@' can precede.
    if prev(text, s) == Some('@') {
        return None;
    }
    // The TLD is ASCII: a non-ASCII letter right after it ends the address.
    if next(text, e).is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '@' | '-')) {
        return None;
    }
    Some((s, e))
}

fn ssn(cand: &str) -> bool {
    let b = cand.as_bytes();
    if b.len() != 11 || b[3] != b[6] {
        return false;
    }
    let num = |r: std::ops::Range<usize>| cand.get(r).and_then(|x| x.parse::<u32>().ok());
    let (Some(area), Some(group), Some(serial)) = (num(0..3), num(4..6), num(7..11)) else { return false };
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

/// Expected IBAN length per country (common ones).
fn iban_len(country: &str) -> Option<usize> {
    Some(match country {
        "NO" => 15,
        "BE" => 16,
        "DK" | "FI" | "FO" | "GL" | "NL" => 18,
        "MK" | "SI" => 19,
        "AT" | "BA" | "EE" | "KZ" | "LT" | "LU" => 20,
        "CH" | "CR" | "HR" | "LI" | "LV" => 21,
        "BG" | "BH" | "DE" | "GB" | "GE" | "IE" | "ME" | "RS" => 22,
        "AE" | "GI" | "IL" | "TL" => 23,
        "AD" | "CZ" | "ES" | "MD" | "PK" | "RO" | "SA" | "SE" | "SK" | "TN" | "VG" => 24,
        "PT" => 25,
        "IS" | "TR" => 26,
        "FR" | "GR" | "IT" | "MC" | "MR" | "SM" => 27,
        "AL" | "AZ" | "BY" | "CY" | "DO" | "GT" | "HU" | "LB" | "PL" => 28,
        "BR" | "PS" | "QA" | "UA" => 29,
        "JO" | "KW" | "MU" => 30,
        "MT" | "SC" => 31,
        _ => return None,
    })
}

fn iban_ok(compact: &[u8]) -> bool {
    let n = compact.len();
    if !(15..=34).contains(&n) {
        return false;
    }
    let country = std::str::from_utf8(&compact[..2]).unwrap_or("");
    if iban_len(country).is_some_and(|l| l != n) {
        return false;
    }
    let mut rem: u32 = 0;
    for &c in compact[4..].iter().chain(&compact[..4]) {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 { (rem * 100 + v) % 97 } else { (rem * 10 + v) % 97 };
    }
    rem == 1
}

fn iban(text: &str, s: usize, e: usize) -> Option<(usize, usize)> {
    if prev(text, s).is_some_and(is_aword) {
        return None;
    }
    let mut end = e;
    loop {
        let span = text.get(s..end)?;
        let mut buf = [0u8; 34];
        let mut n = 0;
        for b in span.bytes().filter(|b| *b != b' ') {
            if n == buf.len() {
                n = 0;
                break;
            }
            buf[n] = b;
            n += 1;
        }
        if n > 0 && iban_ok(&buf[..n]) && !next(text, end).is_some_and(is_aword) {
            return Some((s, end));
        }
        // A spaced candidate may have swallowed a following word: drop groups.
        let cut = span.rfind(' ')?;
        if cut < 15 {
            return None;
        }
        end = s + cut;
    }
}

fn ipv4_bounded(text: &str, s: usize, e: usize) -> bool {
    let b = text.as_bytes();
    if let Some(p) = prev(text, s) {
        if is_aword(p) || (p == '.' && s >= 2 && b.get(s - 2).is_some_and(u8::is_ascii_digit)) {
            return false;
        }
    }
    if let Some(n) = next(text, e) {
        if is_aword(n) || (n == '.' && b.get(e + 1).is_some_and(u8::is_ascii_digit)) {
            return false;
        }
    }
    true
}

fn ipv4(cand: &str) -> bool {
    cand.split('.').all(|o| (o.len() == 1 || !o.starts_with('0')) && o.parse::<u8>().is_ok())
}

fn ipv6_bounded(text: &str, s: usize, e: usize) -> bool {
    let b = text.as_bytes();
    if prev(text, s).is_some_and(|c| is_aword(c) || c == ':') {
        return false;
    }
    if let Some(n) = next(text, e) {
        if is_aword(n) || n == ':' || (n == '.' && b.get(e + 1).is_some_and(u8::is_ascii_digit)) {
            return false;
        }
    }
    true
}

fn ipv6(cand: &str) -> bool {
    cand.bytes().any(|b| b.is_ascii_digit()) && Ipv6Addr::from_str(cand).is_ok()
}

fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn jwt(cand: &str) -> bool {
    let Some(header) = cand.split('.').next() else { return false };
    let Some(bytes) = base64url_decode(header) else { return false };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(o)) => o.contains_key("alg"),
        _ => false,
    }
}
