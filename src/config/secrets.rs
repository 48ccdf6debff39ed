//! Secrets: a type that never prints, the keys that hold them, and reading them from files.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Invalid;

/// A secret value: never printed by `Debug` or `Display`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself, for the one place that has to send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Keys whose inline value is a secret (their `*_file` twins are not).
pub(super) const SECRET_KEYS: [&str; 13] = [
    "url",
    "webhook_url",
    "client_secret",
    "refresh_token",
    "long_lived_token",
    "access_token",
    "client_api_id",
    "bot_token",
    "bitrix24_token",
    "amocrm_secret",
    "comagic_secret",
    "telegram_secret",
    "metrics_token",
];

/// A warning when the config file at `path` holds secrets inline and its group or other users
/// may read it; `None` when it is fine. The daemon logs it at start and `dozor check` prints it.
pub fn permission_warning(path: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode();
        if mode & 0o044 == 0 {
            return None;
        }
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let inline: Vec<&str> = SECRET_KEYS
            .iter()
            .copied()
            .filter(|k| {
                text.lines().any(|l| {
                    let t = l.trim_start();
                    t.strip_prefix(k).is_some_and(|rest| {
                        let v = rest.trim_start();
                        // `url` is a secret only as a database URL with a password.
                        v.starts_with('=') && (*k != "url" || v.contains("://") && v.contains('@'))
                    })
                })
            })
            .collect();
        if inline.is_empty() {
            return None;
        }
        Some(format!(
            "config file {} holds secrets inline ({}) and is readable by {} (mode {:o}): run `chmod 600 {}` or move the secrets to *_file keys",
            path.display(),
            inline.join(", "),
            if mode & 0o004 != 0 {
                "all users"
            } else {
                "its group"
            },
            mode & 0o777,
            path.display()
        ))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Reads a secret given inline or in a file; exactly one of the two may be set.
pub(super) fn secret(
    inline: &mut Option<Secret>,
    file: &Option<PathBuf>,
    key: &str,
) -> Result<(), Invalid> {
    match (inline.as_ref(), file) {
        (Some(_), Some(_)) => Err(Invalid::new(
            key.to_string(),
            format!("set either `{key}` or `{key}_file`, not both"),
        )),
        (None, Some(f)) => {
            let s = std::fs::read_to_string(f).map_err(|e| {
                Invalid::new(
                    format!("{key}_file"),
                    format!("cannot read secret file {}: {e}", f.display()),
                )
            })?;
            let s = s.trim().to_string();
            if s.is_empty() {
                return Err(Invalid::new(
                    format!("{key}_file"),
                    format!("secret file {} is empty", f.display()),
                ));
            }
            *inline = Some(Secret(s));
            Ok(())
        }
        _ => Ok(()),
    }
}
