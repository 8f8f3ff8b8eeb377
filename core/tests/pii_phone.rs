//! Phone numbers as people write them in the US, the UK and Germany, read by
//! the numbering plans; what looks like a number but is not one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::LazyLock;

use tollgate_core::pii::{PiiPolicy, PiiScanner};

static SCANNER: LazyLock<PiiScanner> = LazyLock::new(|| PiiScanner::new(&PiiPolicy::default()).unwrap());

fn phones(text: &str) -> Vec<String> {
    let s = &*SCANNER;
    s.find(text).into_iter().filter(|f| f.entity == "PHONE_NUMBER").map(|f| text[f.start..f.end].to_string()).collect()
}

/// Each number is found whole, alone in a sentence with no context word.
fn assert_numbers(values: &[&str]) {
    for v in values {
        for text in [v.to_string(), format!("They're not answering at {v}."), format!("({v})"), format!("\"{v}\"")] {
            assert_eq!(phones(&text), vec![v.to_string()], "in {text:?}");
        }
    }
}

#[test]
fn north_american_numbers() {
    assert_numbers(&[
        "206-555-0143",
        "(206) 555-0143",
        "(206)555-0143",
        "206.555.0143",
        "206 555 0143",
        "1-800-555-0199",
        "+1 206 555 0143",
        "+1-206-555-0143",
        "+1 (206) 555-0143",
        "+12065550143",
        "001-206-555-0143",
        "206-555-0143x123",
        "206.555.0143x12345",
        "(206)555-0143 ext. 12",
        "+1-206-555-0143 extension 4",
    ]);
}

#[test]
fn uk_numbers() {
    assert_numbers(&[
        "020 7946 0958",
        "(020) 7946 0958",
        "0113 496 0123",
        "(0113) 4960123",
        "01632 960 123",
        "07700 900 123",
        "0808 157 0192",
        "+44 20 7946 0958",
        "+44 (0)20 7946 0958",
        "+44(0)113 496 0123",
        "+441134960123",
        "+44 7700 900123",
        "0044 20 7946 0958",
    ]);
}

#[test]
fn german_numbers() {
    assert_numbers(&[
        "030 901820",
        "(030) 901820",
        "030/901820",
        "030-901820",
        "030 90 18 20",
        "089 1234 5678",
        "0171 1234567",
        "(06221) 54 3210",
        "+49 30 901820",
        "+49 (0)30 901820",
        "+49(0)6221 543210",
        "+4930901820",
        "0049 30 901820",
        "030 901820-12",
        "030 901820 Durchwahl 12",
    ]);
}

#[test]
fn other_countries_in_international_form() {
    assert_numbers(&["+33 1 42 68 53 00", "+81 3-1234-5678", "+39 06 6982 1234", "+353 1 234 5678"]);
}

#[test]
fn bare_runs_need_a_context_word() {
    for (text, want) in [
        ("Phone: 2065550143", "2065550143"),
        ("call me on 02079460958", "02079460958"),
        ("Tel. 03090182012", "03090182012"),
        ("Handy: 01711234567", "01711234567"),
        ("02079460958 (mobile)", "02079460958"),
        ("Tel: 555-0143", "555-0143"),
        // Fits no plan (exchange 010), but a context word says it is one.
        ("call me on +1 (555) 010-9999", "+1 (555) 010-9999"),
    ] {
        assert_eq!(phones(text), vec![want.to_string()], "in {text:?}");
    }
    for text in ["order 2065550143 shipped", "account 02079460958", "id 01711234567", "ref 555-0143"] {
        assert!(phones(text).is_empty(), "{text:?}: {:?}", phones(text));
    }
}

#[test]
fn not_phone_numbers() {
    for text in [
        "on 2024-01-15 at noon",
        "on 15.01.2024",
        "on 01/15/2024",
        "call me on 2024-01-15",
        "phone 192.168.100.200",
        "version 1.22.333.4444",
        "SSN 078-05-1120",
        "ISBN 978-3-16-148410-0",
        "card 4111 1111 1111 1111",
        "IBAN DE89 3704 0044 0532 0130 00",
        "(555) 010-9999",
        "555-010-9999",
        "+1 211 555 0143",
        "between 1990-2024 and 12345",
        "total 1 234 567 890 units",
        "zip 98101 and 20500",
    ] {
        assert!(phones(text).is_empty(), "{text:?}: {:?}", phones(text));
    }
}

#[test]
fn neighbours_stay_apart() {
    assert_eq!(phones("+1 555 201 9999 2024"), ["+1 555 201 9999"]);
    assert_eq!(phones("Order 12345 (0161) 496 0066"), ["(0161) 496 0066"]);
    assert_eq!(phones("030 901820 / 030 901821"), ["030 901820", "030 901821"]);
    assert_eq!(phones("206-555-0143-Office, 206-555-0144-Fax"), ["206-555-0143", "206-555-0144"]);
    assert_eq!(phones("12-206-555-0143"), Vec::<String>::new());
    assert_eq!(phones("mail +12065550143@example.com"), Vec::<String>::new());
}
