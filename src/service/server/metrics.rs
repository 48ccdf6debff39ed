//! The gauges of /metrics read from the store at scrape time (ledger by rule and state, pending
//! intents, refresh-token age, last successful sync), so they are right after a restart too.
//! The in-process counters live in `crate::telemetry`.

use std::fmt::Write as _;

use chrono::Utc;
use sqlx::Row;

use crate::store::{Store, TokenStore};
use crate::telemetry::{OAUTH_SYSTEMS, header, label, reauth_flags};

/// Appends the gauges read from the store for `tenants`. A failing query leaves its series out
/// rather than failing the scrape.
pub async fn render_store(store: &Store, tenants: &[String], out: &mut String) {
    let r = reauth_flags();
    header(
        out,
        "dozor_reauth_required",
        "gauge",
        "1 when the integration must be re-authorised by a person (refresh refused).",
    );
    for t in tenants {
        for system in OAUTH_SYSTEMS {
            if let Some(v) = r.get(&(t.clone(), system)) {
                let _ = writeln!(
                    out,
                    "dozor_reauth_required{{tenant=\"{}\",system=\"{system}\"}} {}",
                    label(t),
                    u8::from(*v)
                );
            }
        }
    }
    header(
        out,
        "dozor_actions",
        "gauge",
        "Ledger actions by rule and state (done, failed, intent, shadow).",
    );
    for t in tenants {
        if let Ok(rows) = sqlx::query(
            "SELECT rule, state, COUNT(*) FROM actions WHERE tenant = $1 GROUP BY rule, state ORDER BY rule, state",
        )
        .bind(t)
        .fetch_all(store.pool())
        .await
        {
            for row in rows {
                let (rule, state, n): (String, String, i64) = (row.get(0), row.get(1), row.get(2));
                let _ = writeln!(
                    out,
                    "dozor_actions{{tenant=\"{}\",rule=\"{}\",state=\"{}\"}} {n}",
                    label(t),
                    label(&rule),
                    label(&state)
                );
            }
        }
    }
    header(
        out,
        "dozor_ledger_pending",
        "gauge",
        "Ledger intents without a final outcome.",
    );
    for t in tenants {
        if let Ok(n) = ledger_pending(store, t).await {
            let _ = writeln!(out, "dozor_ledger_pending{{tenant=\"{}\"}} {n}", label(t));
        }
    }
    header(
        out,
        "dozor_refresh_token_age_seconds",
        "gauge",
        "Seconds since the stored OAuth refresh token was issued.",
    );
    let now = Utc::now();
    for t in tenants {
        for system in OAUTH_SYSTEMS {
            if let Ok(Some(set)) = store.load_token(t, system).await
                && let Some(at) = set.refreshed_at
            {
                let _ = writeln!(
                    out,
                    "dozor_refresh_token_age_seconds{{tenant=\"{}\",system=\"{system}\"}} {}",
                    label(t),
                    (now - at).num_seconds().max(0)
                );
            }
        }
    }
    header(
        out,
        "dozor_last_successful_sync_timestamp_seconds",
        "gauge",
        "Start (unix time) of the last successful sync run per source.",
    );
    for t in tenants {
        if let Ok(rows) = last_successful_syncs(store, t).await {
            for (source, at) in rows {
                let _ = writeln!(
                    out,
                    "dozor_last_successful_sync_timestamp_seconds{{tenant=\"{}\",source=\"{}\"}} {at}",
                    label(t),
                    label(&source)
                );
            }
        }
    }
}

/// Ledger rows of `tenant` still in `intent` (recorded, outcome not final).
pub async fn ledger_pending(store: &Store, tenant: &str) -> Result<i64, sqlx::Error> {
    let row = sqlx::query("SELECT COUNT(*) FROM actions WHERE tenant = $1 AND state = 'intent'")
        .bind(tenant)
        .fetch_one(store.pool())
        .await?;
    Ok(row.get(0))
}

/// (source, unix start) of the last successful sync run per source of `tenant`.
pub async fn last_successful_syncs(
    store: &Store,
    tenant: &str,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT source, MAX(started_at) FROM sync_runs WHERE tenant = $1 AND ok = TRUE GROUP BY source ORDER BY source",
    )
    .bind(tenant)
    .fetch_all(store.pool())
    .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}
