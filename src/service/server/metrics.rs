//! /metrics: the in-process counters (`crate::telemetry`), the daemon's cycle figures and the
//! gauges read from the store at scrape time (ledger by rule and state, pending intents,
//! refresh-token age, last sync), so they are right after a restart too; encoded by
//! `prometheus-client` as OpenMetrics text.

use chrono::Utc;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sqlx::Row;

use super::Health;
use crate::store::{Store, TokenStore};
use crate::telemetry::{self, FloatGauge, Labels, OAUTH_SYSTEMS, reauth_flags};

/// The content type of [`render`]'s text.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn tenant(t: &str) -> (&'static str, String) {
    ("tenant", t.to_string())
}

/// The whole /metrics text for `tenants`. A failing store query leaves its series out rather
/// than failing the scrape.
pub(crate) async fn render(store: &Store, health: &Health, tenants: &[String]) -> String {
    let mut registry = Registry::default();
    register_health(health, &mut registry);
    register_syncs(store, tenants, &mut registry).await;
    telemetry::register(&mut registry);
    register_store(store, tenants, &mut registry).await;
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::warn!(error = %e, "cannot encode the metrics");
    }
    out
}

/// The cycles the daemon finished, as [`Health`] saw them.
fn register_health(health: &Health, registry: &mut Registry) {
    let cycles = Family::<Labels, Counter>::default();
    let duration = Family::<Labels, FloatGauge>::default();
    let age = Family::<Labels, Gauge>::default();
    let synced = Family::<Labels, Counter>::default();
    {
        let h = health.inner.lock().unwrap_or_else(|e| e.into_inner());
        for ((t, ok), n) in &h.cycles_total {
            cycles
                .get_or_create(&vec![tenant(t), ("ok", ok.to_string())])
                .inc_by(*n);
        }
        for (t, (at, _, d)) in &h.last_cycle {
            duration
                .get_or_create(&vec![tenant(t)])
                .set(d.as_secs_f64());
            age.get_or_create(&vec![tenant(t)])
                .set(i64::try_from(at.elapsed().as_secs()).unwrap_or(i64::MAX));
        }
        for ((t, src), n) in &h.synced_items {
            synced
                .get_or_create(&vec![tenant(t), ("source", src.clone())])
                .inc_by(*n);
        }
    }
    registry.register(
        "dozor_cycles",
        "Finished cycles by tenant and outcome",
        cycles,
    );
    registry.register(
        "dozor_cycle_duration_seconds",
        "Duration of the last cycle",
        duration,
    );
    registry.register(
        "dozor_cycle_age_seconds",
        "Seconds since the last cycle finished",
        age,
    );
    registry.register("dozor_synced_items", "Records saved to the mirror", synced);
}

/// The last sync run per source: when it started and whether it succeeded.
async fn register_syncs(store: &Store, tenants: &[String], registry: &mut Registry) {
    let started = Family::<Labels, Gauge>::default();
    let ok = Family::<Labels, Gauge>::default();
    for t in tenants {
        if let Ok(runs) = store.last_sync_runs(t).await {
            for r in runs {
                let labels = vec![tenant(t), ("source", r.source.clone())];
                started.get_or_create(&labels).set(r.started_at.timestamp());
                ok.get_or_create(&labels).set(i64::from(r.ok));
            }
        }
    }
    registry.register(
        "dozor_last_sync_timestamp_seconds",
        "Start of the last sync run per source",
        started,
    );
    registry.register(
        "dozor_last_sync_ok",
        "Whether the last sync run per source succeeded",
        ok,
    );
}

/// The gauges read from the store for `tenants`.
// Long: one gauge family after another, each a few lines of the same register-and-fill pattern.
async fn register_store(store: &Store, tenants: &[String], registry: &mut Registry) {
    let reauth = Family::<Labels, Gauge>::default();
    let flags = reauth_flags();
    for t in tenants {
        for system in OAUTH_SYSTEMS {
            if let Some(v) = flags.get(&(t.clone(), system)) {
                reauth
                    .get_or_create(&vec![tenant(t), ("system", system.to_string())])
                    .set(i64::from(*v));
            }
        }
    }
    registry.register(
        "dozor_reauth_required",
        "1 when the integration must be re-authorised by a person (refresh refused)",
        reauth,
    );
    let actions = Family::<Labels, Gauge>::default();
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
                actions
                    .get_or_create(&vec![tenant(t), ("rule", rule), ("state", state)])
                    .set(n);
            }
        }
    }
    registry.register(
        "dozor_actions",
        "Ledger actions by rule and state (done, failed, intent, shadow)",
        actions,
    );
    let pending = Family::<Labels, Gauge>::default();
    for t in tenants {
        if let Ok(n) = ledger_pending(store, t).await {
            pending.get_or_create(&vec![tenant(t)]).set(n);
        }
    }
    registry.register(
        "dozor_ledger_pending",
        "Ledger intents without a final outcome",
        pending,
    );
    let token_age = Family::<Labels, Gauge>::default();
    let now = Utc::now();
    for t in tenants {
        for system in OAUTH_SYSTEMS {
            if let Ok(Some(set)) = store.load_token(t, system).await
                && let Some(at) = set.refreshed_at
            {
                token_age
                    .get_or_create(&vec![tenant(t), ("system", system.to_string())])
                    .set((now - at).num_seconds().max(0));
            }
        }
    }
    registry.register(
        "dozor_refresh_token_age_seconds",
        "Seconds since the stored OAuth refresh token was issued",
        token_age,
    );
    let last_ok = Family::<Labels, Gauge>::default();
    for t in tenants {
        if let Ok(rows) = last_successful_syncs(store, t).await {
            for (source, at) in rows {
                last_ok
                    .get_or_create(&vec![tenant(t), ("source", source)])
                    .set(at);
            }
        }
    }
    registry.register(
        "dozor_last_successful_sync_timestamp_seconds",
        "Start (unix time) of the last successful sync run per source",
        last_ok,
    );
}

/// Ledger rows of `tenant` still in `intent` (recorded, outcome not final).
pub(crate) async fn ledger_pending(store: &Store, tenant: &str) -> Result<i64, sqlx::Error> {
    let row = sqlx::query("SELECT COUNT(*) FROM actions WHERE tenant = $1 AND state = 'intent'")
        .bind(tenant)
        .fetch_one(store.pool())
        .await?;
    Ok(row.get(0))
}

/// (source, unix start) of the last successful sync run per source of `tenant`.
pub(crate) async fn last_successful_syncs(
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
