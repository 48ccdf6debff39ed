//! The Bitrix24 fake at scale 500 (100,000 deals, 100,000 contacts, 200,000 activities):
//! chained list pages stay cheap and a full sync fits the operating-time budget.
//!
//! Ignored by default (generating the world takes a while in a debug build):
//! `cargo test --release --test crm_bitrix24_scale -- --ignored --nocapture`

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use dozor::config::{Bitrix24Config, Bitrix24Plan, Secret};
use dozor::crm::bitrix24::Bitrix24;
use dozor::crm::{Crm, Cursor};
use dozor::domain::EntityKind;
use dozor::sim::{self, Sim, SimOptions, System};
use dozor::store::{TokenSet, TokenStore};
use serde_json::{Value, json};

#[derive(Default)]
struct MemTokens(Mutex<HashMap<(String, String), TokenSet>>);

#[async_trait]
impl TokenStore for MemTokens {
    async fn load_token(&self, t: &str, s: &str) -> dozor::store::Result<Option<TokenSet>> {
        Ok(self.0.lock().unwrap().get(&(t.into(), s.into())).cloned())
    }
    async fn save_token(&self, t: &str, s: &str, v: &TokenSet) -> dozor::store::Result<()> {
        self.0
            .lock()
            .unwrap()
            .insert((t.into(), s.into()), v.clone());
        Ok(())
    }
}

/// 50 chained `crm.deal.list` pages in one batch, as the connector sends them.
fn chained_batch(method: &str, after: u64) -> Value {
    let mut cmd = serde_json::Map::new();
    for i in 0..50 {
        let mut q = format!("{method}?order[ID]=ASC&select[]=*&start=-1");
        if i == 0 {
            q.push_str(&format!("&filter[>ID]={after}"));
        } else {
            q.push_str(&format!("&filter[>ID]=$result[p{:02}][49][ID]", i - 1));
        }
        cmd.insert(format!("p{i:02}"), json!(q));
    }
    json!({"halt": 0, "cmd": cmd})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn scale_500_batches_are_fast_and_a_full_sync_fits_the_budget() {
    let opts = SimOptions {
        seed: 7,
        scale: 500,
        anchor: Some(Utc.with_ymd_and_hms(2026, 3, 2, 12, 0, 0).unwrap()),
        enforce_limits: false,
        b24_enterprise: true,
    };
    let t = Instant::now();
    let sim = Sim::new(opts);
    let (deals, contacts, activities) = {
        let w = sim.world();
        (w.deals.len(), w.contacts.len(), w.activities.len())
    };
    eprintln!(
        "world: {deals} deals, {contacts} contacts, {activities} activities, generated in {:?}",
        t.elapsed()
    );
    assert!(deals >= 90_000 && contacts >= 90_000 && activities >= 180_000);
    let h = sim::start_with(sim, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let http = reqwest::Client::new();

    // One batch of 50 chained list pages from the middle of the id range.
    let mid = *h.sim.world().deals.keys().nth(deals / 2).unwrap();
    for method in ["crm.deal.list", "crm.contact.list", "crm.activity.list"] {
        let mut best = f64::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            let v: Value = http
                .post(format!("{}batch", h.b24_webhook_url()))
                .json(&chained_batch(method, mid))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            best = best.min(t.elapsed().as_secs_f64() * 1000.0);
            let rows: usize = v["result"]["result"]
                .as_object()
                .unwrap()
                .values()
                .map(|r| r.as_array().unwrap().len())
                .sum();
            assert_eq!(rows, 2500, "{method}: 50 full pages");
        }
        eprintln!("{method}: 50 chained pages (2,500 rows) in {best:.1} ms");
        assert!(best < 1500.0, "{method}: {best:.1} ms");
    }

    // A full first sync of every kind with the real client.
    let cfg = Bitrix24Config {
        webhook_url: Some(Secret::new(h.b24_webhook_url())),
        webhook_url_file: None,
        portal_url: None,
        client_id: None,
        client_secret: None,
        client_secret_file: None,
        refresh_token: None,
        refresh_token_file: None,
        oauth_url: "https://oauth.bitrix.info".into(),
        plan: Bitrix24Plan::Enterprise,
        operating_budget_secs: 480.0,
        flag_field: None,
    };
    let c = Bitrix24::new("t1", &cfg, Arc::new(MemTokens::default()))
        .await
        .unwrap();
    h.sim.reset_stats();
    let t = Instant::now();
    let mut total = 0usize;
    for kind in EntityKind::ALL {
        let mut cursor = Cursor::default();
        loop {
            let page = c.fetch_page(kind, &cursor).await.unwrap();
            total += page.records.len();
            cursor = page.next;
            if page.done {
                break;
            }
        }
    }
    let requests = h.sim.stats()[&System::Bitrix24].requests;
    eprintln!(
        "full sync: {total} records in {requests} requests, {:?}",
        t.elapsed()
    );
    // The operating time each list method used over the window.
    for method in ["crm.deal.list", "crm.contact.list", "crm.activity.list"] {
        let v: Value = http
            .post(format!("{}{method}", h.b24_webhook_url()))
            .json(&json!({"filter": {">ID": u64::MAX - 1}, "start": -1}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let used = v["time"]["operating"].as_f64().unwrap();
        eprintln!("{method}: {used:.1} s operating time in the window");
        assert!(used < 240.0, "{method} used {used} s of 480");
    }
}
