//! amoCRM credentials: a long-lived token, or OAuth access tokens rotated with single-use
//! refresh tokens.
//!
//! The invariants that keep the refresh chain intact:
//! - one refresh at a time per client (an async mutex); whoever waited for it re-reads the
//!   stored pair and uses it when someone else already refreshed;
//! - the new pair is saved through the token store before the new access token is used; if the
//!   save fails the pair is kept aside and saving is retried before anything else;
//! - a refresh the server refuses (revoked, invalid, wrong client) turns the client off: every
//!   later call fails fast with "re-authorisation required" and the token endpoint is left alone,
//!   until a different refresh token appears in the token store (someone re-authorised): then
//!   the client uses it without a restart.

use std::sync::{Arc, Mutex};

use chrono::Utc;
use serde_json::{Value, json};

use super::{AmoCrm, MAX_ATTEMPTS, SYSTEM};
use crate::config::Secret;
use crate::crm::Result;
use crate::http::{Error, ErrorKind, backoff, redact_url};
use crate::store::{TokenSet, TokenStore};
use crate::telemetry::Observe as _;

const TOKEN_PATH: &str = "/oauth2/access_token";

pub(super) enum Auth {
    LongLived(Secret),
    OAuth(Box<OAuth>),
}

pub(super) struct OAuth {
    tenant: String,
    client_id: String,
    client_secret: Secret,
    redirect_uri: String,
    initial_refresh: Option<Secret>,
    store: Arc<dyn TokenStore>,
    current: Mutex<Option<TokenSet>>,
    /// A rotated pair the store refused to save; saved (and only then used) on the next try.
    unsaved: Mutex<Option<TokenSet>>,
    refresh_lock: tokio::sync::Mutex<()>,
    /// Set when a refresh was refused for good.
    dead: Mutex<Option<String>>,
    /// The refresh token the server refused (a stored token equal to it is not a re-auth).
    refused: Mutex<Option<Secret>>,
}

impl Auth {
    pub(super) fn long_lived(token: Secret) -> Self {
        Auth::LongLived(token)
    }

    pub(super) fn oauth(
        tenant: &str,
        client_id: String,
        client_secret: Secret,
        redirect_uri: String,
        initial_refresh: Option<Secret>,
        store: Arc<dyn TokenStore>,
    ) -> Self {
        Auth::OAuth(Box::new(OAuth {
            tenant: tenant.to_string(),
            client_id,
            client_secret,
            redirect_uri,
            initial_refresh,
            store,
            current: Mutex::new(None),
            unsaved: Mutex::new(None),
            refresh_lock: tokio::sync::Mutex::new(()),
            dead: Mutex::new(None),
            refused: Mutex::new(None),
        }))
    }

    pub(super) fn is_dead(&self) -> bool {
        match self {
            Auth::LongLived(_) => false,
            Auth::OAuth(o) => o.dead_reason().is_some(),
        }
    }

    pub(super) fn can_refresh(&self) -> bool {
        matches!(self, Auth::OAuth(_))
    }

    /// The access token to send.
    pub(super) async fn bearer(&self, c: &AmoCrm) -> Result<Secret> {
        match self {
            Auth::LongLived(t) => Ok(t.clone()),
            Auth::OAuth(o) => {
                o.revive().await;
                o.check_dead(c)?;
                let current = o.current.lock().unwrap_or_else(|e| e.into_inner()).clone();
                match current {
                    Some(t) if t.is_fresh() => Ok(t.access_token),
                    Some(t) => o.refresh(c, Some(&t.access_token)).await,
                    None => o.refresh(c, None).await,
                }
            }
        }
    }

    /// Gets a new access token because `seen` was refused.
    pub(super) async fn refresh(&self, c: &AmoCrm, seen: Option<&Secret>) -> Result<Secret> {
        match self {
            Auth::LongLived(_) => Err(Error::new(
                ErrorKind::Auth,
                SYSTEM,
                "token",
                redact_url(&c.base),
                "the long-lived token was refused (expired or revoked): issue a new one",
            )),
            Auth::OAuth(o) => o.refresh(c, seen).await,
        }
    }
}

impl OAuth {
    /// Turns the client off until someone re-authorises; shown as `dozor_reauth_required`.
    fn mark_dead(&self, reason: String) {
        crate::telemetry::set_reauth_required(&self.tenant, SYSTEM, true);
        *self.dead.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
    }

    /// Brings a dead client back when the token store holds a refresh token other than the
    /// refused one: someone re-authorised the integration while dozor kept running.
    async fn revive(&self) {
        if self.dead_reason().is_none() {
            return;
        }
        let Ok(Some(stored)) = self.store.load_token(&self.tenant, SYSTEM).await else {
            return;
        };
        let Some(rt) = stored.refresh_token.filter(|t| !t.is_empty()) else {
            return;
        };
        if self
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            == Some(&rt)
        {
            return;
        }
        *self.dead.lock().unwrap_or_else(|e| e.into_inner()) = None;
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = None;
        crate::telemetry::set_reauth_required(&self.tenant, SYSTEM, false);
        tracing::info!(system = SYSTEM, tenant = %self.tenant,
            "a new token was stored: the integration is re-authorised");
    }

    fn dead_reason(&self) -> Option<String> {
        self.dead.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn token_url(&self, c: &AmoCrm) -> String {
        format!("{}{TOKEN_PATH}", c.base)
    }

    fn err(&self, c: &AmoCrm, kind: ErrorKind, msg: impl Into<String>) -> Error {
        Error::new(
            kind,
            SYSTEM,
            format!("POST {TOKEN_PATH}"),
            redact_url(&self.token_url(c)),
            msg,
        )
    }

    fn check_dead(&self, c: &AmoCrm) -> Result<()> {
        match self.dead_reason() {
            Some(reason) => Err(self.err(
                c,
                ErrorKind::Auth,
                format!("re-authorisation required: {reason}"),
            )),
            None => Ok(()),
        }
    }

    fn adopt(&self, t: TokenSet) -> Secret {
        let access = t.access_token.clone();
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
        access
    }

    async fn save(&self, c: &AmoCrm, t: &TokenSet) -> Result<()> {
        self.store
            .save_token(&self.tenant, SYSTEM, t)
            .await
            .map_err(|e| {
                self.err(
                    c,
                    ErrorKind::Transient,
                    format!("cannot store the rotated token pair: {e}"),
                )
            })
    }

    async fn refresh(&self, c: &AmoCrm, seen: Option<&Secret>) -> Result<Secret> {
        let _guard = self.refresh_lock.lock().await;
        self.revive().await;
        self.check_dead(c)?;
        // A pair rotated earlier whose save failed: save it first, then use it.
        let pending = self
            .unsaved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(t) = pending {
            self.save(c, &t).await?;
            *self.unsaved.lock().unwrap_or_else(|e| e.into_inner()) = None;
            return Ok(self.adopt(t));
        }
        // Somebody (another task, or an earlier run) may already hold a newer pair.
        let stored = self
            .store
            .load_token(&self.tenant, SYSTEM)
            .await
            .map_err(|e| {
                self.err(
                    c,
                    ErrorKind::Transient,
                    format!("cannot read the stored token: {e}"),
                )
            })?;
        if let Some(t) = &stored
            && t.is_fresh()
            && seen != Some(&t.access_token)
        {
            return Ok(self.adopt(t.clone()));
        }
        let refresh_token = stored
            .as_ref()
            .and_then(|t| t.refresh_token.clone())
            .or_else(|| self.initial_refresh.clone())
            .filter(|t| !t.is_empty());
        let Some(refresh_token) = refresh_token else {
            let reason = "no refresh token is configured or stored".to_string();
            self.mark_dead(reason.clone());
            return Err(self.err(
                c,
                ErrorKind::Auth,
                format!("re-authorisation required: {reason}"),
            ));
        };
        let body = json!({
            "client_id": self.client_id,
            "client_secret": self.client_secret.expose(),
            "grant_type": "refresh_token",
            "refresh_token": refresh_token.expose(),
            "redirect_uri": self.redirect_uri,
        });
        let answer = match self.post_token(c, &body).await {
            Ok(a) => a,
            Err(e) => {
                if self.dead_reason().is_some() {
                    *self.refused.lock().unwrap_or_else(|e| e.into_inner()) = Some(refresh_token);
                }
                return Err(e);
            }
        };
        let set = self.token_set(c, &answer)?;
        tracing::info!(system = SYSTEM, tenant = %self.tenant, "access token refreshed");
        crate::telemetry::set_reauth_required(&self.tenant, SYSTEM, false);
        if let Err(e) = self.save(c, &set).await {
            *self.unsaved.lock().unwrap_or_else(|e| e.into_inner()) = Some(set);
            return Err(e);
        }
        Ok(self.adopt(set))
    }

    fn token_set(&self, c: &AmoCrm, v: &Value) -> Result<TokenSet> {
        let s = |k: &str| v[k].as_str().filter(|s| !s.is_empty()).map(Secret::new);
        let (Some(access), Some(refresh)) = (s("access_token"), s("refresh_token")) else {
            return Err(self.err(
                c,
                ErrorKind::Decode,
                "token answer lacks access_token or refresh_token",
            ));
        };
        let now = Utc::now();
        // A lifetime out of its sane range is clamped: a short one only refreshes early.
        let ttl = crate::domain::bounds::token_ttl(v["expires_in"].as_i64(), 86_400);
        Ok(TokenSet {
            access_token: access,
            refresh_token: Some(refresh),
            expires_at: Some(now + ttl),
            refreshed_at: Some(now),
            extra: json!({}),
        })
    }

    // Long: every way the token endpoint can answer (transport error, status, body shape) is
    // classified here, next to each other.
    async fn post_token(&self, c: &AmoCrm, body: &Value) -> Result<Value> {
        let url = self.token_url(c);
        let method = format!("POST {TOKEN_PATH}");
        let mut attempt = 0u32;
        loop {
            c.limiter
                .acquire(&c.stop)
                .await
                .map_err(|s| s.error(SYSTEM, method.as_str(), redact_url(&url)))?;
            let resp = match c
                .http
                .post(&url)
                .json(body)
                .send()
                .await
                .observe(SYSTEM, &method)
            {
                Ok(r) => r,
                Err(e) => {
                    let err = Error::transport(SYSTEM, method.as_str(), redact_url(&url), &e);
                    if err.is_retryable() && attempt + 1 < MAX_ATTEMPTS {
                        c.wait(backoff(attempt), &method, &url).await?;
                        attempt += 1;
                        continue;
                    }
                    return Err(err);
                }
            };
            let status = resp.status().as_u16();
            // An answer that cannot be read whole is not retried: the CRM may already have
            // retired the refresh token it was sent.
            let bytes = crate::http::read_body(
                resp,
                crate::http::MAX_BODY,
                SYSTEM,
                &method,
                &redact_url(&url),
            )
            .await
            .map_err(|mut e| {
                e.kind = ErrorKind::Decode;
                e
            })?;
            match status {
                200..=299 => {
                    return serde_json::from_slice(&bytes).map_err(|e| {
                        self.err(
                            c,
                            ErrorKind::Decode,
                            format!("token answer is not valid JSON: {e}"),
                        )
                    });
                }
                429 | 500..=599 if attempt + 1 < MAX_ATTEMPTS => {
                    let wait = if status == 429 {
                        c.tuning.throttle.first.saturating_mul(1 << attempt.min(5))
                    } else {
                        backoff(attempt)
                    };
                    c.wait(wait, &method, &url).await?;
                    attempt += 1;
                    continue;
                }
                400 | 401 | 403 => {
                    let p: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    let detail = p["detail"]
                        .as_str()
                        .or_else(|| p["hint"].as_str())
                        .or_else(|| p["title"].as_str())
                        .unwrap_or("the refresh token was refused")
                        .to_string();
                    let reason = format!("{detail} (HTTP {status})");
                    tracing::error!(system = SYSTEM, tenant = %self.tenant, %reason,
                        "refresh refused; the integration must be re-authorised");
                    self.mark_dead(reason);
                    let mut e = self
                        .err(
                            c,
                            ErrorKind::Auth,
                            format!("re-authorisation required: {detail}"),
                        )
                        .status(status);
                    if let Some(t) = p["title"].as_str() {
                        e = e.code(t);
                    }
                    return Err(e);
                }
                _ => {
                    let kind = match status {
                        429 => ErrorKind::RateLimited,
                        500..=599 => ErrorKind::Transient,
                        _ => ErrorKind::Permanent,
                    };
                    return Err(self
                        .err(c, kind, format!("token endpoint answered HTTP {status}"))
                        .status(status));
                }
            }
        }
    }
}
