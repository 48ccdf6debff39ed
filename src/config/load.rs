//! Loading: the file, the `DOZOR__*` overrides, and errors that point at the key and line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::*;

/// Where `--config` is looked for when not given.
pub(crate) const DEFAULT_PATHS: [&str; 2] = ["./config/dozor.toml", "/etc/dozor/dozor.toml"];

/// A loaded, validated configuration and the file it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub file: Option<PathBuf>,
    /// Risks the config accepts but ops should see (logged at start, printed by `dozor check`).
    pub warnings: Vec<String>,
}

/// Finds the config file: the given path, else the first default path that exists.
pub(crate) fn locate(explicit: Option<&Path>) -> Result<PathBuf, ConfigError> {
    if let Some(p) = explicit {
        if !p.exists() {
            return Err(ConfigError {
                file: Some(p.to_path_buf()),
                key: None,
                line: None,
                env_var: None,
                message: "file not found (check --config)".into(),
            });
        }
        return Ok(p.to_path_buf());
    }
    DEFAULT_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| ConfigError {
            file: None,
            key: None,
            line: None,
            env_var: None,
            message: format!(
                "no config file: looked for {}; pass --config PATH or copy config/dozor.example.toml",
                DEFAULT_PATHS.join(" and ")
            ),
        })
}

/// Loads and validates the config file at `path` with `DOZOR__*` environment overrides.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: Some(path.to_path_buf()),
        key: None,
        line: None,
        env_var: None,
        message: format!("cannot read: {e}"),
    })?;
    let env = config::Environment::with_prefix("DOZOR")
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true);
    let mut loaded = parse(&text, Some(path), Some(env))?;
    loaded.file = Some(path.to_path_buf());
    Ok(loaded)
}

/// Parses config text (used by `load`, by `dozor demo` and by tests).
pub fn parse(
    text: &str,
    file: Option<&Path>,
    env: Option<config::Environment>,
) -> Result<Loaded, ConfigError> {
    // The keys the environment sets: an error about one of them names the variable, because
    // the file's line (if the file has the key at all) is not where the bad value is.
    let env_keys = match &env {
        Some(env) => env_override_keys(env).map_err(|message| ConfigError {
            file: file.map(Path::to_path_buf),
            key: None,
            line: None,
            message,
            env_var: None,
        })?,
        None => BTreeMap::new(),
    };
    let err = |key: Option<String>, message: String| match key
        .as_deref()
        .and_then(|k| env_keys.get(k))
    {
        Some(var) => ConfigError {
            file: file.map(Path::to_path_buf),
            env_var: Some(var.clone()),
            key,
            line: None,
            message: if message.starts_with("unknown field") {
                format!(
                    "{message}; fix the variable's name (DOZOR__SECTION__KEY, double underscores) or unset it"
                )
            } else {
                message
            },
        },
        None => ConfigError {
            file: file.map(Path::to_path_buf),
            line: key.as_deref().and_then(|k| locate_key(text, k)),
            key,
            message,
            env_var: None,
        },
    };
    // Syntax first, with toml's own line/column message.
    let table = match text.parse::<toml::Table>() {
        Ok(t) => t,
        Err(e) => {
            let line = e.span().map(|s| text[..s.start].lines().count().max(1));
            return Err(ConfigError {
                file: file.map(Path::to_path_buf),
                key: None,
                line,
                message: format!("invalid TOML: {}", e.message()),
                env_var: None,
            });
        }
    };
    let mut builder = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml));
    if let Some(env) = env {
        builder = builder.add_source(env);
    }
    let built = builder.build().map_err(|e| err(None, e.to_string()))?;
    let config: Config = serde_path_to_error::deserialize(built).map_err(|e| {
        let path = e.path().to_string();
        let path = (path != "." && !path.is_empty()).then_some(path);
        schema_error(text, &table, path, &e.into_inner().to_string(), &err)
    })?;
    let mut config = config;
    validate(&mut config).map_err(|e| err(Some(e.key), e.message))?;
    let warnings = insecure_http_check(&config).map_err(|e| err(Some(e.key), e.message))?;
    Ok(Loaded {
        config,
        file: None,
        warnings,
    })
}

/// The dotted keys the `DOZOR__*` environment sets, each with the variable's name as an operator
/// writes it (`sync.interval_secs` → `DOZOR__SYNC__INTERVAL_SECS`).
pub(super) fn env_override_keys(
    env: &config::Environment,
) -> Result<BTreeMap<String, String>, String> {
    use config::Source;
    let keys = env.collect().map_err(|_| {
        // The crate's message quotes the raw value, which may be a secret (a database URL).
        "an environment variable DOZOR__* is not valid UTF-8: fix or unset it (`env | grep ^DOZOR__`)"
            .to_string()
    })?;
    Ok(keys
        .into_keys()
        .map(|k| {
            let var = format!("DOZOR__{}", k.replace('.', "__").to_uppercase());
            (k, var)
        })
        .collect())
}

/// The error for a value the schema refuses at `path`: a required key left out, an unknown key
/// (named with its own path, so the line is the misspelt key's), or a value of the wrong kind.
fn schema_error(
    text: &str,
    table: &toml::Table,
    path: Option<String>,
    inner: &str,
    err: &dyn Fn(Option<String>, String) -> ConfigError,
) -> ConfigError {
    if let Some(field) = missing_field(inner) {
        return missing_key_error(text, table, path.as_deref(), field, err);
    }
    if let Some((field, message)) = invalid_field(inner) {
        return err(Some(field_key(path, field)), clean_serde_message(message));
    }
    let Some(field) = unknown_field(inner) else {
        return err(path, clean_serde_message(inner));
    };
    let key = field_key(path, field);
    let parent = key.strip_suffix(field).and_then(|p| p.strip_suffix('.'));
    let message = match parent.map(|p| p.rsplit('.').collect::<Vec<_>>()) {
        // `tenants[0].rules.missed_cal` or `tenants[0].rules.missed_call.sla_minuts`.
        Some(segs) if segs.first() == Some(&"rules") => {
            RulesConfig::unknown_key_message(None, field)
        }
        Some(segs) if segs.get(1) == Some(&"rules") => {
            RulesConfig::unknown_key_message(Some(segs[0]), field)
        }
        _ => clean_serde_message(inner),
    };
    err(Some(key), message)
}

/// The dotted key of `field` in the table at `path` (which may already end with it).
fn field_key(path: Option<String>, field: &str) -> String {
    match path {
        Some(p) if p == field || p.ends_with(&format!(".{field}")) => p,
        Some(p) => format!("{p}.{field}"),
        None => field.to_string(),
    }
}

/// The field and message of an [`Invalid`] a field's own deserializer raised (`key `x`: …`).
fn invalid_field(msg: &str) -> Option<(&str, &str)> {
    msg.strip_prefix("key `")?.split_once("`: ")
}

/// The key of an "unknown field `x`, expected …" error.
fn unknown_field(msg: &str) -> Option<&str> {
    msg.strip_prefix("unknown field `")?.split('`').next()
}

/// The field of a "missing configuration field" error from the config crate, which writes the
/// whole path glued together (`"tenants[1]id"`, `"tenants[0].crm.kind"`): its last segment.
pub(super) fn missing_field(msg: &str) -> Option<&str> {
    let rest = msg
        .strip_prefix("missing configuration field \"")
        .or_else(|| msg.strip_prefix("missing field `"))?;
    let path = rest.split(['"', '`']).next()?;
    path.rsplit(['.', ']']).next().filter(|f| !f.is_empty())
}

/// The error for a required key left out: which table lacks it, where that table starts, and
/// what to write. A tenant is named by its position and name, since it has no id to go by.
pub(super) fn missing_key_error(
    text: &str,
    table: &toml::Table,
    path: Option<&str>,
    field: &str,
    err: &dyn Fn(Option<String>, String) -> ConfigError,
) -> ConfigError {
    let key = match path {
        Some(p) => format!("{p}.{field}"),
        None => field.to_string(),
    };
    let tenant = path.and_then(tenant_index);
    let mut e = err(
        Some(key.clone()),
        format!("the required key `{field}` is missing"),
    );
    let Some(i) = tenant else {
        return e;
    };
    let block = tenant_label(table, i);
    e.message = match (path, field) {
        (Some(p), "id") if p == format!("tenants[{i}]") => format!(
            "{block} has no `id`: add a line `id = \"{}\"` under its [[tenants]] header (lowercase letters, digits, `-` and `_`; unique; part of every action-ledger key, so do not change it once dozor has run)",
            suggested_id(table, i)
        ),
        (Some(p), "crm") if p == format!("tenants[{i}]") => format!(
            "{block} has no [tenants.crm] section: add one with `kind = \"bitrix24\"` or `kind = \"amocrm\"` (see config/dozor.example.toml)"
        ),
        _ => format!("{block}: the required key `{field}` is missing"),
    };
    if e.env_var.is_none() && path == Some(format!("tenants[{i}]").as_str()) {
        e.line = tenant_header_line(text, i);
    }
    e
}

/// `3` from `tenants[3]` or `tenants[3].crm`.
pub(super) fn tenant_index(path: &str) -> Option<usize> {
    path.strip_prefix("tenants[")?
        .split(']')
        .next()?
        .parse()
        .ok()
}

/// "tenant #2 (name "Beta")": how a person finds the block in the file.
pub(super) fn tenant_label(table: &toml::Table, i: usize) -> String {
    let name = table
        .get("tenants")
        .and_then(|t| t.as_array())
        .and_then(|a| a.get(i))
        .and_then(|t| t.get("name"))
        .and_then(|n| n.as_str());
    match name {
        Some(n) => format!("tenant #{} (name \"{n}\")", i + 1),
        None => format!("tenant #{} (it has no name either)", i + 1),
    }
}

/// An id for the example line: the tenant's name when it makes a valid id, else a placeholder.
pub(super) fn suggested_id(table: &toml::Table, i: usize) -> String {
    let name = table
        .get("tenants")
        .and_then(|t| t.as_array())
        .and_then(|a| a.get(i))
        .and_then(|t| t.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or_default();
    id_from_name(name).unwrap_or_else(|| format!("tenant{}", i + 1))
}

/// "Beta Sales" → "beta-sales"; `None` when the name makes no valid id (Cyrillic, punctuation).
pub(super) fn id_from_name(name: &str) -> Option<String> {
    let slug: String = name
        .trim()
        .to_lowercase()
        .chars()
        .map(|c| if c.is_whitespace() { '-' } else { c })
        .collect();
    valid_tenant_id(&slug).then_some(slug)
}

pub(super) fn valid_tenant_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// The 1-based line of the `[[tenants]]` header of tenant `i` (0-based).
pub(super) fn tenant_header_line(text: &str, i: usize) -> Option<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.trim() == "[[tenants]]")
        .nth(i)
        .map(|(n, _)| n + 1)
}

/// serde's messages end with "for key `x`" or "in ..." from the config crate; the key is
/// reported separately, so keep only the core.
pub(super) fn clean_serde_message(msg: &str) -> String {
    let msg = msg.split(" for key `").next().unwrap_or(msg);
    msg.split(" in TOML").next().unwrap_or(msg).to_string()
}

/// The line where the last segment of a dotted key is assigned (best effort, for messages).
/// A key under `tenants[i]` is looked for inside that tenant's block only, so an error in the
/// second tenant does not point at the first one's line.
pub(super) fn locate_key(text: &str, key: &str) -> Option<usize> {
    // A quoted last segment (`routing.sources."yandex.direct"`) may hold dots itself.
    let quoted = key
        .strip_suffix('"')
        .and_then(|k| k.rfind('"').map(|i| &key[i..]));
    let last = match quoted {
        Some(q) => q,
        None => key.rsplit('.').next()?.split('[').next()?,
    };
    let (from, to) = match tenant_index(key) {
        Some(i) => (
            tenant_header_line(text, i)?,
            tenant_header_line(text, i + 1).unwrap_or(usize::MAX),
        ),
        None => (0, usize::MAX),
    };
    if let Some(line) = key_in_parent_table(text, key, last, from, to) {
        return Some(line);
    }
    // A table is found by its header, written without the list indexes: `[tenants.crm]`.
    let header = format!("[{}]", strip_indexes(key));
    text.lines()
        .enumerate()
        .skip(from)
        .take_while(|(n, _)| n + 1 < to)
        .find(|(_, l)| {
            let t = l.trim_start();
            t.strip_prefix(last)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
                || t.trim_end() == header
        })
        .map(|(n, _)| n + 1)
}

/// The line of `last = …` inside the table that holds `key` (`[tenants.rules.dormant]` for
/// `tenants[0].rules.dormant.top_days`), so that a key several tables share (`top_days`) is
/// found in the right one. `None` when the table has no header of its own in the file.
fn key_in_parent_table(text: &str, key: &str, last: &str, from: usize, to: usize) -> Option<usize> {
    let parent = key.strip_suffix(last)?.strip_suffix('.')?;
    let header = format!("[{}]", strip_indexes(parent));
    let lines: Vec<&str> = text.lines().collect();
    let start = (from..to.min(lines.len())).find(|&n| lines[n].trim() == header)?;
    lines[start + 1..to.min(lines.len())]
        .iter()
        .take_while(|l| !l.trim_start().starts_with('['))
        .position(|l| {
            l.trim_start()
                .strip_prefix(last)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|n| start + 1 + n + 1)
}

/// `tenants[0].crm` → `tenants.crm`.
pub(super) fn strip_indexes(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut depth = 0usize;
    for c in key.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}
