//! Train and run the moderation model (`core/src/moderation`).
//!
//! ```text
//! cargo run --release -p tollgate-core --example moderation -- train --data train.jsonl --out model.bin
//! cargo run --release -p tollgate-core --example moderation -- score [--model model.bin] < test.jsonl > scores.jsonl
//! ```
//!
//! `train` reads JSONL lines `{"text": "...", "labels": {"hate": 0|1, ...}}`
//! (a category left out is unknown for that text and does not train its
//! head) and writes the model file. Training is deterministic: the same
//! data gives the same bytes. Each head is a logistic regression over the
//! features of `tollgate_core::moderation::features`, scaled by `1/√n` as
//! the scorer does, fit by AdaGrad with positives weighted up to balance
//! the classes, then quantized to `i8`.
//!
//! `bench --repeat N < text` judges one text N times (for an instruction
//! count under callgrind).
//!
//! `score` reads JSONL lines with a `text` and writes each line back with
//! `scores` (the built-in model's, or `--model`'s: per category, the highest probability over the text's
//! segments, as the output guard judges it) and `ns` (time to score it).

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use serde_json::{json, Value};
use tollgate_core::moderation::features::{features, BUCKETS};
use tollgate_core::moderation::model::{self, Model};
use tollgate_core::moderation::{next_segment, segments, Category, CATEGORIES, MODEL, SEGMENT_BYTES};

struct Example {
    x: Vec<(u32, f32)>,
    y: [Option<bool>; CATEGORIES],
}

fn vectorize(text: &str) -> Vec<(u32, f32)> {
    let mut counts: BTreeMap<u32, f32> = BTreeMap::new();
    let n = features(text, |b| *counts.entry(b as u32).or_default() += 1.0);
    let norm = if n == 0 { 0.0 } else { 1.0 / (n as f32).sqrt() };
    counts.into_iter().map(|(b, c)| (b, c * norm)).collect()
}

fn read_examples(path: &str) -> Result<Vec<Example>, String> {
    let mut out = Vec::new();
    for v in tollgate_core::learn::read_jsonl(path)? {
        let text = v["text"].as_str().ok_or("a line without text")?;
        let mut y = [None; CATEGORIES];
        if let Some(labels) = v["labels"].as_object() {
            for (k, l) in labels {
                let c = Category::from_name(k).ok_or_else(|| format!("unknown category {k}"))?;
                y[c as usize] = l.as_i64().map(|l| l > 0);
            }
        }
        out.push(Example { x: vectorize(text), y });
    }
    Ok(out)
}

fn train(data: &[Example], epochs: usize, l2: f32) -> (Vec<f32>, [f32; CATEGORIES]) {
    let mut w = vec![0f32; BUCKETS * CATEGORIES];
    let mut g2 = vec![1e-6f32; BUCKETS * CATEGORIES];
    let mut bias = [0f32; CATEGORIES];
    let mut bias_g2 = [1e-6f32; CATEGORIES];
    let lr = 0.5f32;
    let mut pos_weight = [1f32; CATEGORIES];
    for (c, pw) in pos_weight.iter_mut().enumerate() {
        let pos = data.iter().filter(|e| e.y[c] == Some(true)).count() as f32;
        let neg = data.iter().filter(|e| e.y[c] == Some(false)).count() as f32;
        if pos > 0.0 {
            *pw = (neg / pos).clamp(1.0, 20.0);
        }
        eprintln!("{}: {pos} positive, {neg} negative", Category::ALL[c].name());
    }
    let mut order: Vec<usize> = (0..data.len()).collect();
    let mut rng = tollgate_core::learn::Rng(0x7011_6a7e_5eed_0001);
    for _ in 0..epochs {
        for i in (1..order.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        for &i in &order {
            let e = &data[i];
            for c in 0..CATEGORIES {
                let Some(label) = e.y[c] else { continue };
                let z = bias[c] + e.x.iter().map(|&(b, v)| w[b as usize * CATEGORIES + c] * v).sum::<f32>();
                let p = model::sigmoid(z);
                let (target, weight) = if label { (1.0, pos_weight[c]) } else { (0.0, 1.0) };
                let g = (p - target) * weight;
                for &(b, v) in &e.x {
                    let k = b as usize * CATEGORIES + c;
                    let grad = g * v + l2 * w[k];
                    g2[k] += grad * grad;
                    w[k] -= lr * grad / g2[k].sqrt();
                }
                bias_g2[c] += g * g;
                bias[c] -= lr * g / bias_g2[c].sqrt();
            }
        }
    }
    (w, bias)
}

fn score(bytes: &[u8], input: impl BufRead, mut out: impl Write) -> Result<(), String> {
    let m = Model::parse(bytes).ok_or("the model is unreadable")?;
    for line in input.lines() {
        let line = line.map_err(|e| e.to_string())?;
        if line.trim().is_empty() {
            continue;
        }
        let mut v: Value = serde_json::from_str(&line).map_err(|e| e.to_string())?;
        let text = v["text"].as_str().unwrap_or("").to_owned();
        let start = std::time::Instant::now();
        let mut best = [f32::NEG_INFINITY; CATEGORIES];
        for (a, b) in segments(&text, SEGMENT_BYTES) {
            // As the output guard: a segment without words is no evidence.
            let (z, words) = m.judge(&text[a..b]);
            if words == 0 {
                continue;
            }
            for c in 0..CATEGORIES {
                best[c] = best[c].max(z[c]);
            }
        }
        let ns = start.elapsed().as_nanos() as u64;
        let scores: serde_json::Map<String, Value> = Category::ALL
            .iter()
            .map(|c| {
                let z = best[*c as usize];
                let p = if z.is_finite() { model::sigmoid(z) } else { 0.0 };
                (c.name().to_owned(), json!((p * 1e4).round() / 1e4))
            })
            .collect();
        v["scores"] = Value::Object(scores);
        v["ns"] = json!(ns);
        writeln!(out, "{v}").map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("train") => (|| {
            let data = arg(&args, "--data").ok_or("train needs --data FILE")?;
            let out = arg(&args, "--out").ok_or("train needs --out FILE")?;
            let epochs = arg(&args, "--epochs").and_then(|e| e.parse().ok()).unwrap_or(12);
            let l2 = arg(&args, "--l2").and_then(|e| e.parse().ok()).unwrap_or(1e-5);
            let examples = read_examples(&data)?;
            let (w, bias) = train(&examples, epochs, l2);
            let bytes = model::write(&w, &bias);
            std::fs::write(&out, &bytes).map_err(|e| format!("{out}: {e}"))?;
            eprintln!("wrote {out}: {} bytes from {} texts", bytes.len(), examples.len());
            Ok(())
        })(),
        Some("score") => (|| {
            let file = match arg(&args, "--model") {
                Some(path) => Some(std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?),
                None => None,
            };
            let bytes = file.as_deref().unwrap_or(MODEL);
            score(bytes, std::io::stdin().lock(), std::io::BufWriter::new(std::io::stdout().lock()))
        })(),
        Some("bench") => (|| {
            // Judge stdin's text `--repeat` times as the output guard does
            // (segments of SEGMENT_BYTES): run under callgrind with two
            // repeat counts, the difference is the cost of the extra runs.
            let repeat: usize = arg(&args, "--repeat").and_then(|r| r.parse().ok()).unwrap_or(1);
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|e| e.to_string())?;
            let m = Model::parse(MODEL).ok_or("the built-in model is unreadable")?;
            let mut total = 0f32;
            for _ in 0..repeat {
                // The output guard's loop: no list of segments is built.
                let mut at = 0;
                while let Some(len) = text.get(at..).and_then(|rest| next_segment(rest, SEGMENT_BYTES, true)) {
                    total += m.judge(std::hint::black_box(&text[at..at + len])).0[0];
                    at += len;
                }
            }
            println!("{} bytes judged {repeat} times ({total})", text.len());
            Ok(())
        })(),
        _ => Err("usage: moderation train --data FILE --out FILE [--epochs N] [--l2 X] | moderation score [--model FILE] < JSONL".into()),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("moderation: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
