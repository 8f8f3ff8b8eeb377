//! The output guard: scans what the model generated (after placeholder
//! restore) for secrets / PII of configured types that the request did not
//! contain, and for policy phrases. Each hit is either redacted inline
//! (irreversibly: `[REDACTED_<TYPE>]`, or `[REDACTED]` for a phrase) or
//! blocks the whole response.
//!
//! - [`OutputGuard::check`] checks one complete text.
//! - [`guard_json`] checks the model-generated text fields of a whole
//!   (non-streamed) JSON response body.
//! - Streams are guarded by [`crate::restore::SseRestorer::with_guard`].
//!
//! Values the request itself contained (the originals in the request's
//! [`MaskMap`]) are allowed: the model repeating the user's own key is not a
//! leak. Placeholders are never findings (no detector matches `<TYPE_n>`).
//!
//! In JSON source text (tool-call `arguments`, streamed `partial_json`) a hit
//! whose span contains `"` or `\` cannot be replaced without risking invalid
//! JSON, so it blocks instead of being redacted.

use std::collections::BTreeMap;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::ApiKind;
use crate::error::Error;
use crate::moderation::{ModerationAction, Moderator};
use crate::pii::{check_builtin_names, policy_err, MaskMap, PiiAction, PiiPolicy, PiiScanner, SECRET};
use crate::usage::usage_from_value;
use crate::Usage;

/// What to do with an output hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuardAction {
    /// Replace inline by `[REDACTED_<TYPE>]` (`[REDACTED]` for phrases).
    Redact,
    /// Refuse the whole response.
    Block,
}

/// A set of phrases (matched ASCII-case-insensitively as substrings).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PhraseRule {
    pub id: String,
    pub phrases: Vec<String>,
    pub action: GuardAction,
}

/// The output policy.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OutputPolicy {
    /// Built-in entity name → action. Default: `SECRET` → `redact`.
    #[serde(default = "default_entities")]
    pub entities: BTreeMap<String, GuardAction>,
    #[serde(default)]
    pub phrases: Vec<PhraseRule>,
    /// Streamed text is held back this many bytes before it is released.
    #[serde(default = "default_window")]
    pub window_bytes: usize,
}

fn default_entities() -> BTreeMap<String, GuardAction> {
    BTreeMap::from([(SECRET.to_string(), GuardAction::Redact)])
}

fn default_window() -> usize {
    256
}

impl Default for OutputPolicy {
    fn default() -> OutputPolicy {
        OutputPolicy { entities: default_entities(), phrases: Vec::new(), window_bytes: default_window() }
    }
}

impl OutputPolicy {
    /// Check what serde cannot. Paths are relative to the output policy
    /// (`entities.FOO`, `phrases[0].phrases[1]`, `windowBytes`).
    pub fn validate(&self) -> Result<(), Error> {
        check_builtin_names(self.entities.keys())?;
        if !(16..=65536).contains(&self.window_bytes) {
            return Err(policy_err("windowBytes".into(), "must be between 16 and 65536"));
        }
        for (i, r) in self.phrases.iter().enumerate() {
            if r.id.trim().is_empty() {
                return Err(policy_err(format!("phrases[{i}].id"), "ids must not be empty"));
            }
            if self.phrases[..i].iter().any(|o| o.id == r.id) {
                return Err(policy_err(format!("phrases[{i}].id"), format!("rule `{}` is defined twice", r.id)));
            }
            if r.phrases.is_empty() {
                return Err(policy_err(format!("phrases[{i}].phrases"), "give at least one phrase"));
            }
            for (j, p) in r.phrases.iter().enumerate() {
                if p.trim().is_empty() {
                    return Err(policy_err(format!("phrases[{i}].phrases[{j}]"), "phrases must not be empty"));
                }
                if p.trim().len() > self.window_bytes {
                    return Err(policy_err(format!("phrases[{i}].phrases[{j}]"), "phrase is longer than windowBytes"));
                }
            }
        }
        Ok(())
    }
}

/// The result of [`OutputGuard::check`]. Owned (no borrow of the input):
/// `Clean` means the text may be used as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardOutcome {
    /// Nothing found.
    Clean,
    /// The redacted text and the entity types / phrase rule ids redacted
    /// (sorted, unique).
    Redacted(String, Vec<String>),
    /// A `block` hit: the entity type or phrase rule id.
    Blocked(String),
}

/// One hit in a text.
#[derive(Debug, Clone)]
struct Hit {
    start: usize,
    end: usize,
    label: String,
    phrase: bool,
}

/// The compiled output policy, built once and shared.
#[derive(Debug)]
pub struct OutputGuard {
    scanner: Option<PiiScanner>,
    actions: BTreeMap<String, GuardAction>,
    /// Phrase automaton; pattern id → rule index.
    phrases: Option<(AhoCorasick, Vec<usize>)>,
    rules: Vec<(String, GuardAction)>,
    window: usize,
    /// Moderation of answers (`inspection.moderation`), when on.
    moderation: Option<Arc<Moderator>>,
}

impl OutputGuard {
    /// Validate `policy` and compile it.
    pub fn new(policy: &OutputPolicy) -> Result<OutputGuard, Error> {
        policy.validate()?;
        let scanner = if policy.entities.is_empty() {
            None
        } else {
            let pii = PiiPolicy {
                entities: policy.entities.keys().map(|k| (k.clone(), PiiAction::Redact)).collect(),
                custom: Vec::new(),
            };
            Some(PiiScanner::new(&pii)?)
        };
        let mut list: Vec<&str> = Vec::new();
        let mut targets = Vec::new();
        for (i, r) in policy.phrases.iter().enumerate() {
            for p in &r.phrases {
                list.push(p.trim());
                targets.push(i);
            }
        }
        let phrases = if list.is_empty() {
            None
        } else {
            let ac = AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::LeftmostLongest)
                .build(&list)
                .map_err(|e| policy_err("phrases".into(), e.to_string()))?;
            Some((ac, targets))
        };
        Ok(OutputGuard {
            scanner,
            actions: policy.entities.clone(),
            phrases,
            rules: policy.phrases.iter().map(|r| (r.id.clone(), r.action)).collect(),
            window: policy.window_bytes,
            moderation: None,
        })
    }

    /// Also judge answers with `moderator` (see [`crate::moderation`]): its
    /// segments are kept within the window, so a stream releases only text
    /// already judged. Findings are labelled `moderation:<category>`
    /// (`moderation-log:<category>` for `log`); `redact` replaces the
    /// segment by `[MODERATED:<category>]`.
    pub fn with_moderation(mut self, moderator: Option<Moderator>) -> Self {
        let window = self.window;
        self.moderation = moderator.map(|m| {
            let bytes = m.segment_bytes().min(window);
            Arc::new(m.with_segment_bytes(bytes))
        });
        self
    }

    /// The moderator judging answers, its segments kept within the window
    /// (none unless [`with_moderation`](Self::with_moderation) gave one).
    pub fn moderator(&self) -> Option<&Moderator> {
        self.moderation.as_deref()
    }

    /// Whether the guard can find anything at all.
    pub fn is_active(&self) -> bool {
        self.scanner.is_some() || self.phrases.is_some() || self.moderation.is_some()
    }

    /// Whether the policy refuses whole answers: an entity, a phrase rule or
    /// a moderation category whose action is `block`. (A redaction inside
    /// JSON source, such as a tool call's arguments, also refuses the answer
    /// that holds it; that is not counted here.)
    pub fn may_block(&self) -> bool {
        self.actions.values().chain(self.rules.iter().map(|(_, a)| a)).any(|a| *a == GuardAction::Block)
            || self.moderation.as_ref().is_some_and(|m| m.may_block())
    }

    /// Judge the segment `buf[at..at + len]`: `Err(label)` on a block;
    /// otherwise the segment's new length and whether it was redacted. In
    /// JSON source a redaction blocks instead (it could break the JSON).
    fn moderate(
        m: &Moderator,
        buf: &mut String,
        at: usize,
        len: usize,
        json: bool,
        labels: &mut Vec<String>,
    ) -> Result<(usize, bool), String> {
        let Some(segment) = buf.get(at..at + len) else { return Ok((len, false)) };
        let findings = m.judge(segment);
        if findings.is_empty() {
            return Ok((len, false));
        }
        if let Some(f) = findings
            .iter()
            .find(|f| f.action == ModerationAction::Block || (json && f.action == ModerationAction::Redact))
        {
            return Err(format!("moderation:{}", f.category.name()));
        }
        let mut redact = None;
        for f in &findings {
            let label = match f.action {
                ModerationAction::Log => format!("moderation-log:{}", f.category.name()),
                _ => format!("moderation:{}", f.category.name()),
            };
            if f.action == ModerationAction::Redact && redact.is_none() {
                redact = Some(format!("[MODERATED:{}]", f.category.name()));
            }
            if !labels.contains(&label) {
                labels.push(label);
            }
        }
        match redact {
            Some(marker) => {
                // Keep the whitespace that ends the segment, so words do not run together.
                let keep = segment.len() - segment.trim_end().len();
                buf.replace_range(at..at + len - keep, &marker);
                Ok((marker.len() + keep, true))
            }
            None => Ok((len, false)),
        }
    }

    /// Judge the segments of `buf` after `judged` that are complete (all
    /// of them when `last`), advancing `judged`.
    fn moderate_stream(
        &self,
        buf: &mut String,
        judged: &mut usize,
        json: bool,
        last: bool,
        labels: &mut Vec<String>,
    ) -> Result<(), String> {
        let Some(m) = &self.moderation else {
            *judged = buf.len();
            return Ok(());
        };
        while let Some(len) = buf.get(*judged..).and_then(|rest| m.next_segment(rest, last)) {
            *judged += Self::moderate(m, buf, *judged, len, json, labels)?.0;
        }
        Ok(())
    }

    /// Bytes a stream holds back per channel.
    pub fn window_bytes(&self) -> usize {
        self.window
    }

    /// New text a channel collects beyond its window before some is released.
    fn release_step(&self) -> usize {
        (self.window / 8).max(1)
    }

    /// Check one complete text. Values in `masks` (the request's originals)
    /// are allowed.
    pub fn check(&self, text: &str, masks: &MaskMap) -> GuardOutcome {
        match self.scan(text, masks, false) {
            Err(label) => GuardOutcome::Blocked(label),
            Ok(hits) if hits.is_empty() => GuardOutcome::Clean,
            Ok(hits) => {
                let mut labels = Vec::new();
                let out = redact(text, &hits, &mut labels);
                labels.sort();
                GuardOutcome::Redacted(out, labels)
            }
        }
    }

    /// Every hit in `text`, sorted and non-overlapping; `Err(label)` on a
    /// block hit. `json`: `text` is JSON source.
    fn scan(&self, text: &str, masks: &MaskMap, json: bool) -> Result<Vec<Hit>, String> {
        let mut hits: Vec<Hit> = Vec::new();
        if let Some(scanner) = &self.scanner {
            for f in scanner.find(text) {
                let Some(value) = text.get(f.start..f.end) else { continue };
                if allowed(value, masks) {
                    continue;
                }
                if self.actions.get(&f.entity) == Some(&GuardAction::Block) {
                    return Err(f.entity);
                }
                hits.push(Hit { start: f.start, end: f.end, label: f.entity, phrase: false });
            }
        }
        if let Some((ac, targets)) = &self.phrases {
            for m in ac.find_iter(text) {
                let Some((id, action)) = targets.get(m.pattern().as_usize()).and_then(|&i| self.rules.get(i)) else {
                    continue;
                };
                if *action == GuardAction::Block {
                    return Err(id.clone());
                }
                hits.push(Hit { start: m.start(), end: m.end(), label: id.clone(), phrase: true });
            }
        }
        if json {
            if let Some(h) = hits.iter().find(|h| text.get(h.start..h.end).is_some_and(|s| s.contains(['"', '\\']))) {
                return Err(h.label.clone());
            }
        }
        hits.sort_by_key(|h| (h.start, std::cmp::Reverse(h.end)));
        let mut kept: Vec<Hit> = Vec::with_capacity(hits.len());
        for h in hits {
            match kept.last_mut() {
                Some(k) if h.start < k.end => k.end = k.end.max(h.end),
                _ => kept.push(h),
            }
        }
        Ok(kept)
    }

    /// Stream windowing for one channel: `buf` holds the channel's
    /// unreleased (already restored) text. Returns the text to release now
    /// (redacted), removing it from `buf`; `last` releases everything.
    /// Labels of redactions are added to `labels`. `Err(label)` on a block.
    ///
    /// Text is released in steps of at least an eighth of the window: each
    /// release scans the whole window again, and streamed deltas are a few
    /// bytes each, so releasing after every delta scanned each byte some
    /// sixty times. Nothing leaves unscanned either way.
    ///
    /// `judged`: how much of `buf` moderation has judged (see
    /// [`OutputGuard::with_moderation`]); only judged text is released.
    pub(crate) fn release(
        &self,
        buf: &mut String,
        judged: &mut usize,
        masks: &MaskMap,
        json: bool,
        last: bool,
        labels: &mut Vec<String>,
    ) -> Result<String, String> {
        if !last && buf.len() < self.window + self.release_step() {
            return Ok(String::new());
        }
        self.moderate_stream(buf, judged, json, last, labels)?;
        let hits = self.scan(buf, masks, json)?;
        let cut = if last {
            buf.len()
        } else {
            let limit = self.window.saturating_mul(4);
            let base = floor_boundary(buf, buf.len().saturating_sub(self.window));
            let mut c = base;
            loop {
                let mut moved = false;
                for h in &hits {
                    if h.start < c && h.end > c {
                        c = h.start;
                        moved = true;
                    }
                }
                let r = run_start(buf, c);
                if r < c {
                    c = r;
                    moved = true;
                }
                if !moved {
                    break;
                }
            }
            if buf.len() - c > limit {
                // Candidate run too long to hold: release anyway, keeping a
                // hit that straddles the window edge whole (redacted).
                c = base;
                for h in &hits {
                    if h.start < c && h.end > c {
                        c = h.end;
                    }
                }
            }
            c
        };
        let cut = floor_boundary(buf, cut.min(*judged));
        if cut == 0 {
            return Ok(String::new());
        }
        let head: Vec<Hit> = hits.into_iter().filter(|h| h.end <= cut).collect();
        let out = redact(&buf[..cut], &head, labels);
        buf.drain(..cut);
        *judged -= cut;
        Ok(out)
    }

    /// Guard one string in place; true when it changed.
    fn guard_string(
        &self,
        s: &mut String,
        masks: &MaskMap,
        json: bool,
        labels: &mut Vec<String>,
    ) -> Result<bool, String> {
        let hits = self.scan(s, masks, json)?;
        let mut changed = false;
        if !hits.is_empty() {
            *s = redact(s, &hits, labels);
            changed = true;
        }
        if let Some(m) = &self.moderation {
            let mut at = 0;
            while let Some(len) = s.get(at..).and_then(|rest| m.next_segment(rest, true)) {
                let (new, redacted) = Self::moderate(m, s, at, len, json, labels)?;
                changed |= redacted;
                at += new;
            }
        }
        Ok(changed)
    }
}

/// Whether a detected value is one the request contained.
fn allowed(value: &str, masks: &MaskMap) -> bool {
    masks.entries().any(|(p, o)| o == value || p == value || o.contains(value) || (o.len() >= 8 && value.contains(o)))
}

/// `text` with every hit replaced; labels added (unique).
fn redact(text: &str, hits: &[Hit], labels: &mut Vec<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for h in hits {
        let (Some(before), true) = (text.get(last..h.start), h.end <= text.len()) else { continue };
        out.push_str(before);
        if h.phrase {
            out.push_str("[REDACTED]");
        } else {
            out.push_str("[REDACTED_");
            out.push_str(&h.label);
            out.push(']');
        }
        last = h.end;
        if !labels.contains(&h.label) {
            labels.push(h.label.clone());
        }
    }
    out.push_str(text.get(last..).unwrap_or(""));
    out
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Characters a key / token / address is made of.
fn token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+' | '/' | '=' | '.' | ':' | '@' | '~')
}

/// Start of the run of token characters that `i` is inside (or `i`).
fn run_start(s: &str, i: usize) -> usize {
    let Some(head) = s.get(..i) else { return i };
    let tail_starts_token = s.get(i..).and_then(|t| t.chars().next()).is_some_and(token_char);
    if !tail_starts_token {
        return i;
    }
    let mut start = i;
    for (p, c) in head.char_indices().rev() {
        if !token_char(c) {
            break;
        }
        start = p;
    }
    start
}

/// The result of [`guard_json`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonGuard {
    Unchanged,
    /// The rewritten body and the types / rule ids redacted.
    Rewritten(Vec<u8>, Vec<String>),
    /// Unchanged, but moderation recorded findings (`flag` / `log`): their labels.
    Flagged(Vec<String>),
    /// A block hit: the entity type or rule id.
    Blocked(String),
    /// The body is not JSON: nothing in it could be guarded.
    Unreadable,
}

/// Guard the model-generated text fields of a non-streamed JSON response of
/// `api` (run after [`crate::restore::restore_json`]). Bodies that are not
/// JSON are `Unreadable`; embeddings are `Unchanged`.
pub fn guard_json(api: ApiKind, guard: &OutputGuard, masks: &MaskMap, body: &[u8]) -> JsonGuard {
    guard_json_usage(api, guard, masks, body).0
}

/// [`guard_json`], and the body's usage (as [`crate::usage_from_json`]
/// reads it), from one parse of the body when the guard is active.
pub fn guard_json_usage(api: ApiKind, guard: &OutputGuard, masks: &MaskMap, body: &[u8]) -> (JsonGuard, Option<Usage>) {
    if !guard.is_active() || !api.answers_text() {
        return (JsonGuard::Unchanged, crate::usage_from_json(api, body).ok().flatten());
    }
    let Ok(mut v) = serde_json::from_slice::<Value>(body) else { return (JsonGuard::Unreadable, None) };
    let usage = usage_from_value(api, &v);
    (guard_value(api, guard, masks, &mut v), usage)
}

fn guard_value(api: ApiKind, guard: &OutputGuard, masks: &MaskMap, v: &mut Value) -> JsonGuard {
    let mut labels = Vec::new();
    let res = match api {
        ApiKind::OpenAiChat | ApiKind::OpenAiCompletions => guard_openai_body(guard, masks, v, &mut labels),
        ApiKind::OpenAiResponses => guard_responses_value(guard, masks, v, &mut labels),
        ApiKind::AnthropicMessages => guard_anthropic_body(guard, masks, v, &mut labels),
        ApiKind::OpenAiEmbeddings | ApiKind::GeminiCountTokens | ApiKind::GeminiEmbed | ApiKind::GeminiBatchEmbed => {
            Ok(false)
        }
        ApiKind::GeminiGenerate => guard_gemini_body(guard, masks, v, &mut labels),
        ApiKind::BedrockConverse => guard_bedrock_body(guard, masks, v, &mut labels),
    };
    match res {
        Err(label) => JsonGuard::Blocked(label),
        Ok(false) if labels.is_empty() => JsonGuard::Unchanged,
        Ok(false) => {
            labels.sort();
            JsonGuard::Flagged(labels)
        }
        Ok(true) => match serde_json::to_vec(v) {
            Ok(out) => {
                labels.sort();
                JsonGuard::Rewritten(out, labels)
            }
            Err(_) => JsonGuard::Unchanged,
        },
    }
}

fn guard_slot(
    guard: &OutputGuard,
    masks: &MaskMap,
    slot: Option<&mut Value>,
    json: bool,
    labels: &mut Vec<String>,
) -> Result<bool, String> {
    match slot {
        Some(Value::String(s)) => guard.guard_string(s, masks, json, labels),
        _ => Ok(false),
    }
}

fn guard_openai_body(
    guard: &OutputGuard,
    masks: &MaskMap,
    v: &mut Value,
    labels: &mut Vec<String>,
) -> Result<bool, String> {
    let mut changed = false;
    let Some(choices) = v.get_mut("choices").and_then(Value::as_array_mut) else { return Ok(false) };
    for choice in choices {
        changed |= guard_slot(guard, masks, choice.get_mut("text"), false, labels)?;
        let Some(msg) = choice.get_mut("message") else { continue };
        match msg.get_mut("content") {
            Some(Value::Array(parts)) => {
                for p in parts {
                    changed |= guard_slot(guard, masks, p.get_mut("text"), false, labels)?;
                }
            }
            other => changed |= guard_slot(guard, masks, other, false, labels)?,
        }
        for name in ["refusal", "reasoning_content"] {
            changed |= guard_slot(guard, masks, msg.get_mut(name), false, labels)?;
        }
        if let Some(calls) = msg.get_mut("tool_calls").and_then(Value::as_array_mut) {
            for call in calls {
                let slot = call.get_mut("function").and_then(|f| f.get_mut("arguments"));
                changed |= guard_slot(guard, masks, slot, true, labels)?;
            }
        }
        let slot = msg.get_mut("function_call").and_then(|f| f.get_mut("arguments"));
        changed |= guard_slot(guard, masks, slot, true, labels)?;
    }
    Ok(changed)
}

/// Responses API: every string under a `text` / `refusal` key (plain) or
/// an `arguments` key (JSON source) inside `output`, plus `output_text`; for
/// a stream event (no `output`), the whole event (`part`, `item`,
/// `response.output`, `text` of a `.done` event).
pub(crate) fn guard_responses_value(
    guard: &OutputGuard,
    masks: &MaskMap,
    v: &mut Value,
    labels: &mut Vec<String>,
) -> Result<bool, String> {
    let Value::Object(m) = v else { return Ok(false) };
    let mut changed = guard_slot(guard, masks, m.get_mut("output_text"), false, labels)?;
    if let Some(output) = m.get_mut("output") {
        changed |= walk_responses(guard, masks, output, labels)?;
    } else {
        for (key, item) in m.iter_mut() {
            changed |= match key.as_str() {
                "text" | "refusal" => guard_slot(guard, masks, Some(item), false, labels)?,
                "arguments" => guard_slot(guard, masks, Some(item), true, labels)?,
                "part" | "item" | "response" => walk_responses(guard, masks, item, labels)?,
                _ => false,
            };
        }
    }
    Ok(changed)
}

fn walk_responses(
    guard: &OutputGuard,
    masks: &MaskMap,
    v: &mut Value,
    labels: &mut Vec<String>,
) -> Result<bool, String> {
    let mut changed = false;
    match v {
        Value::Array(items) => {
            for item in items {
                changed |= walk_responses(guard, masks, item, labels)?;
            }
        }
        Value::Object(m) => {
            let is_response = m.get("object").and_then(Value::as_str) == Some("response");
            for (key, item) in m.iter_mut() {
                if is_response && key != "output" && key != "output_text" {
                    continue;
                }
                let is_str = item.is_string();
                changed |= match key.as_str() {
                    "text" | "refusal" | "output_text" if is_str => {
                        guard_slot(guard, masks, Some(item), false, labels)?
                    }
                    "arguments" if is_str => guard_slot(guard, masks, Some(item), true, labels)?,
                    _ => walk_responses(guard, masks, item, labels)?,
                };
            }
        }
        _ => {}
    }
    Ok(changed)
}

fn guard_anthropic_body(
    guard: &OutputGuard,
    masks: &MaskMap,
    v: &mut Value,
    labels: &mut Vec<String>,
) -> Result<bool, String> {
    let mut changed = false;
    let Some(blocks) = v.get_mut("content").and_then(Value::as_array_mut) else { return Ok(false) };
    for b in blocks {
        let ty = b.get("type").and_then(Value::as_str).unwrap_or("").to_owned();
        match ty.as_str() {
            "text" => changed |= guard_slot(guard, masks, b.get_mut("text"), false, labels)?,
            "thinking" => changed |= guard_slot(guard, masks, b.get_mut("thinking"), false, labels)?,
            "tool_use" | "server_tool_use" => {
                if let Some(input) = b.get_mut("input") {
                    changed |= guard_leaves(guard, masks, input, labels)?;
                }
            }
            _ => {}
        }
    }
    Ok(changed)
}

/// A Gemini answer: every candidate's text parts and function call `args`.
fn guard_gemini_body(
    guard: &OutputGuard,
    masks: &MaskMap,
    v: &mut Value,
    labels: &mut Vec<String>,
) -> Result<bool, String> {
    let mut changed = false;
    let Some(candidates) = v.get_mut("candidates").and_then(Value::as_array_mut) else { return Ok(false) };
    for cand in candidates {
        let parts = cand.get_mut("content").and_then(|c| c.get_mut("parts")).and_then(Value::as_array_mut);
        for part in parts.into_iter().flatten() {
            changed |= guard_slot(guard, masks, part.get_mut("text"), false, labels)?;
            if let Some(args) = part.get_mut("functionCall").and_then(|c| c.get_mut("args")) {
                changed |= guard_leaves(guard, masks, args, labels)?;
            }
        }
    }
    Ok(changed)
}

/// A Bedrock Converse answer: the message's text blocks, reasoning text
/// and tool use `input`.
fn guard_bedrock_body(
    guard: &OutputGuard,
    masks: &MaskMap,
    v: &mut Value,
    labels: &mut Vec<String>,
) -> Result<bool, String> {
    let mut changed = false;
    let blocks = v.pointer_mut("/output/message/content").and_then(Value::as_array_mut);
    for block in blocks.into_iter().flatten() {
        changed |= guard_slot(guard, masks, block.get_mut("text"), false, labels)?;
        if let Some(text) = block.pointer_mut("/reasoningContent/reasoningText/text") {
            changed |= guard_slot(guard, masks, Some(text), false, labels)?;
        }
        if let Some(input) = block.get_mut("toolUse").and_then(|t| t.get_mut("input")) {
            changed |= guard_leaves(guard, masks, input, labels)?;
        }
    }
    Ok(changed)
}

fn guard_leaves(guard: &OutputGuard, masks: &MaskMap, v: &mut Value, labels: &mut Vec<String>) -> Result<bool, String> {
    let mut changed = false;
    match v {
        Value::String(s) => changed |= guard.guard_string(s, masks, false, labels)?,
        Value::Array(items) => {
            for item in items {
                changed |= guard_leaves(guard, masks, item, labels)?;
            }
        }
        Value::Object(m) => {
            for item in m.values_mut() {
                changed |= guard_leaves(guard, masks, item, labels)?;
            }
        }
        _ => {}
    }
    Ok(changed)
}

/// The one error event a blocked stream ends with, in `api`'s streaming
/// shape (OpenAI chat / completions add `data: [DONE]`).
pub(crate) fn write_block_event(api: ApiKind, named: bool, label: &str, out: &mut Vec<u8>) {
    let message = format!("response blocked by output policy: {label}");
    write_error_event(api, named, &message, "output_blocked", out);
}

/// Append the event that ends a stream of `api` with an error (`message`,
/// machine-readable `code`), in that API's stream shape, followed by the
/// stream's end marker where the API has one (OpenAI chat and completions:
/// `data: [DONE]`; an Anthropic `error` event and a Responses `error` event
/// end their streams themselves). `named`: whether the stream names its
/// events (`event:` lines), for the Responses API.
pub(crate) fn write_error_event(api: ApiKind, named: bool, message: &str, code: &str, out: &mut Vec<u8>) {
    let (event, data) = match api {
        ApiKind::AnthropicMessages => {
            (Some("error"), serde_json::json!({"type": "error", "error": {"type": "api_error", "message": message}}))
        }
        ApiKind::OpenAiResponses => (
            named.then_some("error"),
            serde_json::json!({"type": "error", "code": code, "message": message, "param": null}),
        ),
        // Google ends a stream with its error object as the last event.
        ApiKind::GeminiGenerate => {
            let body = crate::error::error_body(crate::api::ApiFamily::Gemini, 500, message, code);
            (None, serde_json::from_str(&body).unwrap_or_default())
        }
        // An exception frame (the filter frames these events again; see
        // `crate::restore::BEDROCK_EXCEPTION`).
        ApiKind::BedrockConverse => {
            (Some("exception:internalServerException"), serde_json::json!({"message": format!("{message} ({code})")}))
        }
        _ => (None, serde_json::json!({"error": {"message": message, "type": "server_error", "code": code}})),
    };
    if let Some(e) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(e.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
    write_end_marker(api, out);
}

/// Append the end marker of a stream of `api` where it is an event of its
/// own (OpenAI chat and completions: `data: [DONE]`).
pub(crate) fn write_end_marker(api: ApiKind, out: &mut Vec<u8>) {
    if matches!(api, ApiKind::OpenAiChat | ApiKind::OpenAiCompletions) {
        out.extend_from_slice(b"data: [DONE]\n\n");
    }
}
