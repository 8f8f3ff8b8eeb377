//! Train the prompt firewall's classifier (`core/src/firewall/model.rs`).
//!
//! ```text
//! cargo run --release -p tollgate-core --example firewall -- train \
//!     --data train.jsonl --val val.jsonl --out core/models/firewall.bin [--bits 17] [--fpr 0.01]
//! ```
//!
//! `--data` and `--val` hold JSONL lines `{"text": "...", "label": 0|1}` (1: an attack). The
//! model is fit on `--data` only ([`tollgate_core::learn::fit`]: deterministic, the same data
//! gives the same bytes). Its flag point is then set on `--val`: the logit that the benign
//! validation texts reach at most a fraction `--fpr` of the time, so on data like the training
//! corpora's the classifier alone flags about that share of benign texts. The weights are
//! quantized to 8 bits, and the flag point is set on the quantized model.
//!
//! `cost --text FILE --times N [--without-classifier | --classifier-only]` scans a text N times
//! (or only judges its normalized text with the classifier), for counting instructions under
//! callgrind (docs/firewall-quality.md, "Cost").

use tollgate_core::firewall::model::{counted_features, features, Model};
use tollgate_core::firewall::normalize;
use tollgate_core::learn::{self, Example};

/// The file's texts, normalized as the firewall scans them, and whether each is an attack.
fn read(path: &str) -> Result<Vec<(String, bool)>, String> {
    learn::read_jsonl(path)?
        .iter()
        .map(|v| {
            let text = v["text"].as_str().ok_or_else(|| format!("{path}: a line without text"))?;
            Ok((normalize(text), v["label"].as_i64() == Some(1)))
        })
        .collect()
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn train(args: &[String]) -> Result<(), String> {
    let data = arg(args, "--data").ok_or("train needs --data FILE")?;
    let val = arg(args, "--val").ok_or("train needs --val FILE")?;
    let out = arg(args, "--out").ok_or("train needs --out FILE")?;
    let bits: u32 = arg(args, "--bits").and_then(|b| b.parse().ok()).unwrap_or(17);
    if !(8..=24).contains(&bits) {
        return Err(format!("--bits {bits}: the model file holds 8 to 24"));
    }
    let fpr: f64 = arg(args, "--fpr").and_then(|f| f.parse().ok()).unwrap_or(0.01);
    let settings = learn::Settings {
        epochs: arg(args, "--epochs").and_then(|e| e.parse().ok()).unwrap_or(12),
        l2: arg(args, "--l2").and_then(|e| e.parse().ok()).unwrap_or(1e-5),
        ..learn::Settings::default()
    };
    let mut scratch = Vec::new();
    let mut vectorize = |text: &str| {
        scratch.clear();
        counted_features(text, bits, &mut scratch);
        learn::vectorize(&scratch)
    };
    let examples: Vec<Example> = read(&data)?.iter().map(|(text, y)| Example { x: vectorize(text), y: *y }).collect();
    let positives = examples.iter().filter(|e| e.y).count();
    eprintln!("training on {} texts ({positives} attacks)", examples.len());
    let (weights, bias) = learn::fit(&examples, 1 << bits, settings);
    let model = Model::quantize(bits, &weights, bias, 0.0);
    // The flag point: the (1 - fpr) quantile of the benign validation texts' logits.
    let mut benign: Vec<f32> = Vec::new();
    let mut attacks: Vec<f32> = Vec::new();
    for (text, y) in read(&val)? {
        scratch.clear();
        features(&text, bits, &mut scratch);
        let z = model.logit(&scratch);
        if y {
            attacks.push(z);
        } else {
            benign.push(z);
        }
    }
    benign.sort_by(f32::total_cmp);
    let Some(&flag) = benign.get(((1.0 - fpr) * benign.len() as f64).floor() as usize).or(benign.last()) else {
        return Err("the validation set has no benign text".into());
    };
    let caught = attacks.iter().filter(|&&z| z > flag).count();
    eprintln!(
        "flag logit {flag:.3}: validation attacks flagged {caught}/{} ({:.1} %), benign {:.1} %",
        attacks.len(),
        100.0 * caught as f64 / attacks.len().max(1) as f64,
        100.0 * benign.iter().filter(|&&z| z > flag).count() as f64 / benign.len() as f64
    );
    let bytes = model.with_flag_logit(flag).to_bytes();
    std::fs::write(&out, &bytes).map_err(|e| format!("{out}: {e}"))?;
    eprintln!("wrote {out}: {} bytes", bytes.len());
    Ok(())
}

/// `cost --text FILE --times N [--without-classifier | --classifier-only]`: scans the file's
/// text N times with the default firewall, or judges its normalized text N times with the
/// classifier alone (for instruction counts under callgrind: the difference between two N over
/// the difference in N is the cost of one scan).
fn cost(args: &[String]) -> Result<(), String> {
    use tollgate_core::firewall::{Firewall, FirewallPolicy, CLASSIFIER};
    let path = arg(args, "--text").ok_or("cost needs --text FILE")?;
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let times: usize = arg(args, "--times").and_then(|t| t.parse().ok()).unwrap_or(100);
    if args.iter().any(|a| a == "--classifier-only") {
        let model = Model::shipped().ok_or("the shipped model does not load")?;
        let norm = normalize(&text);
        let mut flagged = 0;
        for _ in 0..times {
            flagged += usize::from(model.text_weight(std::hint::black_box(&norm)) > 0.5);
        }
        eprintln!("{times} judgments, {flagged} over 0.5");
        return Ok(());
    }
    let mut policy = FirewallPolicy::default();
    if args.iter().any(|a| a == "--without-classifier") {
        policy.disable.push(CLASSIFIER.into());
    }
    let fw = Firewall::new(&policy).map_err(|e| e.to_string())?;
    let mut flagged = 0;
    for _ in 0..times {
        flagged += usize::from(fw.scan(std::hint::black_box(&text)).score > 0.5);
    }
    eprintln!("{times} scans, {flagged} over 0.5");
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("train") => train(&args),
        Some("cost") => cost(&args),
        _ => {
            Err("usage: firewall train --data FILE --val FILE --out FILE [--bits N] [--fpr X] [--epochs N] [--l2 X]"
                .into())
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("firewall: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
