//! Who is calling: a virtual key, JWT claims from Envoy's `jwt_authn`
//! filter, or nobody (when the policy allows anonymous calls).

use std::time::SystemTime;

use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::envoy::service::ext_proc::v3::HttpHeaders;
use envoy_types::pb::google::protobuf::value::Kind;
use tollgate_core::access::{grants, Require};
use tollgate_core::policy::Policy;
use tollgate_core::Error;

use crate::extproc::header;
use crate::keys::KeyIndex;

/// Envoy's jwt_authn filter writes verified payloads under this namespace.
pub const JWT_NAMESPACE: &str = "envoy.filters.http.jwt_authn";
/// The key the rendered jwt_authn filter stores the payload under.
pub const JWT_PAYLOAD_KEY: &str = "tollgate_jwt";

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub consumer: String,
    /// Empty when a JWT names no team.
    pub team: String,
    pub via: Via,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Key,
    Jwt,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Key => "key",
            Via::Jwt => "jwt",
        }
    }
}

/// Request headers, however they arrived (ext_proc's header map, or an HTTP
/// request the sidecar serves itself).
pub trait Headers {
    /// The value of the first header named `name` (any case).
    fn get(&self, name: &str) -> Option<String>;
}

impl Headers for HttpHeaders {
    fn get(&self, name: &str) -> Option<String> {
        header(self, name)
    }
}

impl Headers for axum::http::HeaderMap {
    fn get(&self, name: &str) -> Option<String> {
        axum::http::HeaderMap::get(self, name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }
}

/// The credential a client presented: `Authorization: Bearer X`,
/// `x-api-key: X` or (Gemini clients) `x-goog-api-key: X`.
fn presented_key(h: &impl Headers) -> Option<String> {
    for header in ["x-api-key", "x-goog-api-key"] {
        if let Some(v) = h.get(header).filter(|v| !v.trim().is_empty()) {
            return Some(v.trim().to_string());
        }
    }
    let auth = h.get("authorization")?;
    let (scheme, token) = auth.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string())
}

/// Resolve the caller from the request headers and the metadata Envoy sent.
/// `Ok(None)` is an anonymous call the policy allows.
pub fn identify(
    policy: &Policy,
    keys: &KeyIndex,
    h: &impl Headers,
    metadata: Option<&Metadata>,
    now: SystemTime,
) -> Result<Option<Identity>, Error> {
    let require = policy.access.require;
    let key = presented_key(h).filter(|k| k.starts_with("tg-"));
    if let Some(key) = key.filter(|_| policy.access.key_store.is_some()) {
        let consumer = keys.verify(&key, now).map_err(|r| Error::Unauthorized(r.message().into()))?;
        let Some(c) = policy.consumers.get(consumer) else {
            return Err(Error::Unauthorized(format!("this API key's consumer `{consumer}` is not in the policy")));
        };
        return Ok(Some(Identity { consumer: consumer.to_string(), team: c.team.clone(), via: Via::Key }));
    }
    if let Some(jwt) = &policy.access.jwt {
        if let Some(claims) = jwt_claims(metadata, &jwt.issuer, &jwt.audiences) {
            let claim = |name: &str| {
                claims.fields.get(name).and_then(|v| match &v.kind {
                    Some(Kind::StringValue(s)) if !s.is_empty() => Some(s.clone()),
                    _ => None,
                })
            };
            let Some(consumer) = claim(&jwt.consumer_claim) else {
                return Err(Error::Unauthorized(format!("the token has no `{}` claim", jwt.consumer_claim)));
            };
            // A consumer named in the policy keeps its team; otherwise the claim's,
            // which must name a team of the policy when the policy has teams (so a
            // token cannot escape grants and limits by naming no team).
            let team = match policy.consumers.get(&consumer) {
                Some(c) => c.team.clone(),
                None => claim(&jwt.team_claim).unwrap_or_default(),
            };
            if !policy.teams.is_empty() && !policy.teams.contains_key(&team) {
                return Err(Error::Blocked {
                    rule: "access".into(),
                    message: if team.is_empty() {
                        format!("the token has no `{}` claim naming a team of this gateway", jwt.team_claim)
                    } else {
                        format!("team `{team}` is not configured on this gateway")
                    },
                });
            }
            return Ok(Some(Identity { consumer, team, via: Via::Jwt }));
        }
    }
    match require {
        Require::None => Ok(None),
        Require::Key => Err(Error::Unauthorized(
            "missing API key: send `Authorization: Bearer tg-...` or `x-api-key: tg-...`".into(),
        )),
        Require::Jwt => Err(Error::Unauthorized("missing or invalid bearer token".into())),
        Require::KeyOrJwt => {
            Err(Error::Unauthorized("missing credentials: send a gateway key (`tg-...`) or a bearer token".into()))
        }
    }
}

/// The metadata Envoy would have sent with a verified JWT payload (JSON),
/// for requests that reach the sidecar as an upstream (the MCP routes),
/// where the payload arrives in a header only Envoy sets.
pub fn jwt_metadata(payload: &serde_json::Value) -> Metadata {
    use envoy_types::pb::google::protobuf::{ListValue, Struct, Value as PbValue};
    fn convert(v: &serde_json::Value, depth: usize) -> PbValue {
        let kind = match v {
            _ if depth > 16 => Kind::NullValue(0),
            serde_json::Value::Null => Kind::NullValue(0),
            serde_json::Value::Bool(b) => Kind::BoolValue(*b),
            serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
            serde_json::Value::String(s) => Kind::StringValue(s.clone()),
            serde_json::Value::Array(a) => {
                Kind::ListValue(ListValue { values: a.iter().map(|x| convert(x, depth + 1)).collect() })
            }
            serde_json::Value::Object(o) => Kind::StructValue(Struct {
                fields: o.iter().map(|(k, x)| (k.clone(), convert(x, depth + 1))).collect(),
            }),
        };
        PbValue { kind: Some(kind) }
    }
    let ns = Struct { fields: [(JWT_PAYLOAD_KEY.to_string(), convert(payload, 0))].into_iter().collect() };
    Metadata { filter_metadata: [(JWT_NAMESPACE.to_string(), ns)].into_iter().collect(), ..Default::default() }
}

/// Where Istio's `RequestAuthentication` (1.21 and later) publishes every
/// verified payload; earlier releases used the issuer.
pub const ISTIO_PAYLOAD_KEY: &str = "payload";

/// The verified payload of our issuer that Envoy's `jwt_authn` filter
/// published: under [`JWT_PAYLOAD_KEY`] where Tollgate renders the filter
/// (plain Envoy) or names the provider (Envoy Gateway), under `payload` or
/// the issuer where Istio renders it. Only that filter writes this
/// namespace, a client cannot. The payload must name our issuer and, when
/// the policy lists audiences, one of them: Istio puts every token the mesh
/// verified under one key, and another `RequestAuthentication` reaching the
/// gateway (a mesh-wide one, say) may accept tokens ours would not.
fn jwt_claims<'m>(
    metadata: Option<&'m Metadata>,
    issuer: &str,
    audiences: &[String],
) -> Option<&'m envoy_types::pb::google::protobuf::Struct> {
    let ns = metadata?.filter_metadata.get(JWT_NAMESPACE)?;
    let ours = |s: &envoy_types::pb::google::protobuf::Struct| {
        let iss =
            matches!(&s.fields.get("iss").and_then(|v| v.kind.as_ref()), Some(Kind::StringValue(i)) if i == issuer);
        let aud = audiences.is_empty()
            || match s.fields.get("aud").and_then(|v| v.kind.as_ref()) {
                Some(Kind::StringValue(a)) => audiences.contains(a),
                Some(Kind::ListValue(list)) => {
                    list.values.iter().any(|v| matches!(&v.kind, Some(Kind::StringValue(a)) if audiences.contains(a)))
                }
                _ => false,
            };
        iss && aud
    };
    [JWT_PAYLOAD_KEY, ISTIO_PAYLOAD_KEY, issuer].into_iter().find_map(|key| match &ns.fields.get(key)?.kind {
        Some(Kind::StructValue(s)) if ours(s) => Some(s),
        _ => None,
    })
}

/// Whether the caller may use `model`: the team's grant and the consumer's
/// (both must allow; an empty grant allows every model).
pub fn check_model(policy: &Policy, who: Option<&Identity>, model: &str) -> Result<(), Error> {
    let Some(who) = who else { return Ok(()) };
    let team = policy.teams.get(&who.team);
    if let Some(team) = team {
        if !grants(&team.models, model) {
            return Err(Error::ModelNotAllowed { model: model.into(), who: format!("team `{}`", who.team) });
        }
    }
    if let Some(c) = policy.consumers.get(&who.consumer) {
        if !grants(&c.models, model) {
            return Err(Error::ModelNotAllowed { model: model.into(), who: format!("consumer `{}`", who.consumer) });
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use envoy_types::pb::google::protobuf::{Struct, Value};

    use super::*;

    fn string(s: &str) -> Value {
        Value { kind: Some(Kind::StringValue(s.into())) }
    }

    /// Envoy's metadata with one verified payload under `key`.
    fn metadata(key: &str, claims: &[(&str, &str)]) -> Metadata {
        let payload = Struct { fields: claims.iter().map(|(k, v)| (k.to_string(), string(v))).collect() };
        let ns = Struct { fields: [(key.to_string(), Value { kind: Some(Kind::StructValue(payload)) })].into() };
        Metadata { filter_metadata: [(JWT_NAMESPACE.to_string(), ns)].into(), ..Default::default() }
    }

    fn who(policy: &Policy, md: &Metadata) -> Result<Option<Identity>, Error> {
        identify(policy, &KeyIndex::default(), &HttpHeaders::default(), Some(md), SystemTime::now())
    }

    #[test]
    fn jwt_payload_under_our_key_or_the_issuer_names_the_caller() {
        let policy = crate::config::parse_policy(
            "providers: {mock: {kind: mock, baseUrl: 'http://127.0.0.1:1'}}\naccess: {require: jwt, jwt: {issuer: 'https://idp.example', jwksFile: jwks.json}}\n",
        )
        .unwrap();
        let expected = Some(Identity { consumer: "alice".into(), team: "ml".into(), via: Via::Jwt });
        let claims = [("iss", "https://idp.example"), ("sub", "alice"), ("team", "ml")];
        // Plain Envoy and Envoy Gateway: our key; Istio: `payload`, or the
        // issuer before 1.21.
        for key in [JWT_PAYLOAD_KEY, ISTIO_PAYLOAD_KEY, "https://idp.example"] {
            assert_eq!(who(&policy, &metadata(key, &claims)).unwrap(), expected, "{key}");
        }
        // A payload the mesh verified for another issuer is not ours, under
        // any key; nor is one without `iss`.
        // With audiences in the policy, the token must carry one of them.
        let strict = crate::config::parse_policy(
            "providers: {mock: {kind: mock, baseUrl: 'http://127.0.0.1:1'}}\naccess: {require: jwt, jwt: {issuer: 'https://idp.example', audiences: [tollgate], jwksFile: jwks.json}}\n",
        )
        .unwrap();
        let with_aud = [("iss", "https://idp.example"), ("aud", "tollgate"), ("sub", "alice"), ("team", "ml")];
        assert_eq!(who(&strict, &metadata(ISTIO_PAYLOAD_KEY, &with_aud)).unwrap(), expected);
        let other_aud = [("iss", "https://idp.example"), ("aud", "billing"), ("sub", "alice"), ("team", "ml")];
        for claims in [&other_aud[..], &claims[..]] {
            let refused = who(&strict, &metadata(ISTIO_PAYLOAD_KEY, claims));
            assert!(matches!(refused, Err(Error::Unauthorized(_))), "{claims:?}: {refused:?}");
        }
        // `aud` as a list, as most identity providers send it.
        let mut listed = metadata(ISTIO_PAYLOAD_KEY, &with_aud[..1]);
        if let Some(Kind::StructValue(payload)) = listed
            .filter_metadata
            .get_mut(JWT_NAMESPACE)
            .and_then(|ns| ns.fields.get_mut(ISTIO_PAYLOAD_KEY))
            .and_then(|v| v.kind.as_mut())
        {
            let list = ["billing", "tollgate"].map(string).to_vec();
            payload.fields.insert(
                "aud".into(),
                Value { kind: Some(Kind::ListValue(envoy_types::pb::google::protobuf::ListValue { values: list })) },
            );
            payload.fields.insert("sub".into(), string("alice"));
            payload.fields.insert("team".into(), string("ml"));
        }
        assert_eq!(who(&strict, &listed).unwrap(), expected);
        let foreign = [("iss", "https://other.example"), ("sub", "alice"), ("team", "ml")];
        for (key, claims) in
            [(ISTIO_PAYLOAD_KEY, &foreign[..]), (JWT_PAYLOAD_KEY, &foreign[..]), (ISTIO_PAYLOAD_KEY, &claims[1..])]
        {
            let other = who(&policy, &metadata(key, claims));
            assert!(matches!(other, Err(Error::Unauthorized(_))), "{key} {claims:?}: {other:?}");
        }
    }
}
