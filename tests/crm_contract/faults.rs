//! A CRM that refuses, fails or garbles its answers: the connector waits refusals out, retries
//! failures and reports what it cannot read, without ever showing a credential.

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dozor::crm::Cursor;
use dozor::http::ErrorKind;
use dozor::store::{Store, TokenStore};
use dozor_sim::{Faults, SimHandle};

use crate::common;
use crate::common::crm::{CrmCase, assert_no_secret, full_pass, quick_throttle};

for_each_crm!(
    rate_limit_storm_is_waited_out_and_the_sync_completes,
    server_errors_and_throttling_are_retried,
    malformed_answers_are_decode_errors_without_secrets,
    an_unknown_credential_is_refused_without_showing_it,
);

/// What a storm costs each CRM: how many records, passes in the half-refused phase, pages a
/// pass (where the suite counted them), requests answered and refusals expected there.
struct Storm {
    records: usize,
    passes: usize,
    pages: Option<usize>,
    answered: u64,
    refused: RangeInclusive<u64>,
}

impl CrmCase {
    fn storm(self) -> Storm {
        match self {
            // 2,600 contacts: two batch requests a pass, five passes.
            CrmCase::Bitrix24 => Storm {
                records: 2600,
                passes: 5,
                pages: None,
                answered: 10,
                refused: 9..=10,
            },
            // 600 deals: three pages and the deletion query, one pass.
            CrmCase::Amocrm => Storm {
                records: 600,
                passes: 1,
                pages: Some(3),
                answered: 4,
                refused: 3..=4,
            },
        }
    }

    /// What an error about each call names of the request: the method and the address with
    /// the secret cut out (Bitrix24 keeps the webhook's shape).
    fn names_in_errors(self) -> Calls {
        match self {
            CrmCase::Bitrix24 => Calls {
                ping: &["profile", "/rest/1/***/"],
                page: &["batch", "/rest/1/***/"],
            },
            CrmCase::Amocrm => Calls {
                ping: &["GET /api/v4/account", "/api/v4/account"],
                page: &["GET /api/v4/leads", "/api/v4/leads?"],
            },
        }
    }
}

/// Words an error must carry for a ping and for a page of deals.
struct Calls {
    ping: &'static [&'static str],
    page: &'static [&'static str],
}

async fn sqlite_store(dir: &tempfile::TempDir) -> Arc<Store> {
    Arc::new(
        Store::open(&common::sqlite_url(dir.path()), 4)
            .await
            .unwrap(),
    )
}

async fn rate_limit_storm_is_waited_out_and_the_sync_completes(crm: CrmCase) {
    let want = crm.storm();
    let h = crm.start_bulk(want.records).await;
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir).await;
    let c = crm.client(&h, store.clone(), quick_throttle()).await;
    let kind = crm.bulk_kind();
    // Twenty refusals in a row (QUERY_LIMIT_EXCEEDED, 429): far more than a fixed retry count
    // survives.
    h.sim.set_faults(
        crm.system(),
        Faults {
            throttle: 20,
            ..Faults::default()
        },
    );
    h.sim.reset_stats();
    let started = Instant::now();
    let report = dozor::sync::sync_crm(&store, "t1", c.as_ref(), Default::default())
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(report.items[kind.as_str()], want.records);
    assert_eq!(crm.mirrored(&store).await, want.records);
    let stats = h.sim.stats()[&crm.system()].clone();
    assert_eq!(stats.throttled, 20);
    // Waits doubled to their cap: 20 + 40 + 80 + 17 × 160 ms; a client that did not back off
    // would have gone through the refusals at once.
    assert!(elapsed >= Duration::from_millis(2800), "{elapsed:?}");
    println!(
        "{crm:?} storm of 20: {} requests ({} refused), {elapsed:?}",
        stats.requests, stats.throttled
    );

    // Then half of all requests refused for a while: every pass still completes, and each
    // refusal costs exactly one more request, after a pause.
    h.sim.set_faults(
        crm.system(),
        Faults {
            throttle_percent: 50,
            ..Faults::default()
        },
    );
    h.sim.reset_stats();
    let started = Instant::now();
    for _ in 0..want.passes {
        let (records, pages, _) = full_pass(c.as_ref(), kind, Cursor::default()).await;
        assert_eq!(records.len(), want.records);
        if let Some(p) = want.pages {
            assert_eq!(pages, p);
        }
    }
    let stats = h.sim.stats()[&crm.system()].clone();
    assert_eq!(stats.requests - stats.throttled, want.answered, "{stats:?}");
    assert!(want.refused.contains(&stats.throttled), "{stats:?}");
    assert!(started.elapsed() >= Duration::from_millis(20 * stats.throttled));
}

async fn server_errors_and_throttling_are_retried(crm: CrmCase) {
    let h = crm.start_bulk(70).await;
    let c = crm.plain_client(&h).await;
    let kind = crm.bulk_kind();
    // The first pass also reads what the connector keeps for later ones (amoCRM's unsorted
    // statuses); the second shows what a pass costs without faults.
    full_pass(c.as_ref(), kind, Cursor::default()).await;
    h.sim.reset_stats();
    let (records, pages, _) = full_pass(c.as_ref(), kind, Cursor::default()).await;
    assert_eq!((records.len(), pages), (70, 1));
    assert_eq!(h.sim.stats()[&crm.system()].requests, 1);

    h.sim.set_faults(
        crm.system(),
        Faults {
            http_5xx: 2,
            throttle: 2,
            ..Faults::default()
        },
    );
    h.sim.reset_stats();
    let started = Instant::now();
    let (records, _, _) = full_pass(c.as_ref(), kind, Cursor::default()).await;
    assert_eq!(records.len(), 70);
    // Two refusals: at least 1 s + 2 s of the product's back-off.
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let stats = h.sim.stats()[&crm.system()].clone();
    assert_eq!(stats.requests, 5, "four failed attempts and one answer");
    assert_eq!(stats.throttled, 2);
}

/// The next answer of `h`'s CRM arrives cut in half.
fn garble_next(crm: CrmCase, h: &SimHandle) {
    h.sim.set_faults(
        crm.system(),
        Faults {
            malformed_json: 1,
            ..Faults::default()
        },
    );
}

async fn malformed_answers_are_decode_errors_without_secrets(crm: CrmCase) {
    let h = crm.start().await;
    let c = crm.plain_client(&h).await;
    let names = crm.names_in_errors();
    let secrets = crm.secrets(&h);

    garble_next(crm, &h);
    let e = c.ping().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Decode, "{e}");
    let shown = e.to_string();
    for word in names.ping {
        assert!(shown.contains(word), "{word:?} not in: {shown}");
    }
    assert_no_secret(&e, &secrets);

    // A garbled list page is a Decode error too, not a panic, and the next call is fine.
    garble_next(crm, &h);
    let e = c
        .fetch_page(dozor::domain::EntityKind::Deal, &Cursor::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Decode, "{e}");
    let shown = e.to_string();
    for word in names.page {
        assert!(shown.contains(word), "{word:?} not in: {shown}");
    }
    assert_no_secret(&e, &secrets);
    c.fetch_page(dozor::domain::EntityKind::Deal, &Cursor::default())
        .await
        .unwrap();

    // Through OAuth neither the client secret nor a token of the pair in use shows up.
    let tokens = Arc::new(common::MemTokens::default());
    let oc = crm
        .oauth_client(&h, &crm.first_refresh_token(&h), tokens.clone())
        .await;
    oc.ping().await.unwrap();
    garble_next(crm, &h);
    let e = oc.users().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Decode, "{e}");
    let pair = tokens
        .load_token("t1", crm.system().as_str())
        .await
        .unwrap()
        .unwrap();
    let mut secrets = crm.secrets(&h);
    secrets.push(pair.access_token.expose().to_string());
    secrets.extend(pair.refresh_token.map(|t| t.expose().to_string()));
    assert_no_secret(&e, &secrets);
}

async fn an_unknown_credential_is_refused_without_showing_it(crm: CrmCase) {
    let h = crm.start_bulk(5).await;
    let c = crm.forged_client(&h, "notTheSecret42").await;
    let e = c.ping().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    assert_eq!(e.status, Some(401), "{e}");
    assert_no_secret(&e, &["notTheSecret42".into()]);
}
