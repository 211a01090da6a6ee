//! RFC 3339 UTC timestamps (`2026-05-07T14:32:11Z`), the one text form
//! of a time in every document farmhand writes.

use std::time::SystemTime;

/// RFC 3339 UTC timestamps (`2026-05-07T14:32:11Z`).
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// serde `with` module for `SystemTime` fields stored as RFC 3339 text.
pub mod serde_rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::SystemTime;

    /// Writes the time as RFC 3339 text.
    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::rfc3339(*t))
    }
    /// Reads RFC 3339 text.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_rfc3339_weak(&s).map_err(serde::de::Error::custom)
    }
}

/// [`serde_rfc3339`] for an optional time: RFC 3339 text or `null`.
pub mod serde_opt_rfc3339 {
    use serde::Serializer;
    use std::time::SystemTime;

    /// Writes the time as RFC 3339 text, or `null`.
    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&super::rfc3339(*t)),
            None => s.serialize_none(),
        }
    }
}
