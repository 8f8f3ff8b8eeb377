//! The moderation model: one logistic head per category over the hashed
//! features of [`super::features`], weights quantized to `i8`.
//!
//! File format (little-endian), [`MAGIC`] first:
//!
//! | bytes | what |
//! |---|---|
//! | 8 | `TGMOD1\n\0` |
//! | 1 | bucket bits (must equal [`BUCKET_BITS`]) |
//! | 1 | categories (must equal [`CATEGORIES`]) |
//! | 2 | zero |
//! | 8 × categories | per category: `f32` scale, `f32` bias |
//! | buckets × categories | `i8` weights, bucket-major (a bucket's weights for every category are adjacent) |
//!
//! A category's logit for a text with `n` features is
//! `bias + scale · Σ w[bucket] / √n`: a sum of small integers, one multiply
//! and one square root per text.

use super::features::{features, BUCKETS, BUCKET_BITS};
use super::{Category, CATEGORIES};

/// The file's first bytes.
pub const MAGIC: &[u8; 8] = b"TGMOD1\n\0";
const HEADER: usize = 12 + 8 * CATEGORIES;

/// A parsed model, borrowing its weights.
#[derive(Debug, Clone, Copy)]
pub struct Model<'a> {
    scale: [f32; CATEGORIES],
    bias: [f32; CATEGORIES],
    weights: &'a [u8],
}

fn f32_at(bytes: &[u8], at: usize) -> Option<f32> {
    let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
    Some(f32::from_le_bytes(b))
}

impl<'a> Model<'a> {
    /// Parse a model file; `None` when it is not one this code can score.
    pub fn parse(bytes: &'a [u8]) -> Option<Model<'a>> {
        if bytes.get(..8)? != MAGIC || *bytes.get(8)? != BUCKET_BITS as u8 || *bytes.get(9)? != CATEGORIES as u8 {
            return None;
        }
        let mut scale = [0f32; CATEGORIES];
        let mut bias = [0f32; CATEGORIES];
        for c in 0..CATEGORIES {
            scale[c] = f32_at(bytes, 12 + 8 * c)?;
            bias[c] = f32_at(bytes, 16 + 8 * c)?;
            if !scale[c].is_finite() || !bias[c].is_finite() {
                return None;
            }
        }
        let weights = bytes.get(HEADER..)?;
        (weights.len() == BUCKETS * CATEGORIES).then_some(Model { scale, bias, weights })
    }

    /// The logit of every category for `text` (order of [`Category::ALL`]).
    pub fn logits(&self, text: &str) -> [f32; CATEGORIES] {
        self.judge(text).0
    }

    /// [`Model::logits`] and the number of features (words) in `text`: a
    /// text without any is no evidence, whatever the biases say.
    pub fn judge(&self, text: &str) -> ([f32; CATEGORIES], usize) {
        let mut sums = [0i32; CATEGORIES];
        let n = features(text, |b| {
            if let Some(row) = self.weights.get(b * CATEGORIES..b * CATEGORIES + CATEGORIES) {
                for (s, &w) in sums.iter_mut().zip(row) {
                    *s += i32::from(w as i8);
                }
            }
        });
        let norm = if n == 0 { 0.0 } else { 1.0 / (n as f32).sqrt() };
        let mut out = self.bias;
        for c in 0..CATEGORIES {
            out[c] += self.scale[c] * sums[c] as f32 * norm;
        }
        (out, n)
    }

    /// The probability of `category` for `text`.
    pub fn probability(&self, text: &str, category: Category) -> f32 {
        sigmoid(self.logits(text)[category as usize])
    }
}

pub fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// A probability threshold as a logit, so scoring needs no `exp`.
pub fn logit(p: f32) -> f32 {
    let p = p.clamp(1e-6, 1.0 - 1e-6);
    (p / (1.0 - p)).ln()
}

/// Write a model file from float weights (`weights[bucket * CATEGORIES + c]`):
/// each category's weights are scaled so its largest magnitude is 127.
pub fn write(weights: &[f32], bias: &[f32; CATEGORIES]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + BUCKETS * CATEGORIES);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[BUCKET_BITS as u8, CATEGORIES as u8, 0, 0]);
    let mut scale = [0f32; CATEGORIES];
    for (c, s) in scale.iter_mut().enumerate() {
        let max = weights.iter().skip(c).step_by(CATEGORIES).fold(0f32, |m, w| m.max(w.abs()));
        *s = if max > 0.0 { max / 127.0 } else { 1.0 };
    }
    for c in 0..CATEGORIES {
        out.extend_from_slice(&scale[c].to_le_bytes());
        out.extend_from_slice(&bias[c].to_le_bytes());
    }
    for (i, w) in weights.iter().enumerate().take(BUCKETS * CATEGORIES) {
        let q = (w / scale[i % CATEGORIES]).round().clamp(-127.0, 127.0) as i8;
        out.push(q as u8);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_written_model_parses_and_scores_its_features() {
        let mut w = vec![0f32; BUCKETS * CATEGORIES];
        features("hateful word", |b| w[b * CATEGORIES] += 2.0);
        let bytes = write(&w, &[-1.0; CATEGORIES]);
        let m = Model::parse(&bytes).unwrap();
        let hot = m.logits("hateful word");
        let cold = m.logits("kind word");
        assert!(hot[0] > 0.0 && cold[0] < hot[0], "{hot:?} {cold:?}");
        assert_eq!(hot[1], -1.0);
        assert_eq!(m.logits("")[0], -1.0);
        assert!(Model::parse(&bytes[..bytes.len() - 1]).is_none());
        assert!(Model::parse(b"nonsense").is_none());
        assert!((logit(0.5)).abs() < 1e-6 && (sigmoid(logit(0.8)) - 0.8).abs() < 1e-5);
    }
}
