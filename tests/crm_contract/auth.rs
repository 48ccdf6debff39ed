//! OAuth: refresh tokens are single-use, so a refresh is single-flight, the new pair is stored
//! before anything uses it and survives a restart, and a spent token asks for a person.

use std::sync::Arc;

use chrono::Utc;
use dozor::crm::Cursor;
use dozor::http::ErrorKind;
use dozor::store::{Store, TokenSet, TokenStore};
use dozor_sim::{Faults, SimHandle};

use crate::common;
use crate::common::crm::{CrmCase, assert_no_secret, full_pass};

for_each_crm!(
    refresh_races_are_single_flight,
    rotated_tokens_are_stored_and_outlive_a_restart,
    a_spent_refresh_token_asks_for_reauthorisation,
);

async fn sqlite_tokens(dir: &tempfile::TempDir) -> Arc<dyn TokenStore> {
    Arc::new(
        Store::open(&common::sqlite_url(dir.path()), 4)
            .await
            .unwrap(),
    )
}

/// The pair `store` holds for `crm`.
async fn stored(crm: CrmCase, store: &Arc<dyn TokenStore>) -> TokenSet {
    store
        .load_token("t1", crm.system().as_str())
        .await
        .unwrap()
        .expect("a stored pair")
}

/// Checks that the refresh token `store` holds is the one the CRM would take next.
async fn assert_chain_intact(crm: CrmCase, h: &SimHandle, store: &Arc<dyn TokenStore>) {
    let saved = stored(crm, store).await;
    let refresh = saved.refresh_token.expect("a stored refresh token");
    assert!(
        crm.refresh_token_live(h, refresh.expose()),
        "the stored refresh token is the live one"
    );
}

/// Every access token the CRM issued so far is refused from the next request on.
fn expire_tokens(crm: CrmCase, h: &SimHandle) {
    h.sim.set_faults(
        crm.system(),
        Faults {
            expire_tokens: true,
            ..Faults::default()
        },
    );
}

async fn refresh_races_are_single_flight(crm: CrmCase) {
    let h = crm.start_bulk(60).await;
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_tokens(&dir).await;
    let first = crm.first_refresh_token(&h);
    let c = crm.oauth_client(&h, &first, store.clone()).await;
    let kind = crm.bulk_kind();
    // No token yet: three calls need one at once, one refresh serves them all.
    let start = Cursor::default();
    let (a, b, u) = tokio::join!(c.ping(), c.fetch_page(kind, &start), c.users());
    a.unwrap();
    assert_eq!(b.unwrap().records.len(), 60);
    u.unwrap();
    assert_eq!(crm.token_grants(&h), 1, "one refresh for three calls");
    let saved = stored(crm, &store).await;
    assert_ne!(saved.refresh_token.unwrap().expose(), first);
    assert_chain_intact(crm, &h, &store).await;

    // The token expires under all three: each is refused, one refresh, each repeated.
    expire_tokens(crm, &h);
    h.sim.reset_stats();
    let (a, b, u) = tokio::join!(c.ping(), c.fetch_page(kind, &start), c.users());
    a.unwrap();
    assert_eq!(b.unwrap().records.len(), 60);
    u.unwrap();
    assert_eq!(crm.token_grants(&h), 2, "one refresh for three calls");
    let stats = h.sim.stats()[&crm.system()].clone();
    assert_eq!(stats.by_method[crm.token_method()], 1, "{stats:?}");
    assert_chain_intact(crm, &h, &store).await;
}

async fn rotated_tokens_are_stored_and_outlive_a_restart(crm: CrmCase) {
    let n = crm.several_pages();
    let kind = crm.bulk_kind();
    let h = crm.start_bulk(n).await;
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_tokens(&dir).await;
    let first = crm.first_refresh_token(&h);
    let c = crm.oauth_client(&h, &first, store.clone()).await;
    c.ping().await.unwrap();
    assert_eq!(crm.token_grants(&h), 1);
    // What the store holds is exactly the newest pair the CRM issued.
    let saved = stored(crm, &store).await;
    assert_chain_intact(crm, &h, &store).await;
    assert!(!crm.refresh_token_live(&h, &first), "spent");
    assert!(saved.expires_at.unwrap() > Utc::now());
    assert!(saved.refreshed_at.is_some());

    // Tokens expire in the middle of a pass: one lazy refresh, the page is asked again, the
    // pass completes and the new pair is stored.
    let p1 = c.fetch_page(kind, &Cursor::default()).await.unwrap();
    assert_eq!(p1.records.len(), crm.page_size());
    assert!(!p1.done);
    expire_tokens(crm, &h);
    let (rest, _, _) = full_pass(c.as_ref(), kind, p1.next).await;
    assert_eq!(p1.records.len() + rest.len(), n);
    assert_eq!(
        crm.token_grants(&h),
        2,
        "initial refresh + one after expiry"
    );
    let saved2 = stored(crm, &store).await;
    assert_ne!(saved2.refresh_token, saved.refresh_token);
    assert_chain_intact(crm, &h, &store).await;

    // A restart reuses the stored pair; the config's spent token is not needed.
    drop(c);
    let c = crm.oauth_client(&h, &first, store.clone()).await;
    c.ping().await.unwrap();
    assert_eq!(crm.token_grants(&h), 2, "no refresh needed");

    // A restart after the CRM forgot every access token refreshes with the stored token.
    drop(c);
    expire_tokens(crm, &h);
    let c = crm.oauth_client(&h, &first, store.clone()).await;
    c.ping().await.unwrap();
    assert_eq!(crm.token_grants(&h), 3);
    assert_chain_intact(crm, &h, &store).await;
}

async fn a_spent_refresh_token_asks_for_reauthorisation(crm: CrmCase) {
    let h = crm.start_bulk(5).await;
    let first = crm.first_refresh_token(&h);
    // Another installation spent it first, keeping the new pair in its own store.
    let elsewhere = Arc::new(common::MemTokens::default());
    crm.oauth_client(&h, &first, elsewhere)
        .await
        .ping()
        .await
        .unwrap();
    let c = crm
        .oauth_client(&h, &first, Arc::new(common::MemTokens::default()))
        .await;
    let e = c.ping().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    assert!(e.message.contains("re-authoris"), "{e}");
    assert_no_secret(&e, &crm.secrets(&h));
}
