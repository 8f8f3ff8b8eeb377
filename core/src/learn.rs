//! Sparse logistic regression for the filter's learned judgments (the firewall's classifier and
//! the moderation heads): fit by AdaGrad from zero weights with a seeded shuffle, so the same
//! data gives the same model byte for byte. Used by the trainers in `core/examples/`; nothing
//! here runs on the request path.

/// The JSON value of each non-blank line of a JSONL file (the trainers' input).
pub fn read_jsonl(path: &str) -> Result<Vec<serde_json::Value>, String> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    let mut out = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line.map_err(|e| format!("{path}: {e}"))?;
        if !line.trim().is_empty() {
            out.push(serde_json::from_str(&line).map_err(|e| format!("{path}: {e}"))?);
        }
    }
    Ok(out)
}

/// One labelled text: its features as (bucket, value) with the value `count / √n`, as the
/// scorers weigh them.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub x: Vec<(u32, f32)>,
    pub y: bool,
}

/// `features` (bucket ids, repeats allowed) as sorted (bucket, count / √n) pairs.
pub fn vectorize(features: &[u32]) -> Vec<(u32, f32)> {
    let mut sorted = features.to_vec();
    sorted.sort_unstable();
    let norm = if sorted.is_empty() { 0.0 } else { 1.0 / (sorted.len() as f32).sqrt() };
    let mut out: Vec<(u32, f32)> = Vec::new();
    for b in sorted {
        match out.last_mut() {
            Some((last, v)) if *last == b => *v += norm,
            _ => out.push((b, norm)),
        }
    }
    out
}

/// Fitting settings.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub epochs: usize,
    /// L2 penalty per update on the weights an example touches.
    pub l2: f32,
    pub learning_rate: f32,
    /// Positives count `negatives / positives` times (at most this), so a rare class is learned.
    pub max_positive_weight: f32,
    pub seed: u64,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings { epochs: 12, l2: 1e-5, learning_rate: 0.5, max_positive_weight: 20.0, seed: 0x7011_6a7e_5eed_0001 }
    }
}

/// xorshift64*, for a deterministic shuffle (seed it with a non-zero value).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

pub fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// Fits `buckets` weights and a bias to `data`.
pub fn fit(data: &[Example], buckets: usize, s: Settings) -> (Vec<f32>, f32) {
    let mut w = vec![0f32; buckets];
    let mut g2 = vec![1e-6f32; buckets];
    let (mut bias, mut bias_g2) = (0f32, 1e-6f32);
    let positives = data.iter().filter(|e| e.y).count() as f32;
    let negatives = data.len() as f32 - positives;
    let positive_weight = if positives > 0.0 { (negatives / positives).clamp(1.0, s.max_positive_weight) } else { 1.0 };
    let mut order: Vec<usize> = (0..data.len()).collect();
    let mut rng = Rng(s.seed | 1);
    for _ in 0..s.epochs {
        for i in (1..order.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        for &i in &order {
            let e = &data[i];
            let z = bias + e.x.iter().map(|&(b, v)| w.get(b as usize).copied().unwrap_or(0.0) * v).sum::<f32>();
            let (target, weight) = if e.y { (1.0, positive_weight) } else { (0.0, 1.0) };
            let g = (sigmoid(z) - target) * weight;
            for &(b, v) in &e.x {
                let (Some(wk), Some(gk)) = (w.get_mut(b as usize), g2.get_mut(b as usize)) else { continue };
                let grad = g * v + s.l2 * *wk;
                *gk += grad * grad;
                *wk -= s.learning_rate * grad / gk.sqrt();
            }
            bias_g2 += g * g;
            bias -= s.learning_rate * g / bias_g2.sqrt();
        }
    }
    (w, bias)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn vectorize_counts_repeats_and_scales_by_the_root_of_the_count() {
        let v = vectorize(&[7, 3, 7, 9]);
        assert_eq!(v, vec![(3, 0.5), (7, 1.0), (9, 0.5)]);
        assert!(vectorize(&[]).is_empty());
    }

    #[test]
    fn a_separable_set_is_learned_the_same_way_every_time() {
        // Bucket 1 marks positives, bucket 2 negatives; bucket 0 is in every example.
        let data: Vec<Example> = (0..60)
            .map(|i| {
                let y = i % 4 == 0;
                Example { x: vectorize(&[0, if y { 1 } else { 2 }]), y }
            })
            .collect();
        let (w, b) = fit(&data, 3, Settings::default());
        for e in &data {
            let z = b + e.x.iter().map(|&(k, v)| w[k as usize] * v).sum::<f32>();
            assert_eq!(z > 0.0, e.y);
        }
        assert_eq!(fit(&data, 3, Settings::default()), (w, b));
    }
}
