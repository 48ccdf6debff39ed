//! Conformance of the Bitrix24 fake with the fact sheet, over real HTTP.

mod common;

use std::collections::BTreeMap;

use chrono::{Duration, TimeZone, Utc};
use dozor_sim::world::*;
use dozor_sim::{self as sim, Faults, Sim, SimHandle, SimOptions, System};
use serde_json::{Value, json};

fn opts(limits: bool) -> SimOptions {
    SimOptions {
        enforce_limits: limits,
        ..common::anchored(7, common::march_noon())
    }
}

async fn start(limits: bool) -> SimHandle {
    common::start_sim(opts(limits)).await
}

async fn post(url: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn wh(h: &SimHandle, method: &str, body: Value) -> (u16, Value) {
    post(&format!("{}{method}", h.b24_webhook_url()), body).await
}

fn contacts_world(n: usize) -> World {
    let now = Utc.with_ymd_and_hms(2026, 1, 10, 9, 0, 0).unwrap();
    let mut w = World {
        next_id: 100,
        ..World::default()
    };
    w.users.push(common::anna(Role::Owner));
    for i in 0..n {
        let id = w.next_id();
        w.contacts.insert(
            id,
            SimContact {
                id,
                first_name: format!("C{i}"),
                last_name: "Test".into(),
                phones: vec![format!("+7999000{:04}", i)],
                emails: vec![],
                company_id: None,
                responsible_id: 1,
                tags: vec![],
                created_at: now,
                updated_at: now + Duration::minutes(i as i64),
            },
        );
    }
    w
}

#[tokio::test]
async fn envelope_paging_and_start_minus_one() {
    let h = start(false).await;
    let deals = h.sim.world().deals.len() as u64;
    assert!(deals > 100, "scale 1 world has {deals} deals");
    let (st, v) = wh(
        &h,
        "crm.deal.list",
        json!({"order": {"ID": "ASC"}, "start": 0}),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(v["result"].as_array().unwrap().len(), 50);
    assert_eq!(v["total"], json!(deals));
    assert_eq!(v["next"], json!(50));
    for k in [
        "start",
        "finish",
        "duration",
        "processing",
        "date_start",
        "date_finish",
        "operating_reset_at",
        "operating",
    ] {
        assert!(
            v["time"].get(k).is_some(),
            "time.{k} missing: {}",
            v["time"]
        );
    }
    assert!(
        v["time"]["date_start"]
            .as_str()
            .unwrap()
            .ends_with("+03:00")
    );
    // Ascending ids, strings.
    let ids: Vec<u64> = v["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ID"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    // Last page: no `next`.
    let last_start = (deals - 1) / 50 * 50;
    let (_, v) = wh(&h, "crm.deal.list", json!({"start": last_start})).await;
    assert_eq!(
        v["result"].as_array().unwrap().len() as u64,
        deals - last_start
    );
    assert!(v.get("next").is_none());
    // start=-1: no count.
    let (_, v) = wh(
        &h,
        "crm.deal.list",
        json!({"order": {"ID": "ASC"}, "filter": {">ID": ids[9]}, "start": -1}),
    )
    .await;
    assert_eq!(v["total"], json!(0));
    assert!(v.get("next").is_none());
    assert_eq!(v["result"].as_array().unwrap().len(), 50);
    assert_eq!(v["result"][0]["ID"], json!(ids[10].to_string()));
    // Empty list.
    let (st, v) = wh(&h, "crm.deal.list", json!({"filter": {">ID": 99_999_999}})).await;
    assert_eq!(st, 200);
    assert_eq!(v["result"], json!([]));
    assert_eq!(v["total"], json!(0));
    // Query string, form body and `.json` suffix work too.
    let url = format!(
        "{}crm.deal.list.json?filter%5B%3EID%5D={}&start=-1",
        h.b24_webhook_url(),
        ids[48]
    );
    let v: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    assert_eq!(v["result"][0]["ID"], json!(ids[49].to_string()));
    let v: Value = reqwest::Client::new()
        .post(format!("{}crm.deal.list", h.b24_webhook_url()))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!(
            "filter[>ID]={}&select[]=ID&select[]=TITLE",
            ids[48]
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["result"][0].as_object().unwrap().len(), 2);
}

#[tokio::test]
async fn exactly_fifty_rows_have_no_next() {
    let h = sim::start_with(
        Sim::with_world(opts(false), contacts_world(50)),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let (_, v) = wh(&h, "crm.contact.list", json!({"start": 0})).await;
    assert_eq!(v["result"].as_array().unwrap().len(), 50);
    assert_eq!(v["total"], json!(50));
    assert!(v.get("next").is_none());
}

#[tokio::test]
async fn filters_formats_and_multifields() {
    let h = start(false).await;
    let (open_id, won_id, contact_id, since) = {
        let w = h.sim.world();
        let open = w.deals.values().find(|d| d.closed_at.is_none()).unwrap().id;
        let won = w
            .deals
            .values()
            .find(|d| w.stage(d.stage_id).unwrap().1.kind == StageKind::Won)
            .unwrap()
            .id;
        let c = *w.contacts.keys().next().unwrap();
        let mut mods: Vec<_> = w.deals.values().map(|d| d.updated_at).collect();
        mods.sort();
        (open, won, c, mods[mods.len() - 10])
    };
    let (_, v) = wh(&h, "crm.deal.get", json!({"id": open_id})).await;
    let d = &v["result"];
    assert_eq!(d["ID"], json!(open_id.to_string()));
    assert!(d["ASSIGNED_BY_ID"].is_string());
    let opp = d["OPPORTUNITY"].as_str().unwrap();
    assert!(opp.split_once('.').unwrap().1.len() == 2, "{opp}");
    assert!(d["DATE_CREATE"].as_str().unwrap().ends_with("+03:00"));
    assert_eq!(d["CLOSEDATE"], json!(""));
    assert_eq!(d["CLOSED"], json!("N"));
    assert_eq!(d["STAGE_SEMANTIC_ID"], json!("P"));
    let (_, v) = wh(&h, "crm.deal.get", json!({"id": won_id})).await;
    assert_eq!(v["result"]["STAGE_SEMANTIC_ID"], json!("S"));
    assert_eq!(v["result"]["CLOSED"], json!("Y"));

    // >=DATE_MODIFY
    let iso = since.with_timezone(&chrono::FixedOffset::east_opt(3 * 3600).unwrap());
    let (_, v) = wh(
        &h,
        "crm.deal.list",
        json!({"filter": {">=DATE_MODIFY": iso.to_rfc3339()}}),
    )
    .await;
    assert!(v["total"].as_u64().unwrap() >= 10);
    for r in v["result"].as_array().unwrap() {
        let t = chrono::DateTime::parse_from_rfc3339(r["DATE_MODIFY"].as_str().unwrap()).unwrap();
        assert!(t >= iso);
    }
    // @ID, !, CATEGORY_ID, %
    let (_, v) = wh(
        &h,
        "crm.deal.list",
        json!({"filter": {"@ID": [open_id, won_id]}}),
    )
    .await;
    assert_eq!(v["total"], json!(2));
    let (_, v) = wh(
        &h,
        "crm.deal.list",
        json!({"filter": {"CATEGORY_ID": 1, "!STAGE_ID": "C1:WON"}, "start": 0}),
    )
    .await;
    for r in v["result"].as_array().unwrap() {
        assert_eq!(r["CATEGORY_ID"], json!("1"));
        assert!(r["STAGE_ID"].as_str().unwrap().starts_with("C1:"));
        assert_ne!(r["STAGE_ID"], json!("C1:WON"));
    }
    let (_, v) = wh(
        &h,
        "crm.deal.list",
        json!({"filter": {"%TITLE": open_id.to_string()}}),
    )
    .await;
    assert_eq!(v["total"], json!(1));

    // Multi-fields only when selected explicitly.
    let f = json!({"ID": contact_id});
    let (_, v) = wh(
        &h,
        "crm.contact.list",
        json!({"filter": f, "select": ["*"]}),
    )
    .await;
    assert!(v["result"][0].get("PHONE").is_none());
    assert_eq!(v["result"][0]["HAS_PHONE"], json!("Y"));
    let (_, v) = wh(
        &h,
        "crm.contact.list",
        json!({"filter": f, "select": ["*", "PHONE"]}),
    )
    .await;
    let phone = &v["result"][0]["PHONE"][0];
    assert_eq!(phone["TYPE_ID"], json!("PHONE"));
    assert!(phone["ID"].is_string() && phone["VALUE"].is_string());
    assert!(v["result"][0].get("EMAIL").is_none());
}

#[tokio::test]
async fn batch_maps_references_and_limits() {
    let h = start(false).await;
    let (st, v) = wh(
        &h,
        "batch",
        json!({"halt": 0, "cmd": {
            "deals": "crm.deal.list?filter[>ID]=0&order[ID]=ASC&select[]=ID&select[]=CONTACT_ID",
            "first": "crm.contact.get?id=$result[deals][0][CONTACT_ID]",
            "bad": "crm.deal.get?id=1",
        }}),
    )
    .await;
    assert_eq!(st, 200);
    let r = &v["result"];
    assert_eq!(r["result"]["deals"].as_array().unwrap().len(), 50);
    assert_eq!(
        r["result"]["first"]["ID"],
        r["result"]["deals"][0]["CONTACT_ID"]
    );
    assert_eq!(
        r["result_error"]["bad"]["error_description"],
        json!("Not found")
    );
    assert!(r["result_total"]["deals"].as_u64().unwrap() > 50);
    assert_eq!(r["result_next"]["deals"], json!(50));
    assert!(r["result_time"]["deals"]["operating"].is_number());

    // Empty maps are PHP empty arrays.
    let (_, v) = wh(&h, "batch", json!({"cmd": {"p": "profile"}})).await;
    assert_eq!(v["result"]["result_error"], json!([]));
    assert_eq!(v["result"]["result_total"], json!([]));
    assert_eq!(v["result"]["result_next"], json!([]));
    assert!(v["result"]["result"]["p"]["ID"].is_string());

    // halt stops at the first failure.
    let (_, v) = wh(
        &h,
        "batch",
        json!({"halt": 1, "cmd": {"a": "crm.deal.get?id=1", "b": "profile"}}),
    )
    .await;
    assert!(v["result"]["result_error"]["a"].is_object());
    assert_eq!(v["result"]["result"], json!([]));

    // Too many commands; nested batch.
    let cmd: BTreeMap<String, String> = (0..51)
        .map(|i| (format!("c{i}"), "profile".to_string()))
        .collect();
    let (st, v) = wh(&h, "batch", json!({"cmd": cmd})).await;
    assert_eq!(st, 400);
    assert_eq!(v["error"], json!("ERROR_BATCH_LENGTH_EXCEEDED"));
    let (st, v) = wh(&h, "batch", json!({"cmd": {"x": "batch?cmd[y]=profile"}})).await;
    assert_eq!(st, 405);
    assert_eq!(v["error"], json!("ERROR_BATCH_METHOD_NOT_ALLOWED"));
    // One HTTP request per batch in the stats.
    let stats = h.sim.stats()[&System::Bitrix24].clone();
    assert_eq!(stats.by_method["batch"], 5);
}

#[tokio::test]
async fn auth_errors_and_unknown_method() {
    let h = start(false).await;
    let (st, v) = post(
        &format!("{}/b24/rest/1/wrong-secret/profile", h.base_url()),
        json!({}),
    )
    .await;
    // bitrix24/b24restdocs `_includes/system-errors.md`: `NO_AUTH_FOUND`, 401, "Wrong
    // authorization data" (an invalid access token or webhook code).
    assert_eq!(st, 401);
    assert_eq!(v["error"], json!("NO_AUTH_FOUND"));
    assert_eq!(v["error_description"], json!("Wrong authorization data"));
    let (st, v) = post(
        &format!("{}/b24/rest/profile", h.base_url()),
        json!({"auth": "nope"}),
    )
    .await;
    assert_eq!(st, 401);
    assert_eq!(v["error"], json!("invalid_token"));
    let (st, v) = wh(&h, "crm.nothing.here", json!({})).await;
    assert_eq!(st, 404);
    assert_eq!(v["error"], json!("ERROR_METHOD_NOT_FOUND"));
    let (st, v) = wh(
        &h,
        "telephony.externalCall.register",
        json!({"USER_ID": 1, "PHONE_NUMBER": "+79990000000", "TYPE": 2}),
    )
    .await;
    assert!(st == 400 || st == 403, "{st}");
    assert_eq!(v["error"], json!("WRONG_AUTH_TYPE"));
    // Deleted (absent) record: empty code, text only.
    let gone = h.sim.world().deals.keys().next().copied().unwrap();
    h.sim.world().deals.remove(&gone);
    let (st, v) = wh(&h, "crm.deal.get", json!({"id": gone})).await;
    assert_eq!(st, 400);
    assert_eq!(v["error"], json!(""));
    assert_eq!(v["error_description"], json!("Not found"));
}

#[tokio::test]
async fn rate_limit_burst_gets_503() {
    let h = start(true).await;
    let client = reqwest::Client::new();
    let url = format!("{}profile", h.b24_webhook_url());
    let mut codes = Vec::new();
    for _ in 0..56 {
        let r = client.post(&url).json(&json!({})).send().await.unwrap();
        let st = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        if st == 503 {
            assert_eq!(v["error"], json!("QUERY_LIMIT_EXCEEDED"));
        }
        codes.push(st);
    }
    assert!(codes[..50].iter().all(|c| *c == 200), "{codes:?}");
    assert!(codes.contains(&503), "{codes:?}");
    assert!(h.sim.stats()[&System::Bitrix24].throttled > 0);
}

#[tokio::test]
async fn oauth_refresh_rotation_and_telephony() {
    let h = start(false).await;
    let c = h.sim.creds.clone();
    let token_url = |refresh: &str| {
        format!(
            "{}/b24/oauth/token/?grant_type=refresh_token&client_id={}&client_secret={}&refresh_token={refresh}",
            h.base_url(),
            c.b24_client_id,
            c.b24_client_secret
        )
    };
    let r = reqwest::get(token_url(&c.b24_refresh_token)).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let t: Value = r.json().await.unwrap();
    assert_eq!(t["expires_in"], json!(3600));
    assert_eq!(
        t["client_endpoint"],
        json!(format!("{}/b24/rest/", h.base_url()))
    );
    let refresh1 = t["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(refresh1, c.b24_refresh_token);
    // The old refresh token is dead now.
    let r = reqwest::get(token_url(&c.b24_refresh_token)).await.unwrap();
    assert!(matches!(r.status().as_u16(), 400 | 401));
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"], json!("invalid_grant"));
    // The access token works for app calls.
    let access = t["access_token"].as_str().unwrap().to_string();
    let ep = t["client_endpoint"].as_str().unwrap();
    let (st, v) = post(&format!("{ep}profile"), json!({"auth": access})).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["result"]["ID"], json!("1"));
    let v: Value = reqwest::get(format!("{ep}profile.json?auth={access}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["result"]["ID"], json!("1"));

    // Telephony works in app context and creates a call activity.
    let contact = h.sim.world().contacts.values().next().unwrap().clone();
    let (st, v) = post(
        &format!("{ep}telephony.externalCall.register"),
        json!({"auth": access, "USER_ID": contact.responsible_id, "PHONE_NUMBER": contact.phones[0],
               "TYPE": 2, "CALL_START_DATE": "2026-03-02T10:00:00+03:00", "EXTERNAL_CALL_ID": "ext-42"}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["result"]["CRM_ENTITY_TYPE"], json!("CONTACT"));
    let call_id = v["result"]["CALL_ID"].as_str().unwrap().to_string();
    let (st, v) = post(
        &format!("{ep}telephony.externalCall.finish"),
        json!({"auth": access, "CALL_ID": call_id, "USER_ID": contact.responsible_id, "DURATION": 65}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let act: u64 = v["result"]["CRM_ACTIVITY_ID"].as_u64().unwrap();
    let (_, v) = post(
        &format!("{ep}crm.activity.list"),
        json!({"auth": access, "filter": {"ID": act}, "select": ["*", "COMMUNICATIONS"]}),
    )
    .await;
    let row = &v["result"][0];
    assert_eq!(row["TYPE_ID"], json!("2"));
    assert_eq!(row["DIRECTION"], json!("1"));
    assert_eq!(row["ORIGIN_ID"], json!("ext-42"));
    assert_eq!(row["OWNER_TYPE_ID"], json!("3"));
    assert_eq!(row["COMMUNICATIONS"][0]["VALUE"], json!(contact.phones[0]));

    // expire_tokens: issued access tokens answer expired_token.
    h.sim.set_faults(
        System::Bitrix24,
        Faults {
            expire_tokens: true,
            ..Faults::default()
        },
    );
    let (st, v) = post(&format!("{ep}profile"), json!({"auth": access})).await;
    assert_eq!(st, 401);
    assert_eq!(v["error"], json!("expired_token"));
}

#[tokio::test]
async fn writes_land_in_the_world() {
    let h = start(false).await;
    let (deal_id, contact) = {
        let w = h.sim.world();
        (
            *w.deals.keys().next().unwrap(),
            w.contacts.values().next().unwrap().clone(),
        )
    };
    // tasks: UPPER in, camelCase out.
    let (_, v) = wh(
        &h,
        "tasks.task.add",
        json!({"fields": {"TITLE": "Call back", "RESPONSIBLE_ID": 5, "DESCRIPTION": "marker-1",
                          "DEADLINE": "2026-03-03T18:00:00+03:00", "UF_CRM_TASK": [format!("D_{deal_id}")]}}),
    )
    .await;
    let task = &v["result"]["task"];
    let tid: u64 = task["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(task["ufCrmTask"], json!([format!("D_{deal_id}")]));
    assert_eq!(task["responsibleId"], json!("5"));
    {
        let w = h.sim.world();
        let t = &w.tasks[&tid];
        assert_eq!(t.binding, Some((Owner::Deal, deal_id)));
        assert_eq!(t.description, "marker-1");
    }
    let (_, v) = wh(
        &h,
        "tasks.task.list",
        json!({"filter": {"ID": tid}, "select": ["ID", "TITLE", "UF_CRM_TASK"]}),
    )
    .await;
    assert_eq!(v["result"]["tasks"][0]["title"], json!("Call back"));
    assert!(v["result"]["tasks"][0].get("description").is_none());

    // Timeline comments accept only lowercase `fields`.
    let (st, _) = wh(
        &h,
        "crm.timeline.comment.add",
        json!({"FIELDS": {"ENTITY_ID": deal_id, "ENTITY_TYPE": "deal", "COMMENT": "x"}}),
    )
    .await;
    assert_eq!(st, 400);
    let (st, v) = wh(
        &h,
        "crm.timeline.comment.add",
        json!({"fields": {"ENTITY_ID": deal_id, "ENTITY_TYPE": "deal", "COMMENT": "hello"}}),
    )
    .await;
    assert_eq!(st, 200);
    assert!(v["result"].is_u64());
    assert!(h.sim.world().comments.iter().any(|c| c.2 == "hello"));

    // Duplicates by phone: hits in any shape, `[]` without.
    let digits = World::phone_key(&contact.phones[0]);
    let (_, v) = wh(
        &h,
        "crm.duplicate.findbycomm",
        json!({"type": "PHONE", "values": [format!("8{}", &digits[1..])]}),
    )
    .await;
    assert!(
        v["result"]["CONTACT"]
            .as_array()
            .unwrap()
            .contains(&json!(contact.id))
    );
    let (_, v) = wh(
        &h,
        "crm.duplicate.findbycomm",
        json!({"type": "PHONE", "values": ["+70000000001"]}),
    )
    .await;
    assert_eq!(v["result"], json!([]));

    // Deal update changes the world.
    let (_, v) = wh(
        &h,
        "crm.deal.update",
        json!({"id": deal_id, "fields": {"STAGE_ID": "WON"}}),
    )
    .await;
    assert_eq!(v["result"], json!(true));
    let (_, v) = wh(&h, "crm.deal.get", json!({"id": deal_id})).await;
    assert_eq!(v["result"]["STAGE_SEMANTIC_ID"], json!("S"));

    // Statuses and categories.
    let (_, v) = wh(
        &h,
        "crm.status.list",
        json!({"filter": {"ENTITY_ID": "DEAL_STAGE_1"}}),
    )
    .await;
    assert!(
        v["result"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["STATUS_ID"] == json!("C1:WON") && r["SEMANTICS"] == json!("S"))
    );
    let (_, v) = wh(&h, "crm.category.list", json!({"entityTypeId": 2})).await;
    assert_eq!(v["result"]["categories"][0]["id"], json!(0));
    let (_, v) = wh(&h, "user.get", json!({"sort": "ID", "order": "DESC"})).await;
    let users = v["result"].as_array().unwrap();
    assert!(users[0]["ID"].as_str().unwrap().parse::<u64>().unwrap() > 1);
    assert_eq!(users[0]["ACTIVE"], json!(true));
}

#[tokio::test]
async fn injected_faults() {
    let h = start(false).await;
    h.sim.set_faults(
        System::Bitrix24,
        Faults {
            http_5xx: 1,
            throttle: 1,
            malformed_json: 1,
            ..Faults::default()
        },
    );
    let (st, v) = wh(&h, "profile", json!({})).await;
    assert_eq!(
        (st, v["error"].clone()),
        (500, json!("INTERNAL_SERVER_ERROR"))
    );
    let (st, v) = wh(&h, "profile", json!({})).await;
    assert_eq!(
        (st, v["error"].clone()),
        (503, json!("QUERY_LIMIT_EXCEEDED"))
    );
    let (st, v) = wh(&h, "profile", json!({})).await;
    assert_eq!(st, 200);
    assert!(v.is_string(), "truncated body must not parse");
    let (st, _) = wh(&h, "profile", json!({})).await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn operating_time_limit_and_deletions() {
    let h = start(true).await;
    let (st, v) = wh(&h, "crm.deal.list", json!({"start": 0})).await;
    assert_eq!(st, 200);
    let op = v["time"]["operating"].as_f64().unwrap();
    assert!(op > 0.0, "list calls cost operating time");
    assert!(v["time"]["operating_reset_at"].as_i64().unwrap() > Utc::now().timestamp());
    // Push the method over its 480 s budget: 429 for it, others still work.
    h.sim.b24.charge_operating("crm.deal.list", 500.0);
    let (st, v) = wh(&h, "crm.deal.list", json!({"start": 0})).await;
    assert_eq!(st, 429);
    assert_eq!(v["error"], json!("OPERATION_TIME_LIMIT"));
    let (st, _) = wh(&h, "crm.lead.list", json!({"start": 0})).await;
    assert_eq!(st, 200);
    // In a batch the limit hits only that command.
    let (st, v) = wh(
        &h,
        "batch",
        json!({"cmd": {"d": "crm.deal.list", "l": "crm.lead.list?start=-1"}}),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        v["result"]["result_error"]["d"]["error"],
        json!("OPERATION_TIME_LIMIT")
    );
    assert_eq!(v["result"]["result"]["l"].as_array().unwrap().len(), 50);

    // A record in world.deletions answers Not found and leaves lists.
    let (id, before) = {
        let mut w = h.sim.world();
        let id = *w.leads.keys().next().unwrap();
        w.deletions.push(Deletion {
            owner: Owner::Lead,
            id,
            at: Utc::now(),
        });
        (id, w.leads.len() as u64)
    };
    let (st, v) = wh(&h, "crm.lead.get", json!({"id": id})).await;
    assert_eq!(
        (st, v["error_description"].clone()),
        (400, json!("Not found"))
    );
    let (_, v) = wh(&h, "crm.lead.list", json!({"start": 0})).await;
    assert_eq!(v["total"], json!(before - 1));
}

/// bitrix24/b24restdocs `api-reference/common/system/scope.md`: `scope` lists the granted
/// scopes (the page's example answer: department, entity, log, user), `full` every scope of
/// the portal. `settings/how-to-call-rest-api/batch.md`, "Error Example (halt = 0)" and
/// "(halt = 1)": the documented request refused per command, answers transcribed from the page.
#[tokio::test]
async fn limited_scopes_answer_as_the_docs_show() {
    let h = start(false).await;
    h.sim
        .b24
        .limit_scopes(&["department", "entity", "log", "user"]);
    let (st, v) = wh(&h, "scope", json!({})).await;
    assert_eq!(st, 200);
    assert_eq!(v["result"], json!(["department", "entity", "log", "user"]));
    let (_, v) = wh(&h, "scope", json!({"full": true})).await;
    assert!(
        v["result"].as_array().unwrap().contains(&json!("crm")),
        "{v}"
    );

    h.sim.b24.limit_scopes(&["crm"]);
    let cmd = json!({
        "get_user": "user.current",
        "get_department": "department.get?ID=$result[get_user][UF_DEPARTMENT][0]"
    });
    let (st, v) = wh(&h, "batch", json!({"halt": 0, "cmd": cmd})).await;
    assert_eq!(st, 200, "a batch is answered 200 whatever its commands did");
    let refused = json!({"error": "insufficient_scope", "error_description": ""});
    assert_eq!(v["result"]["result"], json!([]));
    assert_eq!(
        v["result"]["result_error"],
        json!({"get_user": refused, "get_department": refused})
    );
    for k in ["result_total", "result_next", "result_time"] {
        assert_eq!(v["result"][k], json!([]), "{k}");
    }
    // The body as the page writes it: commands in this order (json! would sort the keys).
    let body = r#"{"halt": 1, "cmd": {"get_user": "user.current", "get_department": "department.get?ID=$result[get_user][UF_DEPARTMENT][0]"}}"#;
    let v: Value = reqwest::Client::new()
        .post(format!("{}batch", h.b24_webhook_url()))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["result"]["result_error"], json!({"get_user": refused}));

    // The same method called directly: HTTP 403 and the text of system-errors.md.
    let (st, v) = wh(&h, "user.current", json!({})).await;
    assert_eq!(st, 403);
    assert_eq!(v["error"], json!("insufficient_scope"));
    assert_eq!(
        v["error_description"],
        json!("The request requires higher privileges than provided by the webhook token")
    );
}

/// What the Bitrix24 client writes, read back as PHP reads it: every list (`select[]`, lists of
/// objects as `[0]`, `[1]`) arrives as a list, keys and values whole, numbers and booleans as
/// PHP's strings.
#[test]
fn client_encoding_reads_back_as_php_reads_it() {
    use dozor::http::php_query::build;
    use dozor_sim::php_query::parse;
    let sent = json!({
        "filter": {">=DATE_MODIFY": "2024-01-15T10:00:00+03:00", "@ID": [1, 2, 3], "!STAGE_ID": "C1:WON"},
        "order": {"ID": "ASC"},
        "select": ["ID", "TITLE", "UF_*"],
        "fields": {"PHONE": [{"VALUE": "+7 (912) 000-11-22", "VALUE_TYPE": "WORK"}],
                   "COMMENTS": "a&b=c [d] 100%", "OPENED": true, "OPPORTUNITY": 1500.5},
        "start": -1,
    });
    assert_eq!(
        parse(&build(&sent)),
        json!({
            "filter": {">=DATE_MODIFY": "2024-01-15T10:00:00+03:00", "@ID": ["1", "2", "3"], "!STAGE_ID": "C1:WON"},
            "order": {"ID": "ASC"},
            "select": ["ID", "TITLE", "UF_*"],
            "fields": {"PHONE": [{"VALUE": "+7 (912) 000-11-22", "VALUE_TYPE": "WORK"}],
                       "COMMENTS": "a&b=c [d] 100%", "OPENED": "1", "OPPORTUNITY": "1500.5"},
            "start": "-1",
        })
    );
}
