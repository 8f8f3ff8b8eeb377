//! Property tests for the PII scanner.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;

use proptest::prelude::*;
use tollgate_core::pii::{MaskMap, PiiPolicy, PiiScanner};

fn scanner() -> &'static PiiScanner {
    static S: OnceLock<PiiScanner> = OnceLock::new();
    S.get_or_init(|| PiiScanner::new(&PiiPolicy::default()).unwrap())
}

/// Random text without '@' (ASCII, accented, CJK, emoji, digits, punctuation).
fn filler() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            proptest::char::range('a', 'z'),
            proptest::char::range('A', 'Z'),
            proptest::char::range('0', '9'),
            Just(' '),
            Just('\n'),
            Just(','),
            Just('.'),
            Just('-'),
            Just('é'),
            Just('ß'),
            Just('日'),
            Just('本'),
            Just('🔑'),
        ],
        0..80,
    )
    .prop_map(|v| v.into_iter().collect())
}

fn email() -> impl Strategy<Value = String> {
    ("[a-z0-9]{1,10}(\\.[a-z0-9_+]{1,8})?", "[a-z0-9]{1,12}(-[a-z0-9]{1,6})?", "(\\.[a-z]{2,8})?\\.[a-z]{2,6}")
        .prop_map(|(local, host, tld)| format!("{local}@{host}{tld}"))
}

proptest! {
    #[test]
    fn embedded_email_is_found_exactly(
        pre in filler(),
        post in filler(),
        e in email(),
        left in prop::sample::select(vec![" ", "\n", "(", "<", ", ", "は", "：", "\""]),
        right in prop::sample::select(vec![" ", "\n", ")", ">", ", ", ". ", "です", "\"", ""]),
    ) {
        let text = format!("{pre}{left}{e}{right}{post}");
        let at = pre.len() + left.len();
        let right_ok = !right.is_empty() || post.chars().next().is_none_or(|c| !(c.is_alphanumeric() || c == '-' || c == '.'));
        prop_assume!(right_ok);
        let emails: Vec<_> = scanner().find(&text).into_iter().filter(|f| f.entity == "EMAIL_ADDRESS").collect();
        prop_assert_eq!(emails.len(), 1, "{:?}", text);
        prop_assert_eq!((emails[0].start, emails[0].end), (at, at + e.len()));
        prop_assert_eq!(&text[emails[0].start..emails[0].end], e.as_str());
    }

    #[test]
    fn findings_are_sorted_on_char_boundaries_and_masking_round_trips(text in "\\PC{0,200}", pre in filler()) {
        let text = format!("{pre} {text} ana@example.org 4111 1111 1111 1111");
        let f = scanner().find(&text);
        for w in f.windows(2) {
            prop_assert!(w[0].end <= w[1].start);
        }
        for x in &f {
            prop_assert!(text.is_char_boundary(x.start) && text.is_char_boundary(x.end) && x.start < x.end);
        }
        let mut m = MaskMap::new(1 << 20);
        let mut r = Vec::new();
        let masked = scanner().mask_text(&text, &mut m, &mut r).unwrap();
        prop_assert!(!masked.contains("ana@example.org"));
        prop_assert_eq!(m.restore_str(&masked), text.as_str());
    }
}
