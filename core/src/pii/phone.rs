//! Phone numbers, read by the numbering plans rather than by shape alone.
//!
//! A loose pattern (digits joined by at most three of ` -./()`, a `+` or `(`
//! before them) gives candidates; each is cut into digit groups and every run
//! of groups is read, longest first, as
//!
//! - an international number: `+` or `00`, an assigned E.164 country code,
//!   a national trunk `(0)` allowed after it, 8–15 digits (E.164's
//!   structure; `+1` must also be a NANP number, the one plan every member
//!   of the code shares);
//! - a North American (NANP) number: `NXX NXX XXXX` (`N` is 2–9, the area
//!   code not `N11`), a trunk `1` allowed before it, grouped 3-3-4;
//! - a UK or German national number: a trunk `0`, then a national number
//!   that fits the plan's general pattern (libphonenumber's metadata: UK
//!   `[1-357-9]` and 10 digits or `[18]` and 9; Germany a non-zero digit and
//!   7–13 digits, mobiles `15`–`17` 10–11),
//!
//! with an extension after it (`x12`, `ext. 12`, `Durchwahl 12`). A number
//! that fits no plan, or is written without any grouping (a bare digit run is
//! as likely an order or account number), is a phone number only next to a
//! word that says so (`phone`, `tel`, `call`, `mobile`, `Telefon`, `Handy`…).
//! Dates (`2024-01-15`, `01.02.2024`), dotted numbers other than NANP's
//! `555.201.9999` and SSN-shaped `078-05-1120` are never phone numbers.
//!
//! Work per candidate is bounded: at most 42 bytes, so at most 21 groups,
//! and only runs of 7–17 digits are read.

use super::{is_aword, next, number_bounded, prev};

/// Groups in one candidate (the pattern matches at most 42 bytes).
const MAX_GROUPS: usize = 21;
/// E.164: a number has at most 15 digits, its country code included.
const E164_MAX: usize = 15;

/// The candidate pattern (validated here, in code).
pub(super) const PATTERN: &str = r"(?:\+|\(\+?)?[0-9][0-9 \-./()]{5,40}[0-9]";

/// Words that make a phone-shaped digit run a phone number: the vCard
/// telephone types (RFC 6350) and how English and German texts label or ask
/// for a number. `word` is lower-case ASCII; the match compiles to a switch
/// on the length, then a comparison.
fn context_word(word: &[u8]) -> bool {
    matches!(
        word,
        b"phone"
            | b"phones"
            | b"telephone"
            | b"tel"
            | b"ph"
            | b"mobile"
            | b"mob"
            | b"cell"
            | b"cellphone"
            | b"fax"
            | b"pager"
            | b"voice"
            | b"call"
            | b"calls"
            | b"called"
            | b"calling"
            | b"dial"
            | b"sms"
            | b"text"
            | b"whatsapp"
            | b"reach"
            | b"hotline"
            | b"helpline"
            | b"telefon"
            | b"telefonnummer"
            | b"rufnummer"
            | b"handy"
            | b"handynummer"
            | b"mobil"
            | b"mobilnummer"
            | b"festnetz"
            | b"telefax"
            | b"anrufen"
            | b"durchwahl"
            | b"erreichbar"
            | b"office"
    )
}
/// The longest context word, and how far before and after a number one may
/// stand (bytes).
const CONTEXT_WORD_MAX: usize = 13;
const CONTEXT_BEFORE: usize = 48;
const CONTEXT_AFTER: usize = 24;

/// How a run of groups reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// Fits a numbering plan and is written as people write phone numbers.
    Number,
    /// Phone-shaped (7–15 digits, phone separators) but fits no plan or is
    /// an ungrouped run: a phone number only with a context word.
    Shaped,
}

/// Every phone number in the candidate `text[s..e]`, reported through `out`
/// (non-overlapping, in order; extensions included).
pub(super) fn find(text: &str, s: usize, e: usize, out: &mut impl FnMut(usize, usize)) {
    let Some(cand) = text.get(s..e) else { return };
    let mut groups = [(0usize, 0usize); MAX_GROUPS];
    let mut n = 0;
    let b = cand.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if n == MAX_GROUPS {
                return;
            }
            groups[n] = (s + start, s + i);
            n += 1;
        } else {
            i += 1;
        }
    }
    let groups = &groups[..n];
    // Digits before each group, to skip runs of the wrong length unread.
    let mut before = [0usize; MAX_GROUPS + 1];
    for (k, (a, z)) in groups.iter().enumerate() {
        before[k + 1] = before[k] + (z - a);
    }
    // Two numbers in one candidate stand apart by a space (or ` / `); a run
    // never starts or ends inside a grouping like `(555) 201-9999`.
    let split = |k: usize| matches!(text.get(groups[k].1..groups[k + 1].0), Some(" " | " (" | " / " | " / ("));
    // A run inside the candidate (not all of it) must fit a plan without
    // context: start with a trunk `0` or an international `+`, or have the
    // NANP's 3-3-4 grouping. Anything else is not read at all.
    let plausible = |first: usize, last: usize| {
        let (a, _) = groups[first];
        let lead = text.as_bytes().get(a.saturating_sub(2)..a).unwrap_or_default();
        let lens = |k: usize| groups.get(k).map_or(0, |(a, z)| z - a);
        text.as_bytes().get(a) == Some(&b'0')
            || lead.contains(&b'+')
            || match last - first {
                2 => (lens(first), lens(first + 1), lens(last)) == (3, 3, 4),
                3 => (lens(first), lens(first + 1), lens(first + 2), lens(last)) == (1, 3, 3, 4),
                1 => (lens(first), lens(last)) == (3, 7),
                _ => false,
            }
    };
    let mut first = 0;
    while first < groups.len() {
        if first > 0 && !split(first - 1) {
            first += 1;
            continue;
        }
        let mut taken = None;
        for last in (first..groups.len()).rev() {
            let digits = before[last + 1] - before[first];
            if digits > E164_MAX + 2 || (last + 1 < groups.len() && !split(last)) {
                continue;
            }
            if digits < 7 {
                break;
            }
            let whole = first == 0 && last + 1 == groups.len();
            if !whole && !plausible(first, last) {
                continue;
            }
            if let Some(span) = read(text, s, groups, first, last, whole) {
                taken = Some((last, span));
                break;
            }
        }
        match taken {
            Some((last, (a, z))) => {
                out(a, z);
                first = last + 1;
            }
            None => first += 1,
        }
    }
}

/// The span of groups `first..=last` if they are a phone number.
fn read(
    text: &str,
    cand_start: usize,
    groups: &[(usize, usize)],
    first: usize,
    last: usize,
    whole: bool,
) -> Option<(usize, usize)> {
    let g = groups.get(first..=last)?;
    let digits_len: usize = g.iter().map(|(a, z)| z - a).sum();
    if !(7..=E164_MAX + 2).contains(&digits_len) {
        return None;
    }
    // The start: a `+`, `(` or `(+` right before the first group.
    let lead_from = if first == 0 { cand_start } else { groups[first - 1].1 };
    let mut start = g[0].0;
    let bytes = text.as_bytes();
    while start > lead_from && g[0].0 - start < 2 && matches!(bytes.get(start - 1), Some(b'+' | b'(')) {
        start -= 1;
    }
    let lead = &text[start..g[0].0];
    let shape = shape(text, lead, g).or_else(|| {
        // An opening parenthesis that never closes is not part of the number.
        let stripped = lead.trim_start_matches('(');
        if stripped.len() < lead.len() {
            start += lead.len() - stripped.len();
            shape(text, stripped, g)
        } else {
            None
        }
    })?;
    let reading = classify(&shape)?;
    let mut end = g[g.len() - 1].1;
    end = extension(text, end).unwrap_or(end);
    if !number_bounded(text, start, end) || prev(text, start) == Some('+') || next(text, end) == Some('@') {
        return None;
    }
    match reading {
        Reading::Number => Some((start, end)),
        Reading::Shaped if whole && has_context(text, start, end) => Some((start, end)),
        Reading::Shaped => None,
    }
}

/// A run of groups as written: its digits and how they were grouped.
struct Shape {
    digits: [u8; E164_MAX + 2],
    len: usize,
    /// Written with a leading `+`.
    plus: bool,
    /// Digit count of each group (the first 8 groups).
    lens: [u8; 8],
    groups: usize,
    /// Which group stands in parentheses (at most one besides a trunk `(0)`).
    paren: Option<usize>,
    /// A `(0)` trunk after the country code, left out of `digits`.
    trunk_paren: bool,
    dotted: bool,
    slashes: usize,
}

impl Shape {
    fn digits(&self) -> &[u8] {
        &self.digits[..self.len]
    }

    fn lens(&self) -> &[u8] {
        &self.lens[..self.groups.min(self.lens.len())]
    }
}

fn shape(text: &str, lead: &str, g: &[(usize, usize)]) -> Option<Shape> {
    if !matches!(lead, "" | "+" | "(" | "(+" | "+(") {
        return None;
    }
    let plus = lead.contains('+');
    let mut open = lead.contains('(');
    let mut sh = Shape {
        digits: [0; E164_MAX + 2],
        len: 0,
        plus,
        lens: [0; 8],
        groups: g.len(),
        paren: None,
        trunk_paren: false,
        dotted: false,
        slashes: 0,
    };
    let (mut spaces, mut dashes, mut pairs) = (false, false, 0);
    for (k, &(a, z)) in g.iter().enumerate() {
        let group = text.get(a..z)?;
        if k > 0 {
            let sep = text.get(g[k - 1].1..a)?;
            // One `)` may close the group before, one `(` open the next; no
            // other parenthesis passes the check of `mid` below.
            let (closes, rest) = match sep.strip_prefix(')') {
                Some(rest) => (true, rest),
                None => (false, sep),
            };
            let (opens, mid) = match rest.strip_suffix('(') {
                Some(mid) => (true, mid),
                None => (false, rest),
            };
            if closes != open {
                // `)` closes the group just read; any other `)` is stray, and
                // an open `(` must close right after its group.
                return None;
            }
            open = opens;
            // ` / ` separates two numbers; `/` alone is the German area-code mark.
            let mid_ok = matches!(mid, "" | " " | "-" | "." | "/" | " - " | " -" | "- ");
            if !mid_ok || (mid.is_empty() && !closes && !opens) {
                return None;
            }
            spaces |= mid.contains(' ');
            dashes |= mid.contains('-');
            sh.dotted |= mid.contains('.');
            sh.slashes += mid.matches('/').count();
        }
        if open {
            pairs += 1;
            let is_trunk = group == "0" && k > 0 && plus;
            if is_trunk {
                sh.trunk_paren = true;
            } else if sh.paren.replace(k).is_some() {
                return None;
            }
        }
        if let Some(l) = sh.lens.get_mut(k) {
            *l = u8::try_from(z - a).unwrap_or(u8::MAX);
        }
        if open && group == "0" && k > 0 && plus {
            continue;
        }
        for &d in group.as_bytes() {
            *sh.digits.get_mut(sh.len)? = d - b'0';
            sh.len += 1;
        }
    }
    // A `(` left open after the last group: not this reading.
    if open || pairs > 2 || sh.slashes > 1 || (sh.dotted && (spaces || dashes || sh.slashes > 0)) {
        return None;
    }
    Some(sh)
}

fn classify(sh: &Shape) -> Option<Reading> {
    let d = sh.digits();
    let lens = sh.lens();
    let grouped = sh.groups > 1 || sh.paren.is_some();
    // Dates: 2024-01-15, 15.01.2024, 01/15/2024, 15 01 2024.
    if !sh.plus && matches!(lens, [4, 1 | 2, 1 | 2] | [1 | 2, 1 | 2, 4] | [1 | 2, 1 | 2, 2]) {
        return None;
    }
    // SSN-shaped 078-05-1120 is a US SSN, not a phone number.
    if !sh.plus && lens == [3, 2, 4] {
        return None;
    }
    let international = sh.plus || (d.starts_with(&[0, 0]) && sh.paren != Some(0));
    if international {
        let rest = if sh.plus { d } else { &d[2..] };
        let Some(cc) = country_code_len(rest) else { return Some(Reading::Shaped) };
        let nsn = &rest[cc..];
        // The NANP has one format for all its members; elsewhere the
        // international form is read by E.164's structure alone.
        let fits = match rest.get(..cc) {
            Some([1]) => nsn.len() == 10 && nanp(nsn),
            _ => nsn.len() >= 4 && cc + nsn.len() <= E164_MAX && rest.len() >= 8,
        };
        // `00` without any grouping is as likely a code or reference number.
        return Some(if fits && (sh.plus || grouped) { Reading::Number } else { Reading::Shaped });
    }
    if sh.dotted {
        // Only the NANP writes numbers with dots: 555.201.9999.
        return (lens == [3, 3, 4]).then_some(if nanp(d) { Reading::Number } else { Reading::Shaped });
    }
    let fits = match d.first() {
        Some(0) => grouped && (uk(&d[1..]) || de(&d[1..])),
        Some(1) => d.len() == 11 && nanp(&d[1..]) && lens == [1, 3, 3, 4],
        Some(_) => d.len() == 10 && nanp(d) && (lens == [3, 3, 4] || (lens == [3, 7] && sh.paren == Some(0))),
        None => false,
    };
    if fits {
        return Some(Reading::Number);
    }
    // Phone-shaped for the context rule: groups of two or more digits (the
    // first may be a trunk or country digit), 7–15 digits, no trunk `(0)`.
    let tidy = lens.iter().skip(1).all(|&l| l >= 2) && d.len() <= E164_MAX && !sh.trunk_paren;
    tidy.then_some(Reading::Shaped)
}

/// NANP: `NXX NXX XXXX`, N = 2–9; `N11` area codes are service codes.
fn nanp(d: &[u8]) -> bool {
    d.len() == 10 && d[0] >= 2 && !(d[1] == 1 && d[2] == 1) && d[3] >= 2
}

/// UK national significant number (libphonenumber's general pattern for GB,
/// less the 7-digit 0800 1111): `[1-357-9]\d{9}|[18]\d{8}`.
fn uk(nsn: &[u8]) -> bool {
    match nsn.len() {
        10 => matches!(nsn[0], 1 | 2 | 3 | 5 | 7 | 8 | 9),
        9 => matches!(nsn[0], 1 | 8),
        _ => false,
    }
}

/// German national significant number: a non-zero first digit, 7–13 digits
/// (at most E.164's 15 less the country code; the plan allows shorter ones,
/// but six digits after a `0` are more often two numbers of an address);
/// mobiles (`15`–`17`) 10–11.
fn de(nsn: &[u8]) -> bool {
    match nsn {
        [1, 5..=7, ..] => (10..=11).contains(&nsn.len()),
        [first, ..] => *first != 0 && (7..=13).contains(&nsn.len()),
        [] => false,
    }
}

/// Length of the assigned E.164 country code `d` starts with (codes are a
/// prefix code: no code is the start of another).
fn country_code_len(d: &[u8]) -> Option<usize> {
    let (a, b, c) = (*d.first()?, *d.get(1)?, *d.get(2)?);
    match a {
        0 => None,
        1 | 7 => Some(1),
        _ => {
            let two = a * 10 + b;
            const TWO: &[u8] = &[
                20, 27, 30, 31, 32, 33, 34, 36, 39, 40, 41, 43, 44, 45, 46, 47, 48, 49, 51, 52, 53, 54, 55, 56, 57, 58,
                60, 61, 62, 63, 64, 65, 66, 81, 82, 84, 86, 90, 91, 92, 93, 94, 95, 98,
            ];
            const THREE_ZONES: &[u8] =
                &[21, 22, 23, 24, 25, 26, 29, 35, 37, 38, 42, 50, 59, 67, 68, 69, 80, 85, 87, 88, 96, 97, 99];
            const SPARE: &[u16] = &[
                210, 214, 215, 217, 219, 259, 292, 293, 294, 295, 296, 384, 422, 424, 425, 426, 427, 428, 429, 671,
                684, 693, 694, 695, 696, 697, 698, 699, 801, 802, 803, 804, 805, 806, 807, 809, 851, 854, 857, 858,
                859, 871, 872, 873, 874, 875, 876, 877, 879, 884, 885, 887, 889, 969, 978, 990, 997, 999,
            ];
            if TWO.contains(&two) {
                Some(2)
            } else if THREE_ZONES.contains(&two) && !SPARE.contains(&(u16::from(two) * 10 + u16::from(c))) {
                Some(3)
            } else {
                None
            }
        }
    }
}

/// The end of an extension written after a number ending at `end`:
/// `x123`, ` ext. 123`, ` extension 123`, ` Durchwahl 123`, ` DW 12`.
fn extension(text: &str, end: usize) -> Option<usize> {
    let rest = text.get(end..)?;
    let trimmed = rest.trim_start_matches(' ');
    let skipped = rest.len() - trimmed.len();
    if skipped > 2 {
        return None;
    }
    let word_len = trimmed.bytes().take_while(u8::is_ascii_alphabetic).count();
    let word = &trimmed[..word_len];
    let known = ["x", "ext", "extn", "extension", "durchwahl", "dw"];
    if !known.iter().any(|k| word.eq_ignore_ascii_case(k)) {
        return None;
    }
    let after = &trimmed[word_len..];
    let after_mark = after.strip_prefix(['.', ':']).unwrap_or(after);
    let after_space = after_mark.strip_prefix(' ').unwrap_or(after_mark);
    let n = after_space.bytes().take_while(u8::is_ascii_digit).count();
    if !(1..=6).contains(&n) {
        return None;
    }
    let z = end + skipped + word_len + (after.len() - after_space.len()) + n;
    (!next(text, z).is_some_and(is_aword)).then_some(z)
}

/// A context word within reach before or after `text[s..e]`.
fn has_context(text: &str, s: usize, e: usize) -> bool {
    let mut from = s.saturating_sub(CONTEXT_BEFORE);
    while !text.is_char_boundary(from) {
        from += 1;
    }
    let mut to = (e + CONTEXT_AFTER).min(text.len());
    while !text.is_char_boundary(to) {
        to -= 1;
    }
    let words = |t: &[u8]| {
        let mut word = [0u8; CONTEXT_WORD_MAX];
        let mut n = 0;
        // A space past the end closes the last word.
        for &b in t.iter().chain(b" ") {
            if b.is_ascii_alphabetic() {
                if let Some(slot) = word.get_mut(n) {
                    *slot = b.to_ascii_lowercase();
                }
                n += 1;
            } else {
                if (2..=CONTEXT_WORD_MAX).contains(&n) && context_word(&word[..n]) {
                    return true;
                }
                n = 0;
            }
        }
        false
    };
    let bytes = text.as_bytes();
    bytes.get(from..s).is_some_and(words) || bytes.get(e..to).is_some_and(words)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn phones(text: &str) -> Vec<&str> {
        let re = regex::Regex::new(PATTERN).unwrap();
        let mut out = Vec::new();
        for m in re.find_iter(text) {
            find(text, m.start(), m.end(), &mut |a, z| out.push(&text[a..z]));
        }
        out
    }

    #[test]
    fn country_codes_are_a_prefix_code() {
        assert_eq!(country_code_len(&[1, 2, 0]), Some(1));
        assert_eq!(country_code_len(&[4, 4, 2]), Some(2));
        assert_eq!(country_code_len(&[3, 5, 3]), Some(3));
        assert_eq!(country_code_len(&[2, 1, 0]), None);
        assert_eq!(country_code_len(&[8, 3, 1]), None);
        assert_eq!(country_code_len(&[0, 4, 4]), None);
    }

    #[test]
    fn plans() {
        assert!(nanp(&[2, 0, 6, 5, 5, 5, 0, 1, 4, 3]));
        assert!(!nanp(&[2, 1, 1, 5, 5, 5, 0, 1, 4, 3]), "N11 area code");
        assert!(!nanp(&[2, 0, 6, 0, 5, 5, 0, 1, 4, 3]), "exchange starting with 0");
        assert!(uk(&[2, 0, 7, 9, 4, 6, 0, 9, 5, 8]));
        assert!(!uk(&[4, 0, 7, 9, 4, 6, 0, 9, 5, 8]));
        assert!(de(&[3, 0, 9, 0, 1, 8, 2, 0]));
        assert!(!de(&[1, 7, 1, 2, 3, 4]), "mobile too short");
    }

    #[test]
    fn splits_runs_and_keeps_extensions() {
        assert_eq!(phones("555-201-9999 (0161) 496 0066"), ["555-201-9999", "(0161) 496 0066"]);
        assert_eq!(phones("tel 206.269.0743x9150."), ["206.269.0743x9150"]);
        assert_eq!(phones("+1-780-563-6083 ext. 77"), ["+1-780-563-6083 ext. 77"]);
        assert_eq!(phones("030 901820 Durchwahl 12"), ["030 901820 Durchwahl 12"]);
        assert_eq!(phones("Order 12345 (0161) 4960066"), ["(0161) 4960066"]);
        assert_eq!(phones("(555-201-9999)"), ["555-201-9999"]);
    }

    #[test]
    fn context_words_decide_bare_runs() {
        assert_eq!(phones("Telefon: 03091234567"), ["03091234567"]);
        assert_eq!(phones("call 2065550143"), ["2065550143"]);
        assert_eq!(phones("03091234567 mobile"), ["03091234567"]);
        assert!(phones("order 03091234567 shipped").is_empty());
        assert!(phones("ref 2065550143").is_empty());
        // A context word does not make a date or a dotted number a phone.
        assert!(phones("call me on 2024-01-15").is_empty());
        assert!(phones("phone 192.168.100.200").is_empty());
    }
}
