//! PII detectors: positive and negative lists per entity, checksums,
//! overlaps, non-ASCII context.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use tollgate_core::pii::{Finding, PiiAction, PiiPolicy, PiiScanner};

fn scanner() -> PiiScanner {
    PiiScanner::new(&PiiPolicy::default()).unwrap()
}

/// (entity, matched text) for every finding, checking the findings' invariants.
fn found(s: &PiiScanner, text: &str) -> Vec<(String, String)> {
    let f = s.find(text);
    check_invariants(text, &f);
    f.iter().map(|f| (f.entity.clone(), text[f.start..f.end].to_string())).collect()
}

fn check_invariants(text: &str, f: &[Finding]) {
    for w in f.windows(2) {
        assert!(w[0].end <= w[1].start, "overlap or unsorted: {f:?} in {text:?}");
    }
    for x in f {
        assert!(x.start < x.end && x.end <= text.len());
        assert!(text.is_char_boundary(x.start) && text.is_char_boundary(x.end), "{x:?} in {text:?}");
    }
}

/// Each value, embedded in a sentence, is found exactly once as `entity`.
fn assert_positive(entity: &str, values: &[&str]) {
    let s = scanner();
    for v in values {
        for text in [v.to_string(), format!("please use {v} today."), format!("({v})"), format!("x: \"{v}\", y")] {
            let got = found(&s, &text);
            assert_eq!(got, vec![(entity.to_string(), v.to_string())], "in {text:?}");
        }
    }
}

/// None of the values is reported as `entity`.
fn assert_negative(entity: &str, values: &[&str]) {
    let s = scanner();
    for v in values {
        let text = format!("note {v} end");
        let got = found(&s, &text);
        assert!(got.iter().all(|(e, _)| e != entity), "{v:?} wrongly found as {entity}: {got:?}");
    }
}

fn luhn_ok(digits: &str) -> bool {
    let mut sum = 0;
    for (i, c) in digits.chars().rev().enumerate() {
        let mut d = c.to_digit(10).unwrap();
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum % 10 == 0
}

#[test]
fn emails() {
    assert_positive(
        "EMAIL_ADDRESS",
        &[
            "alice@example.com",
            "Bob.Smith@Example.ORG",
            "john.doe+newsletter@mail.example.co.uk",
            "user_99@sub-domain.example.io",
            "x@y.de",
            "first.last123@company.travel",
            "jürgen.müller@example.de",
            "5550109999@example.com",
        ],
    );
    assert_negative(
        "EMAIL_ADDRESS",
        &["user@localhost", "@example.com", "alice@", "alice at example.com", "a..b@example.com", "user@-bad.com"],
    );
}

#[test]
fn phones() {
    assert_positive(
        "PHONE_NUMBER",
        &[
            "+1 (555) 201-9999",
            "555.201.9999",
            "(555) 201-9999",
            "555-201-9999",
            "+44 20 7946 0958",
            "0049 30 901820",
            "+49 30 901820",
            "+4930901820",
            "020 7946 0958",
            "+33 1 42 68 53 00",
            "+81 3-1234-5678",
            "1-800-555-0199",
            "+1-555-201-9999",
        ],
    );
    assert_negative(
        "PHONE_NUMBER",
        &[
            "2024-01-15",
            "15.01.2024",
            "01-15-2024",
            "1.2.3",
            "v1.2.3.4",
            "10.0.0.1",
            "192.168.100.200",
            "4111111111111111",
            "4111 1111 1111 1111",
            "5550109999",
            "12345678",
            "123456789012345678901",
            "12:30:45",
        ],
    );
    // A following number is not swallowed into a North American number.
    let s = scanner();
    assert_eq!(found(&s, "+1 555 201 9999 2024"), vec![("PHONE_NUMBER".into(), "+1 555 201 9999".into())]);
    assert_eq!(
        found(&s, "call 555-201-9999 or (555) 201-8888"),
        vec![("PHONE_NUMBER".into(), "555-201-9999".into()), ("PHONE_NUMBER".into(), "(555) 201-8888".into())]
    );
}

#[test]
fn credit_cards() {
    let cards = [
        "4111111111111111",
        "4012888888881881",
        "4222222222222",
        "5555555555554444",
        "5105105105105100",
        "2223003122003222",
        "378282246310005",
        "371449635398431",
        "6011111111111117",
        "6011000990139424",
        "3530111333300000",
        "30569309025904",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "3782 822463 10005",
        "5555-5555-5555-4444",
    ];
    for c in cards {
        assert!(luhn_ok(&c.replace([' ', '-'], "")), "fixture {c} must pass Luhn");
    }
    assert_positive("CREDIT_CARD", &cards);
    // Order numbers failing Luhn, wrong prefixes/lengths, mixed separators, longer runs.
    let bad = [
        "4111111111111112",
        "1234567812345678",
        "5555555555554445",
        "9111111111111111",
        "4111-1111 1111-1111",
        "41111111111111110",
        "12344111111111111111",
        "4111111111111111-22",
    ];
    for b in &bad[..3] {
        assert!(!luhn_ok(b), "fixture {b} must fail Luhn");
    }
    assert_negative("CREDIT_CARD", &bad);
}

#[test]
fn ssns() {
    assert_positive("US_SSN", &["123-45-6789", "078-05-1120", "536-90-4399", "123 45 6789", "899-99-9999"]);
    assert_negative(
        "US_SSN",
        &[
            "000-12-3456",
            "666-12-3456",
            "900-12-3456",
            "999-45-6789",
            "123-00-4567",
            "123-45-0000",
            "123-45-67890",
            "1123-45-6789",
            "123-45 6789",
        ],
    );
}

#[test]
fn ibans() {
    assert_positive(
        "IBAN_CODE",
        &[
            "DE89 3704 0044 0532 0130 00",
            "DE89370400440532013000",
            "GB82 WEST 1234 5698 7654 32",
            "GB82WEST12345698765432",
            "FR14 2004 1010 0505 0001 3M02 606",
            "NL91ABNA0417164300",
            "CH9300762011623852957",
            "BE68539007547034",
            "NO9386011117947",
        ],
    );
    assert_negative(
        "IBAN_CODE",
        &[
            "DE89 3704 0044 0532 0130 01",
            "DE88370400440532013000",
            "GB82WEST1234569876543",
            "XX00123",
            "DE8937040044053201300",
        ],
    );
    // A spaced IBAN followed by a 4-letter word keeps only the IBAN.
    let s = scanner();
    assert_eq!(
        found(&s, "pay DE89 3704 0044 0532 0130 00 THEN stop"),
        vec![("IBAN_CODE".to_string(), "DE89 3704 0044 0532 0130 00".to_string())]
    );
    assert_eq!(
        found(&s, "acct GB82 WEST 1234 5698 7654 32 SOON"),
        vec![("IBAN_CODE".to_string(), "GB82 WEST 1234 5698 7654 32".to_string())]
    );
}

#[test]
fn ip_addresses() {
    assert_positive(
        "IP_ADDRESS",
        &[
            "192.168.1.1",
            "10.0.0.1",
            "8.8.8.8",
            "255.255.255.255",
            "2001:db8::1",
            "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
            "::1",
            "fe80::1ff:fe23:4567:890a",
            "::ffff:192.0.2.128",
            "2001:db8:0:0:1:0:0:1",
        ],
    );
    assert_negative(
        "IP_ADDRESS",
        &[
            "999.1.1.1",
            "256.1.1.1",
            "1.2.3.4.5",
            "v1.2.3.4",
            "192.168.01.1",
            "12:30:45",
            "std::vector",
            "00:1A:2B:3C:4D:5E",
            "1.2.3",
        ],
    );
    let s = scanner();
    assert_eq!(found(&s, "host 10.0.0.1:8080 up"), vec![("IP_ADDRESS".to_string(), "10.0.0.1".to_string())]);
}

const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
const PEM: &str = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\nVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n-----END RSA PRIVATE KEY-----";

#[test]
fn secrets() {
    let github_pat = format!("github_pat_11ABCDEFG0{}", "aB3_".repeat(20));
    let ghp = format!("ghp_{}", "a1B2c3D4e5F6".repeat(3));
    let google = format!("AIza{}", "SyA-1b2C3d4E5f6G7h8I9j0K_lMnOpQrStU".get(..35).unwrap());
    let values = [
        "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z",
        "sk-ant-api03-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0Fe-AbCd_1234",
        "sk-1234567890abcdefghijklmnopqrstuvwxyz",
        "AKIAIOSFODNN7EXAMPLE",
        "ASIAY34FZKBOKMUTVV7A",
        ghp.as_str(),
        github_pat.as_str(),
        "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
        google.as_str(),
        JWT,
        PEM,
    ];
    assert_positive("SECRET", &values);
    // Labelled AWS secret keys: only the key is the finding.
    let s = scanner();
    for text in [
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "{\"AWS_SECRET_ACCESS_KEY\": \"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\"}",
        "AwsSecretKey: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ] {
        assert_eq!(
            found(&s, text),
            vec![("SECRET".into(), "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into())],
            "{text}"
        );
    }
    // Bearer: the token is masked, not the scheme.
    assert_eq!(
        found(&s, "Authorization: Bearer 9f8e7d6c5b4a39281706f5e4d3c2b1a0"),
        vec![("SECRET".into(), "9f8e7d6c5b4a39281706f5e4d3c2b1a0".into())]
    );
    // An unterminated private key is still caught, up to the end of the base64.
    let truncated = "key:\n-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n";
    let got = found(&s, truncated);
    assert_eq!(got.len(), 1);
    assert!(got[0].1.starts_with("-----BEGIN PRIVATE KEY-----") && got[0].1.ends_with("AoIBAQC7"), "{got:?}");
    assert_negative(
        "SECRET",
        &[
            "sk-this-is-not-a-real-key-at-all",
            "sk-short1",
            "AKIA1234",
            "eyJub3QganNvbg.eyJhYmM.sig",
            "Bearer token",
            "bearer of bad news and other things",
            "ghp_short123",
            "-----BEGIN PUBLIC KEY-----",
        ],
    );
}

#[test]
fn overlaps_resolve_to_one_finding() {
    let s = scanner();
    // A JWT is one secret, not also an email/phone/IP; behind Bearer too.
    assert_eq!(found(&s, &format!("Authorization: Bearer {JWT}")), vec![("SECRET".into(), JWT.into())]);
    // An email containing a phone-like run stays an email.
    assert_eq!(
        found(&s, "mail +15550109999@example.com now"),
        vec![("EMAIL_ADDRESS".into(), "+15550109999@example.com".into())]
    );
    // A card inside a longer digit run is not a card (nor anything else).
    assert!(found(&s, "ref 99411111111111111119999 done").is_empty());
    // SSN-shaped numbers that also fit a national phone pattern are an SSN.
    assert_eq!(found(&s, "ssn 078-05-1120"), vec![("US_SSN".into(), "078-05-1120".into())]);
    // A secret wins over a longer overlapping match of another type, and
    // covers it: nothing of the other value is left in clear.
    assert_eq!(
        found(&s, "id AKIAIOSFODNN7EXAMPLE@example.com"),
        vec![("SECRET".into(), "AKIAIOSFODNN7EXAMPLE@example.com".into())]
    );
    // IPv6 with embedded IPv4 is one address.
    assert_eq!(found(&s, "peer ::ffff:192.0.2.128 ok"), vec![("IP_ADDRESS".into(), "::ffff:192.0.2.128".into())]);
    // A secret inside a PEM block is covered by the block.
    let text = format!("{PEM}\nand AKIAIOSFODNN7EXAMPLE");
    assert_eq!(found(&s, &text), vec![("SECRET".into(), PEM.into()), ("SECRET".into(), "AKIAIOSFODNN7EXAMPLE".into())]);
}

#[test]
fn many_entities_in_one_text_in_order() {
    let s = scanner();
    let text = "Hi, I'm Ana (ana@example.org, +44 20 7946 0958). Card 4111 1111 1111 1111, SSN 536-90-4399, \
                IBAN DE89 3704 0044 0532 0130 00, server 10.1.2.3, key AKIAIOSFODNN7EXAMPLE.";
    let got = found(&s, text);
    let entities: Vec<&str> = got.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(
        entities,
        ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE", "IP_ADDRESS", "SECRET"]
    );
}

#[test]
fn non_ascii_context_keeps_char_boundaries() {
    let s = scanner();
    let cases = [
        ("メールはtaro@example.jpです。電話+81 3-1234-5678", vec!["taro@example.jp", "+81 3-1234-5678"]),
        ("Grüße — écris à zoë@exemple.fr ou 4111111111111111 ✓", vec!["zoë@exemple.fr", "4111111111111111"]),
        ("🔑 AKIAIOSFODNN7EXAMPLE 🔑 и 192.168.0.1 — ок", vec!["AKIAIOSFODNN7EXAMPLE", "192.168.0.1"]),
        ("Überweisung: DE89370400440532013000€", vec!["DE89370400440532013000"]),
    ];
    for (text, want) in cases {
        let f = s.find(text);
        check_invariants(text, &f);
        let got: Vec<&str> = f.iter().map(|f| &text[f.start..f.end]).collect();
        assert_eq!(got, want, "in {text:?}");
    }
}

#[test]
fn disabled_entities_are_not_detected() {
    let policy = PiiPolicy { entities: [("EMAIL_ADDRESS".to_string(), PiiAction::Log)].into(), custom: vec![] };
    let s = PiiScanner::new(&policy).unwrap();
    let got = s.find("a@b.io 4111111111111111 10.0.0.1");
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].entity.as_str(), got[0].action), ("EMAIL_ADDRESS", PiiAction::Log));
}
