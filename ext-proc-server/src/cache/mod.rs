//! The response cache: an exact tier (hash of the normalized request) and a
//! semantic tier (sentence embeddings compared within one partition).
//!
//! - [`store`]: where entries live (embedded and persisted, or Redis);
//! - [`quality`]: hit and false-hit rates on a labelled paraphrase corpus.

pub mod quality;
pub mod store;
