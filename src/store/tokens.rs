//! OAuth token persistence.
//!
//! amoCRM refresh tokens are single-use: the pair returned by a refresh must be stored before the
//! new access token is used, or a crash loses the only valid refresh token. `save` is one upsert
//! statement, so the row always holds either the old pair or the new one, never a mix.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{Op, Result, Store, StoreError, from_secs, now_secs};
use crate::config::Secret;
use crate::domain::Ts;

/// A stored credential set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenSet {
    pub access_token: Secret,
    pub refresh_token: Option<Secret>,
    pub expires_at: Option<Ts>,
    /// When the refresh token was issued (for the "near its expiry" self-check).
    pub refreshed_at: Option<Ts>,
    /// Connector-specific extras (Bitrix24 client_endpoint, member_id, ...).
    #[serde(default)]
    pub extra: serde_json::Value,
}

/// An access token this close to its expiry is refreshed before it is used: a call that starts
/// just before the expiry must not be the one the server refuses.
pub(crate) const REFRESH_AHEAD_SECS: i64 = 60;

impl TokenSet {
    /// True while the access token is set and outlives [`REFRESH_AHEAD_SECS`] (a token without
    /// a known expiry counts as fresh until the server refuses it).
    pub(crate) fn is_fresh(&self) -> bool {
        !self.access_token.is_empty()
            && self
                .expires_at
                .is_none_or(|e| e.timestamp() > chrono::Utc::now().timestamp() + REFRESH_AHEAD_SECS)
    }
}

/// Where connectors keep their tokens.
#[async_trait]
pub trait TokenStore: Send + Sync {
    async fn load_token(&self, tenant: &str, system: &str) -> Result<Option<TokenSet>>;
    async fn save_token(&self, tenant: &str, system: &str, tokens: &TokenSet) -> Result<()>;
}

#[async_trait]
impl TokenStore for Store {
    async fn load_token(&self, tenant: &str, system: &str) -> Result<Option<TokenSet>> {
        let row = sqlx::query("SELECT data FROM tokens WHERE tenant = $1 AND system = $2")
            .bind(tenant)
            .bind(system)
            .fetch_optional(self.pool())
            .await
            .op("loading a token")?;
        let Some(row) = row else { return Ok(None) };
        let data: String = row.get(0);
        serde_json::from_str(&data)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                what: format!("token {tenant}/{system}"),
                message: e.to_string(),
            })
    }

    async fn save_token(&self, tenant: &str, system: &str, tokens: &TokenSet) -> Result<()> {
        let data = serde_json::to_string(tokens).expect("token set serialises");
        sqlx::query(
            "INSERT INTO tokens (tenant, system, data, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant, system) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
        )
        .bind(tenant)
        .bind(system)
        .bind(data)
        .bind(now_secs())
        .execute(self.pool())
        .await
        .op("saving a token")?;
        Ok(())
    }
}

impl Store {
    /// When the token of `system` was last saved (for metrics and self-checks).
    pub async fn token_age(&self, tenant: &str, system: &str) -> Result<Option<Ts>> {
        let row = sqlx::query("SELECT updated_at FROM tokens WHERE tenant = $1 AND system = $2")
            .bind(tenant)
            .bind(system)
            .fetch_optional(self.pool())
            .await
            .op("reading token age")?;
        Ok(row.map(|r| from_secs(r.get::<i64, _>(0))))
    }
}
