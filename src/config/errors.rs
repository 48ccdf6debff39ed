//! The configuration error: what is wrong and where (file, key, line, or the environment
//! variable it came from).

use std::path::PathBuf;

/// A configuration problem, with where it is and what would be accepted.
#[derive(Debug, thiserror::Error)]
#[error("config error in {}: {message}", self.place())]
pub struct ConfigError {
    pub file: Option<PathBuf>,
    pub key: Option<String>,
    pub line: Option<usize>,
    pub(crate) message: String,
    /// The `DOZOR__*` variable the bad value came from; the file's line would mislead then.
    pub env_var: Option<String>,
}

impl ConfigError {
    /// "FILE, key `K` (line N)", or "environment variable V (key `K`)" for an override.
    fn place(&self) -> String {
        match &self.env_var {
            Some(var) => format!(
                "environment variable {var}{}",
                self.key
                    .as_ref()
                    .map(|k| format!(" (key `{k}`)"))
                    .unwrap_or_default()
            ),
            None => format!(
                "{}{}",
                file_label(&self.file),
                key_label(&self.key, &self.line)
            ),
        }
    }
}

pub(super) fn file_label(file: &Option<PathBuf>) -> String {
    file.as_ref()
        .map(|f| f.display().to_string())
        .unwrap_or_else(|| "<built-in config>".into())
}

pub(super) fn key_label(key: &Option<String>, line: &Option<usize>) -> String {
    match (key, line) {
        (Some(k), Some(l)) => format!(", key `{k}` (line {l})"),
        (Some(k), None) => format!(", key `{k}`"),
        (None, Some(l)) => format!(", line {l}"),
        (None, None) => String::new(),
    }
}

/// A value the schema accepts but dozor cannot use: the dotted key it is under and what is wrong
/// with it. Validation returns it; loading turns it into a [`ConfigError`] with the file and line
/// (or the environment variable the value came from).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key `{key}`: {message}")]
pub struct Invalid {
    pub(crate) key: String,
    pub(crate) message: String,
}

impl Invalid {
    pub(crate) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Invalid {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The same problem with its key placed under a table: `calendar.work_hours` checked for
    /// one tenant becomes `tenants[0].calendar.work_hours`.
    pub(crate) fn under(self, place: impl Fn(&str) -> String) -> Self {
        Invalid {
            key: place(&self.key),
            message: self.message,
        }
    }
}
