//! PII detection and reversible masking.
//!
//! [`MaskMap`] is the per-request map between placeholders (`<EMAIL_ADDRESS_1>`)
//! and the original values; it lives only in the request's context and is
//! bounded in bytes. (Detectors: being implemented.)

use std::borrow::Cow;
use std::collections::HashMap;

use crate::error::Error;

/// Placeholders look like `<TYPE_N>`: `<`, an upper-case type name
/// (`A-Z`, `0-9`, `_`), `_`, a decimal counter, `>`.
pub const PLACEHOLDER_OPEN: char = '<';
pub const PLACEHOLDER_CLOSE: char = '>';

/// The per-request placeholder map.
#[derive(Debug, Clone, Default)]
pub struct MaskMap {
    by_placeholder: HashMap<String, String>,
    by_value: HashMap<(String, String), String>,
    counters: HashMap<String, u32>,
    bytes: usize,
    max_bytes: usize,
    max_placeholder_len: usize,
}

impl MaskMap {
    /// A map that may hold at most `max_bytes` of placeholders and values.
    pub fn new(max_bytes: usize) -> MaskMap {
        MaskMap { max_bytes, ..MaskMap::default() }
    }

    /// The placeholder for `value` of type `entity` (upper-case, e.g.
    /// `EMAIL_ADDRESS`): the same value always gets the same placeholder.
    pub fn placeholder(&mut self, entity: &str, value: &str) -> Result<String, Error> {
        let key = (entity.to_string(), value.to_string());
        if let Some(p) = self.by_value.get(&key) {
            return Ok(p.clone());
        }
        let n = self.counters.get(entity).copied().unwrap_or(0) + 1;
        let placeholder = format!("{PLACEHOLDER_OPEN}{entity}_{n}{PLACEHOLDER_CLOSE}");
        let cost = 2 * (placeholder.len() + value.len()) + entity.len();
        if self.bytes + cost > self.max_bytes {
            return Err(Error::InspectionLimit { limit: self.max_bytes });
        }
        self.bytes += cost;
        self.counters.insert(entity.to_string(), n);
        self.max_placeholder_len = self.max_placeholder_len.max(placeholder.len());
        self.by_placeholder.insert(placeholder.clone(), value.to_string());
        self.by_value.insert(key, placeholder.clone());
        Ok(placeholder)
    }

    /// The original value behind a complete placeholder.
    pub fn original(&self, placeholder: &str) -> Option<&str> {
        self.by_placeholder.get(placeholder).map(String::as_str)
    }

    /// Whether some placeholder in the map starts with `s` (and `s` is not
    /// already a whole placeholder). Used to hold back a possible split.
    pub fn could_be_prefix(&self, s: &str) -> bool {
        !s.is_empty()
            && s.len() < self.max_placeholder_len
            && s.starts_with(PLACEHOLDER_OPEN)
            && self.by_placeholder.keys().any(|p| p.len() > s.len() && p.starts_with(s))
    }

    /// Length in bytes of the longest placeholder (0 when empty).
    pub fn max_placeholder_len(&self) -> usize {
        self.max_placeholder_len
    }

    pub fn is_empty(&self) -> bool {
        self.by_placeholder.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_placeholder.len()
    }

    /// Bytes accounted against the bound.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Every (placeholder, original) pair.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.by_placeholder.iter().map(|(p, v)| (p.as_str(), v.as_str()))
    }

    /// Replace every complete placeholder in `text` by its original.
    /// Unknown `<...>` sequences are left as they are.
    pub fn restore_str<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if self.is_empty() || !text.contains(PLACEHOLDER_OPEN) {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        let mut changed = false;
        while let Some(open) = rest.find(PLACEHOLDER_OPEN) {
            out.push_str(&rest[..open]);
            let tail = &rest[open..];
            let close = tail.find(PLACEHOLDER_CLOSE).filter(|&c| c < self.max_placeholder_len);
            match close.and_then(|c| self.original(&tail[..=c]).map(|v| (c, v))) {
                Some((c, value)) => {
                    out.push_str(value);
                    rest = &tail[c + 1..];
                    changed = true;
                }
                None => {
                    out.push(PLACEHOLDER_OPEN);
                    rest = &tail[PLACEHOLDER_OPEN.len_utf8()..];
                }
            }
        }
        out.push_str(rest);
        if changed {
            Cow::Owned(out)
        } else {
            Cow::Borrowed(text)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod mask_map_tests {
    use super::*;

    #[test]
    fn same_value_same_placeholder_and_restore() {
        let mut m = MaskMap::new(4096);
        let a = m.placeholder("EMAIL_ADDRESS", "a@x.io").unwrap();
        let b = m.placeholder("EMAIL_ADDRESS", "b@x.io").unwrap();
        assert_eq!(a, "<EMAIL_ADDRESS_1>");
        assert_eq!(b, "<EMAIL_ADDRESS_2>");
        assert_eq!(m.placeholder("EMAIL_ADDRESS", "a@x.io").unwrap(), a);
        assert_eq!(m.placeholder("PHONE_NUMBER", "555").unwrap(), "<PHONE_NUMBER_1>");
        assert_eq!(m.restore_str("to <EMAIL_ADDRESS_2>, <X_1> and <EMAIL_ADDRESS_1><"), "to b@x.io, <X_1> and a@x.io<");
        assert!(m.could_be_prefix("<EMAIL_ADD"));
        assert!(!m.could_be_prefix("<EMAIL_ADDRESS_1>"));
        assert!(!m.could_be_prefix("<FOO"));
        assert!(!m.could_be_prefix("EMAIL"));
    }

    #[test]
    fn bounded() {
        let mut m = MaskMap::new(40);
        assert!(m.placeholder("SECRET", "sk-1").is_ok());
        assert_eq!(m.placeholder("SECRET", "sk-2-long-long-long"), Err(Error::InspectionLimit { limit: 40 }));
        assert!(m.bytes() <= 40);
    }
}
