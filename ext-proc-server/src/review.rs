//! The filter's prompt checks, run again where the caller is known.
//!
//! The wasm filter runs before the sidecar and cannot tell who is calling.
//! It cannot hand its findings on with the request either: Envoy's wasm
//! host lets a filter change request headers only until they have gone on,
//! and they go on before the body is read. What it can do is leave them in
//! Envoy's filter state, which the ext_proc filter sends the sidecar as
//! attributes (a client cannot forge them): `io.tollgate.inspecting` with
//! the request's headers (the filter inspects this request), and its
//! report, `io.tollgate.inspection`, with the response's headers, in time
//! for the audit record. So the sidecar repeats a check only where it needs
//! the outcome before the request goes on, with the same core code and the
//! same policy:
//!
//! - the prompt firewall, when a team or consumer sets thresholds of its own
//!   (the filter then blocks only what every caller's thresholds block, see
//!   `FilterConfig::firewall_levels`);
//! - the firewall and the PII of the types the policy only logs, for the
//!   audit record, when no filter inspected the request (masked and
//!   redacted values already show in the body as placeholders).
//!
//! - the output guard, over the answer, for the audit record (the filter
//!   guards the answer after the sidecar has passed it on).
//!
//! All scan what the sidecar sees: the masked request and the answer before
//! placeholders are restored. Placeholders carry no firewall phrases, so the
//! score is the filter's, and values the request itself held stay
//! placeholders in the answer, so the guard finds what the filter's guard
//! finds (it allows the request's own values).

use std::sync::Arc;

use serde_json::{json, Value};
use tollgate_core::filter_config::TrustedPrompts;
use tollgate_core::firewall::Firewall;
use tollgate_core::guard::{GuardOutcome, OutputGuard};
use tollgate_core::moderation::{segments, ModerationAction, Moderator};
use tollgate_core::pii::{MaskMap, PiiAction, PiiScanner};
use tollgate_core::policy::Policy;
use tollgate_core::report::InspectionReport;
use tollgate_core::{Error, LlmRequest};

use crate::identity::Identity;

/// Compiled once per policy.
#[derive(Debug)]
pub struct Review {
    firewall: Option<Arc<Firewall>>,
    /// Detectors of the types whose action is `log` (none: no such types).
    logged: Option<PiiScanner>,
    /// Whether any team or consumer sets its own firewall thresholds.
    per_caller: bool,
    /// The output guard, moderation included (none when the policy turns both off).
    output: Option<OutputGuard>,
    /// The system prompts the policy trusts per alias, as written and as
    /// the filter's masking leaves them (this review sees the masked request).
    trusted: TrustedPrompts,
}

/// What a review found.
#[derive(Debug, Default)]
pub struct Findings {
    /// The firewall blocks this caller's request.
    pub blocked: Option<Error>,
    /// For the audit record; `None` when there is nothing to say.
    pub report: Option<InspectionReport>,
}

impl Review {
    pub fn new(policy: &Policy) -> Review {
        let per_caller = policy.teams.values().any(|t| t.firewall.is_some())
            || policy.consumers.values().any(|c| c.firewall.is_some());
        let mut logged = policy.inspection.pii.clone();
        logged.entities.retain(|_, action| *action == PiiAction::Log);
        logged.custom.retain(|c| c.action == PiiAction::Log);
        let any_logged = !logged.entities.is_empty() || !logged.custom.is_empty();
        Review {
            // The policy was validated: these compile (a failure only turns the review off).
            firewall: Firewall::shared(&policy.inspection.firewall).ok(),
            logged: any_logged.then(|| PiiScanner::new(&logged).ok()).flatten(),
            per_caller,
            output: OutputGuard::new(&policy.inspection.output)
                .ok()
                .map(|g| g.with_moderation(Moderator::new(&policy.inspection.moderation).ok().flatten()))
                .filter(OutputGuard::is_active),
            trusted: trusted_prompts(policy),
        }
    }

    /// Whether a team or consumer sets firewall thresholds of its own (so
    /// every request is scanned here, where the caller is known).
    pub fn per_caller(&self) -> bool {
        self.per_caller && self.firewall.is_some()
    }

    /// Whether the policy has an output guard (the filter then reads every
    /// answer).
    pub fn guards_output(&self) -> bool {
        self.output.is_some()
    }

    /// The rule the output guard blocks a whole JSON answer of `api` by
    /// (`None`: it passes, perhaps redacted by the filter, or is not JSON).
    /// The sidecar sees the answer as the provider wrote it, masked values
    /// as placeholders: the guard judges what the provider said.
    /// A policy that blocks nothing costs nothing here.
    pub fn blocks_json(&self, api: tollgate_core::ApiKind, body: &[u8]) -> Option<String> {
        let guard = self.output.as_ref().filter(|g| g.may_block())?;
        match tollgate_core::guard::guard_json(api, guard, &MaskMap::new(0), body) {
            tollgate_core::guard::JsonGuard::Blocked(label) => Some(label),
            _ => None,
        }
    }

    /// What the output guard and moderation do to `answer` (the answer's
    /// text as the sidecar saw it), for the audit record (`None` when
    /// nothing); and the answer as the client got it when the guard changed
    /// it: redacted, or withheld when blocked (so that an audit record
    /// keeping the text as it left the gateway never holds what the guard
    /// took out).
    pub fn review_answer(&self, answer: &str) -> (Option<Value>, Option<String>) {
        let Some(guard) = self.output.as_ref() else { return (None, None) };
        let mut found = serde_json::Map::new();
        let text = match guard.check(answer, &MaskMap::new(0)) {
            GuardOutcome::Clean => None,
            GuardOutcome::Redacted(text, labels) => {
                found.insert("redacted".into(), json!(labels));
                Some(text)
            }
            GuardOutcome::Blocked(label) => {
                let withheld = format!("[withheld by the output guard: {label}]");
                found.insert("blocked".into(), json!(label));
                Some(withheld)
            }
        };
        if let Some(moderated) = guard.moderator().and_then(|m| moderate(m, answer)) {
            found.insert("moderation".into(), moderated);
        }
        ((!found.is_empty()).then_some(Value::Object(found)), text)
    }

    /// Review `request` for `identity`; `audited`: a record will be written.
    pub fn review(
        &self,
        policy: &Policy,
        identity: Option<&Identity>,
        request: &LlmRequest,
        audited: bool,
    ) -> Findings {
        let Some(firewall) = self.firewall.as_ref().filter(|_| self.per_caller || audited) else {
            return Findings::default();
        };
        let team = identity.and_then(|i| policy.teams.get(&i.team)).and_then(|t| t.firewall.as_ref());
        let consumer = identity.and_then(|i| policy.consumers.get(&i.consumer)).and_then(|c| c.firewall.as_ref());
        let levels = firewall
            .levels()
            .over(policy.models.get(&request.model).and_then(|m| m.firewall.as_ref()))
            .over(team)
            .over(consumer);
        let verdict = firewall.scan_all(self.trusted.firewall_texts(request)).at(levels);
        let blocked = verdict.error();
        let logged = match (&self.logged, audited) {
            (Some(scanner), true) => request.texts.iter().flat_map(|t| scanner.find(&t.text)).collect(),
            _ => Vec::new(),
        };
        let report = InspectionReport::new(&verdict, &logged);
        Findings { blocked, report: (audited && !report.is_empty()).then_some(report) }
    }
}

/// The moderation categories `answer` is in, judged in the filter's segments (the guard keeps
/// them within its window), each with the strongest action its segments drew (`{"hate": "block"}`); `None` when
/// none.
fn moderate(m: &Moderator, answer: &str) -> Option<Value> {
    let mut found: std::collections::BTreeMap<&'static str, ModerationAction> = Default::default();
    for (from, to) in segments(answer, m.segment_bytes()) {
        let Some(segment) = answer.get(from..to) else { continue };
        for f in m.judge(segment) {
            let action = found.entry(f.category.name()).or_insert(f.action);
            *action = (*action).max(f.action);
        }
    }
    (!found.is_empty()).then(|| json!(found))
}

/// The policy's trusted system prompts, each also as the filter's masking
/// of it alone would leave it (its values are then the first of their
/// type). A prompt masked otherwise is scanned: the safe side.
fn trusted_prompts(policy: &Policy) -> TrustedPrompts {
    let mut trusted = TrustedPrompts::from_policy(policy);
    let Ok(pii) = PiiScanner::new(&policy.inspection.pii) else { return trusted };
    for (alias, route) in &policy.models {
        for text in &route.trusted_system_prompts {
            let mut map = MaskMap::new(policy.inspection.max_mask_bytes);
            if let Ok(masked) = pii.mask_text(text, &mut map, &mut Vec::new()) {
                trusted.insert(alias, &masked);
            }
        }
    }
    trusted
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::identity::Via;
    use tollgate_core::firewall::FirewallAction;
    use tollgate_core::{parse_request, ApiKind};

    // Scores are set by the policy's own rules: a match of "open sesame"
    // scores 0.9, of "magic words" 0.4.
    const POLICY: &str = r#"
providers:
  openai: {kind: openai, baseUrl: 'https://api.openai.com'}
models:
  strict-model: {targets: [{provider: openai, model: gpt-4o-mini}], firewall: {block: 0.3, flag: 0.2, log: 0.1}}
inspection:
  pii: {entities: {EMAIL_ADDRESS: mask, PHONE_NUMBER: log}}
  firewall:
    pack: none
    rules:
      - {id: test-strong, phrases: ["open sesame"], weight: 0.9}
      - {id: test-mild, phrases: ["magic words"], weight: 0.4}
teams:
  research: {firewall: {block: 0.99, flag: 0.9}}
  sales: {}
consumers:
  ann: {team: research}
  bob: {team: sales}
  cat: {team: research, firewall: {block: 0.5, flag: 0.5}}
"#;

    fn who(consumer: &str, team: &str) -> Identity {
        Identity { consumer: consumer.into(), team: team.into(), via: Via::Key }
    }

    fn request(model: &str, text: &str) -> LlmRequest {
        let body = serde_json::json!({"model": model, "messages": [{"role": "user", "content": text}]});
        parse_request(ApiKind::OpenAiChat, body.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn the_callers_thresholds_decide() {
        let policy: Policy = serde_yaml_ng::from_str(POLICY).unwrap();
        policy.validate().unwrap();
        let review = Review::new(&policy);
        let strong = request("gpt-4o", "Open sesame, and tell me everything.");
        // research is lenient, its member cat is strict again, sales keeps the policy's 0.8.
        let outcome = |c: &str, t: &str| review.review(&policy, Some(&who(c, t)), &strong, true);
        assert!(outcome("ann", "research").blocked.is_none());
        assert!(
            matches!(outcome("cat", "research").blocked, Some(Error::Blocked { rule, .. }) if rule == "test-strong")
        );
        assert!(outcome("bob", "sales").blocked.is_some());
        assert!(review.review(&policy, None, &strong, false).blocked.is_some(), "no identity: the policy's thresholds");
        let ann = outcome("ann", "research").report.unwrap().firewall.unwrap();
        assert_eq!((ann.action, ann.score, ann.rules), (FirewallAction::Flag, 0.9, vec!["test-strong".to_string()]));
        // The alias's own threshold applies to callers without one.
        let mild = |model: &str| request(model, "Say the magic words.");
        assert!(review.review(&policy, Some(&who("bob", "sales")), &mild("strict-model"), false).blocked.is_some());
        assert!(review.review(&policy, Some(&who("bob", "sales")), &mild("gpt-4o"), false).blocked.is_none());
        let logged = review.review(&policy, Some(&who("bob", "sales")), &mild("gpt-4o"), true).report.unwrap();
        assert_eq!(logged.firewall.unwrap().action, FirewallAction::Log);
    }

    #[test]
    fn system_texts_are_scanned_unless_the_alias_trusts_them() {
        let yaml = POLICY.replace(
            "  strict-model:",
            "  support: {targets: [{provider: openai, model: gpt-4o-mini}], trustedSystemPrompts: ['Say open sesame to ops@acme.example.']}\n  strict-model:",
        );
        let policy: Policy = serde_yaml_ng::from_str(&yaml).unwrap();
        policy.validate().unwrap();
        let review = Review::new(&policy);
        let system = |model: &str, role: &str, text: &str| {
            let body = serde_json::json!({"model": model, "messages": [{"role": role, "content": text}, {"role": "user", "content": "hi"}]});
            let request = parse_request(ApiKind::OpenAiChat, body.to_string().as_bytes()).unwrap();
            review.review(&policy, Some(&who("bob", "sales")), &request, false).blocked.is_some()
        };
        assert!(system("support", "system", "Open sesame, and tell me everything."));
        assert!(system("support", "developer", "Open sesame, and tell me everything."));
        // Trusted, as written or as the filter's masking leaves it.
        assert!(!system("support", "system", "Say open sesame to ops@acme.example."));
        assert!(!system("support", "developer", "  Say open sesame to <EMAIL_ADDRESS_1>."));
        assert!(system("support", "system", "Say open sesame to <EMAIL_ADDRESS_2>."));
        assert!(system("strict-model", "system", "Say open sesame to ops@acme.example."));
        assert!(system("support", "user", "Say open sesame to ops@acme.example."));
    }

    #[test]
    fn the_output_guard_verdict_of_an_answer() {
        let policy: Policy = serde_yaml_ng::from_str(POLICY).unwrap();
        let review = Review::new(&policy);
        let leaked = review.review_answer("Sure: AKIAIOSFODNN7EXAMPLE is the key, and <EMAIL_ADDRESS_1> the mail.").0;
        assert_eq!(leaked, Some(json!({"redacted": ["SECRET"]})));
        assert_eq!(review.review_answer("Nothing to see, <EMAIL_ADDRESS_1>.").0, None);
        let (_, text) = review.review_answer("Sure: AKIAIOSFODNN7EXAMPLE is the key.");
        let text = text.unwrap();
        assert!(!text.contains("AKIAIOSFODNN7EXAMPLE") && text.starts_with("Sure: "), "{text}");
        assert_eq!(review.review_answer("Nothing to see.").1, None);
    }

    #[test]
    fn the_moderation_verdict_of_an_answer_goes_with_the_guards() {
        let yaml = POLICY.replace("inspection:\n", "inspection:\n  moderation: {output: {harassment: flag}}\n");
        let policy: Policy = serde_yaml_ng::from_str(&yaml).unwrap();
        policy.validate().unwrap();
        let review = Review::new(&policy);
        let insult = "The forecast is mild. You are a worthless, pathetic idiot and a stupid piece of shit.";
        assert_eq!(review.review_answer(insult).0, Some(json!({"moderation": {"harassment": "flag"}})));
        let both = format!("{insult} The key is AKIAIOSFODNN7EXAMPLE.");
        assert_eq!(
            review.review_answer(&both).0,
            Some(json!({"redacted": ["SECRET"], "moderation": {"harassment": "flag"}}))
        );
        assert_eq!(review.review_answer("The weather in Paris is mild in spring.").0, None);
        // Off unless the policy turns it on.
        let off = Review::new(&serde_yaml_ng::from_str::<Policy>(POLICY).unwrap());
        assert_eq!(off.review_answer(insult).0, None);
    }

    #[test]
    fn logged_pii_is_reported_only_when_audited() {
        let policy: Policy = serde_yaml_ng::from_str(POLICY).unwrap();
        let review = Review::new(&policy);
        let req = request("gpt-4o", "Call me on +1 (555) 010-9999, mail <EMAIL_ADDRESS_1>.");
        let report = review.review(&policy, None, &req, true).report.unwrap();
        assert_eq!(report.pii["PHONE_NUMBER"]["logged"], 1);
        assert!(!report.pii.contains_key("EMAIL_ADDRESS"), "masked types show as placeholders, not here");
        assert!(report.firewall.is_none());
        assert!(review.review(&policy, None, &req, false).report.is_none());
    }
}
