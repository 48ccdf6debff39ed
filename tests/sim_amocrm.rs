//! Conformance of the amoCRM fake with the API fact sheet, over real HTTP.

mod common;

use std::time::Duration;

use chrono::{TimeZone, Utc};
use dozor_sim::world::{
    AMO_PIPELINE_BASE, LeadStatus, SimDeal, SimPipeline, SimStage, SimTask, StageKind, World,
};
use dozor_sim::{Faults, SimHandle, SimOptions, System};
use serde_json::{Value, json};

fn opts(limits: bool) -> SimOptions {
    SimOptions {
        enforce_limits: limits,
        ..common::sim_opts(7)
    }
}

async fn start(limits: bool) -> SimHandle {
    common::start_sim(opts(limits)).await
}

/// A world with one pipeline and `n` deals updated one second apart.
fn deals_world(n: usize) -> World {
    let mut w = World::default();
    w.users.push(common::anna(dozor_sim::world::Role::Manager));
    let stage = |id, kind, sort| SimStage {
        id,
        code: format!("S{id}"),
        name: format!("Этап {id}"),
        sort,
        kind,
    };
    w.pipelines.push(SimPipeline {
        id: 0,
        name: "Продажи".into(),
        is_default: true,
        stages: vec![
            stage(1001, StageKind::Open, 10),
            stage(1002, StageKind::Won, 20),
            stage(1003, StageKind::Lost, 30),
        ],
    });
    w.reserve_id(10_000);
    let base = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    for i in 0..n {
        let id = w.next_id();
        let at = base + chrono::Duration::seconds(i as i64);
        w.deals.insert(
            id,
            SimDeal {
                id,
                title: format!("Сделка {i}"),
                pipeline_id: 0,
                stage_id: [1001, 1002, 1003][i % 3],
                amount: 1000.0,
                responsible_id: 1,
                contact_id: None,
                company_id: None,
                lead_id: None,
                source: "WEB".into(),
                tags: vec![],
                loss_reason: (i % 3 == 2).then(|| "Дорого".to_string()),
                created_at: at,
                // Reverse order of ids so that ordering by updated_at is observable.
                updated_at: base + chrono::Duration::seconds((n - i) as i64),
                closed_at: (i % 3 != 0).then_some(at),
            },
        );
    }
    w
}

async fn start_world(w: World, limits: bool) -> SimHandle {
    common::serve_world(opts(limits), w).await
}

struct Resp {
    status: u16,
    ctype: String,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body[..self.body.len().min(300)])
            )
        })
    }
}

async fn req(
    h: &SimHandle,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Resp {
    let mut rb = reqwest::Client::new().request(method, format!("{}{path}", h.amo_url()));
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    Resp {
        status,
        ctype,
        body: r.bytes().await.unwrap().to_vec(),
    }
}

async fn get(h: &SimHandle, path: &str) -> Resp {
    let token = h.sim.creds.amo_long_lived_token.clone();
    req(h, reqwest::Method::GET, path, Some(&token), None).await
}

async fn post(h: &SimHandle, path: &str, body: Value) -> Resp {
    let token = h.sim.creds.amo_long_lived_token.clone();
    req(h, reqwest::Method::POST, path, Some(&token), Some(body)).await
}

#[tokio::test]
async fn hal_envelope_links_and_custom_fields() {
    let h = start(false).await;
    let r = get(&h, "/api/v4/contacts?limit=50").await;
    assert_eq!(r.status, 200);
    assert!(r.ctype.starts_with("application/hal+json"), "{}", r.ctype);
    let v = r.json();
    assert_eq!(v["_page"], 1);
    let self_href = v["_links"]["self"]["href"].as_str().unwrap();
    assert!(self_href.starts_with(&h.amo_url()), "{self_href}");
    assert!(self_href.contains("/api/v4/contacts?"), "{self_href}");
    let next = v["_links"]["next"]["href"].as_str().unwrap();
    assert!(next.contains("page=2"), "{next}");
    assert!(v["_links"]["prev"].is_null());
    let contacts = v["_embedded"]["contacts"].as_array().unwrap();
    assert_eq!(contacts.len(), 50);
    let c = &contacts[0];
    assert!(c["id"].is_u64());
    assert!(c["updated_at"].is_i64());
    let phone = c["custom_fields_values"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["field_code"] == "PHONE")
        .expect("phone field");
    assert_eq!(phone["field_type"], "multitext");
    assert!(phone["values"][0]["enum_code"].is_string());

    // Following `next` gives page 2 with a prev link.
    let path = next.strip_prefix(&h.amo_url()).unwrap();
    let v2 = get(&h, path).await.json();
    assert_eq!(v2["_page"], 2);
    assert!(v2["_links"]["prev"]["href"].is_string());
    assert_ne!(v2["_embedded"]["contacts"][0]["id"], contacts[0]["id"]);

    // Leads: contacts only with with=contacts; closed_at null while open; loss reason.
    let v = get(&h, "/api/v4/leads?limit=250").await.json();
    let leads = v["_embedded"]["leads"].as_array().unwrap();
    assert!(leads.iter().all(|l| l["_embedded"]["contacts"].is_null()));
    assert!(leads.iter().all(|l| l["custom_fields_values"].is_null()));
    let open = leads
        .iter()
        .find(|l| l["status_id"] != 142 && l["status_id"] != 143)
        .unwrap();
    assert!(open["closed_at"].is_null());
    assert!(leads.iter().any(|l| l["status_id"] == 142));
    let v = get(&h, "/api/v4/leads?limit=250&with=contacts,loss_reason")
        .await
        .json();
    let leads = v["_embedded"]["leads"].as_array().unwrap();
    assert!(leads.iter().all(|l| l["_embedded"]["contacts"].is_array()));
    assert!(
        leads
            .iter()
            .any(|l| l["_embedded"]["contacts"][0]["is_main"] == true)
    );

    // Single lead comes without the envelope.
    let id = leads[0]["id"].as_u64().unwrap();
    let one = get(&h, &format!("/api/v4/leads/{id}")).await.json();
    assert_eq!(one["id"], id);
    assert!(one.get("_embedded").unwrap().get("leads").is_none());

    // Pipelines: ids offset, 142/143 in each, an unsorted column of type 1.
    let v = get(&h, "/api/v4/leads/pipelines").await.json();
    let pipes = v["_embedded"]["pipelines"].as_array().unwrap();
    assert_eq!(pipes.len(), h.sim.world().pipelines.len());
    for p in pipes {
        assert!(p["id"].as_u64().unwrap() >= AMO_PIPELINE_BASE);
        let st = p["_embedded"]["statuses"].as_array().unwrap();
        assert!(st.iter().any(|s| s["id"] == 142));
        assert!(st.iter().any(|s| s["id"] == 143));
        assert!(
            st.iter()
                .any(|s| s["type"] == 1 && s["name"] == "Неразобранное")
        );
    }
    let acc = get(&h, "/api/v4/account").await.json();
    assert_eq!(acc["subdomain"], "dozorsim");
    let users = get(&h, "/api/v4/users").await.json();
    assert_eq!(
        users["_embedded"]["users"].as_array().unwrap().len(),
        h.sim.world().users.len()
    );
}

#[tokio::test]
async fn paging_limits_and_empty_pages() {
    let h = start_world(deals_world(251), false).await;
    let p1 = get(&h, "/api/v4/leads?limit=250&page=1").await;
    assert_eq!(p1.status, 200);
    let v = p1.json();
    assert_eq!(v["_embedded"]["leads"].as_array().unwrap().len(), 250);
    assert!(v["_links"]["next"]["href"].is_string());
    let v = get(&h, "/api/v4/leads?limit=250&page=2").await.json();
    assert_eq!(v["_embedded"]["leads"].as_array().unwrap().len(), 1);
    assert!(v["_links"]["next"].is_null());

    let empty = get(&h, "/api/v4/leads?limit=250&page=3").await;
    assert_eq!(empty.status, 204);
    assert!(empty.body.is_empty());
    let none = get(&h, "/api/v4/contacts").await;
    assert_eq!(none.status, 204);
    assert!(none.body.is_empty());

    let too_many = get(&h, "/api/v4/leads?limit=251").await;
    assert_eq!(too_many.status, 400);
    assert!(too_many.ctype.starts_with("application/problem+json"));
    let v = too_many.json();
    assert_eq!(v["status"], 400);
    assert_eq!(v["validation-errors"][0]["errors"][0]["path"], "limit");
    assert_eq!(get(&h, "/api/v4/events?limit=100").await.status, 200);
    assert_eq!(get(&h, "/api/v4/events?limit=101").await.status, 400);
    assert_eq!(get(&h, "/api/v4/leads?page=0").await.status, 400);
}

/// The filters page (https://www.amocrm.ru/developers/content/crm_platform/filters-api): filtering
/// leads, contacts and companies is an alpha "available to a limited list of accounts"; the
/// account parameters page (https://www.amocrm.com/developers/content/api_v4/account-parameters/)
/// lists `is_api_filter_enabled` among the fields that need `with=`. An account without the
/// add-on answers the list unfiltered; `order` and `filter[id]` still apply.
#[tokio::test]
async fn accounts_with_and_without_the_filter_add_on() {
    let h = start_world(deals_world(30), false).await;
    let v = get(&h, "/api/v4/account").await.json();
    assert!(v.get("is_api_filter_enabled").is_none(), "only with with=");
    // Off unless given: the add-on is open to a limited list of accounts.
    let v = get(&h, "/api/v4/account?with=is_api_filter_enabled")
        .await
        .json();
    assert_eq!(v["is_api_filter_enabled"], json!(false));
    h.sim.amo.set_api_filter(true);
    let v = get(&h, "/api/v4/account?with=is_api_filter_enabled")
        .await
        .json();
    assert_eq!(v["is_api_filter_enabled"], json!(true));
    let from = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 20)
        .unwrap()
        .timestamp();
    let filtered = format!("/api/v4/leads?filter[updated_at][from]={from}&order[updated_at]=desc");
    let count = |v: &Value| v["_embedded"]["leads"].as_array().map_or(0, Vec::len);
    assert_eq!(count(&get(&h, &filtered).await.json()), 11);

    h.sim.amo.set_api_filter(false);
    let v = get(&h, "/api/v4/account?with=amojo_id,is_api_filter_enabled")
        .await
        .json();
    assert_eq!(v["is_api_filter_enabled"], json!(false));
    let r = get(&h, &filtered).await;
    assert_eq!(r.status, 200, "the filter is not refused");
    let v = r.json();
    assert_eq!(count(&v), 30, "the filter is not applied");
    let times: Vec<i64> = v["_embedded"]["leads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["updated_at"].as_i64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "still ordered");
    let id = *h.sim.world().deals.keys().next().unwrap();
    let v = get(&h, &format!("/api/v4/leads?filter[id]={id}"))
        .await
        .json();
    assert_eq!(count(&v), 1, "filter[id] still applies");
    // Tasks are filtered on their own page, add-on or not.
    let r = get(&h, "/api/v4/tasks?filter[updated_at][from]=4102444800").await;
    assert_eq!(r.status, 204);
}

#[tokio::test]
async fn filters_and_ordering() {
    let h = start_world(deals_world(30), false).await;
    h.sim.amo.set_api_filter(true);
    let from = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 20)
        .unwrap()
        .timestamp();
    let v = get(
        &h,
        &format!("/api/v4/leads?filter[updated_at][from]={from}&order[updated_at]=asc"),
    )
    .await
    .json();
    let leads = v["_embedded"]["leads"].as_array().unwrap();
    assert_eq!(leads.len(), 11);
    let times: Vec<i64> = leads
        .iter()
        .map(|l| l["updated_at"].as_i64().unwrap())
        .collect();
    assert!(times.iter().all(|t| *t >= from));
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    let v = get(&h, "/api/v4/leads?order[updated_at]=desc&limit=5")
        .await
        .json();
    let times: Vec<i64> = v["_embedded"]["leads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["updated_at"].as_i64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    let to = from + 5;
    let v = get(
        &h,
        &format!("/api/v4/leads?filter[updated_at][from]={from}&filter[updated_at][to]={to}"),
    )
    .await
    .json();
    assert_eq!(v["_embedded"]["leads"].as_array().unwrap().len(), 6);

    let ids: Vec<u64> = h.sim.world().deals.keys().take(2).copied().collect();
    let v = get(
        &h,
        &format!(
            "/api/v4/leads?filter[id][]={}&filter[id][]={}",
            ids[0], ids[1]
        ),
    )
    .await
    .json();
    assert_eq!(v["_embedded"]["leads"].as_array().unwrap().len(), 2);
    let v = get(&h, &format!("/api/v4/leads?filter[id]={}", ids[0]))
        .await
        .json();
    assert_eq!(v["_embedded"]["leads"][0]["id"], ids[0]);

    // Ordering a field amoCRM does not allow is a validation error.
    assert_eq!(
        get(&h, "/api/v4/tasks?order[updated_at]=asc").await.status,
        400
    );
    assert_eq!(get(&h, "/api/v4/leads?order[price]=asc").await.status, 400);

    // Tasks: is_completed and entity filters.
    {
        let mut w = h.sim.world();
        let deal = *w.deals.keys().next().unwrap();
        for done in [true, false, false] {
            let id = w.next_id();
            let now = Utc::now();
            w.tasks.insert(
                id,
                SimTask {
                    id,
                    title: "Позвонить".into(),
                    description: String::new(),
                    responsible_id: 1,
                    created_by: 1,
                    deadline: Some(now),
                    completed: done,
                    result: done.then(|| "ok".into()),
                    binding: Some((dozor_sim::world::Owner::Deal, deal)),
                    created_at: now,
                    updated_at: now,
                    closed_at: done.then_some(now),
                },
            );
        }
    }
    let v = get(&h, "/api/v4/tasks?filter[is_completed]=0").await.json();
    assert_eq!(v["_embedded"]["tasks"].as_array().unwrap().len(), 2);
    let deal = *h.sim.world().deals.keys().next().unwrap();
    let v = get(
        &h,
        &format!("/api/v4/tasks?filter[entity_type]=leads&filter[entity_id][]={deal}"),
    )
    .await
    .json();
    assert_eq!(v["_embedded"]["tasks"].as_array().unwrap().len(), 3);
    assert_eq!(v["_embedded"]["tasks"][0]["entity_type"], "leads");
}

#[tokio::test]
async fn query_search_and_events() {
    let h = start(false).await;
    let (cid, phone) = {
        let w = h.sim.world();
        let c = w.contacts.values().next().unwrap();
        (c.id, c.phones[0].clone())
    };
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    let ten = &digits[digits.len() - 10..];
    let v = get(&h, &format!("/api/v4/contacts?query={ten}"))
        .await
        .json();
    let found: Vec<u64> = v["_embedded"]["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_u64().unwrap())
        .collect();
    assert!(found.contains(&cid), "{phone} -> {found:?}");
    assert_eq!(
        get(&h, "/api/v4/contacts?query=0000000000").await.status,
        204
    );

    let v = get(
        &h,
        "/api/v4/events?filter[type]=incoming_call,outgoing_call&limit=100",
    )
    .await
    .json();
    let events = v["_embedded"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 100);
    assert!(events.iter().all(|e| e["id"].is_string()));
    assert!(
        events
            .iter()
            .all(|e| e["type"] == "incoming_call" || e["type"] == "outgoing_call")
    );
    assert!(events[0]["value_after"][0]["note"]["id"].is_u64());
    let v = get(&h, "/api/v4/events?filter[type][]=lead_added&limit=5")
        .await
        .json();
    assert!(
        v["_embedded"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["type"] == "lead_added" && e["entity_type"] == "lead")
    );
    // Deletions show up as events.
    {
        let mut w = h.sim.world();
        let id = *w.deals.keys().next().unwrap();
        w.deals.remove(&id);
        w.deletions.push(dozor_sim::world::Deletion {
            owner: dozor_sim::world::Owner::Deal,
            id,
            at: Utc::now(),
        });
    }
    let v = get(&h, "/api/v4/events?filter[type]=lead_deleted")
        .await
        .json();
    assert_eq!(v["_embedded"]["events"].as_array().unwrap().len(), 1);
    // The type filter as an array, as the events page
    // (https://www.amocrm.ru/developers/content/crm_platform/events-and-notes) allows.
    let v = get(
        &h,
        "/api/v4/events?filter[type][]=contact_deleted&filter[type][]=lead_deleted&limit=100",
    )
    .await
    .json();
    let events = v["_embedded"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "lead_deleted");
    let now = Utc::now().timestamp() + 3600;
    assert_eq!(
        get(&h, &format!("/api/v4/events?filter[created_at]={now}"))
            .await
            .status,
        204
    );

    // Call notes carry uniq = the telephony call id.
    let v = get(
        &h,
        "/api/v4/contacts/notes?filter[note_type][]=call_in&filter[note_type][]=call_out&limit=250",
    )
    .await
    .json();
    let notes = v["_embedded"]["notes"].as_array().unwrap();
    assert!(notes.iter().any(|n| n["params"]["uniq"] != ""));
}

#[tokio::test]
async fn auth_errors_are_problem_json() {
    let h = start(false).await;
    let r = req(&h, reqwest::Method::GET, "/api/v4/leads", None, None).await;
    assert_eq!(r.status, 401);
    assert!(r.ctype.starts_with("application/problem+json"));
    let v = r.json();
    assert_eq!(v["status"], 401);
    assert_eq!(v["title"], "Unauthorized");
    assert_eq!(v["type"], "https://httpstatus.es/401");
    let r = req(
        &h,
        reqwest::Method::GET,
        "/api/v4/leads",
        Some("nope"),
        None,
    )
    .await;
    assert_eq!(r.status, 401);
}

async fn refresh(h: &SimHandle, rt: &str) -> Resp {
    let c = &h.sim.creds;
    let body = json!({"client_id": c.amo_client_id, "client_secret": c.amo_client_secret,
                      "grant_type": "refresh_token", "refresh_token": rt,
                      "redirect_uri": c.amo_redirect_uri});
    req(
        h,
        reqwest::Method::POST,
        "/oauth2/access_token",
        None,
        Some(body),
    )
    .await
}

#[tokio::test]
async fn refresh_tokens_are_single_use() {
    let h = start(false).await;
    let initial = h.sim.creds.amo_refresh_token.clone();
    let r = refresh(&h, &initial).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 86400);
    let access = v["access_token"].as_str().unwrap().to_string();
    let rt2 = v["refresh_token"].as_str().unwrap().to_string();
    assert!(rt2.starts_with("def50200"));
    assert_eq!(access.split('.').count(), 3, "JWT-like");
    let ok = req(
        &h,
        reqwest::Method::GET,
        "/api/v4/account",
        Some(&access),
        None,
    )
    .await;
    assert_eq!(ok.status, 200);

    // The same refresh token a second time: revoked.
    let again = refresh(&h, &initial).await;
    assert_eq!(again.status, 400);
    assert!(again.ctype.starts_with("application/problem+json"));
    let v = again.json();
    assert_eq!(v["detail"], "Refresh token has been revoked");
    assert!(v["hint"].is_string());
    assert!(h.sim.amo.refresh_token_valid(&rt2));
    assert_eq!(refresh(&h, &rt2).await.status, 200);
    assert_eq!(refresh(&h, &rt2).await.status, 400);

    // Wrong client secret.
    let c = &h.sim.creds;
    let body = json!({"client_id": c.amo_client_id, "client_secret": "wrong",
                      "grant_type": "refresh_token", "refresh_token": "x",
                      "redirect_uri": c.amo_redirect_uri});
    let r = req(
        &h,
        reqwest::Method::POST,
        "/oauth2/access_token",
        None,
        Some(body),
    )
    .await;
    assert_eq!(r.status, 401);

    // expire_tokens: issued access tokens stop working, the long-lived one does not.
    h.sim.set_faults(
        System::Amocrm,
        Faults {
            expire_tokens: true,
            ..Faults::default()
        },
    );
    let r = req(
        &h,
        reqwest::Method::GET,
        "/api/v4/account",
        Some(&access),
        None,
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(get(&h, "/api/v4/account").await.status, 200);
}

#[tokio::test]
async fn rate_limit_429_then_403_lockout() {
    let h = start_world(deals_world(3), true).await;
    h.sim.amo.set_lockout(Duration::from_millis(1500));
    // A burst of 12 at once: 7 pass, the rest get a plain-text 429.
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let url = format!("{}/api/v4/leads", h.amo_url());
        let token = h.sim.creds.amo_long_lived_token.clone();
        tasks.push(tokio::spawn(async move {
            let r = reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap();
            (status, body)
        }));
    }
    let mut ok = 0;
    let mut throttled = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            200 => ok += 1,
            429 => {
                throttled += 1;
                assert!(serde_json::from_str::<Value>(&body).is_err(), "{body}");
            }
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!(ok, 7);
    assert_eq!(throttled, 5);
    // Keep hammering: after more than 20 refusals within 10 s everything answers 403.
    let mut saw_403 = false;
    for _ in 0..40 {
        if get(&h, "/api/v4/leads").await.status == 403 {
            saw_403 = true;
            break;
        }
    }
    assert!(saw_403, "no lock-out after hammering");
    assert_eq!(get(&h, "/api/v4/account").await.status, 403);
    assert!(h.sim.stats()[&System::Amocrm].throttled >= 20);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(get(&h, "/api/v4/account").await.status, 200);
}

#[tokio::test]
async fn injected_faults() {
    let h = start(false).await;
    h.sim.set_faults(
        System::Amocrm,
        Faults {
            http_5xx: 1,
            throttle: 1,
            malformed_json: 1,
            ..Faults::default()
        },
    );
    let s = get(&h, "/api/v4/account").await.status;
    assert!(s == 502 || s == 503, "{s}");
    assert_eq!(get(&h, "/api/v4/account").await.status, 429);
    let r = get(&h, "/api/v4/account").await;
    assert_eq!(r.status, 200);
    assert!(serde_json::from_slice::<Value>(&r.body).is_err());
    assert_eq!(get(&h, "/api/v4/account").await.status, 200);
}

#[tokio::test]
async fn calls_endpoint_skips_unknown_numbers() {
    let h = start(false).await;
    let (phone, before) = {
        let w = h.sim.world();
        (
            w.contacts.values().next().unwrap().phones[0].clone(),
            w.activities.len(),
        )
    };
    let r = post(
        &h,
        "/api/v4/calls",
        json!([
            {"direction": "inbound", "uniq": "call-1", "duration": 65, "source": "dozor",
             "phone": phone, "call_status": 4, "request_id": "known"},
            {"direction": "outbound", "uniq": "call-2", "duration": 10, "source": "dozor",
             "phone": "79000000000", "call_status": 6, "request_id": "unknown"}
        ]),
    )
    .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    let calls = v["_embedded"]["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["request_id"], "known");
    assert!(calls[0]["entity_type"].is_string());
    let errors = v["_embedded"]["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["request_id"], "unknown");
    {
        let w = h.sim.world();
        assert_eq!(w.activities.len(), before + 1);
        assert!(
            w.activities
                .values()
                .any(|a| a.external_id.as_deref() == Some("call-1"))
        );
    }
    // Missing required field: validation error naming the item.
    let r = post(
        &h,
        "/api/v4/calls",
        json!([{"direction": "inbound", "duration": 1, "phone": phone, "request_id": "x"}]),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["validation-errors"][0]["request_id"], "x");
}

#[tokio::test]
async fn unsorted_items_and_actions() {
    let h = start(false).await;
    // The list holds the items awaiting a decision only.
    let pending = h
        .sim
        .world()
        .leads
        .values()
        .filter(|l| matches!(l.status, LeadStatus::New | LeadStatus::InProcess))
        .count();
    let v = get(&h, "/api/v4/leads/unsorted?limit=250").await.json();
    let items = v["_embedded"]["unsorted"].as_array().unwrap();
    assert_eq!(items.len(), pending);
    assert!(items.iter().all(|i| i["uid"].is_string()));
    assert!(
        items
            .iter()
            .all(|i| i["category"] == "sip" || i["category"] == "forms")
    );
    let v = get(
        &h,
        "/api/v4/leads/unsorted?filter[category][]=sip&limit=250",
    )
    .await
    .json();
    assert!(
        v["_embedded"]["unsorted"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["category"] == "sip" && i["metadata"]["phone"].is_string())
    );

    let r = post(
        &h,
        "/api/v4/leads/unsorted/sip",
        json!([{"source_uid": "pbx", "source_name": "АТС", "request_id": "s1",
                "metadata": {"from": "Клиент", "phone": "+79001112233", "called_at": 1700000000,
                             "duration": 30, "service_code": "pbx", "uniq": "u-1"}}]),
    )
    .await;
    assert_eq!(r.status, 200);
    let uid = r.json()["_embedded"]["unsorted"][0]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let v = get(&h, "/api/v4/leads/unsorted?limit=250").await.json();
    assert_eq!(
        v["_embedded"]["unsorted"].as_array().unwrap().len(),
        pending + 1
    );

    let r = post(
        &h,
        &format!("/api/v4/leads/unsorted/{uid}/accept"),
        json!({"user_id": 1}),
    )
    .await;
    assert_eq!(r.status, 200);
    let deal = r.json()["_embedded"]["leads"][0]["id"].as_u64().unwrap();
    let lead = get(&h, &format!("/api/v4/leads/{deal}")).await.json();
    assert_eq!(lead["id"], deal);
    assert!(lead["closed_at"].is_null());
    // Accepted, the item leaves the list.
    let v = get(&h, "/api/v4/leads/unsorted?limit=250").await.json();
    assert_eq!(
        v["_embedded"]["unsorted"].as_array().unwrap().len(),
        pending
    );

    // Decline another pending item: it leaves the list.
    let other = {
        let w = h.sim.world();
        let l = w
            .leads
            .values()
            .find(|l| matches!(l.status, LeadStatus::New | LeadStatus::InProcess))
            .unwrap();
        format!("unsorted-{}", l.id)
    };
    let token = h.sim.creds.amo_long_lived_token.clone();
    let r = req(
        &h,
        reqwest::Method::DELETE,
        &format!("/api/v4/leads/unsorted/{other}/decline"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    let v = get(&h, "/api/v4/leads/unsorted?limit=250").await.json();
    assert_eq!(
        v["_embedded"]["unsorted"].as_array().unwrap().len(),
        pending - 1
    );
}

#[tokio::test]
async fn writes_leads_tasks_notes() {
    let h = start_world(deals_world(3), false).await;
    let r = post(
        &h,
        "/api/v4/leads",
        json!([{"name": "Новая сделка", "price": 5000, "request_id": "r1"},
               {"name": "Вторая", "pipeline_id": AMO_PIPELINE_BASE, "status_id": 1001}]),
    )
    .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    let created = v["_embedded"]["leads"].as_array().unwrap();
    assert_eq!(created.len(), 2);
    assert_eq!(created[0]["request_id"], "r1");
    assert_eq!(created[1]["request_id"], "1");
    let id = created[0]["id"].as_u64().unwrap();

    // Invalid status: validation error with the item's request id.
    let r = post(
        &h,
        "/api/v4/leads",
        json!([{"name": "x", "status_id": 999_999, "request_id": "bad"}]),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["validation-errors"][0]["request_id"], "bad");

    let token = h.sim.creds.amo_long_lived_token.clone();
    let r = req(
        &h,
        reqwest::Method::PATCH,
        &format!("/api/v4/leads/{id}"),
        Some(&token),
        Some(json!({"status_id": 142, "pipeline_id": AMO_PIPELINE_BASE})),
    )
    .await;
    assert_eq!(r.status, 200);
    let lead = get(&h, &format!("/api/v4/leads/{id}")).await.json();
    assert_eq!(lead["status_id"], 142);
    assert!(lead["closed_at"].is_i64());

    let r = post(
        &h,
        "/api/v4/tasks",
        json!([{"text": "Позвонить", "complete_till": 1_900_000_000, "task_type_id": 1,
                "entity_type": "leads", "entity_id": id, "responsible_user_id": 1}]),
    )
    .await;
    assert_eq!(r.status, 200);
    let task = r.json()["_embedded"]["tasks"][0]["id"].as_u64().unwrap();
    let r = req(
        &h,
        reqwest::Method::PATCH,
        &format!("/api/v4/tasks/{task}"),
        Some(&token),
        Some(json!({"is_completed": true, "result": {"text": "Дозвонились"}})),
    )
    .await;
    assert_eq!(r.status, 200);
    let v = get(&h, &format!("/api/v4/tasks?filter[id]={task}"))
        .await
        .json();
    assert_eq!(v["_embedded"]["tasks"][0]["is_completed"], true);
    assert_eq!(v["_embedded"]["tasks"][0]["result"]["text"], "Дозвонились");

    let r = post(
        &h,
        &format!("/api/v4/leads/{id}/notes"),
        json!([{"note_type": "common", "params": {"text": "Привет"}}]),
    )
    .await;
    assert_eq!(r.status, 200);
    let v = get(&h, &format!("/api/v4/leads/{id}/notes")).await.json();
    let notes = v["_embedded"]["notes"].as_array().unwrap();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0]["note_type"], "common");
    assert_eq!(notes[0]["params"]["text"], "Привет");

    let r = post(
        &h,
        "/api/v4/contacts",
        json!([{"name": "Иван Иванов", "custom_fields_values": [{"field_code": "PHONE",
                "values": [{"value": "+7 900 111-22-33", "enum_code": "WORK"}]}]}]),
    )
    .await;
    assert_eq!(r.status, 200);
    let cid = r.json()["_embedded"]["contacts"][0]["id"].as_u64().unwrap();
    let v = get(&h, "/api/v4/contacts?query=9001112233").await.json();
    assert_eq!(v["_embedded"]["contacts"][0]["id"], cid);
}

/// The unsorted page's "add call" example is accepted as printed; a call without `uniq` is
/// refused with the field's path.
#[tokio::test]
async fn unsorted_call_example_from_the_docs() {
    let h = start(false).await;
    // As printed on the unsorted page
    // (https://www.amocrm.ru/developers/content/crm_platform/unsorted-api#unsorted-add-sip).
    let example = json!([{
        "source_name": "ООО Деппа",
        "source_uid": "a1fee7c0fc436088e64ba2e8822ba2b3",
        "created_at": 1510261200,
        "_embedded": {
            "leads": [{"name": "Тех обслуживание", "price": 5000}],
            "contacts": [{"name": "Контакт для примера"}],
            "companies": [{"name": "ООО Деппа"}]
        },
        "metadata": {
            "is_call_event_needed": true,
            "uniq": "a1fe231cc88e64ba2e8822ba2b3ewrw",
            "duration": 54,
            "service_code": "CkAvbEwPam6sad",
            "link": "https://deppa.ru",
            "phone": 79998888888u64,
            "called_at": 1510261200,
            "from": "onlinePBX"
        }
    }]);
    assert_eq!(
        post(&h, "/api/v4/leads/unsorted/sip", example.clone())
            .await
            .status,
        200
    );
    let mut no_uniq = example;
    no_uniq[0]["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("uniq");
    let r2 = post(&h, "/api/v4/leads/unsorted/sip", no_uniq).await;
    assert_eq!(r2.status, 400);
    assert_eq!(
        r2.json()["validation-errors"][0]["errors"][0]["path"],
        "metadata.uniq"
    );
}

/// The unsorted page's call metadata: `is_call_event_needed` "is not returned by the API but
/// may be passed; when true, an incoming call event is added to the card"
/// (https://www.amocrm.ru/developers/content/crm_platform/unsorted-api, «Добавление
/// неразобранного типа звонок»). The call lands on the card of the item's lead, which keeps it
/// once accepted; without the flag no call is added.
#[tokio::test]
async fn unsorted_call_puts_the_call_on_the_lead_card() {
    let h = start_world(deals_world(1), false).await;
    let item = |uniq: &str, flag: Option<bool>| {
        let mut m = json!({"from": "onlinePBX", "phone": 79998888888u64,
                           "called_at": 1700000000, "duration": 54,
                           "service_code": "CkAvbEwPam6sad", "uniq": uniq,
                           "link": "https://example.com"});
        if let Some(f) = flag {
            m["is_call_event_needed"] = json!(f);
        }
        json!([{"source_uid": uniq, "source_name": "АТС", "metadata": m}])
    };
    let r = post(&h, "/api/v4/leads/unsorted/sip", item("call-1", Some(true))).await;
    assert_eq!(r.status, 200);
    let lead = r.json()["_embedded"]["unsorted"][0]["_embedded"]["leads"][0]["id"]
        .as_u64()
        .unwrap();
    let notes = get(&h, &format!("/api/v4/leads/{lead}/notes")).await.json();
    let notes = notes["_embedded"]["notes"].as_array().unwrap();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0]["note_type"], "call_in");
    assert_eq!(notes[0]["params"]["uniq"], "call-1");
    assert_eq!(notes[0]["params"]["duration"], 54);
    // The flag is not echoed in the item.
    let v = get(
        &h,
        "/api/v4/leads/unsorted?limit=250&filter[category][]=sip",
    )
    .await
    .json();
    assert!(
        v["_embedded"]["unsorted"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["metadata"].get("is_call_event_needed").is_none())
    );

    let r = post(&h, "/api/v4/leads/unsorted/sip", item("call-2", None)).await;
    assert_eq!(r.status, 200);
    let lead = r.json()["_embedded"]["unsorted"][0]["_embedded"]["leads"][0]["id"]
        .as_u64()
        .unwrap();
    let r = get(&h, &format!("/api/v4/leads/{lead}/notes")).await;
    assert_eq!(r.status, 204, "no call without the flag");
}
