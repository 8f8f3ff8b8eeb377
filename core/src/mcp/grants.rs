//! Who may see and call which tool: the virtual server, the caller's team
//! and the caller's consumer must all allow it. A team without an `mcp`
//! grant allows no tool; a consumer without one has its team's.

use super::policy::McpGrant;
use crate::access::glob_match;
use crate::policy::Policy;

/// The grants that apply to one caller of one virtual server.
#[derive(Debug, Clone, Copy)]
pub struct Grants<'p> {
    virtual_server: &'p [String],
    team: Option<&'p McpGrant>,
    consumer: Option<&'p McpGrant>,
    /// No caller identity: the policy lets anonymous callers in; only the
    /// virtual server's list applies.
    anonymous: bool,
}

impl<'p> Grants<'p> {
    /// The grants of `consumer` (of `team`) on virtual server `vs`; `None`
    /// when the virtual server does not exist. `consumer` is `None` for an
    /// anonymous caller.
    pub fn of(policy: &'p Policy, vs: &str, caller: Option<(&str, &str)>) -> Option<Grants<'p>> {
        let virtual_server = &policy.mcp.virtual_servers.get(vs)?.tools;
        let Some((consumer, team)) = caller else {
            return Some(Grants { virtual_server, team: None, consumer: None, anonymous: true });
        };
        let team = policy.teams.get(team).and_then(|t| t.mcp.as_ref());
        let consumer = policy.consumers.get(consumer).and_then(|c| c.mcp.as_ref());
        Some(Grants { virtual_server, team, consumer, anonymous: false })
    }

    /// Whether the caller may see and call `tool` of `server`.
    pub fn allows(&self, server: &str, tool: &str) -> bool {
        let name = super::names::qualified(server, tool);
        let any = |list: &[String]| list.iter().any(|p| glob_match(p, &name));
        if !any(self.virtual_server) {
            return false;
        }
        if self.anonymous {
            return true;
        }
        let Some(team) = self.team else { return false };
        if !any(&team.tools) {
            return false;
        }
        self.consumer.is_none_or(|c| any(&c.tools))
    }

    /// Whether any grant names `server` at all (its upstream is needed).
    pub fn uses_server(&self, server: &str) -> bool {
        let prefix = format!("{server}/");
        let names = |list: &[String]| list.iter().any(|p| p.starts_with(&prefix) || p == "*" || p == "*/*");
        names(self.virtual_server)
    }

    /// The tightest per-tool call rate that applies to `server/tool`, with
    /// the pattern that set it.
    pub fn calls_per_minute(&self, server: &str, tool: &str) -> Option<(u64, &'p str)> {
        let name = super::names::qualified(server, tool);
        [self.team, self.consumer]
            .into_iter()
            .flatten()
            .flat_map(|g| g.calls_per_minute.iter())
            .filter(|(p, _)| glob_match(p, &name))
            .map(|(p, n)| (*n, p.as_str()))
            .min_by_key(|(n, _)| *n)
    }
}
