//! Reading any part of the policy with errors that name their field by its
//! dotted path: the whole policy is read through here, and so are the
//! sections that other modules read on their own (the firewall's rules,
//! the filter's configuration).

use crate::error::Error;

/// Deserialize, naming the field of any error by its dotted path.
pub fn deserialize_named<'de, T, D>(de: D) -> Result<T, Error>
where
    T: serde::Deserialize<'de>,
    D: serde::Deserializer<'de>,
    D::Error: std::fmt::Display,
{
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        Error::Policy { path: if path == "." { "(root)".into() } else { path }, message: e.inner().to_string() }
    })
}

/// Deserialize one JSON document (nothing may follow it), naming the field of any error.
pub fn from_json_named<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = deserialize_named(&mut de)?;
    de.end().map_err(|e| Error::Policy { path: "(root)".into(), message: e.to_string() })?;
    Ok(value)
}
