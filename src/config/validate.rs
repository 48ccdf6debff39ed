//! Semantic checks that types alone cannot express, and secret files resolved.

use super::*;

/// Fails naming every `(key, present)` that is absent: "`what` (missing: a, b)".
pub(super) fn require_all(key: &str, what: &str, keys: &[(&str, bool)]) -> Result<(), Invalid> {
    let missing: Vec<&str> = keys.iter().filter(|(_, ok)| !ok).map(|(n, _)| *n).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Invalid::new(
            key.to_string(),
            format!("{what} (missing: {})", missing.join(", ")),
        ))
    }
}

pub(super) fn require_url(value: &str, key: &str) -> Result<(), Invalid> {
    check_url(value, key, false)
}

/// Like [`require_url`] for a URL that is itself a secret (a Bitrix24 webhook URL): an error
/// never echoes it, since config errors end up in terminals, tickets and journald.
pub(super) fn require_secret_url(value: &str, key: &str) -> Result<(), Invalid> {
    check_url(value, key, true)
}

/// `…/rest/USER_ID/SECRET/…` with a numeric user id and a secret: the shape every request and
/// `http::redact_url` rely on (a URL of another shape would reach logs unredacted).
pub(super) fn webhook_shape_ok(value: &str) -> bool {
    let Ok(u) = url::Url::parse(value) else {
        return false;
    };
    let segments: Vec<&str> = u.path_segments().map(|s| s.collect()).unwrap_or_default();
    segments.windows(3).any(|w| {
        w[0] == "rest"
            && !w[1].is_empty()
            && w[1].chars().all(|c| c.is_ascii_digit())
            && !w[2].is_empty()
    })
}

pub(super) fn check_url(value: &str, key: &str, secret: bool) -> Result<(), Invalid> {
    let shown = || {
        // `user:password@` would be a secret in any URL.
        if secret || value.contains('@') {
            "; the value is not shown, as it holds a secret".to_string()
        } else {
            format!(": `{value}`")
        }
    };
    match url::Url::parse(value) {
        Ok(u) if u.scheme() == "https" || u.scheme() == "http" => Ok(()),
        Ok(u) => Err(Invalid::new(
            key,
            format!("must be an http(s) URL, got scheme `{}`", u.scheme()),
        )),
        Err(e) => Err(Invalid::new(key, format!("not a URL ({e}){}", shown()))),
    }
}

/// The server's connection cap and its /metrics token (inline or from its file).
pub(super) fn validate_server(s: &mut ServerConfig) -> Result<(), Invalid> {
    secret(
        &mut s.metrics_token,
        &s.metrics_token_file,
        "server.metrics_token",
    )?;
    if s.metrics_token
        .as_ref()
        .is_some_and(|t| t.expose().trim().is_empty())
    {
        return Err(Invalid::new(
            "server.metrics_token",
            "is empty: set a token (e.g. `openssl rand -hex 32`) or remove the key",
        ));
    }
    if !(1..=ServerConfig::MAX_CONNECTIONS).contains(&s.max_connections) {
        return Err(Invalid::new(
            "server.max_connections",
            format!(
                "must be 1 to {}, got {}",
                ServerConfig::MAX_CONNECTIONS,
                s.max_connections
            ),
        ));
    }
    Ok(())
}

/// The URLs of a tenant that carry a secret when dozor calls them: (key, URL, what travels).
pub(super) fn secret_bearing_urls(t: &TenantConfig) -> Vec<(&'static str, &str, &'static str)> {
    let mut urls = Vec::new();
    match &t.crm {
        CrmConfig::Bitrix24(b) => {
            if let Some(w) = &b.webhook_url {
                urls.push(("crm.webhook_url", w.expose(), "the webhook secret"));
            }
            if let Some(p) = &b.portal_url {
                urls.push(("crm.portal_url", p.as_str(), "the OAuth access token"));
            }
            urls.push((
                "crm.oauth_url",
                b.oauth_url.as_str(),
                "the client secret and refresh token",
            ));
        }
        CrmConfig::Amocrm(a) => {
            urls.push(("crm.base_url", a.base_url.as_str(), "the access token"))
        }
    }
    match &t.telephony {
        Some(TelephonyConfig::Comagic(m)) => urls.push((
            "telephony.base_url",
            m.base_url.as_str(),
            "the access token",
        )),
        Some(TelephonyConfig::Calltouch(m)) => urls.push((
            "telephony.base_url",
            m.base_url.as_str(),
            "the API key (clientApiId)",
        )),
        None => {}
    }
    if let Some(tg) = &t.telegram {
        urls.push(("telegram.api_url", tg.api_url.as_str(), "the bot token"));
    }
    urls
}

/// The host of a plain `http://` URL that leaves this machine; `None` for https, loopback and
/// anything unparsable (already refused by `validate`).
pub(super) fn plain_http_host(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    if u.scheme() != "http" {
        return None;
    }
    let loopback = match u.host()? {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost") || d.ends_with(".localhost"),
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    };
    (!loopback).then(|| u.host_str().unwrap_or_default().to_string())
}

/// Refuses a secret-bearing URL that is plain `http://` to another host, where anyone on the
/// path can read the secret, unless the tenant says `allow_insecure_http = true`; then it is
/// accepted with a warning for the log and `dozor check`.
pub(super) fn insecure_http_check(c: &Config) -> Result<Vec<String>, Invalid> {
    let mut warnings = Vec::new();
    for (i, t) in c.tenants.iter().enumerate() {
        for (key, url, what) in secret_bearing_urls(t) {
            let Some(host) = plain_http_host(url) else {
                continue;
            };
            let key = format!("tenants[{i}].{key}");
            if !t.allow_insecure_http {
                return Err(Invalid::new(
                    key,
                    format!(
                        "plain http:// to {host} would send {what} unencrypted: use https://, or, only if the network to {host} is trusted (a VPN, the same LAN), set `allow_insecure_http = true` in this tenant's [[tenants]] block"
                    ),
                ));
            }
            warnings.push(format!(
                "{key}: plain http:// to {host} sends {what} unencrypted (allowed by tenants[{i}].allow_insecure_http = true); switch to https:// when you can"
            ));
        }
    }
    Ok(warnings)
}

/// Semantic checks that types alone cannot express, secret files resolved, and the values other
/// modules need in parsed form (calendars, time zones) stored in the config: nothing re-parses
/// them later.
pub(super) fn validate(c: &mut Config) -> Result<(), Invalid> {
    validate_settings(c)?;
    let mut seen = std::collections::BTreeSet::new();
    for (i, t) in c.tenants.iter_mut().enumerate() {
        validate_tenant(i, t, &mut seen)?;
    }
    Ok(())
}

/// The process-wide sections: database, server, ledger, cluster and sync.
fn validate_settings(c: &mut Config) -> Result<(), Invalid> {
    secret(&mut c.database.url, &c.database.url_file, "database.url")?;
    if let Some(u) = &c.database.url {
        let u = u.expose();
        if !(u.starts_with("sqlite:")
            || u.starts_with("postgres://")
            || u.starts_with("postgresql://"))
        {
            return Err(Invalid::new(
                "database.url",
                "must start with sqlite:, postgres:// or postgresql://",
            ));
        }
    }
    if c.database.max_connections == 0 {
        return Err(Invalid::new(
            "database.max_connections",
            "must be at least 1",
        ));
    }
    validate_server(&mut c.server)?;
    if c.server.listen.parse::<std::net::SocketAddr>().is_err() {
        return Err(Invalid::new(
            "server.listen",
            format!(
                "must be IP:PORT (e.g. 127.0.0.1:9187), got `{}`",
                c.server.listen
            ),
        ));
    }
    if !(1..=100).contains(&c.ledger.max_attempts) {
        return Err(Invalid::new(
            "ledger.max_attempts",
            format!("must be 1 to 100, got {}", c.ledger.max_attempts),
        ));
    }
    if !(1..=86_400).contains(&c.ledger.retry_first_secs)
        || !(c.ledger.retry_first_secs..=7 * 86_400).contains(&c.ledger.retry_max_secs)
    {
        return Err(Invalid::new(
            "ledger.retry_first_secs",
            "retry_first_secs must be 1 s to 1 day and retry_max_secs from retry_first_secs to 7 days",
        ));
    }
    if c.cluster.lease_ttl_secs < 3 {
        return Err(Invalid::new(
            "cluster.lease_ttl_secs",
            "must be at least 3 seconds",
        ));
    }
    if let Some(id) = &c.cluster.instance_id
        && id.trim().is_empty()
    {
        return Err(Invalid::new(
            "cluster.instance_id",
            "must not be empty (leave it out for HOSTNAME:PID)",
        ));
    }
    if c.sync.interval_secs < 10 {
        return Err(Invalid::new(
            "sync.interval_secs",
            "must be at least 10 seconds",
        ));
    }
    Ok(())
}

/// One tenant: its id, zone, calendar, routing, report schedules and connectors.
fn validate_tenant(
    i: usize,
    t: &mut TenantConfig,
    seen: &mut std::collections::BTreeSet<String>,
) -> Result<(), Invalid> {
    let k = |s: &str| format!("tenants[{i}].{s}");
    if !valid_tenant_id(&t.id) {
        let who = match t.name.as_str() {
            "" => format!("tenant #{}", i + 1),
            name => format!("tenant #{} (name \"{name}\")", i + 1),
        };
        return Err(Invalid::new(
            k("id"),
            format!(
                "{who}: `{}` is not a valid id: use lowercase letters, digits, `-` and `_`, e.g. `id = \"{}\"`",
                t.id,
                id_from_name(&t.id)
                    .or_else(|| id_from_name(&t.name))
                    .unwrap_or_else(|| "sales".into())
            ),
        ));
    }
    if !seen.insert(t.id.clone()) {
        return Err(Invalid::new(
            k("id"),
            format!("`{}` is used by two tenants", t.id),
        ));
    }
    if t.name.is_empty() {
        t.name = t.id.clone();
    }
    if t.timezone.parse::<chrono_tz::Tz>().is_err() {
        return Err(Invalid::new(
            k("timezone"),
            format!(
                "`{}` is not an IANA time zone (e.g. Europe/Moscow)",
                t.timezone
            ),
        ));
    }
    t.business_calendar = calendar_of(t).map_err(|e| e.under(k))?;
    t.routing.normalize().map_err(|e| e.under(k))?;
    validate_crm(&mut t.crm, &k)?;
    validate_telephony(&mut t.telephony, &k)?;
    validate_webhooks(&mut t.webhooks, &k)?;
    validate_telegram(&mut t.telegram, &k)?;
    Ok(())
}

/// The CRM connector: its secrets resolved, and either a webhook or a complete OAuth set.
fn validate_crm(crm: &mut CrmConfig, k: &dyn Fn(&str) -> String) -> Result<(), Invalid> {
    match crm {
        CrmConfig::Bitrix24(b) => validate_bitrix24(b, k),
        CrmConfig::Amocrm(a) => validate_amocrm(a, k),
    }
}

/// Bitrix24: an inbound webhook of the documented shape, or a complete OAuth application.
fn validate_bitrix24(b: &mut Bitrix24Config, k: &dyn Fn(&str) -> String) -> Result<(), Invalid> {
    secret(
        &mut b.webhook_url,
        &b.webhook_url_file,
        &k("crm.webhook_url"),
    )?;
    secret(
        &mut b.client_secret,
        &b.client_secret_file,
        &k("crm.client_secret"),
    )?;
    secret(
        &mut b.refresh_token,
        &b.refresh_token_file,
        &k("crm.refresh_token"),
    )?;
    if let Some(w) = &b.webhook_url {
        require_secret_url(w.expose(), &k("crm.webhook_url"))?;
        if !webhook_shape_ok(w.expose()) {
            return Err(Invalid::new(
                k("crm.webhook_url"),
                "must look like https://PORTAL/rest/USER_ID/SECRET/ with a numeric USER_ID, as Bitrix24 shows it for the inbound webhook (the value is not shown, as it holds a secret)",
            ));
        }
    } else {
        require_all(
            &k("crm"),
            "Bitrix24 needs `webhook_url`, or an OAuth application",
            &[
                ("portal_url", b.portal_url.is_some()),
                ("client_id", b.client_id.is_some()),
                ("client_secret", b.client_secret.is_some()),
                ("refresh_token", b.refresh_token.is_some()),
            ],
        )?;
        require_url(
            b.portal_url.as_deref().unwrap_or_default(),
            &k("crm.portal_url"),
        )?;
    }
    require_url(&b.oauth_url, &k("crm.oauth_url"))?;
    if b.operating_budget_secs.is_nan() || b.operating_budget_secs <= 0.0 {
        return Err(Invalid::new(
            k("crm.operating_budget_secs"),
            "must be positive",
        ));
    }
    Ok(())
}

/// amoCRM: a long-lived token or a complete OAuth set, and a rate within amoCRM's limit.
fn validate_amocrm(a: &mut AmocrmConfig, k: &dyn Fn(&str) -> String) -> Result<(), Invalid> {
    require_url(&a.base_url, &k("crm.base_url"))?;
    secret(
        &mut a.long_lived_token,
        &a.long_lived_token_file,
        &k("crm.long_lived_token"),
    )?;
    secret(
        &mut a.client_secret,
        &a.client_secret_file,
        &k("crm.client_secret"),
    )?;
    secret(
        &mut a.refresh_token,
        &a.refresh_token_file,
        &k("crm.refresh_token"),
    )?;
    if a.long_lived_token.is_none() {
        require_all(
            &k("crm"),
            "amoCRM needs `long_lived_token`, or OAuth",
            &[
                ("client_id", a.client_id.is_some()),
                ("client_secret", a.client_secret.is_some()),
                ("redirect_uri", a.redirect_uri.is_some()),
                ("refresh_token", a.refresh_token.is_some()),
            ],
        )?;
    }
    if a.rate_per_sec == 0 || a.rate_per_sec > 7 {
        return Err(Invalid::new(
            k("crm.rate_per_sec"),
            format!("must be 1..=7 (amoCRM's limit), got {}", a.rate_per_sec),
        ));
    }
    Ok(())
}

/// The telephony connector, if any: its URL, its secret and (CoMagic) its zone override.
fn validate_telephony(
    telephony: &mut Option<TelephonyConfig>,
    k: &dyn Fn(&str) -> String,
) -> Result<(), Invalid> {
    match telephony {
        Some(TelephonyConfig::Comagic(m)) => {
            require_url(&m.base_url, &k("telephony.base_url"))?;
            secret(
                &mut m.access_token,
                &m.access_token_file,
                &k("telephony.access_token"),
            )?;
            if m.access_token.is_none() {
                return Err(Invalid::new(
                    k("telephony.access_token"),
                    "CoMagic needs an access token",
                ));
            }
        }
        Some(TelephonyConfig::Calltouch(m)) => {
            require_url(&m.base_url, &k("telephony.base_url"))?;
            secret(
                &mut m.client_api_id,
                &m.client_api_id_file,
                &k("telephony.client_api_id"),
            )?;
            if m.client_api_id.is_none() {
                return Err(Invalid::new(
                    k("telephony.client_api_id"),
                    "Calltouch needs clientApiId",
                ));
            }
        }
        None => {}
    }
    Ok(())
}

/// The Telegram connector, if any: its URL and a bot token of the right shape.
fn validate_telegram(
    telegram: &mut Option<TelegramConfig>,
    k: &dyn Fn(&str) -> String,
) -> Result<(), Invalid> {
    if let Some(tg) = telegram {
        require_url(&tg.api_url, &k("telegram.api_url"))?;
        secret(
            &mut tg.bot_token,
            &tg.bot_token_file,
            &k("telegram.bot_token"),
        )?;
        match &tg.bot_token {
            None => {
                return Err(Invalid::new(
                    k("telegram.bot_token"),
                    "a bot token is required",
                ));
            }
            Some(tok) if !tok.expose().contains(':') => {
                return Err(Invalid::new(
                    k("telegram.bot_token"),
                    "does not look like a bot token (expected 123456:ABC...)",
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Resolves the webhook secrets and checks they can travel where they are used: a URL path
/// segment (amoCRM, CoMagic) or Telegram's `secret_token` header.
pub(super) fn validate_webhooks(
    w: &mut WebhooksConfig,
    k: &dyn Fn(&str) -> String,
) -> Result<(), Invalid> {
    secret(
        &mut w.bitrix24_token,
        &w.bitrix24_token_file,
        &k("webhooks.bitrix24_token"),
    )?;
    secret(
        &mut w.amocrm_secret,
        &w.amocrm_secret_file,
        &k("webhooks.amocrm_secret"),
    )?;
    secret(
        &mut w.comagic_secret,
        &w.comagic_secret_file,
        &k("webhooks.comagic_secret"),
    )?;
    secret(
        &mut w.telegram_secret,
        &w.telegram_secret_file,
        &k("webhooks.telegram_secret"),
    )?;
    let token_chars = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    if let Some(t) = &w.bitrix24_token
        && t.expose().trim().is_empty()
    {
        return Err(Invalid::new(
            k("webhooks.bitrix24_token"),
            "must not be empty",
        ));
    }
    for (name, value) in [
        ("amocrm_secret", &w.amocrm_secret),
        ("comagic_secret", &w.comagic_secret),
    ] {
        if let Some(v) = value
            && (v.expose().len() < 16 || v.expose().len() > 256 || !token_chars(v.expose()))
        {
            return Err(Invalid::new(
                k(&format!("webhooks.{name}")),
                "must be 16-256 characters of A-Z a-z 0-9 _ - (it is part of a URL); generate one with `openssl rand -hex 24`",
            ));
        }
    }
    if let Some(v) = &w.telegram_secret
        && (v.expose().is_empty() || v.expose().len() > 256 || !token_chars(v.expose()))
    {
        return Err(Invalid::new(
            k("webhooks.telegram_secret"),
            "must be 1-256 characters of A-Z a-z 0-9 _ - (Telegram's secret_token rules)",
        ));
    }
    Ok(())
}
