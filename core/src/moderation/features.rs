//! The moderation model's features: hashed words of a normalized text. The trainer (`core/examples/moderation.rs`) and the
//! filter call the same function, so a model scores exactly the features it
//! was trained on.
//!
//! Normalization, in one pass over the bytes:
//! - a token is a run of ASCII letters and digits, the look-alikes `@` and
//!   `$` inside a word, apostrophes (dropped) and any non-ASCII byte (kept
//!   as is, so other scripts hash whole words);
//! - ASCII is lower-cased, and the digits and signs people write for
//!   letters are folded (`0→o 1→i 3→e 4→a 5→s 7→t`, and `@→a $→s` inside a
//!   word): `sh1t` and `shit` are one feature (numbers fold too: `2024`
//!   hashes as `2o2a`, still one feature per number);
//! - a letter repeated more than twice counts twice (`soooo` → `soo`);
//! - `*` between two letters and `.` between two single letters join
//!   them (`f*ck`, `s.h.i.t` become one token, the mark dropped);
//!
//! Tokens are hashed (FNV-1a) as they are read: one table look-up and one
//! multiply per byte, no copy.
//!
//! Each token is one feature, hashed into [`BUCKETS`] buckets.

/// log2 of the number of hash buckets.
pub const BUCKET_BITS: u32 = 16;
/// Number of hash buckets.
pub const BUCKETS: usize = 1 << BUCKET_BITS;

const MASK: u32 = (BUCKETS as u32) - 1;

const fn fold(b: u8) -> u8 {
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

/// Fold a 32-bit hash's high bits into the bucket bits.
fn mix(h: u32) -> u32 {
    h ^ (h >> 15) ^ (h >> 27)
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

/// Per byte: 0 when it ends a token, else the byte a token keeps
/// (lower-cased, look-alikes folded). `@`, `$`, `'`, `*` and `.` get
/// their own handling in [`tokens`].
const CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0usize;
    while b < 256 {
        let c = (b as u8).to_ascii_lowercase();
        t[b] = if c.is_ascii_alphanumeric() || b >= 0x80 { fold(c) } else { 0 };
        b += 1;
    }
    t
};

/// Feed the tokens of `text` to `sink` (token hash), in order.
fn tokens(text: &[u8], mut sink: impl FnMut(u32)) {
    const SEED: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    let mut h = SEED;
    let mut len = 0usize;
    let mut last = 0u8;
    let mut run = 0u8;
    for (i, &b) in text.iter().enumerate() {
        let mut c = CLASS[b as usize];
        if c == 0 {
            // Not a token byte: a look-alike or mark inside a word, or the
            // end of a token.
            if len == 0 {
                continue;
            }
            match b {
                b'@' | b'$' => c = fold(b),
                b'\'' => continue,
                b'*' | b'.' if joins(text, i) => continue,
                _ => {
                    sink(h);
                    h = SEED;
                    len = 0;
                    last = 0;
                    continue;
                }
            }
        }
        // One more byte of a token (FNV-1a); a letter repeated more than
        // twice counts twice.
        if c == last {
            run += 1;
            if run > 2 {
                continue;
            }
        } else {
            last = c;
            run = 1;
        }
        h = (h ^ u32::from(c)).wrapping_mul(PRIME);
        len += 1;
    }
    if len > 0 {
        sink(h);
    }
}

/// Feed the feature buckets of `text` to `sink`: one per token (its
/// unigram). Returns the number of features fed.
///
/// Word bigrams were measured too (docs/moderation-quality.md): on the
/// public data available they lowered F1 in four categories (the fifth
/// unchanged) and doubled the scoring cost.
pub fn features(text: &str, mut sink: impl FnMut(usize)) -> usize {
    let mut count = 0usize;
    tokens(text.as_bytes(), |h| {
        sink((mix(h) & MASK) as usize);
        count += 1;
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
    fn numbers_and_sentences_split() {
        assert_eq!(toks("2024 and 2025").len(), 3);
        assert_ne!(toks("2024"), toks("2025"));
        assert_eq!(toks("end. Next"), toks("end next"));
        assert_eq!(toks("well-known").len(), 2);
        assert_eq!(toks("über straße").len(), 2);
    }

    #[test]
    fn one_feature_per_token_in_range() {
        let mut seen = Vec::new();
        assert_eq!(features("you are kind", |b| seen.push(b)), 3);
        assert!(seen.iter().all(|&b| b < BUCKETS));
        let mut other = Vec::new();
        features("KIND are you!", |b| other.push(b));
        seen.reverse();
        assert_eq!(seen, other);
        assert_eq!(features("", |_| {}), 0);
        assert_eq!(features(" ... !!", |_| {}), 0);
    }
}
