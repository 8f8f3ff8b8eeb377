//! The moderation model's features: hashed word unigrams and bigrams of a
//! normalized text. The trainer (`core/examples/moderation.rs`) and the
//! filter call the same function, so a model scores exactly the features it
//! was trained on.
//!
//! Normalization, in one pass over the bytes:
//! - a token is a run of ASCII letters and digits, the look-alikes `@` and
//!   `$` inside a word, apostrophes (dropped) and any non-ASCII byte (kept
//!   as is, so other scripts hash whole words);
//! - ASCII is lower-cased; in a token that has a letter, the digits and
//!   signs people write for letters are folded (`0→o 1→i 3→e 4→a 5→s 7→t
//!   @→a $→s`): `sh1t` and `shit` are one feature, `2024` stays a number;
//! - a letter repeated more than twice counts twice (`soooo` → `soo`);
//! - `*` between two letters and `.` between two single letters join
//!   them (`f*ck`, `s.h.i.t` become one token, the mark dropped);
//! - tokens longer than [`MAX_TOKEN`] bytes are cut.
//!
//! Each token gives its unigram and the bigram with the token before it,
//! hashed into [`BUCKETS`] buckets.

/// log2 of the number of hash buckets.
pub const BUCKET_BITS: u32 = 16;
/// Number of hash buckets.
pub const BUCKETS: usize = 1 << BUCKET_BITS;
/// Longest token kept, in bytes.
pub const MAX_TOKEN: usize = 24;

const MASK: u32 = (BUCKETS as u32) - 1;

fn fold(b: u8) -> u8 {
    match b {
        b'0' => b'o',
        b'1' => b'i',
        b'3' => b'e',
        b'4' => b'a',
        b'5' => b's',
        b'7' => b't',
        b'@' => b'a',
        b'$' => b's',
        _ => b,
    }
}

/// 32-bit FNV-1a.
fn fnv(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// A cheap avalanche of a 32-bit value (the murmur3 finalizer).
fn mix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// Whether the mark at `i` joins the letters around it: `*` between two
/// letters (`f*ck`), `.` between two single letters (`s.h.i.t`, `u.s.a`).
fn joins(text: &[u8], i: usize) -> bool {
    let letter = |j: Option<usize>| j.and_then(|j| text.get(j)).is_some_and(|b| b.is_ascii_alphabetic());
    let (before, after) = (letter(i.checked_sub(1)), letter(i.checked_add(1)));
    match text.get(i) {
        Some(b'*') => before && after,
        Some(b'.') => before && after && !letter(i.checked_sub(2)) && !letter(i.checked_add(2)),
        _ => false,
    }
}

/// Feed the tokens of `text` to `sink` (token hash), in order.
fn tokens(text: &[u8], mut sink: impl FnMut(u32)) {
    let mut buf = [0u8; MAX_TOKEN];
    let mut len = 0usize;
    let mut letter = false;
    let mut last = 0u8;
    let mut run = 0u8;
    let mut emit = |buf: &mut [u8; MAX_TOKEN], len: &mut usize, letter: &mut bool| {
        if *len > 0 {
            let tok = &mut buf[..*len];
            if *letter {
                for b in tok.iter_mut() {
                    *b = fold(*b);
                }
            }
            sink(fnv(tok));
        }
        *len = 0;
        *letter = false;
    };
    let n = text.len();
    for i in 0..n {
        let b = text[i];
        let c = b.to_ascii_lowercase();
        let part = c.is_ascii_alphanumeric() || b >= 0x80 || ((c == b'@' || c == b'$') && len > 0);
        if part {
            if c.is_ascii_alphabetic() {
                letter = true;
            }
            if c == last {
                run = run.saturating_add(1);
            } else {
                run = 1;
                last = c;
            }
            if run <= 2 && len < MAX_TOKEN {
                buf[len] = c;
                len += 1;
            }
            continue;
        }
        if c == b'\'' && len > 0 {
            continue;
        }
        if len > 0 && joins(text, i) {
            continue;
        }
        last = 0;
        run = 0;
        emit(&mut buf, &mut len, &mut letter);
    }
    emit(&mut buf, &mut len, &mut letter);
}

/// Feed the feature buckets of `text` to `sink`: per token its unigram,
/// then its bigram with the token before it. Returns the number of
/// features fed.
pub fn features(text: &str, mut sink: impl FnMut(usize)) -> usize {
    let mut prev: Option<u32> = None;
    let mut count = 0usize;
    tokens(text.as_bytes(), |h| {
        sink((mix(h) & MASK) as usize);
        count += 1;
        if let Some(p) = prev {
            sink((mix(p.wrapping_mul(0x9e37_79b1) ^ h ^ 0x5bd1_e995) & MASK) as usize);
            count += 1;
        }
        prev = Some(h);
    });
    count
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<u32> {
        let mut v = Vec::new();
        tokens(s.as_bytes(), |h| v.push(h));
        v
    }

    #[test]
    fn case_leet_repeats_and_masks_fold_to_one_token() {
        let base = toks("shit");
        for s in ["SHIT", "sh1t", "5hit", "s.h.i.t", "sh*t"] {
            let t = toks(s);
            if s == "sh*t" {
                assert_eq!(t.len(), 1, "{s}");
                continue;
            }
            assert_eq!(t, base, "{s}");
        }
        assert_eq!(toks("don't"), toks("dont"));
        assert_eq!(toks("a$$"), toks("ass"));
        assert_eq!(toks("shiiiiit"), toks("shiit"));
    }

    #[test]
    fn numbers_stay_numbers_and_sentences_split() {
        assert_ne!(toks("2024"), toks("zoz4"));
        assert_eq!(toks("end. Next"), toks("end next"));
        assert_eq!(toks("well-known").len(), 2);
        assert_eq!(toks("über straße").len(), 2);
    }

    #[test]
    fn unigrams_and_bigrams_are_counted() {
        let mut seen = Vec::new();
        assert_eq!(features("you are kind", |b| seen.push(b)), 5);
        assert!(seen.iter().all(|&b| b < BUCKETS));
        let mut other = Vec::new();
        features("kind are you", |b| other.push(b));
        // Same unigrams, different bigrams.
        let (mut a, mut b) = (seen.clone(), other.clone());
        a.sort_unstable();
        b.sort_unstable();
        assert_ne!(a, b);
        assert_eq!(features("", |_| {}), 0);
    }
}
