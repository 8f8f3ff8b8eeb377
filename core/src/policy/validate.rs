//! Reading a whole policy: parsed (every error naming its field), then
//! checked for everything serde cannot: references, ranges, URLs.

use std::collections::BTreeMap;

use super::parse::{deserialize_named, from_json_named};
use super::routing::path_segment;
use super::schema::{Inspection, ModelRoute, Otlp, Policy, ProviderKind, Timeouts};
use super::values::{BaseUrl, MAX_BUFFER_BYTES};
use crate::error::Error;

impl Policy {
    /// Parse from any serde deserializer (JSON, YAML), then validate.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Policy, Error>
    where
        D::Error: std::fmt::Display,
    {
        let policy: Policy = deserialize_named(de)?;
        policy.validate()?;
        Ok(policy)
    }

    /// Parse a JSON policy.
    pub fn from_json(bytes: &[u8]) -> Result<Policy, Error> {
        let policy: Policy = from_json_named(bytes)?;
        policy.validate()?;
        Ok(policy)
    }

    /// Check everything serde cannot: references, ranges, URLs.
    pub fn validate(&self) -> Result<(), Error> {
        let err = |path: String, message: String| Err(Error::Policy { path, message });
        if self.providers.is_empty() {
            return err("providers".into(), "at least one provider is required".into());
        }
        for (name, p) in &self.providers {
            if !valid_name(name) {
                return err(format!("providers.{name}"), "names use letters, digits, '-' and '_' only".into());
            }
            if let Err(m) = BaseUrl::parse(&p.base_url) {
                return err(format!("providers.{name}.baseUrl"), m);
            }
            if p.key_env.is_some() && p.key_file.is_some() {
                return err(format!("providers.{name}.keyFile"), "set keyEnv or keyFile, not both".into());
            }
            if p.kind == ProviderKind::VertexAi {
                for (field, value) in [("project", &p.project), ("location", &p.location)] {
                    if value.as_deref().is_none_or(|v| v.is_empty() || path_segment(v) != *v) {
                        return err(
                            format!("providers.{name}.{field}"),
                            "Vertex AI needs it: letters, digits, '-', '_' and '.'".into(),
                        );
                    }
                }
                let keyed = p.key_env.is_some() || p.key_file.is_some();
                if p.credentials_file.is_some() == keyed {
                    return err(
                        format!("providers.{name}.credentialsFile"),
                        "Vertex AI needs a service account key file (or keyEnv/keyFile holding an access token), one of them".into(),
                    );
                }
            } else if p.credentials_file.is_some() || p.token_url.is_some() || p.project.is_some() {
                return err(
                    format!("providers.{name}"),
                    "credentialsFile, tokenUrl and project are for kind vertex-ai".into(),
                );
            }
            if p.kind == ProviderKind::Bedrock {
                if p.region.as_deref().is_none_or(|r| r.is_empty() || path_segment(r) != *r) {
                    return err(
                        format!("providers.{name}.region"),
                        "Bedrock needs the AWS region (us-east-1 ...)".into(),
                    );
                }
            } else if p.region.is_some()
                || p.access_key_env.is_some()
                || p.secret_key_env.is_some()
                || p.session_token_env.is_some()
            {
                return err(
                    format!("providers.{name}"),
                    "region, accessKeyEnv, secretKeyEnv and sessionTokenEnv are for kind bedrock".into(),
                );
            }
            if let Some(url) = &p.token_url {
                if let Err(m) = BaseUrl::parse(url) {
                    return err(format!("providers.{name}.tokenUrl"), m);
                }
            }
        }
        for (alias, route) in &self.models {
            let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
            if route.targets.len() > 1 && !alias.chars().all(safe) {
                // The alias names Envoy clusters and a routing header value.
                return err(
                    format!("models.{alias}"),
                    "an alias with several targets uses letters, digits, '-', '_', '.' and ':' only".into(),
                );
            }
            if route.targets.is_empty() {
                return err(format!("models.{alias}.targets"), "at least one target is required".into());
            }
            for (i, t) in route.targets.iter().enumerate() {
                if !self.providers.contains_key(&t.provider) {
                    return err(
                        format!("models.{alias}.targets[{i}].provider"),
                        format!("unknown provider `{}`", t.provider),
                    );
                }
                if t.model.is_empty() {
                    return err(format!("models.{alias}.targets[{i}].model"), "must not be empty".into());
                }
                if t.weight == 0 {
                    return err(format!("models.{alias}.targets[{i}].weight"), "must be positive".into());
                }
            }
        }
        let levels = self.inspection.firewall.levels();
        for (alias, route) in &self.models {
            if let Some(cache) = &route.cache {
                cache.validate_at(&format!("models.{alias}.cache"))?;
            }
            if let Some(t) = &route.firewall {
                levels.over(Some(t)).validate_at(&format!("models.{alias}.firewall"))?;
            }
        }
        for (name, team) in &self.teams {
            levels.over(team.firewall.as_ref()).validate_at(&format!("teams.{name}.firewall"))?;
        }
        for (name, consumer) in &self.consumers {
            let team = self.teams.get(&consumer.team).and_then(|t| t.firewall.as_ref());
            levels.over(team).over(consumer.firewall.as_ref()).validate_at(&format!("consumers.{name}.firewall"))?;
        }
        self.cache.validate()?;
        if let Some(otlp) = &self.telemetry.otlp {
            otlp.validate_at("telemetry.otlp")?;
        }
        self.inspection.validate()?;
        let grants = self.teams.iter().filter_map(|(n, t)| Some((format!("teams.{n}.mcp"), t.mcp.as_ref()?)));
        let grants = grants
            .chain(self.consumers.iter().filter_map(|(n, c)| Some((format!("consumers.{n}.mcp"), c.mcp.as_ref()?))));
        self.mcp.validate(grants)?;
        crate::access::validate(&self.access, &self.teams, &self.consumers, &self.limits)?;
        for name in self.teams.keys().chain(self.consumers.keys()) {
            if !valid_name(name) {
                return err(name.clone(), "team and consumer names use letters, digits, '-' and '_' only".into());
            }
        }
        for (model, price) in &self.pricing {
            if !price.validate() {
                return err(format!("pricing.{model}"), "prices are non-negative USD per 1M tokens".into());
            }
            let stem = model.strip_suffix('*').unwrap_or(model);
            if stem.is_empty() || stem.contains('*') {
                return err(
                    format!("pricing.{model}"),
                    "a model name, a prefix ending in `*` (`llama3-*`), or `default`".into(),
                );
            }
        }
        let ports = [
            ("listen.port", self.listen.port),
            ("listen.adminPort", self.listen.admin_port),
            ("sidecar.grpcPort", self.sidecar.grpc_port),
            ("sidecar.adminPort", self.sidecar.admin_port),
        ];
        for (i, (path, port)) in ports.iter().enumerate() {
            if *port == 0 {
                return err((*path).into(), "must not be 0".into());
            }
            if let Some((other, _)) = ports[..i].iter().find(|(_, p)| p == port) {
                return err((*path).into(), format!("port {port} is already used by `{other}`"));
            }
        }
        if self.sidecar.timeout_ms == 0 {
            return err("sidecar.timeoutMs".into(), "must be positive".into());
        }
        self.timeouts.validate(&self.models)?;
        Ok(())
    }
}

impl Timeouts {
    /// Every timeout is positive; an attempt gives up before the stream
    /// counts as idle (a stall before the answer is then a 504, not Envoy's
    /// idle 408) and within the whole exchange's bound.
    pub fn validate(&self, models: &BTreeMap<String, ModelRoute>) -> Result<(), Error> {
        let err = |path: String, message: String| Err(Error::Policy { path, message });
        for (path, v) in [
            ("timeouts.requestMs", self.request_ms),
            ("timeouts.idleMs", self.idle_ms),
            ("timeouts.totalMs", self.total_ms),
        ] {
            if v == 0 {
                return err(path.into(), "must be positive".into());
            }
        }
        let attempts = std::iter::once(("timeouts.attemptMs".to_string(), self.attempt_ms)).chain(
            models.iter().filter_map(|(a, r)| Some((format!("models.{a}.attemptTimeoutMs"), r.attempt_timeout_ms?))),
        );
        for (path, ms) in attempts {
            if ms == 0 {
                return err(path, "must be positive".into());
            }
            if ms >= self.idle_ms {
                return err(
                    path,
                    format!(
                        "must be below timeouts.idleMs ({}): a provider that never answers must time out as an attempt (504)",
                        self.idle_ms
                    ),
                );
            }
            if ms > self.total_ms {
                return err(path, format!("must not exceed timeouts.totalMs ({})", self.total_ms));
            }
        }
        Ok(())
    }
}

impl Otlp {
    /// Check the endpoint URL, the headers and the bounds.
    pub fn validate_at(&self, at: &str) -> Result<(), Error> {
        let err = |field: &str, message: String| Err(Error::Policy { path: format!("{at}.{field}"), message });
        match BaseUrl::parse(&self.endpoint) {
            Err(m) => return err("endpoint", m),
            Ok(u) if !u.path.is_empty() => {
                return err("endpoint", format!("`{}`: an OTLP/gRPC endpoint has no path", self.endpoint))
            }
            Ok(_) => {}
        }
        if self.service_name.trim().is_empty() {
            return err("serviceName", "must not be empty".into());
        }
        for (name, value) in &self.headers {
            let token = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
            if name.is_empty() || !name.chars().all(token) || name.starts_with(':') {
                return err(&format!("headers.{name}"), "header names use letters, digits, '-', '_' and '.'".into());
            }
            if name.to_ascii_lowercase().ends_with("-bin") {
                return err(&format!("headers.{name}"), "binary (`-bin`) headers are not supported".into());
            }
            if !value.chars().all(|c| c == ' ' || c.is_ascii_graphic()) {
                return err(&format!("headers.{name}"), "values are printable ASCII".into());
            }
        }
        if self.flush_interval_ms == 0 || self.flush_interval_ms > 3_600_000 {
            return err("flushIntervalMs", "must be between 1 and 3600000".into());
        }
        if self.max_queue_size == 0 || self.max_queue_size > 1_000_000 {
            return err("maxQueueSize", "must be between 1 and 1000000".into());
        }
        Ok(())
    }
}

impl Inspection {
    /// Every buffer cap is positive and under [`MAX_BUFFER_BYTES`].
    pub fn validate(&self) -> Result<(), Error> {
        let caps = [
            ("inspection.maxBodyBytes", self.max_body_bytes),
            ("inspection.maxResponseBytes", self.max_response_bytes),
            ("inspection.maxSseEventBytes", self.max_sse_event_bytes),
            ("inspection.maxMaskBytes", self.max_mask_bytes),
        ];
        for (path, v) in caps {
            if v == 0 || v > MAX_BUFFER_BYTES {
                return Err(Error::Policy {
                    path: path.into(),
                    message: format!("must be between 1 and {MAX_BUFFER_BYTES}"),
                });
            }
        }
        self.pii.validate().map_err(|e| match e {
            Error::Policy { path, message } => Error::Policy { path: format!("inspection.pii.{path}"), message },
            other => other,
        })?;
        self.firewall.validate_at("inspection.firewall")?;
        self.output.validate().map_err(|e| match e {
            Error::Policy { path, message } => Error::Policy { path: format!("inspection.output.{path}"), message },
            other => other,
        })?;
        self.moderation.validate().map_err(|e| match e {
            Error::Policy { path, message } => Error::Policy { path: format!("inspection.moderation.{path}"), message },
            other => other,
        })
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::policy::schema::tests::{yaml, BASE};

    #[test]
    fn json_and_yaml_agree() {
        let p = yaml(BASE).unwrap();
        let json = serde_json::to_vec(&p).unwrap();
        assert_eq!(Policy::from_json(&json).unwrap(), p);
    }

    #[test]
    fn unknown_field_is_named() {
        let e = yaml("providers:\n  openai: {kind: openai, baseUrl: 'http://x', keyenv: A}\n").unwrap_err();
        match e {
            Error::Policy { path, message } => {
                assert_eq!(path, "providers.openai.keyenv");
                assert!(message.contains("keyenv"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_enum_value_is_named() {
        let e = yaml("providers:\n  x: {kind: cohere, baseUrl: 'http://x'}\n").unwrap_err();
        let Error::Policy { path, message } = e else { panic!() };
        assert_eq!(path, "providers.x.kind");
        assert!(message.contains("gemini"));
    }

    #[test]
    fn semantic_errors_name_the_field() {
        let cases = [
            ("providers: {}\n", "providers"),
            ("providers:\n  x: {kind: openai, baseUrl: 'ftp://x'}\n", "providers.x.baseUrl"),
            ("providers:\n  x: {kind: openai, baseUrl: 'http://x:99999'}\n", "providers.x.baseUrl"),
            (
                "providers:\n  x: {kind: openai, baseUrl: 'http://x'}\nmodels:\n  m: {targets: [{provider: y, model: a}]}\n",
                "models.m.targets[0].provider",
            ),
            ("providers:\n  x: {kind: openai, baseUrl: 'http://x'}\nmodels:\n  m: {targets: []}\n", "models.m.targets"),
            (
                "providers:\n  x: {kind: openai, baseUrl: 'http://x'}\nmodels:\n  a/b: {targets: [{provider: x, model: a}, {provider: x, model: b}]}\n",
                "models.a/b",
            ),
            (
                "providers:\n  x: {kind: openai, baseUrl: 'http://x'}\nmodels:\n  m: {targets: [{provider: x, model: a, weight: 0}]}\n",
                "models.m.targets[0].weight",
            ),
            ("providers:\n  x: {kind: openai, baseUrl: 'http://x'}\ninspection: {maxBodyBytes: 0}\n", "inspection.maxBodyBytes"),
            ("providers:\n  x: {kind: openai, baseUrl: 'http://x'}\nlisten: {port: 9901}\n", "listen.adminPort"),
            ("providers:\n  'a b': {kind: openai, baseUrl: 'http://x'}\n", "providers.a b"),
            ("providers:\n  x: {kind: openai, baseUrl: 'http://x'}\ninspection: {pii: {entities: {EMAIL: mask}}}\n", "inspection.pii.entities.EMAIL"),
            ("providers:\n  x: {kind: openai, baseUrl: 'http://x'}\ninspection: {firewall: {block: 2}}\n", "inspection.firewall.block"),
            ("providers:\n  x: {kind: openai, baseUrl: 'http://x'}\ninspection: {output: {windowBytes: 1}}\n", "inspection.output.windowBytes"),
            ("providers:\n  x: {kind: openai, baseUrl: 'http://x'}\ninspection: {moderation: {threshold: 1.5}}\n", "inspection.moderation.threshold"),
            ("providers:\n  x: {kind: openai, baseUrl: 'http://x'}\ninspection: {moderation: {output: {spam: block}}}\n", "inspection.moderation.output.?"),
            ("providers:\n  x: {kind: openai, baseUrl: 'http://x'}\ninspection: {pii: {entities: {SECRET: hide}}}\n", "inspection.pii.entities.SECRET"),
            ("providers:\n  x: {kind: openai, baseUrl: 'http://x'}\ntelemetry: {otlp: {endpoint: 'udp://x:4317'}}\n", "telemetry.otlp.endpoint"),
            ("providers:\n  x: {kind: openai, baseUrl: 'http://x'}\ntelemetry: {otlp: {endpoint: 'http://x:4317/v1/traces'}}\n", "telemetry.otlp.endpoint"),
            ("providers:\n  x: {kind: openai, baseUrl: 'http://x'}\ntelemetry: {otlp: {protocol: thrift}}\n", "telemetry.otlp.protocol"),
            ("providers:\n  x: {kind: openai, baseUrl: 'http://x'}\ntelemetry: {otlp: {headers: {'a b': c}}}\n", "telemetry.otlp.headers.a b"),
            ("providers:\n  x: {kind: openai, baseUrl: 'http://x'}\ntelemetry: {otlp: {serviceName: ''}}\n", "telemetry.otlp.serviceName"),
            ("providers:\n  x: {kind: openai, baseUrl: 'http://x'}\ntelemetry: {otlp: {maxQueueSize: 0}}\n", "telemetry.otlp.maxQueueSize"),
            ("providers:\n  x: {kind: openai, baseUrl: 'http://x'}\ntelemetry: {otlp: {endpoints: 'http://x'}}\n", "telemetry.otlp.endpoints"),
        ];
        for (src, want) in cases {
            match yaml(src) {
                Err(Error::Policy { path, .. }) => assert_eq!(path, want, "{src}"),
                other => panic!("{src}: {other:?}"),
            }
        }
    }
}
