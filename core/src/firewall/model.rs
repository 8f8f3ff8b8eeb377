//! The firewall's learned classifier: a logistic model over hashed word and character n-grams of
//! the normalized text, small and cheap enough to run in the filter on every request.
//!
//! It judges every text the firewall scans, whatever its role: a separate head for tool output
//! (data that should hold no instructions at all) was measured and is not shipped: on public
//! business documents it flagged far more than this one (docs/firewall-quality.md).
//!
//! Features ([`features`]): each word (a run of letters, digits and `'`; any other character is
//! a word of its own), each pair of neighbouring words, and each 4 bytes of the normalized text,
//! hashed into `2^bits` buckets. A window's score is `bias + Σ w / √n` over its `n` features; a
//! text's is its best window's ([`WINDOW`] features overlapping by half), so an attack at the
//! end of a long document is not diluted by the rest.
//!
//! The weights ship in `core/models/firewall.bin` (see [`Model::from_bytes`] for the format),
//! built by `scripts/train-firewall.sh` from public corpora (docs/firewall-quality.md). The
//! model carries the logit at which it alone should flag, chosen on held-out data (the
//! training corpora's validation split); the rule weight a text adds to the firewall's score
//! is `σ(z − flag logit)`, so the classifier alone flags at 0.5 and blocks at the policy's
//! `block` level, like any rule.

/// Features per window.
pub const WINDOW: usize = 512;

/// Rule id of the classifier's judgment.
pub const RULE: &str = "classifier.injection";

use std::borrow::Cow;

const MAGIC: &[u8; 8] = b"TGFWM\x001\x00";

/// The model shipped with the gateway.
static SHIPPED: &[u8] = include_bytes!("../../models/firewall.bin");

/// Quantized weights (`w = q · scale`) over `2^bits` buckets, a bias and the flag point.
#[derive(Clone, Debug)]
pub struct Model {
    bits: u32,
    /// Two's-complement bytes: the shipped model's borrow the filter's data segment (no copy
    /// per VM); a trained one's are its own.
    weights: Cow<'static, [u8]>,
    scale: f32,
    bias: f32,
    flag_logit: f32,
}

impl Model {
    /// A model from float weights (the trainer's; `2^bits` of them): quantized to 8 bits.
    pub fn quantize(bits: u32, weights: &[f32], bias: f32, flag_logit: f32) -> Model {
        let max = weights.iter().fold(0f32, |m, w| m.max(w.abs()));
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        let weights: Vec<u8> = weights.iter().map(|w| (w / scale).round().clamp(-127.0, 127.0) as i8 as u8).collect();
        Model { bits, weights: Cow::Owned(weights), scale, bias, flag_logit }
    }

    /// Sets the logit at which the classifier alone flags.
    pub fn with_flag_logit(mut self, flag_logit: f32) -> Model {
        self.flag_logit = flag_logit;
        self
    }

    pub fn flag_logit(&self) -> f32 {
        self.flag_logit
    }

    /// The best window's logit over `features` (the bias alone when there are none): windows
    /// of [`WINDOW`] features starting every half window, the last one ending with the text,
    /// each feature counted once per half window.
    pub fn logit(&self, features: &[u32]) -> f32 {
        let mut windows = Windows::default();
        for &f in features {
            windows.add(f, |f| self.weight(f));
        }
        windows.best(self.bias, self.scale)
    }

    /// [`logit`](Self::logit) of a normalized text, its features weighed as they are made.
    pub fn text_logit(&self, normalized: &str) -> f32 {
        let mut windows = Windows::default();
        for_each_feature(normalized, self.bits, |f| windows.add(f, |f| self.weight(f)));
        windows.best(self.bias, self.scale)
    }

    fn weight(&self, feature: u32) -> i32 {
        // Features are below 2^bits, the number of weights.
        self.weights.get(feature as usize).map_or(0, |&w| i32::from(w as i8))
    }

    /// The weight a normalized text adds to the firewall's score: `σ(z − flag logit)`.
    pub fn text_weight(&self, normalized: &str) -> f64 {
        sigmoid(f64::from(self.text_logit(normalized) - self.flag_logit))
    }

    /// The model in `core/models/firewall.bin`.
    pub fn shipped() -> Option<Model> {
        Model::from_bytes(SHIPPED)
    }

    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// The file format, little-endian: the magic `TGFWM\0 1\0`, `bits` (u32, 8..=24), bias,
    /// scale and flag logit (f32 each), then `2^bits` weights (i8). `None` when the bytes are
    /// not such a file.
    pub fn from_bytes(bytes: &'static [u8]) -> Option<Model> {
        let rest = bytes.strip_prefix(MAGIC.as_slice())?;
        let (bits, rest) = take_u32(rest)?;
        if !(8..=24).contains(&bits) {
            return None;
        }
        let (bias, rest) = take_f32(rest)?;
        let (scale, rest) = take_f32(rest)?;
        let (flag_logit, rest) = take_f32(rest)?;
        if rest.len() != 1 << bits || ![bias, scale, flag_logit].iter().all(|f| f.is_finite()) {
            return None;
        }
        Some(Model { bits, weights: Cow::Borrowed(rest), scale, bias, flag_logit })
    }

    /// [`from_bytes`](Self::from_bytes)'s format.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&self.bits.to_le_bytes());
        for f in [self.bias, self.scale, self.flag_logit] {
            out.extend_from_slice(&f.to_le_bytes());
        }
        out.extend_from_slice(&self.weights);
        out
    }
}

/// Sums of a text's feature weights in blocks of half a window (of raw features), kept as they
/// come: a window is two neighbouring blocks, so no feature is kept and each is added once.
/// Within a block a feature counts once ([`Blocks`]): a phrase repeated a hundred times weighs
/// what it weighs once, instead of growing with the square root of the repeats.
#[derive(Default)]
struct Windows {
    /// Completed blocks: the sum of their distinct features' weights and how many there were.
    blocks: Vec<(i32, usize)>,
    /// The block being filled: its sum and distinct features.
    sum: i32,
    distinct: usize,
    block: Blocks,
}

impl Windows {
    fn add(&mut self, feature: u32, weight: impl FnOnce(u32) -> i32) {
        let (new, closed) = self.block.add(feature);
        if new {
            self.sum += weight(feature);
            self.distinct += 1;
        }
        if closed {
            self.blocks.push((self.sum, self.distinct));
            (self.sum, self.distinct) = (0, 0);
        }
    }

    fn best(&self, bias: f32, scale: f32) -> f32 {
        let logit = |sum: i32, n: usize| bias + scale * sum as f32 / (n.max(1) as f32).sqrt();
        match self.blocks.as_slice() {
            [] => logit(self.sum, self.distinct),
            [only] => logit(only.0 + self.sum, only.1 + self.distinct),
            blocks => {
                let full = blocks
                    .windows(2)
                    .map(|p| logit(p[0].0 + p[1].0, p[0].1 + p[1].1))
                    .fold(f32::NEG_INFINITY, f32::max);
                // The text's end: the last block with what follows it.
                let last = blocks.last().copied().unwrap_or_default();
                full.max(logit(last.0 + self.sum, last.1 + self.distinct))
            }
        }
    }
}

/// A text's raw features cut into blocks of half a window, each feature counted once per block.
#[derive(Default)]
struct Blocks {
    seen: Seen,
    raw: usize,
}

impl Blocks {
    /// Takes the next raw feature: whether it is new in its block, and whether it closed the
    /// block (the next one starts empty).
    fn add(&mut self, feature: u32) -> (bool, bool) {
        let new = self.seen.insert(feature);
        self.raw += 1;
        let closed = self.raw == WINDOW / 2;
        if closed {
            *self = Blocks::default();
        }
        (new, closed)
    }
}

/// Which features a block has had, in 4,096 bits: a feature whose bit is set counts as seen (a
/// different feature sharing its bit is, rarely, skipped too; the trainer skips the same ones).
struct Seen([u64; 64]);

impl Default for Seen {
    fn default() -> Seen {
        Seen([0; 64])
    }
}

impl Seen {
    /// Marks `feature`; whether it was new.
    fn insert(&mut self, feature: u32) -> bool {
        let bit = feature as usize & 4095;
        let (word, mask) = (bit / 64, 1u64 << (bit % 64));
        let Some(w) = self.0.get_mut(word) else { return false };
        let new = *w & mask == 0;
        *w |= mask;
        new
    }
}

/// The features [`Model::logit`] counts for `normalized`, as the trainer should see them: each
/// block's repeats left out ([`Blocks`]).
pub fn counted_features(normalized: &str, bits: u32, out: &mut Vec<u32>) {
    let mut block = Blocks::default();
    for_each_feature(normalized, bits, |f| {
        if block.add(f).0 {
            out.push(f);
        }
    });
}

fn take_u32(b: &[u8]) -> Option<(u32, &[u8])> {
    let (head, rest) = (b.get(..4)?, b.get(4..)?);
    Some((u32::from_le_bytes(head.try_into().ok()?), rest))
}

fn take_f32(b: &[u8]) -> Option<(f32, &[u8])> {
    let (v, rest) = take_u32(b)?;
    Some((f32::from_bits(v), rest))
}

pub fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// Whether `b` continues a word: ASCII letters and digits, `'`, and any byte of a non-ASCII
/// character (normalization leaves letters of other scripts there).
fn is_word_byte(b: u8) -> bool {
    WORD_BYTES[usize::from(b)]
}

const WORD_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'\'' || c >= 0x80;
        b += 1;
    }
    t
};

const FNV_OFFSET: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;

/// The bucket of a 32-bit hash: its top `bits` bits after one multiply (Fibonacci hashing).
fn bucket(h: u32, bits: u32) -> u32 {
    h.wrapping_mul(0x9e37_79b1) >> (32 - bits)
}

/// Appends the hashed features of `normalized` to `out` ([`for_each_feature`]).
pub fn features(normalized: &str, bits: u32, out: &mut Vec<u32>) {
    for_each_feature(normalized, bits, |f| out.push(f));
}

/// Calls `f` with each hashed feature of `normalized` (the firewall's normalized text), in text
/// order: the 4-byte n-grams of the text with a space on each side, and for each word its
/// unigram and its pair with the word before.
pub fn for_each_feature(normalized: &str, bits: u32, mut f: impl FnMut(u32)) {
    let bytes = normalized.as_bytes();
    let mut prev: Option<u32> = None;
    let mut i = 0;
    // 4-grams over " text ": the window slides one byte at a time.
    let mut gram: u32 = u32::from(b' ');
    let mut filled = 1;
    macro_rules! push_byte {
        ($b:expr) => {
            gram = (gram << 8) | u32::from($b);
            if filled < 4 {
                filled += 1;
            }
            if filled == 4 {
                f(bucket(gram ^ 0x5bd1_e995, bits));
            }
        };
    }
    while i < bytes.len() {
        let b = bytes[i];
        if b == b' ' {
            push_byte!(b);
            i += 1;
            continue;
        }
        let start = i;
        if is_word_byte(b) {
            while i < bytes.len() && is_word_byte(bytes[i]) {
                i += 1;
            }
        } else {
            i += 1;
        }
        let mut h = FNV_OFFSET;
        for &c in &bytes[start..i] {
            h = (h ^ u32::from(c)).wrapping_mul(FNV_PRIME);
            push_byte!(c);
        }
        f(bucket(h, bits));
        if let Some(p) = prev {
            f(bucket(p.rotate_left(7) ^ h ^ 0x2545_f491, bits));
        }
        prev = Some(h);
    }
    push_byte!(b' ');
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn features_are_in_range_and_in_text_order() {
        let mut f = Vec::new();
        features("ignore all previous instructions", 12, &mut f);
        assert!(f.iter().all(|&x| x < 1 << 12));
        // 4 words: 4 unigrams, 3 pairs, and one 4-gram per byte of " text " past the third.
        assert_eq!(f.len(), 4 + 3 + (32 + 2 - 3));
        let mut g = Vec::new();
        features("ignore all previous instructions and more", 12, &mut g);
        assert_eq!(&g[..f.len() - 1], &f[..f.len() - 1]);
    }

    #[test]
    fn the_best_window_counts_so_an_attack_at_the_end_is_not_diluted() {
        let bits = 16;
        let mut weights = vec![0f32; 1 << bits];
        let mut attack = Vec::new();
        features("zzqx qqzx xqzz zxqq zqxq", bits, &mut attack);
        for &a in &attack {
            weights[a as usize] = 1.0;
        }
        let head = Model::quantize(bits, &weights, -2.0, 0.0);
        let mut short = Vec::new();
        features("zzqx qqzx xqzz zxqq zqxq", bits, &mut short);
        let long_text = format!("{} zzqx qqzx xqzz zxqq zqxq", "plain words here ".repeat(200));
        let mut long = Vec::new();
        features(&long_text, bits, &mut long);
        assert!(long.len() > 2 * WINDOW);
        // Diluted over the whole text it would score far less than alone; the last window
        // (ending with the text) keeps most of it.
        let whole = -2.0 + long.iter().map(|&f| weights[f as usize]).sum::<f32>() / (long.len() as f32).sqrt();
        assert!(head.logit(&long) > whole + 0.1, "{} vs {whole}", head.logit(&long));
    }

    #[test]
    fn a_repeated_phrase_weighs_about_what_it_weighs_once() {
        let bits = 16;
        let mut weights = vec![0f32; 1 << bits];
        let mut phrase = Vec::new();
        features("many words", bits, &mut phrase);
        for &f in &phrase {
            weights[f as usize] = 1.0;
        }
        let m = Model::quantize(bits, &weights, -3.0, 0.0);
        let once = m.text_logit("many words");
        let repeated = m.text_logit(&"many words ".repeat(200));
        assert!(once > -3.0);
        // Without counting repeats once per block it would be about √200 times further from the bias.
        assert!(repeated + 3.0 <= 1.5 * (once + 3.0), "{repeated} vs {once}");
    }

    #[test]
    fn the_file_format_round_trips_and_rejects_bad_files() {
        let w: Vec<f32> = (0..256).map(|i| (i as f32 - 128.0) / 64.0).collect();
        let m = Model::quantize(8, &w, 0.5, 1.5);
        let bytes: &'static [u8] = m.to_bytes().leak();
        let back = Model::from_bytes(bytes).unwrap();
        assert_eq!(back.to_bytes(), bytes);
        assert_eq!(back.flag_logit(), 1.5);
        assert!(Model::from_bytes(&bytes[..bytes.len() - 1]).is_none());
        assert!(Model::from_bytes(b"not a model").is_none());
    }

    #[test]
    fn the_shipped_model_loads() {
        let m = Model::shipped().unwrap();
        assert!(m.bits() >= 12);
    }
}
