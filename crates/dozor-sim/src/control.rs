//! Control endpoints that change or inspect the world, for a simulator running as its own
//! process (`dozor sim`): a benchmark moves the world on, makes a client's call go unanswered,
//! and looks for the task dozor created, without linking against the simulator.
//!
//! - `GET /_sim/tenant_config?db=URL[&crm=bitrix24|amocrm][&telephony=comagic|calltouch][&lang=ru|en]`:
//!   a dozor config file pointing at this simulator (see [`tenant_config_at`]);
//! - `POST /_sim/world/churn` `{"changes": N, "seed": K}`: a sales team's changes (see
//!   [`churn::churn`]), answered with the count of each kind;
//! - `POST /_sim/world/missed_call` `{"seed": K}`: a missed incoming call from a known client,
//!   answered with the call and the notification CoMagic would push for it;
//! - `GET /_sim/world/tasks?after_id=N[&contains=TEXT]`: tasks created after record id N (ids
//!   grow across every kind), whose title or description contains TEXT.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Sim;
use super::churn;
use super::tenant_config::{CrmKind, TelephonyKind, tenant_config_at};

/// Tasks one `GET /_sim/world/tasks` answers at most.
const TASKS_MAX: usize = 1000;

fn refuse(message: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, message.into()).into_response()
}

#[derive(Debug, Deserialize)]
pub(crate) struct ConfigQuery {
    db: String,
    crm: Option<String>,
    telephony: Option<String>,
    lang: Option<String>,
}

pub(crate) async fn tenant_config(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Query(q): Query<ConfigQuery>,
) -> Response {
    let crm = q.crm.as_deref().unwrap_or("bitrix24");
    let Some(crm) = CrmKind::parse(crm) else {
        return refuse(format!("unknown crm {crm:?}: use bitrix24 or amocrm"));
    };
    let tel = q.telephony.as_deref().unwrap_or("comagic");
    let Some(tel) = TelephonyKind::parse(tel) else {
        return refuse(format!(
            "unknown telephony {tel:?}: use comagic or calltouch"
        ));
    };
    let lang = q.lang.as_deref().unwrap_or("ru");
    if !matches!(lang, "ru" | "en") {
        return refuse(format!("unknown lang {lang:?}: use ru or en"));
    }
    // The address the client reached us at is the one its config must use.
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return refuse("the request has no Host header");
    };
    let base = format!("http://{host}");
    let text = tenant_config_at(&base, &sim, crm, tel, &q.db, lang);
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChurnRequest {
    changes: u32,
    #[serde(default)]
    seed: u64,
}

pub(crate) async fn churn(State(sim): State<Arc<Sim>>, Json(r): Json<ChurnRequest>) -> Json<Value> {
    let now = chrono::Utc::now();
    let done = churn::churn(&mut sim.world(), r.changes, r.seed, now);
    Json(json!({
        "changes": r.changes,
        "at": now,
        "made": done.made,
        "calls_logged_in_crm": done.calls_logged_in_crm,
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MissedCallRequest {
    #[serde(default)]
    seed: u64,
}

pub(crate) async fn missed_call(
    State(sim): State<Arc<Sim>>,
    Json(r): Json<MissedCallRequest>,
) -> Response {
    let now = chrono::Utc::now();
    let tz = sim.comagic.timezone();
    let mut w = sim.world();
    let Some(m) = churn::missed_call(&mut w, r.seed, now) else {
        return (StatusCode::CONFLICT, "no contact has a number of its own").into_response();
    };
    let notification = w
        .calls
        .get(&m.call_id)
        .map(|c| super::comagic::lost_call_notification(&w, c, tz, now));
    Json(json!({
        "call_id": m.call_id,
        "contact_id": m.contact_id,
        "phone": m.phone,
        "notification": notification,
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
pub(crate) struct TasksQuery {
    #[serde(default)]
    after_id: u64,
    contains: Option<String>,
}

pub(crate) async fn tasks(State(sim): State<Arc<Sim>>, Query(q): Query<TasksQuery>) -> Json<Value> {
    let w = sim.world();
    let found: Vec<Value> = w
        .tasks
        .range(q.after_id.saturating_add(1)..)
        .map(|(_, t)| t)
        .filter(|t| {
            q.contains
                .as_deref()
                .is_none_or(|s| t.title.contains(s) || t.description.contains(s))
        })
        .take(TASKS_MAX)
        .map(|t| {
            json!({
                "id": t.id,
                "title": t.title,
                "responsible_id": t.responsible_id,
                "binding": t.binding,
                "completed": t.completed,
                "created_at": t.created_at,
            })
        })
        .collect();
    Json(Value::Array(found))
}

#[cfg(test)]
mod tests {
    use super::super::{SimOptions, start};
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One HTTP/1.1 exchange over a fresh connection: (status, body). The simulator has no HTTP
    /// client of its own, and this is all a control endpoint needs.
    async fn http(
        addr: std::net::SocketAddr,
        method: &str,
        path: &str,
        body: &str,
    ) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        let text = String::from_utf8(raw).unwrap();
        let (head, rest) = text.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        // Bodies come chunked: keep the chunks, drop the sizes.
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            let mut out = String::new();
            let mut rest = rest;
            while let Some((size, tail)) = rest.split_once("\r\n") {
                let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                if n == 0 {
                    break;
                }
                out.push_str(&tail[..n]);
                rest = &tail[n + 2..];
            }
            out
        } else {
            rest.to_string()
        };
        (status, body)
    }

    fn sim_opts() -> SimOptions {
        SimOptions {
            enforce_limits: false,
            ..SimOptions::default()
        }
    }

    #[tokio::test]
    async fn serves_a_config_pointing_at_itself() {
        let h = start(sim_opts(), ([127, 0, 0, 1], 0).into()).await.unwrap();
        let (status, text) = http(
            h.addr,
            "GET",
            "/_sim/tenant_config?db=sqlite%3A%2F%2F%2Ftmp%2Fx.db&crm=amocrm",
            "",
        )
        .await;
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("url = \"sqlite:///tmp/x.db\""), "{text}");
        assert!(
            text.contains(&format!("base_url = \"{}\"", h.amo_url())),
            "{text}"
        );
        assert!(text.contains(&h.comagic_url()), "{text}");
        let (status, _) = http(h.addr, "GET", "/_sim/tenant_config?db=x&crm=sap", "").await;
        assert_eq!(status, 400);
    }

    #[tokio::test]
    async fn churn_and_missed_call_change_the_world_on_request() {
        let h = start(sim_opts(), ([127, 0, 0, 1], 0).into()).await.unwrap();
        let calls = h.sim.world().calls.len();
        let (status, body) = http(
            h.addr,
            "POST",
            "/_sim/world/churn",
            r#"{"changes": 40, "seed": 3}"#,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let made: u64 = v["made"]
            .as_object()
            .unwrap()
            .values()
            .map(|n| n.as_u64().unwrap())
            .sum();
        assert_eq!(made, 40);
        let calls_made = v["made"]["calls"].as_u64().unwrap_or(0) as usize;
        assert_eq!(h.sim.world().calls.len(), calls + calls_made);

        let (status, body) =
            http(h.addr, "POST", "/_sim/world/missed_call", r#"{"seed": 2}"#).await;
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let id = v["call_id"].as_u64().unwrap();
        let n = &v["notification"];
        assert_eq!(n["notification_mnemonic"], "lost_call");
        assert_eq!(n["call_session_id"], id);
        assert_eq!(n["contact_phone_number"], v["phone"]);
        assert!(h.sim.world().calls[&id].is_lost);

        // The task a client creates after the call is found by the text it carries.
        let path = format!("/_sim/world/tasks?after_id={id}&contains=missed_call%3A{id}");
        assert_eq!(http(h.addr, "GET", &path, "").await.1, "[]");
        let task_id = {
            let mut w = h.sim.world();
            let mut t = w.tasks.values().next().unwrap().clone();
            t.id = w.next_id();
            t.description = format!("key missed_call:{id}:task");
            w.tasks.insert(t.id, t.clone());
            t.id
        };
        let found: Value = serde_json::from_str(&http(h.addr, "GET", &path, "").await.1).unwrap();
        assert_eq!(found.as_array().unwrap().len(), 1);
        assert_eq!(found[0]["id"], task_id);
    }
}
