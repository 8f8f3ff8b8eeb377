//! Card numbers of every length the networks issue, as printed and as typed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::LazyLock;

use tollgate_core::pii::{PiiPolicy, PiiScanner};

static SCANNER: LazyLock<PiiScanner> = LazyLock::new(|| PiiScanner::new(&PiiPolicy::default()).unwrap());

fn cards(text: &str) -> Vec<String> {
    let s = &*SCANNER;
    s.find(text).into_iter().filter(|f| f.entity == "CREDIT_CARD").map(|f| text[f.start..f.end].to_string()).collect()
}

/// `prefix`, then `fill` repeated, to `len` digits, the last one the Luhn check digit.
fn number(prefix: &str, len: usize) -> String {
    let body: String = prefix.chars().chain("7053".chars().cycle()).take(len - 1).collect();
    for c in '0'..='9' {
        let cand = format!("{body}{c}");
        let sum: u32 = cand
            .chars()
            .rev()
            .enumerate()
            .map(|(i, ch)| {
                let d = ch.to_digit(10).unwrap();
                if i % 2 == 1 {
                    if d * 2 > 9 {
                        d * 2 - 9
                    } else {
                        d * 2
                    }
                } else {
                    d
                }
            })
            .sum();
        if sum.is_multiple_of(10) {
            return cand;
        }
    }
    unreachable!()
}

/// Grouped in fours, the rest in the last group (as printed on most cards).
fn fours(n: &str, sep: char) -> String {
    n.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join(&sep.to_string())
}

#[test]
fn every_network_and_length_bare_and_grouped() {
    let issued: &[(&str, &[usize])] = &[
        ("4", &[13, 16, 19]),            // Visa
        ("51", &[16]),                   // Mastercard
        ("2221", &[16]),                 // Mastercard 2-series
        ("34", &[15]),                   // American Express
        ("37", &[15]),                   // American Express
        ("6011", &[16, 19]),             // Discover
        ("65", &[16]),                   // Discover, RuPay
        ("36", &[14]),                   // Diners Club International
        ("3056", &[14]),                 // Diners Club
        ("3530", &[16]),                 // JCB
        ("2131", &[15]),                 // JCB, 15 digits
        ("62", &[16, 17, 18, 19]),       // UnionPay
        ("5018", &[12, 13, 15, 16, 19]), // Maestro
        ("6759", &[12, 16]),             // Maestro UK
        ("2200", &[16]),                 // Mir
    ];
    for (prefix, lens) in issued {
        for &len in *lens {
            let n = number(prefix, len);
            for text in [
                format!("card {n} please"),
                format!("card {} please", fours(&n, ' ')),
                format!("no. {}.", fours(&n, '-')),
            ] {
                let want = text.trim_start_matches("card ").trim_start_matches("no. ");
                let want = want.trim_end_matches(" please").trim_end_matches('.');
                assert_eq!(cards(&text), vec![want.to_string()], "{prefix} length {len}: {text:?}");
            }
        }
    }
}

#[test]
fn amex_and_diners_print_groupings() {
    assert_eq!(cards("Amex 3782 822463 10005 ok"), ["3782 822463 10005"]);
    assert_eq!(cards("Amex 3714-496353-98431"), ["3714-496353-98431"]);
    assert_eq!(cards("Diners 3056 930902 5904"), ["3056 930902 5904"]);
    assert_eq!(cards("my card 371224824475773."), ["371224824475773"]);
}

#[test]
fn not_cards() {
    let bad_check = {
        let mut n = number("4", 16);
        let last = n.pop().unwrap();
        n.push(if last == '9' { '0' } else { char::from(last as u8 + 1) });
        n
    };
    for text in [
        format!("card {bad_check}"),
        format!("card {}", number("4", 15)),    // Visa issues 13, 16, 19
        format!("card {}", number("34", 16)),   // Amex issues 15 only
        format!("card {}", number("51", 19)),   // Mastercard issues 16 only
        format!("card {}", number("33", 16)),   // no network
        format!("card {}", number("9", 16)),    // no network
        format!("card {}", number("4", 11)),    // too short
        format!("ref 99{}99", number("4", 16)), // inside a longer run
        "card 4111 1111-1111 1111".to_string(), // mixed separators
    ] {
        assert!(cards(&text).is_empty(), "{text:?}: {:?}", cards(&text));
    }
}
