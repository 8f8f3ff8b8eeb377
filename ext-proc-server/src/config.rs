//! Loading the policy file and the provider keys it references.

use std::collections::HashMap;
use std::path::Path;

use tollgate_core::policy::{Policy, ProviderKind};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read policy {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("policy {path}: {source}")]
    Invalid { path: String, source: tollgate_core::Error },
    #[error("provider `{provider}`: environment variable {var} is not set")]
    MissingKeyEnv { provider: String, var: String },
    #[error("provider `{provider}`: cannot read key file {path}: {source}")]
    KeyFile { provider: String, path: String, source: std::io::Error },
}

/// Parse a policy from YAML (or JSON, a subset of YAML) text.
pub fn parse_policy(text: &str) -> Result<Policy, tollgate_core::Error> {
    Policy::deserialize(serde_yaml_ng::Deserializer::from_str(text))
}

pub fn load_policy(path: &Path) -> Result<Policy, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: shown.clone(), source })?;
    parse_policy(&text).map_err(|source| ConfigError::Invalid { path: shown, source })
}

/// A provider credential, held only in memory and never printed.
#[derive(Clone)]
pub struct Credential {
    /// Header the provider expects (`authorization` or `x-api-key`).
    pub header: &'static str,
    pub value: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credential({}: <redacted>)", self.header)
    }
}

/// Read every provider key the policy references (`keyEnv` / `keyFile`).
pub fn load_credentials(policy: &Policy) -> Result<HashMap<String, Credential>, ConfigError> {
    let mut out = HashMap::new();
    for (name, provider) in &policy.providers {
        let secret = if let Some(var) = &provider.key_env {
            match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => Some(v.trim().to_string()),
                _ => return Err(ConfigError::MissingKeyEnv { provider: name.clone(), var: var.clone() }),
            }
        } else if let Some(path) = &provider.key_file {
            let v = std::fs::read_to_string(path).map_err(|source| ConfigError::KeyFile {
                provider: name.clone(),
                path: path.clone(),
                source,
            })?;
            Some(v.trim().to_string())
        } else {
            None
        };
        if let Some(secret) = secret {
            let cred = match provider.kind {
                ProviderKind::Anthropic => Credential { header: "x-api-key", value: secret },
                _ => Credential { header: "authorization", value: format!("Bearer {secret}") },
            };
            out.insert(name.clone(), cred);
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn credentials_from_file_and_env_are_redacted_in_debug() {
        let dir = std::env::temp_dir().join(format!("tollgate-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("anthropic");
        std::fs::write(&key, "sk-ant-secret\n").unwrap();
        let policy = parse_policy(&format!(
            "providers:\n  a: {{kind: anthropic, baseUrl: 'https://api.anthropic.com', keyFile: '{}'}}\n  o: {{kind: openai, baseUrl: 'http://x'}}\n",
            key.display()
        ))
        .unwrap();
        let creds = load_credentials(&policy).unwrap();
        assert_eq!(creds["a"].header, "x-api-key");
        assert_eq!(creds["a"].value, "sk-ant-secret");
        assert!(!creds.contains_key("o"));
        assert!(!format!("{:?}", creds["a"]).contains("secret"));
    }

    #[test]
    fn missing_key_env_is_an_error_naming_it() {
        let policy = parse_policy(
            "providers:\n  o: {kind: openai, baseUrl: 'http://x', keyEnv: TOLLGATE_TEST_SURELY_UNSET}\n",
        )
        .unwrap();
        let err = load_credentials(&policy).unwrap_err().to_string();
        assert!(err.contains("TOLLGATE_TEST_SURELY_UNSET"), "{err}");
    }

    /// The policy shown in the README stays valid.
    #[test]
    fn readme_policy_example_validates() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
        let section = readme.split("## The policy").nth(1).unwrap();
        let yaml = section.split("```yaml").nth(1).unwrap().split("```").next().unwrap();
        let policy = parse_policy(yaml).unwrap();
        assert!(policy.providers.contains_key("openai"));
        assert!(!policy.inspection.pii.custom.is_empty());
    }
}
