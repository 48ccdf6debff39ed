//! Bitrix24 authentication: an inbound webhook URL, or an OAuth application whose tokens are
//! refreshed single-flight and stored before use.

use std::path::PathBuf;

use chrono::Utc;
use serde_json::{Map, Value, json};

use crate::config::{Bitrix24Config, Secret};
use crate::crm::Result;
use crate::http::{self, Error, ErrorKind, redact_url};
use crate::store::{TokenSet, TokenStore};
use crate::telemetry::Observe as _;

use super::retry::retry_wait;
use super::{Bitrix24, SYSTEM, config_error, host_of, text};

pub(super) enum Auth {
    Webhook {
        /// `https://PORTAL/rest/USER/SECRET/`
        base: Secret,
    },
    OAuth(Box<OAuth>),
}

pub(super) struct OAuth {
    pub(super) portal: String,
    oauth_url: String,
    client_id: String,
    client_secret: Secret,
    initial_refresh: Option<Secret>,
    state: tokio::sync::Mutex<Option<TokenSet>>,
}

impl Auth {
    /// The configured authentication and the portal host it talks to: a webhook URL when one is
    /// set, else an OAuth application with its stored (or initial) refresh token.
    pub(super) async fn from_config(
        tenant: &str,
        cfg: &Bitrix24Config,
        tokens: &dyn TokenStore,
    ) -> Result<(Auth, String)> {
        let webhook = read_secret(&cfg.webhook_url, &cfg.webhook_url_file, "webhook_url")?;
        if let Some(w) = webhook {
            let mut base = w.expose().trim().to_string();
            if !base.ends_with('/') {
                base.push('/');
            }
            if url::Url::parse(&base).is_err() {
                return Err(config_error(
                    "webhook_url is not a URL (expected https://PORTAL/rest/USER_ID/SECRET/)",
                ));
            }
            let host = host_of(&base);
            Ok((
                Auth::Webhook {
                    base: Secret::new(base),
                },
                host,
            ))
        } else {
            let portal = cfg.portal_url.clone().ok_or_else(|| {
                config_error("set webhook_url, or portal_url + client_id + client_secret for an OAuth application")
            })?;
            let client_id = cfg
                .client_id
                .clone()
                .ok_or_else(|| config_error("OAuth application needs client_id"))?;
            let client_secret =
                read_secret(&cfg.client_secret, &cfg.client_secret_file, "client_secret")?
                    .ok_or_else(|| config_error("OAuth application needs client_secret"))?;
            let initial_refresh =
                read_secret(&cfg.refresh_token, &cfg.refresh_token_file, "refresh_token")?;
            let stored = tokens.load_token(tenant, SYSTEM).await.map_err(|e| {
                Error::new(
                    ErrorKind::Permanent,
                    SYSTEM,
                    "token store",
                    "",
                    format!("cannot load the stored token: {e}"),
                )
            })?;
            if stored.is_none() && initial_refresh.is_none() {
                return Err(config_error(
                    "OAuth application needs refresh_token (none stored yet)",
                ));
            }
            let host = host_of(&portal);
            Ok((
                Auth::OAuth(Box::new(OAuth {
                    portal: portal.trim_end_matches('/').to_string(),
                    oauth_url: cfg.oauth_url.trim_end_matches('/').to_string(),
                    client_id,
                    client_secret,
                    initial_refresh,
                    state: tokio::sync::Mutex::new(stored),
                })),
                host,
            ))
        }
    }
}

fn read_secret(
    inline: &Option<Secret>,
    file: &Option<PathBuf>,
    what: &str,
) -> Result<Option<Secret>> {
    if let Some(s) = inline.as_ref().filter(|s| !s.is_empty()) {
        return Ok(Some(s.clone()));
    }
    match file {
        Some(path) => std::fs::read_to_string(path)
            .map(|s| Some(Secret::new(s.trim())))
            .map_err(|e| config_error(format!("cannot read {what} from {}: {e}", path.display()))),
        None => Ok(None),
    }
}

impl Bitrix24 {
    /// URL and body of a call; for OAuth the access token goes into the body, never the URL.
    pub(super) async fn prepare(
        &self,
        method: &str,
        params: &Value,
    ) -> Result<(String, Value, Option<String>)> {
        match &self.auth {
            Auth::Webhook { base } => Ok((
                self.current(&format!("{}{method}", base.expose())),
                params.clone(),
                None,
            )),
            Auth::OAuth(o) => {
                let current = o.state.lock().await.clone();
                let set = match current {
                    Some(s) if s.is_fresh() => s,
                    Some(s) if !s.access_token.is_empty() => {
                        // About to expire: refresh now rather than have this call refused.
                        match self.refresh(o, Some(s.access_token.expose())).await {
                            Ok(new) => new,
                            // The old token still works for a moment; a refresh the server
                            // refused for good is reported by the reactive path.
                            Err(e)
                                if e.kind != ErrorKind::Auth
                                    && s.expires_at.is_some_and(|t| t > Utc::now()) =>
                            {
                                tracing::warn!(error = %e, "bitrix24 token refresh ahead of expiry failed; using the current token");
                                s
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    _ => self.refresh(o, None).await?,
                };
                let endpoint = set
                    .extra
                    .get("client_endpoint")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{}/rest/", o.portal));
                let endpoint = if endpoint.ends_with('/') {
                    endpoint
                } else {
                    format!("{endpoint}/")
                };
                let mut body = match params {
                    Value::Object(m) => m.clone(),
                    _ => Map::new(),
                };
                let token = set.access_token.expose().to_string();
                body.insert("auth".into(), Value::String(token.clone()));
                Ok((
                    self.current(&format!("{endpoint}{method}")),
                    Value::Object(body),
                    Some(token),
                ))
            }
        }
    }

    /// Exchanges the refresh token for a new pair and stores it before anything uses it.
    /// `stale` is the access token the caller found refused or about to expire (`None`: it
    /// found none). Refreshes are single-flight: the state lock is held throughout, and a task
    /// that waited for it takes the pair the previous holder obtained instead of spending the
    /// refresh token again.
    // Long: the state lock is held from the freshness check to storing the new pair (single
    // flight), so every step runs under the one guard.
    pub(super) async fn refresh(&self, o: &OAuth, stale: Option<&str>) -> Result<TokenSet> {
        let mut state = o.state.lock().await;
        if let Some(cur) = state.as_ref()
            && cur.is_fresh()
            && stale.is_none_or(|s| cur.access_token.expose() != s)
        {
            return Ok(cur.clone());
        }
        let method = "oauth.token";
        let refresh = state
            .as_ref()
            .and_then(|s| s.refresh_token.clone())
            .or_else(|| o.initial_refresh.clone())
            .ok_or_else(|| {
                self.err(
                    ErrorKind::Auth,
                    method,
                    "",
                    "no refresh token: the Bitrix24 application must be re-authorised",
                )
            })?;
        let mut url = url::Url::parse(&format!("{}/oauth/token/", o.oauth_url))
            .map_err(|e| config_error(format!("oauth_url is not a URL: {e}")))?;
        url.query_pairs_mut()
            .append_pair("grant_type", "refresh_token")
            .append_pair("client_id", &o.client_id)
            .append_pair("client_secret", o.client_secret.expose())
            .append_pair("refresh_token", refresh.expose());
        let shown = redact_url(url.as_str());
        let mut attempt = 0;
        let mut refusals = self.throttle.start();
        let body = loop {
            let result = async {
                let resp = self
                    .http
                    .get(url.clone())
                    .send()
                    .await
                    .observe(SYSTEM, method)
                    .map_err(|e| Error::transport(SYSTEM, method, &shown, &e))?;
                let status = resp.status().as_u16();
                let bytes = http::read_body(resp, http::MAX_BODY, SYSTEM, method, &shown).await?;
                let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
                    let kind = if status >= 500 { ErrorKind::Transient } else { ErrorKind::Decode };
                    self.err(kind, method, &shown, format!("malformed token answer: {e}")).status(status)
                })?;
                if v.get("error").is_some_and(|e| !e.is_null()) || !(200..300).contains(&status) {
                    let mut e = self.classify(method, &shown, Some(status), &v);
                    if e.code.as_deref() == Some("invalid_grant") {
                        crate::telemetry::set_reauth_required(&self.tenant, SYSTEM, true);
                        e.kind = ErrorKind::Auth;
                        e.message = "the refresh token was refused (invalid_grant): the Bitrix24 application must be re-authorised".into();
                    }
                    return Err(e);
                }
                Ok(v)
            }
            .await;
            match result {
                Ok(v) => break v,
                Err(e) => match retry_wait(&e, &mut attempt, &mut refusals) {
                    Some(wait) => self.wait(wait, method).await?,
                    None => return Err(e),
                },
            }
        };
        let field = |k: &str| body.get(k).and_then(text).filter(|s| !s.is_empty());
        let (Some(access), Some(new_refresh)) = (field("access_token"), field("refresh_token"))
        else {
            return Err(self.err(
                ErrorKind::Decode,
                method,
                &shown,
                "token answer lacks access_token or refresh_token",
            ));
        };
        let now = Utc::now();
        // A lifetime out of its sane range is clamped: a short one only refreshes early.
        let ttl =
            crate::domain::bounds::token_ttl(body.get("expires_in").and_then(Value::as_i64), 3600);
        let set = TokenSet {
            access_token: Secret::new(access),
            refresh_token: Some(Secret::new(new_refresh)),
            expires_at: Some(now + ttl),
            refreshed_at: Some(now),
            extra: json!({
                "client_endpoint": field("client_endpoint"),
                "member_id": field("member_id"),
                "domain": field("domain"),
            }),
        };
        self.tokens
            .save_token(&self.tenant, SYSTEM, &set)
            .await
            .map_err(|e| {
                self.err(
                    ErrorKind::Permanent,
                    method,
                    &shown,
                    format!("cannot store the refreshed token: {e}"),
                )
            })?;
        crate::telemetry::set_reauth_required(&self.tenant, SYSTEM, false);
        *state = Some(set.clone());
        Ok(set)
    }
}
