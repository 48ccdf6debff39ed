//! Raw HTTP conformance of the CoMagic and Calltouch fakes with the API fact sheets.

mod common;

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Europe::Moscow;
use dozor_sim::world::Dir;
use dozor_sim::{self as sim, Faults, SimHandle, SimOptions, System};
use serde_json::{Value, json};

fn anchor() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 15, 9, 0, 0).unwrap()
}

async fn start(enforce: bool) -> SimHandle {
    sim::start(
        SimOptions {
            enforce_limits: enforce,
            ..common::anchored(7, anchor())
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap()
}

async fn rpc_raw(h: &SimHandle, body: &str) -> (u16, Vec<u8>) {
    let r = reqwest::Client::new()
        .post(h.comagic_url())
        .header("content-type", "application/json; charset=UTF-8")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

async fn rpc(h: &SimHandle, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": "t-1", "method": method, "params": params});
    let (_, b) = rpc_raw(h, &body.to_string()).await;
    serde_json::from_slice(&b).unwrap()
}

fn token(h: &SimHandle) -> String {
    h.sim.creds.comagic_access_token.clone()
}

fn msk(ts: DateTime<Utc>) -> String {
    ts.with_timezone(&Moscow)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

fn err_of(v: &Value) -> (i64, String) {
    (
        v["error"]["code"].as_i64().unwrap_or(0),
        v["error"]["data"]["mnemonic"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

#[tokio::test]
async fn comagic_calls_report_envelope_fields_and_limits() {
    let h = start(false).await;
    let from = anchor() - Duration::days(31);
    let till = anchor();
    let expected: Vec<u64> = {
        let w = h.sim.world();
        w.calls
            .values()
            .filter(|c| c.start >= from && c.start <= till)
            .map(|c| c.id)
            .collect()
    };
    assert!(expected.len() > 100, "world has calls: {}", expected.len());
    let v = rpc(
        &h,
        "get.calls_report",
        json!({
            "access_token": token(&h),
            "date_from": msk(from),
            "date_till": msk(till),
            "fields": ["id", "start_time", "direction", "is_lost", "contact_phone_number", "employees"],
            "limit": 10000,
        }),
    )
    .await;
    assert_eq!(v["jsonrpc"], "2.0");
    assert_eq!(v["id"], "t-1");
    let data = v["result"]["data"].as_array().unwrap();
    assert_eq!(data.len(), expected.len());
    assert_eq!(
        v["result"]["metadata"]["total_items"].as_u64().unwrap() as usize,
        expected.len()
    );
    let limits = &v["result"]["metadata"]["limits"];
    for k in [
        "day_limit",
        "day_remaining",
        "day_reset",
        "minute_limit",
        "minute_remaining",
        "minute_reset",
    ] {
        assert!(limits[k].is_u64(), "limits.{k} is a number: {limits}");
    }
    let mut got: Vec<u64> = data.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    got.sort();
    let mut exp = expected.clone();
    exp.sort();
    assert_eq!(got, exp);
    // Only the requested columns, in the documented shapes; default order is start_time asc.
    let mut prev = String::new();
    for r in data {
        let o = r.as_object().unwrap();
        assert_eq!(o.len(), 6, "{r}");
        let st = r["start_time"].as_str().unwrap();
        NaiveDateTime::parse_from_str(st, "%Y-%m-%d %H:%M:%S").unwrap();
        assert!(st >= prev.as_str());
        prev = st.to_string();
        assert!(matches!(r["direction"].as_str(), Some("in") | Some("out")));
        assert!(r["is_lost"].is_boolean());
        assert!(
            r["contact_phone_number"]
                .as_str()
                .unwrap()
                .chars()
                .all(|c| c.is_ascii_digit())
        );
        for e in r["employees"].as_array().unwrap() {
            assert!(e["employee_id"].is_u64() && e["employee_full_name"].is_string());
            assert!(e["is_answered"].is_boolean() && e["is_talked"].is_boolean());
        }
    }
    // The wall clock is Moscow time of the world's instant.
    let first = {
        let w = h.sim.world();
        let id = data[0]["id"].as_u64().unwrap();
        w.calls[&id].start
    };
    assert_eq!(data[0]["start_time"], msk(first));

    // Default field set has the documented columns but not the non-default ones.
    let v = rpc(
        &h,
        "get.calls_report",
        json!({"access_token": token(&h), "date_from": msk(from), "date_till": msk(till), "limit": 1}),
    )
    .await;
    let row = &v["result"]["data"][0];
    for k in [
        "id",
        "finish_time",
        "talk_duration",
        "wait_duration",
        "total_duration",
        "virtual_phone_number",
        "call_records",
        "full_record_file_link",
        "communication_id",
        "source",
    ] {
        assert!(row.get(k).is_some(), "default set has {k}: {row}");
    }
    // Not "Ответ по умолчанию" on data_api/report/get_calls_report/index.html: asked for by name.
    for k in [
        "communication_page_url",
        "first_answered_employee_id",
        "employees",
        "utm_source",
    ] {
        assert!(row.get(k).is_none(), "default set lacks {k}: {row}");
    }
    // Paging: limit + offset walk the same ordered list.
    let page = |offset: u64| {
        rpc(
            &h,
            "get.calls_report",
            json!({"access_token": token(&h), "date_from": msk(from), "date_till": msk(till),
                   "fields": ["id"], "limit": 50, "offset": offset}),
        )
    };
    let p1 = page(0).await;
    let p2 = page(50).await;
    let ids1: Vec<u64> = p1["result"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    let ids2: Vec<u64> = p2["result"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids1.len(), 50);
    assert_eq!(ids2.len(), 50);
    assert!(ids1.iter().all(|i| !ids2.contains(i)));
}

#[tokio::test]
async fn comagic_filters_and_sort() {
    let h = start(false).await;
    let from = anchor() - Duration::days(31);
    let till = anchor();
    let lost_in = {
        let w = h.sim.world();
        w.calls
            .values()
            .filter(|c| c.start >= from && c.start <= till && c.is_lost && c.direction == Dir::In)
            .count()
    };
    let v = rpc(
        &h,
        "get.calls_report",
        json!({"access_token": token(&h), "date_from": msk(from), "date_till": msk(till),
               "fields": ["id", "is_lost", "direction"],
               "filter": {"filters": [
                   {"field": "is_lost", "operator": "=", "value": true},
                   {"field": "direction", "operator": "in", "value": ["in"]}
               ], "condition": "and"}}),
    )
    .await;
    let data = v["result"]["data"].as_array().unwrap();
    assert_eq!(data.len(), lost_in);
    assert!(
        data.iter()
            .all(|r| r["is_lost"] == true && r["direction"] == "in")
    );
    // Simple filter, != and sort desc.
    let v = rpc(
        &h,
        "get.calls_report",
        json!({"access_token": token(&h), "date_from": msk(from), "date_till": msk(till),
               "fields": ["id", "start_time", "direction"],
               "filter": {"field": "direction", "operator": "!=", "value": "in"},
               "sort": [{"field": "start_time", "order": "desc"}]}),
    )
    .await;
    let data = v["result"]["data"].as_array().unwrap();
    assert!(!data.is_empty());
    assert!(data.iter().all(|r| r["direction"] == "out"));
    assert!(
        data.windows(2)
            .all(|w| w[0]["start_time"].as_str() >= w[1]["start_time"].as_str())
    );
    // is_null on a column that is null for lost calls.
    let v = rpc(
        &h,
        "get.calls_report",
        json!({"access_token": token(&h), "date_from": msk(from), "date_till": msk(till),
               "fields": ["id", "is_lost", "first_answered_employee_id"],
               "filter": {"field": "first_answered_employee_id", "operator": "is_null", "value": null}}),
    )
    .await;
    let data = v["result"]["data"].as_array().unwrap();
    assert!(!data.is_empty());
    assert!(
        data.iter()
            .all(|r| r["first_answered_employee_id"].is_null())
    );
    // Filtering on a column the docs do not mark filterable (the recordings) is prohibited.
    let v = rpc(
        &h,
        "get.calls_report",
        json!({"access_token": token(&h), "date_from": msk(from), "date_till": msk(till),
               "filter": {"field": "call_records", "operator": "=", "value": "x"}}),
    )
    .await;
    assert_eq!(err_of(&v), (-32602, "filter_prohibited".into()));
}

#[tokio::test]
async fn comagic_error_cases() {
    let h = start(false).await;
    let from = anchor() - Duration::days(5);
    let good =
        json!({"access_token": token(&h), "date_from": msk(from), "date_till": msk(anchor())});

    let (_, b) = rpc_raw(&h, "{\"jsonrpc\": \"2.0\", ").await;
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["error"]["code"], -32700);

    let batch = json!([{"jsonrpc": "2.0", "id": 1, "method": "get.account", "params": {"access_token": token(&h)}}]);
    let (_, b) = rpc_raw(&h, &batch.to_string()).await;
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(
        err_of(&v),
        (-32099, "batch_opreations_not_supported".into())
    );

    let note =
        json!({"jsonrpc": "2.0", "method": "get.account", "params": {"access_token": token(&h)}});
    let (_, b) = rpc_raw(&h, &note.to_string()).await;
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(err_of(&v), (-32099, "notifications_not_supported".into()));

    let v = rpc(&h, "get.nothing", good.clone()).await;
    assert_eq!(v["error"]["code"], -32601);

    let v = rpc(
        &h,
        "get.calls_report",
        json!({"access_token": "wrong", "date_from": msk(from), "date_till": msk(anchor())}),
    )
    .await;
    assert_eq!(err_of(&v), (-32001, "access_token_invalid".into()));

    let mut p = good.clone();
    p["fields"] = json!(["id", "no_such_column"]);
    let v = rpc(&h, "get.calls_report", p).await;
    assert_eq!(err_of(&v), (-32602, "unexpected_parameters".into()));

    let mut p = good.clone();
    p["colour"] = json!("red");
    let v = rpc(&h, "get.calls_report", p).await;
    assert_eq!(err_of(&v), (-32602, "unexpected_parameters".into()));

    let v = rpc(
        &h,
        "get.calls_report",
        json!({"access_token": token(&h), "date_from": "2026-01-01 00:00:00", "date_till": "2026-04-02 00:00:00"}),
    )
    .await;
    assert_eq!(err_of(&v), (-32602, "date_interval_limit_reached".into()));
    // Exactly three months is allowed.
    let v = rpc(
        &h,
        "get.calls_report",
        json!({"access_token": token(&h), "date_from": "2026-01-01 00:00:00", "date_till": "2026-04-01 00:00:00", "limit": 1}),
    )
    .await;
    assert!(v.get("result").is_some(), "{v}");

    let mut p = good.clone();
    p["offset"] = json!(100_001);
    let v = rpc(&h, "get.calls_report", p).await;
    assert_eq!(err_of(&v), (-32602, "invalid_parameter_value".into()));
    assert_eq!(v["error"]["data"]["field"], "offset");
    let mut p = good.clone();
    p["offset"] = json!(100_000);
    let v = rpc(&h, "get.calls_report", p).await;
    assert_eq!(v["result"]["data"].as_array().unwrap().len(), 0);

    let mut p = good.clone();
    p["limit"] = json!(10_001);
    let v = rpc(&h, "get.calls_report", p).await;
    assert_eq!(v["error"]["data"]["field"], "limit");

    let v = rpc(
        &h,
        "get.calls_report",
        json!({"access_token": token(&h), "date_from": "15.01.2026", "date_till": msk(anchor())}),
    )
    .await;
    assert_eq!(err_of(&v), (-32602, "invalid_parameter_value".into()));
    assert_eq!(v["error"]["data"]["field"], "date_from");

    let v = rpc(
        &h,
        "get.calls_report",
        json!({"access_token": token(&h), "date_from": msk(from)}),
    )
    .await;
    assert_eq!(err_of(&v), (-32602, "required_parameter_missed".into()));
}

#[tokio::test]
async fn comagic_employees_and_account() {
    let h = start(false).await;
    let v = rpc(&h, "get.employees", json!({"access_token": token(&h)})).await;
    let data = v["result"]["data"].as_array().unwrap();
    let world = h.sim.world().employees.clone();
    assert_eq!(data.len(), world.len());
    for (r, e) in data.iter().zip(world.iter()) {
        assert_eq!(r["id"].as_u64().unwrap(), e.id);
        assert_eq!(r["full_name"], e.full_name.as_str());
        assert_eq!(
            r["extension"]["extension_phone_number"],
            e.extension.as_str()
        );
    }
    let v = rpc(&h, "get.account", json!({"access_token": token(&h)})).await;
    assert!(v["result"]["data"][0]["name"].is_string());
}

#[tokio::test]
async fn comagic_minute_limit_and_faults() {
    let h = start(true).await;
    let mut last_remaining = u64::MAX;
    for _ in 0..dozor_sim::comagic::MINUTE_LIMIT {
        let v = rpc(&h, "get.account", json!({"access_token": token(&h)})).await;
        let rem = v["result"]["metadata"]["limits"]["minute_remaining"]
            .as_u64()
            .unwrap();
        assert!(rem < last_remaining);
        last_remaining = rem;
    }
    assert_eq!(last_remaining, 0);
    let v = rpc(&h, "get.account", json!({"access_token": token(&h)})).await;
    assert_eq!(err_of(&v), (-32029, "limit_exceeded".into()));
    assert!(
        v["error"]["data"]["metadata"]["limits"]["minute_reset"]
            .as_u64()
            .unwrap()
            >= 1
    );
    assert!(h.sim.stats()[&System::Comagic].throttled >= 1);

    let h = start(false).await;
    h.sim.set_faults(
        System::Comagic,
        Faults {
            http_5xx: 1,
            throttle: 1,
            malformed_json: 1,
            ..Default::default()
        },
    );
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "get.account", "params": {"access_token": token(&h)}}).to_string();
    let (status, b) = rpc_raw(&h, &body).await;
    assert_eq!(status, 500);
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["error"]["code"], -32603);
    let (status, b) = rpc_raw(&h, &body).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["error"]["code"], -32029);
    let (_, b) = rpc_raw(&h, &body).await;
    assert!(serde_json::from_slice::<Value>(&b).is_err());
    let (_, b) = rpc_raw(&h, &body).await;
    assert!(serde_json::from_slice::<Value>(&b).unwrap()["result"].is_object());
}

// ---------------------------------------------------------------- Calltouch

async fn ct_get(h: &SimHandle, path_and_query: &str) -> reqwest::Response {
    reqwest::get(format!("{}{}", h.calltouch_url(), path_and_query))
        .await
        .unwrap()
}

fn diary(h: &SimHandle, from: &str, to: &str, extra: &str) -> String {
    format!(
        "/calls-service/RestAPI/{}/calls-diary/calls?clientApiId={}&dateFrom={from}&dateTo={to}{extra}",
        h.sim.creds.calltouch_site_id, h.sim.creds.calltouch_client_api_id
    )
}

fn inbound_on(h: &SimHandle, from: NaiveDate, to: NaiveDate) -> Vec<u64> {
    let w = h.sim.world();
    w.calls
        .values()
        .filter(|c| c.direction == Dir::In)
        .filter(|c| {
            let d = c.start.with_timezone(&Moscow).date_naive();
            d >= from && d <= to
        })
        .map(|c| c.id)
        .collect()
}

#[tokio::test]
async fn calltouch_single_day_array_and_paged_object() {
    let h = start(false).await;
    let day = (anchor() - Duration::days(3))
        .with_timezone(&Moscow)
        .date_naive();
    let d = day.format("%d/%m/%Y").to_string();
    let r = ct_get(&h, &diary(&h, &d, &d, "")).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let arr = v.as_array().expect("bare array for one day without paging");
    let mut ids: Vec<u64> = arr.iter().map(|r| r["callId"].as_u64().unwrap()).collect();
    ids.sort();
    let mut exp = inbound_on(&h, day, day);
    exp.sort();
    assert!(!exp.is_empty());
    assert_eq!(ids, exp);
    for rec in arr {
        // date is Moscow wall time of the unix timestamp.
        let ts = rec["timestamp"].as_i64().unwrap();
        let date =
            NaiveDateTime::parse_from_str(rec["date"].as_str().unwrap(), "%d/%m/%Y %H:%M:%S")
                .unwrap();
        let back = Moscow.from_local_datetime(&date).unwrap().timestamp();
        assert_eq!(back, ts);
        assert!(rec["successful"].is_boolean());
        assert!(rec["callUrl"].as_str().unwrap().starts_with("https://"));
        for k in [
            "callerNumber",
            "phoneNumber",
            "duration",
            "waitingConnect",
            "uniqueCall",
            "targetCall",
            "callbackCall",
            "manager",
            "source",
            "medium",
            "utmSource",
            "sessionId",
        ] {
            assert!(rec.get(k).is_some(), "{k} in {rec}");
        }
    }

    // Several days without paging are refused.
    let from = (anchor() - Duration::days(30))
        .with_timezone(&Moscow)
        .date_naive();
    let f = from.format("%d/%m/%Y").to_string();
    let r = ct_get(&h, &diary(&h, &f, &d, "")).await;
    assert_eq!(r.status(), 400);

    // Paged mode over a range.
    let exp = inbound_on(&h, from, day);
    let mut got = Vec::new();
    let mut page = 1;
    loop {
        let r = ct_get(&h, &diary(&h, &f, &d, &format!("&page={page}&limit=100"))).await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["page"], page);
        assert_eq!(v["pageSize"], 100);
        assert_eq!(v["recordsTotal"].as_u64().unwrap() as usize, exp.len());
        assert_eq!(
            v["pageTotal"].as_u64().unwrap() as usize,
            exp.len().div_ceil(100)
        );
        got.extend(
            v["records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["callId"].as_u64().unwrap()),
        );
        if page >= v["pageTotal"].as_u64().unwrap() {
            break;
        }
        page += 1;
    }
    got.sort();
    let mut exp = exp;
    exp.sort();
    assert_eq!(got, exp);

    // limit over 1000, wrong date format.
    let r = ct_get(&h, &diary(&h, &f, &d, "&page=1&limit=1001")).await;
    assert_eq!(r.status(), 400);
    let iso = day.format("%Y-%m-%d").to_string();
    let r = ct_get(&h, &diary(&h, &iso, &iso, "")).await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn calltouch_requests_are_month_first() {
    let h = start(false).await;
    let lead = {
        let w = h.sim.world();
        w.leads
            .values()
            .filter(|l| l.source == "WEB")
            .find(|l| {
                use chrono::Datelike;
                l.created_at.with_timezone(&Moscow).day() > 12
            })
            .cloned()
            .expect("a web lead on a day > 12")
    };
    let day = lead.created_at.with_timezone(&Moscow).date_naive();
    let q = |fmt: &str| {
        format!(
            "/calls-service/RestAPI/requests?clientApiId={}&siteId={}&dateFrom={}&dateTo={}",
            h.sim.creds.calltouch_client_api_id,
            h.sim.creds.calltouch_site_id,
            day.format(fmt),
            day.format(fmt)
        )
    };
    let r = ct_get(&h, &q("%m/%d/%Y")).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let arr = v.as_array().unwrap();
    let rec = arr
        .iter()
        .find(|r| r["requestId"].as_u64() == Some(lead.id))
        .expect("lead listed");
    assert_eq!(
        rec["date"].as_i64().unwrap(),
        lead.created_at.timestamp_millis()
    );
    assert_eq!(rec["subject"], lead.title.as_str());
    assert_eq!(rec["client"]["fio"], lead.name.as_str());
    assert!(rec["session"]["source"].is_string());
    assert!(rec["RequestTags"].is_array());
    NaiveDateTime::parse_from_str(rec["dateStr"].as_str().unwrap(), "%d/%m/%Y %H:%M:%S").unwrap();
    // Day-first dates with a day > 12 are not valid month-first dates.
    let r = ct_get(&h, &q("%d/%m/%Y")).await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn calltouch_auth_and_rate_limit() {
    let h = start(true).await;
    let d = "10/06/2026";
    let bad_token = format!(
        "/calls-service/RestAPI/{}/calls-diary/calls?clientApiId=nope&dateFrom={d}&dateTo={d}",
        h.sim.creds.calltouch_site_id
    );
    assert_eq!(ct_get(&h, &bad_token).await.status(), 401);
    let bad_site = format!(
        "/calls-service/RestAPI/999/calls-diary/calls?clientApiId={}&dateFrom={d}&dateTo={d}",
        h.sim.creds.calltouch_client_api_id
    );
    assert_eq!(ct_get(&h, &bad_site).await.status(), 403);
    let bad_site_req = format!(
        "/calls-service/RestAPI/requests?clientApiId={}&siteId=999&dateFrom=06/10/2026&dateTo=06/10/2026",
        h.sim.creds.calltouch_client_api_id
    );
    assert_eq!(ct_get(&h, &bad_site_req).await.status(), 403);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    // A burst over 5 requests per second gets 429 with Retry-After.
    let path = diary(&h, d, d, "");
    let burst = (0..8).map(|_| ct_get(&h, &path));
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for r in futures::future::join_all(burst).await {
        if r.status() == 429 {
            retry_after = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
        }
        statuses.push(r.status().as_u16());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        5,
        "{statuses:?}"
    );
    assert!(statuses.contains(&429));
    assert_eq!(retry_after.as_deref(), Some("1"));

    let h = start(false).await;
    h.sim.set_faults(
        System::Calltouch,
        Faults {
            http_5xx: 1,
            throttle: 1,
            malformed_json: 1,
            ..Default::default()
        },
    );
    assert_eq!(ct_get(&h, &diary(&h, d, d, "")).await.status(), 500);
    let r = ct_get(&h, &diary(&h, d, d, "")).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
    let r = ct_get(&h, &diary(&h, d, d, "")).await;
    assert!(serde_json::from_slice::<Value>(&r.bytes().await.unwrap()).is_err());
    let r = ct_get(&h, &diary(&h, d, d, "")).await;
    assert!(r.json::<Value>().await.unwrap().is_array());
}

/// The fake's account has a zone (default Europe/Moscow) and, like the Data API, names it in
/// `get.account` (https://github.com/comagic/comagic.github.io
/// data_api/account/get_account/index.html: `app_id`, `name`, `timezone` in IANA zoneinfo,
/// `balance`) and writes `start_time` / reads `date_from`, `date_till` as that zone's wall clock
/// in `YYYY-MM-DD hh:mm:ss` (data_api/index.html, "Соглашения").
#[tokio::test]
async fn comagic_account_zone_is_named_and_used_for_every_time() {
    let h = start(false).await;
    let v = rpc(&h, "get.account", json!({"access_token": token(&h)})).await;
    let acc = &v["result"]["data"][0];
    assert_eq!(acc["timezone"], "Europe/Moscow");
    assert!(acc["app_id"].is_u64() && acc["name"].is_string() && acc["balance"].is_number());

    let yekt = chrono_tz::Asia::Yekaterinburg;
    h.sim.comagic.set_timezone(yekt);
    let v = rpc(&h, "get.account", json!({"access_token": token(&h)})).await;
    assert_eq!(v["result"]["data"][0]["timezone"], "Asia/Yekaterinburg");

    let call = {
        let w = h.sim.world();
        w.calls
            .values()
            .find(|c| c.start < anchor() - Duration::days(2))
            .cloned()
            .unwrap()
    };
    let wall = |ts: DateTime<Utc>| {
        ts.with_timezone(&yekt)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    };
    let ask = |from: String, till: String| {
        rpc(
            &h,
            "get.calls_report",
            json!({"access_token": token(&h), "date_from": from, "date_till": till,
                   "fields": ["id", "start_time"],
                   "filter": {"field": "id", "operator": "=", "value": call.id}}),
        )
    };
    // A one-minute window in Yekaterinburg wall time around the call finds it, written in the
    // same wall time.
    let v = ask(
        wall(call.start - Duration::seconds(30)),
        wall(call.start + Duration::seconds(30)),
    )
    .await;
    let data = v["result"]["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{v}");
    assert_eq!(data[0]["start_time"], wall(call.start));
    // The same minute in Moscow wall time is two hours earlier on the account's clock: empty.
    let v = ask(
        msk(call.start - Duration::seconds(30)),
        msk(call.start + Duration::seconds(30)),
    )
    .await;
    assert_eq!(v["result"]["data"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(
        sim::comagic::parse_time(&wall(call.start), yekt),
        Some(call.start - Duration::nanoseconds(call.start.timestamp_subsec_nanos() as i64))
    );
}
