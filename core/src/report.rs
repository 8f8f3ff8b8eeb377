//! What inspection found in one request, in the shape the audit record
//! shows it: the prompt firewall's verdict and the PII handled per type and
//! action.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::firewall::{FirewallAction, Verdict};
use crate::pii::{Finding, PiiAction};

/// Inspection results of one request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InspectionReport {
    /// Present when any firewall rule matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall: Option<FirewallReport>,
    /// PII type → what was done (`masked`, `redacted`, `logged`) → how many values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pii: BTreeMap<String, BTreeMap<String, u64>>,
}

/// The prompt firewall's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FirewallReport {
    pub score: f64,
    pub action: FirewallAction,
    /// Matched rule ids, highest weight first.
    pub rules: Vec<String>,
}

impl InspectionReport {
    pub fn new(verdict: &Verdict, findings: &[Finding]) -> InspectionReport {
        let firewall = (!verdict.rules.is_empty()).then(|| FirewallReport {
            score: (verdict.score * 1000.0).round() / 1000.0,
            action: verdict.action,
            rules: verdict.rules.clone(),
        });
        let mut pii: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for f in findings {
            let done = match f.action {
                PiiAction::Mask => "masked",
                PiiAction::Redact => "redacted",
                PiiAction::Log => "logged",
                PiiAction::Block => "blocked",
            };
            *pii.entry(f.entity.clone()).or_default().entry(done.into()).or_default() += 1;
        }
        InspectionReport { firewall, pii }
    }

    pub fn is_empty(&self) -> bool {
        self.firewall.is_none() && self.pii.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_type_and_action() {
        let verdict = Verdict { score: 0.61234, action: FirewallAction::Flag, rules: vec!["role-override".into()] };
        let f = |entity: &str, action| Finding { entity: entity.into(), start: 0, end: 1, action };
        let findings = [
            f("EMAIL_ADDRESS", PiiAction::Mask),
            f("EMAIL_ADDRESS", PiiAction::Mask),
            f("PHONE_NUMBER", PiiAction::Log),
        ];
        let report = InspectionReport::new(&verdict, &findings);
        let v = serde_json::to_value(&report).unwrap();
        assert_eq!(v["firewall"]["score"], 0.612);
        assert_eq!(v["firewall"]["action"], "flag");
        assert_eq!(v["pii"]["EMAIL_ADDRESS"]["masked"], 2);
        assert_eq!(v["pii"]["PHONE_NUMBER"]["logged"], 1);
        let quiet = Verdict { score: 0.0, action: FirewallAction::Allow, rules: vec![] };
        assert!(InspectionReport::new(&quiet, &[]).is_empty());
    }
}
