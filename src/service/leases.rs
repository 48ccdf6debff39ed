//! Tenant leases: each tenant is worked on by one instance at a time; each instance takes at
//! most its fair share, renews its leases while a long cycle runs and hands them back on stop.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::Store;
use crate::tenant::Tenant;

/// Takes (or keeps) the lease of tenant `t`; `held` is updated; `false` when another instance
/// holds it or the store cannot say.
pub(crate) async fn take(
    store: &Store,
    t: &Tenant,
    instance: &str,
    ttl: Duration,
    held: &mut bool,
) -> bool {
    match store.acquire_lease(t.id(), instance, ttl).await {
        Ok(Some(epoch)) => {
            if !*held {
                tracing::info!(tenant = t.id(), epoch, "tenant lease taken");
                *held = true;
            }
            true
        }
        Ok(None) => {
            if *held {
                tracing::warn!(tenant = t.id(), "tenant lease lost to another instance");
            }
            *held = false;
            false
        }
        Err(e) => {
            tracing::error!(tenant = t.id(), error = %e, "cannot take the tenant lease");
            false
        }
    }
}

/// Over its share (another instance joined): hands one tenant back between cycles.
pub(crate) async fn hand_back_over_share(
    store: &Store,
    tenants: &[Tenant],
    instance: &str,
    held: &mut [bool],
    share: usize,
    live: usize,
) {
    if held.iter().filter(|h| **h).count() > share
        && let Some(i) = held.iter().rposition(|h| *h)
    {
        match store.release_lease(tenants[i].id(), instance).await {
            Ok(()) => {
                tracing::info!(tenant = tenants[i].id(), live, "tenant lease handed over");
                held[i] = false;
            }
            Err(e) => tracing::warn!(error = %e, "cannot release a tenant lease"),
        }
    }
}

/// On stop: releases every lease held and removes this instance's heartbeat.
pub(crate) async fn release_all(store: &Store, tenants: &[Tenant], instance: &str, held: &[bool]) {
    for (i, t) in tenants.iter().enumerate() {
        if held[i]
            && let Err(e) = store.release_lease(t.id(), instance).await
        {
            tracing::warn!(tenant = t.id(), error = %e, "cannot release the tenant lease");
        }
    }
    if let Err(e) = store.forget_instance(instance).await {
        tracing::warn!(error = %e, "cannot remove the instance heartbeat");
    }
}

/// Keeps this instance's leases alive while a long cycle runs (an initial sync can take minutes),
/// renewing at a third of the TTL, until `stop` is cancelled (after the last cycle has ended).
pub(crate) fn spawn_renewer(
    store: Store,
    instance: String,
    ttl: Duration,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(ttl / 3) => {},
                _ = stop.cancelled() => return,
            }
            if let Err(e) = store.heartbeat(&instance, ttl).await {
                tracing::warn!(error = %e, "cannot record the instance heartbeat");
            }
            if let Err(e) = store.renew_leases(&instance, ttl).await {
                tracing::warn!(error = %e, "cannot renew tenant leases");
            }
        }
    })
}
