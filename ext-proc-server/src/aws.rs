//! Amazon Bedrock credentials: a request is signed with AWS Signature
//! Version 4 (service `bedrock`, the provider's `region`) by the AWS SDK's
//! own signer (`aws-sigv4`), from static keys read from the environment at
//! load, or carries a Bedrock API key as a bearer token (`keyEnv` /
//! `keyFile`, an ordinary [`crate::credentials::Credential`]).

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;

/// The service name Bedrock's runtime signs under.
pub const SERVICE: &str = "bedrock";

/// Keys for SigV4, held only in memory and never printed.
pub struct AwsKeys {
    identity: Identity,
    region: String,
}

impl std::fmt::Debug for AwsKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AwsKeys({}: <redacted>)", self.region)
    }
}

impl AwsKeys {
    pub fn new(access_key: &str, secret_key: &str, session_token: Option<String>, region: &str) -> AwsKeys {
        let credentials = Credentials::new(access_key, secret_key, session_token, None, "tollgate");
        AwsKeys { identity: credentials.into(), region: region.to_owned() }
    }

    /// The headers that sign `POST url` with `body` (`authorization`,
    /// `x-amz-date`, and `x-amz-security-token` with a session token). The
    /// signed headers are `host` (from `authority`), `content-type` and
    /// `x-amz-date`; the path is the one the provider receives.
    pub fn sign(
        &self,
        authority: &str,
        url: &str,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Vec<(String, String)>, String> {
        let params = v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name(SERVICE)
            .time(now)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| format!("cannot sign for Bedrock: {e}"))?
            .into();
        let headers = [("host", authority), ("content-type", "application/json")];
        let request = SignableRequest::new("POST", url, headers.into_iter(), SignableBody::Bytes(body))
            .map_err(|e| format!("cannot sign for Bedrock: {e}"))?;
        let (instructions, _) =
            sign(request, &params).map_err(|e| format!("cannot sign for Bedrock: {e}"))?.into_parts();
        Ok(instructions.headers().map(|(k, v)| (k.to_owned(), v.to_owned())).collect())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use aws_sigv4::http_request::SigningParams;
    use std::time::{Duration, UNIX_EPOCH};

    /// AWS's published SigV4 test suite credentials and time (20150830T123600Z).
    const ACCESS: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn vector_time() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_440_938_160)
    }

    /// AWS's `get-vanilla` and `post-vanilla` vectors (service `service`,
    /// us-east-1): the signer the gateway uses gives the published
    /// signatures.
    #[test]
    fn the_signer_gives_aws_published_test_vectors() {
        let identity: Identity = Credentials::new(ACCESS, SECRET, None, None, "test").into();
        for (method, expected) in [
            ("GET", "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
            ("POST", "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"),
        ] {
            let params: SigningParams = v4::SigningParams::builder()
                .identity(&identity)
                .region("us-east-1")
                .name("service")
                .time(vector_time())
                .settings(SigningSettings::default())
                .build()
                .unwrap()
                .into();
            let request = SignableRequest::new(
                method,
                "https://example.amazonaws.com/",
                [("host", "example.amazonaws.com")].into_iter(),
                SignableBody::Bytes(b""),
            )
            .unwrap();
            let (instructions, signature) = sign(request, &params).unwrap().into_parts();
            assert_eq!(signature, expected, "{method}-vanilla");
            let auth = instructions.headers().find(|(k, _)| *k == "authorization").unwrap().1;
            assert_eq!(
                auth,
                format!("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature={expected}")
            );
        }
    }

    #[test]
    fn a_bedrock_request_is_signed_for_its_region_body_and_escaped_model_path() {
        let keys = AwsKeys::new(ACCESS, SECRET, Some("session".into()), "eu-west-1");
        let url = "https://bedrock-runtime.eu-west-1.amazonaws.com/model/arn%3Aaws%3Abedrock%3Aeu-west-1%3A1%3Ainference-profile%2Feu.x/converse";
        let host = "bedrock-runtime.eu-west-1.amazonaws.com";
        let signed = keys.sign(host, url, b"{\"messages\":[]}", vector_time()).unwrap();
        let get = |name: &str| signed.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let auth = get("authorization").unwrap();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/eu-west-1/bedrock/aws4_request"),
            "{auth}"
        );
        assert!(auth.contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token"), "{auth}");
        assert_eq!(get("x-amz-date").as_deref(), Some("20150830T123600Z"));
        assert_eq!(get("x-amz-security-token").as_deref(), Some("session"));
        // Another body, another signature.
        let other = keys.sign(host, url, b"{}", vector_time()).unwrap();
        assert_ne!(other.iter().find(|(k, _)| k == "authorization").map(|(_, v)| v.clone()), Some(auth));
        assert!(!format!("{keys:?}").contains(SECRET));
    }
}
