//! Payment card numbers: the networks' issuer identification number (IIN)
//! ranges and the lengths each issues (ISO/IEC 7812 numbers of 12–19 digits),
//! and the Luhn check digit.

/// The candidate pattern: a bare run of 12–19 digits, or the groupings
/// printed on cards (4-4-4-4[-3], 4-4-4-1..7 for 13–19, 4-6-4/5 for 14 and
/// 15), with one separator kind (checked in code).
pub(super) const PATTERN: &str = concat!(
    r"[0-9]{12,19}",
    r"|[0-9]{4}[ \-][0-9]{4}[ \-][0-9]{4}(?:[ \-][0-9]{1,7}(?:[ \-][0-9]{1,3})?)?",
    r"|[0-9]{4}[ \-][0-9]{6}[ \-][0-9]{4,5}",
);

/// Issued ranges: (first digits, last digits of the range, how many leading
/// digits they are, the lengths issued in it as a bit set over 12..=19).
const fn lengths(from: usize, to: usize) -> u32 {
    let mut bits = 0;
    let mut n = from;
    while n <= to {
        bits |= 1 << n;
        n += 1;
    }
    bits
}
const ONLY_13_16_19: u32 = (1 << 13) | (1 << 16) | (1 << 19);
const ONLY_15: u32 = 1 << 15;
const ONLY_16: u32 = 1 << 16;
const IIN: &[(u32, u32, usize, u32)] = &[
    // Visa (Visa Electron's ranges lie inside): 13, 16, 19.
    (4, 4, 1, ONLY_13_16_19),
    // Mastercard: 51–55 and 2221–2720, 16.
    (51, 55, 2, ONLY_16),
    (2221, 2720, 4, ONLY_16),
    // American Express: 34, 37, 15.
    (34, 34, 2, ONLY_15),
    (37, 37, 2, ONLY_15),
    // Diners Club International: 300–305, 3095, 36, 38–39, 14–19.
    (300, 305, 3, lengths(14, 19)),
    (3095, 3095, 4, lengths(14, 19)),
    (36, 36, 2, lengths(14, 19)),
    (38, 39, 2, lengths(14, 19)),
    // JCB: 3528–3589, 16–19; its earlier 15-digit ranges 1800 and 2131.
    (3528, 3589, 4, lengths(16, 19)),
    (1800, 1800, 4, ONLY_15),
    (2131, 2131, 4, ONLY_15),
    // UATP: 1, 15.
    (1, 1, 1, ONLY_15),
    // Mir 2200–2204 (16–19), Borica 2205 (16).
    (2200, 2204, 4, lengths(16, 19)),
    (2205, 2205, 4, ONLY_16),
    // Maestro: 50 and 56–69, 12–19. Discover (6011, 644–649, 65, 622126–
    // 622925), UnionPay (62), RuPay (60, 65), InterPayment (636), Verve
    // (506099–506198, 650002–650027), Dankort (5019) issue inside these.
    (50, 50, 2, lengths(12, 19)),
    (56, 69, 2, lengths(12, 19)),
    // UnionPay 81 (16–19), RuPay 82 (16), Uzcard 8600, Troy 9792, Humo 9860 (16).
    (81, 81, 2, lengths(16, 19)),
    (82, 82, 2, ONLY_16),
    (8600, 8600, 4, ONLY_16),
    (9792, 9792, 4, ONLY_16),
    (9860, 9860, 4, ONLY_16),
];

pub(super) fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(*d);
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// Whether a network issues card numbers of this length starting so.
fn issued(d: &[u8]) -> bool {
    let prefix = |k: usize| d.iter().take(k).fold(0u32, |acc, &x| acc * 10 + u32::from(x));
    IIN.iter().any(|&(from, to, k, lens)| (from..=to).contains(&prefix(k)) && lens & (1 << d.len()) != 0)
}

/// A candidate (digits with one kind of separator) is a card number.
pub(super) fn card(cand: &str) -> bool {
    let mut buf = [0u8; 19];
    let mut n = 0;
    let mut sep: Option<u8> = None;
    for b in cand.bytes() {
        if b.is_ascii_digit() {
            if n == buf.len() {
                return false;
            }
            buf[n] = b - b'0';
            n += 1;
        } else {
            if sep.is_some_and(|s| s != b) {
                return false;
            }
            sep = Some(b);
        }
    }
    let d = &buf[..n];
    (12..=19).contains(&n) && luhn(d) && issued(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `prefix` padded with zeros to `len` digits, the last digit set so Luhn holds.
    fn number(prefix: &str, len: usize) -> String {
        let mut s: String = prefix.chars().chain(std::iter::repeat('0')).take(len - 1).collect();
        let digits: Vec<u8> = s.bytes().map(|b| b - b'0').collect();
        let check = (0..10u8).find(|c| luhn(&[digits.as_slice(), &[*c]].concat())).unwrap_or(0);
        s.push(char::from(b'0' + check));
        s
    }

    #[test]
    fn every_issued_length() {
        for (prefix, lens) in [
            ("4", &[13, 16, 19][..]),
            ("34", &[15]),
            ("37", &[15]),
            ("51", &[16]),
            ("2720", &[16]),
            ("6011", &[16, 17, 18, 19]),
            ("3530", &[16, 19]),
            ("36", &[14, 19]),
            ("5018", &[12, 13, 19]),
            ("6759", &[12, 16, 19]),
            ("2131", &[15]),
        ] {
            for &len in lens {
                assert!(card(&number(prefix, len)), "{prefix} length {len}");
            }
        }
    }

    #[test]
    fn lengths_not_issued_and_bad_check_digits() {
        for (prefix, len) in [("4", 14), ("4", 15), ("34", 16), ("51", 15), ("2720", 19), ("33", 16), ("7", 16)] {
            assert!(!card(&number(prefix, len)), "{prefix} length {len}");
        }
        assert!(!card("4111111111111112"));
        assert!(!card("4111 1111-1111 1111"));
    }
}
