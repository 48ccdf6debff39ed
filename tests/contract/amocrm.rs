//! Contract: amoCRM API v4. Each test names the docs page (and section) its payload was
//! transcribed from; values are the page's, apart from the stand-in's own base URL.
//!
//! Client half: a [`Docs`] stand-in answers what the page shows and records what dozor's
//! client asked. Simulator half: the same request goes to `dozor_sim`, whose answer must have
//! every key of the page's answer with the same JSON type ([`assert_same_shape`]).

use std::sync::Arc;
use std::time::Duration;

use dozor::config::AmocrmConfig;
use dozor::crm::amocrm::{AmoCrm, Tuning};
use dozor::crm::{CallRecord, Crm, Cursor, NewTask};
use dozor::domain::{Direction, EntityKind, EntityRef, Record, Semantics};
use dozor::http::ErrorKind;
use dozor::store::Store;
use dozor_sim::world::{LeadStatus, Role, SimDeal, SimLead, SimUtm, World};
use dozor_sim::{SimHandle, SimOptions};
use serde_json::{Value, json};

use super::replay::{Answer, Asked, Docs, assert_same_shape};
use crate::common;

const TOKEN: &str = "docs-long-lived-token";

// ---------------------------------------------------------------------------------------------
// Payloads transcribed from the pages.

/// https://www.amocrm.ru/developers/content/crm_platform/leads-api (also
/// https://www.amocrm.com.ua/developers/content/crm_platform/leads-api), «Одна сделка» →
/// «Пример ответа» (`GET /api/v4/leads/{id}`).
fn doc_lead() -> Value {
    json!({
        "id": 17657, "name": "Тестовая сделка", "price": 25000, "responsible_user_id": 321123,
        "group_id": 0, "status_id": 2030, "pipeline_id": 1113, "loss_reason_id": null,
        "source_id": null, "created_by": 12332, "updated_by": 12323,
        "created_at": 1587741226, "updated_at": 1588241643, "closed_at": null,
        "closest_task_at": null, "is_deleted": false,
        "custom_fields_values": [{"field_id": 1278898021, "field_name": "Кастомное поле",
            "field_code": null, "field_type": "date", "values": [{"value": "2020-05-08"}]}],
        "score": null, "account_id": 115135,
        "_links": {"self": {"href": "https://example.amcrm.ru/api/v4/leads/17657"}},
        "_embedded": {
            "tags": [{"id": 1252595, "name": "Тег для примера"}],
            "companies": [{"id": 40401297,
                "_links": {"self": {"href": "https://example.amocrm.ru/api/v4/companies/40401297"}}}]
        }
    })
}

/// https://www.amocrm.ru/developers/content/crm_platform/tasks-api, «Получение задачи по
/// идентификатору» → «Пример ответа» (`GET /api/v4/tasks/56981`).
fn doc_task() -> Value {
    json!({
        "id": 56981, "created_by": 54224, "updated_by": 3987910, "created_at": 1575910123,
        "updated_at": 1576767989, "responsible_user_id": 123123, "group_id": 0,
        "entity_id": 180765, "entity_type": "leads", "duration": 0, "is_completed": true,
        "task_type_id": 2, "text": "Назначить встречу с клиентом",
        "result": {"text": "Результат есть"}, "complete_till": 1575910423, "account_id": 321312,
        "_links": {"self": {"href": "https://example.amocrm.ru/api/v4/tasks/56981"}}
    })
}

/// The account model of https://www.amocrm.com/developers/content/api_v4/account-parameters/
/// («Response parameters»: every field without `with`), with values of the types it gives.
fn doc_account() -> Value {
    json!({
        "id": 29145784, "name": "Пример", "subdomain": "example", "created_at": 1673927032,
        "created_by": 0, "updated_at": 1673927032, "updated_by": 0, "current_user_id": 6520033,
        "country": "RU", "currency": "RUB", "currency_symbol": "₽", "customers_mode": "disabled",
        "is_unsorted_on": true, "is_loss_reason_enabled": true, "is_helpbot_enabled": false,
        "is_technical_account": false, "contact_name_display_order": 1,
        "_links": {"self": {"href": "https://example.amocrm.ru/api/v4/account"}}
    })
}

/// https://www.amocrm.ru/developers/content/crm_platform/leads_pipelines, «Список воронок
/// сделок»: the pipeline model (`id, name, sort, is_main, is_unsorted_on, is_archive,
/// account_id`) and its statuses (`type` 1 is the unsorted column; 142 and 143 are in every
/// pipeline, «Общая информация»).
fn doc_pipelines() -> Value {
    json!({"_total_items": 1, "_embedded": {"pipelines": [{
        "id": 6950551, "name": "Воронка", "sort": 1, "is_main": true, "is_unsorted_on": true,
        "is_archive": false, "account_id": 31361463,
        "_embedded": {"statuses": [
            {"id": 58560479, "name": "Неразобранное", "sort": 10, "is_editable": false,
             "pipeline_id": 6950551, "color": "#c1c1c1", "type": 1, "account_id": 31361463},
            {"id": 58560483, "name": "Первичный контакт", "sort": 20, "is_editable": true,
             "pipeline_id": 6950551, "color": "#99ccff", "type": 0, "account_id": 31361463},
            {"id": 142, "name": "Успешно реализовано", "sort": 10000, "is_editable": false,
             "pipeline_id": 6950551, "color": "#CCFF66", "type": 0, "account_id": 31361463},
            {"id": 143, "name": "Закрыто и не реализовано", "sort": 11000, "is_editable": false,
             "pipeline_id": 6950551, "color": "#D5D8DB", "type": 0, "account_id": 31361463}
        ]}
    }]}})
}

/// An item of the unsorted list example, https://www.amocrm.ru/developers/content/crm_platform/unsorted-api
/// («Список неразобранного», also https://www.amocrm.com/developers/content/api_v4/incoming-leads/).
fn doc_unsorted_item() -> Value {
    json!({
        "uid": "5af9dedb6f2c6a29eaac6ee37fc75ffbb66e139e4603bdd0e14e39d4b319",
        "source_uid": null, "source_name": null, "category": "forms",
        "pipeline_id": 6950551, "created_at": 1686819152,
        "metadata": {"form_id": "1115559", "form_name": "Form #1686818993",
            "form_page": "Site request #1115559 from form «Form #1686818993»",
            "ip": "212.46.197.210", "form_sent_at": "1686819152",
            "referer": "https://devteam.kommo.com/", "visitor_uid": null},
        "account_id": 31361463, "_links": {"self": {"href": "LINK"}},
        "_embedded": {
            "contacts": [{"id": 583338, "_links": {"self": {"href": "https://devteam.kommo.com/api/v4/contacts/583338"}}}],
            "leads": [{"id": 236768, "_links": {"self": {"href": "https://devteam.kommo.com/api/v4/leads/236768"}}}],
            "companies": []
        }
    })
}

/// https://www.amocrm.ru/developers/content/api/errors («Справочник ошибок и ответов API»,
/// «Пример ошибки валидации данных»).
fn doc_validation_error() -> Value {
    json!({
        "validation-errors": [{"request_id": "0", "errors": [{"code": "NotSupportedChoice",
            "path": "custom_fields_values.0.field_id",
            "detail": "The value you selected is not a valid choice."}]}],
        "title": "Bad Request", "type": "https://httpstatus.es/400", "status": 400,
        "detail": "Request validation failed"
    })
}

/// The problem+json every v4 page names for errors (`Content-Type: application/problem+json`),
/// with the fields of the errors page example: `title`, `type`, `status`, `detail`.
fn doc_problem(status: u16, title: &str, detail: &str) -> Value {
    json!({"title": title, "type": format!("https://httpstatus.es/{status}"), "status": status,
           "detail": detail})
}

/// https://developers.kommo.com/reference/add-calls («Response parameters»: `id`, `entity_id`,
/// `entity_type`, `account_id`, `request_id`, `_embedded[entity]` with its `id`). The page
/// types `entity_type` as int while naming it "type of the entity"; it is left untyped here.
fn doc_call_created() -> Value {
    json!({"_embedded": {"calls": [{"id": 4745251, "entity_id": 167353, "entity_type": null,
        "account_id": 28805383, "request_id": "0", "_embedded": {"entity": {"id": 167353}}}]}})
}

/// https://developers.kommo.com/reference/declining-incoming-leads («Response parameters»:
/// `uid`, `category`, `pipeline_id`, `created_at`, `_embedded` contacts, companies and leads,
/// each with its `id`).
fn doc_declined() -> Value {
    json!({"uid": "5af9dedb6f2c6a29eaac6ee37fc75ffbb66e139e4603bdd0e14e39d4b319",
           "category": "forms", "pipeline_id": 6950551, "created_at": 1686819152,
           "_embedded": {"contacts": [{"id": 583338}], "companies": [],
                         "leads": [{"id": 236768}]}})
}

/// A HAL list around `items`, as the list pages show it (`_page`, `_links`, `_embedded.KEY`).
fn hal(key: &str, items: Vec<Value>) -> Value {
    json!({"_page": 1, "_links": {"self": {"href": "https://example.amocrm.ru/api/v4/x?page=1&limit=250"}},
           "_embedded": {key: items}})
}

fn hal_json(v: Value) -> Answer {
    let mut a = Answer::json(v);
    a.content_type = "application/hal+json";
    a
}

fn problem(status: u16, v: Value) -> Answer {
    let mut a = Answer::status_json(status, v);
    a.content_type = "application/problem+json";
    a
}

// ---------------------------------------------------------------------------------------------
// Plumbing.

fn config(base: &str) -> AmocrmConfig {
    AmocrmConfig {
        rate_per_sec: 50,
        ..common::amo_long_lived(base, TOKEN)
    }
}

async fn client(docs: &Docs, dir: &tempfile::TempDir) -> AmoCrm {
    let path = dir.path().join("dozor.db");
    let store = Arc::new(
        Store::open(&format!("sqlite://{}", path.display()), 2)
            .await
            .unwrap(),
    );
    let tuning = Tuning {
        throttle: dozor::http::Throttle {
            first: Duration::from_millis(10),
            cap: Duration::from_millis(40),
            budget: Duration::from_millis(200),
        },
        lockout_wait: Duration::from_millis(10),
        ..Tuning::default()
    };
    AmoCrm::new("t1", &config(&docs.base), store)
        .await
        .unwrap()
        .with_tuning(tuning)
}

fn query(a: &Asked) -> Vec<(String, String)> {
    let q = a.uri.split_once('?').map_or("", |(_, q)| q);
    url::form_urlencoded::parse(q.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn has(a: &Asked, k: &str, v: &str) -> bool {
    query(a).iter().any(|(x, y)| x == k && y == v)
}

fn bearer(a: &Asked) -> bool {
    a.headers.get("authorization").and_then(|h| h.to_str().ok()) == Some(&format!("Bearer {TOKEN}"))
}

fn sim_opts() -> SimOptions {
    common::sim_opts(3)
}

async fn sim_world(w: World) -> SimHandle {
    common::serve_world(sim_opts(), w).await
}

/// A small world: one pipeline, one user, one deal with a company, one pending web request.
fn small_world() -> World {
    let mut w = World::default();
    w.users.push(crate::common::anna(Role::Manager));
    w.pipelines.push(crate::common::sales_pipeline());
    w.reserve_id(10_000);
    let at = chrono::Utc::now() - chrono::Duration::hours(1);
    let id = w.next_id();
    w.deals.insert(
        id,
        SimDeal {
            id,
            title: "Сделка".into(),
            pipeline_id: 0,
            stage_id: 1001,
            amount: 25000.0,
            responsible_id: 1,
            contact_id: None,
            company_id: Some(77),
            lead_id: None,
            source: "WEB".into(),
            tags: vec!["vip".into()],
            loss_reason: None,
            created_at: at,
            updated_at: at,
            closed_at: None,
        },
    );
    let id = w.next_id();
    w.leads.insert(
        id,
        SimLead {
            id,
            title: "Заявка с сайта".into(),
            name: "Иван".into(),
            phone: Some("+79990001122".into()),
            email: None,
            source: "WEB".into(),
            status: LeadStatus::New,
            responsible_id: 1,
            contact_id: Some(78),
            company_id: None,
            utm: SimUtm::default(),
            created_at: at,
            updated_at: at,
            closed_at: None,
        },
    );
    w
}

async fn sim_get(h: &SimHandle, path: &str) -> (u16, Value) {
    sim_send(h, reqwest::Method::GET, path, None).await
}

async fn sim_send(
    h: &SimHandle,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = reqwest::Client::new()
        .request(method, format!("{}{path}", h.amo_url()))
        .bearer_auth(&h.sim.creds.amo_long_lived_token);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

// ---------------------------------------------------------------------------------------------
// Client half.

/// Account parameters page (https://www.amocrm.com/developers/content/api_v4/account-parameters/):
/// `GET /api/v4/account` with the Bearer token; the model's `name` and `subdomain` are read.
#[tokio::test]
async fn client_reads_the_account() {
    let docs = Docs::start(|_| hal_json(doc_account())).await;
    let dir = tempfile::tempdir().unwrap();
    let c = client(&docs, &dir).await;
    assert_eq!(c.ping().await.unwrap(), "Пример (example)");
    let asked = docs.asked();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].method, "GET");
    assert_eq!(asked[0].path(), "/api/v4/account");
    assert!(bearer(&asked[0]));
}

/// Leads page (https://www.amocrm.ru/developers/content/crm_platform/leads-api): «Список сделок»
/// takes `page`, `limit` (at most 250), `with` and `order` on `created_at`, `updated_at`, `id`;
/// the one-lead example is read as a deal, its status judged against the pipelines page's
/// statuses (2030 is not an unsorted column, so it is an open deal).
#[tokio::test]
async fn client_reads_the_leads_list_as_deals() {
    let docs = Docs::start(|a| match a.path() {
        "/api/v4/leads/pipelines" => hal_json(doc_pipelines()),
        _ => hal_json(hal("leads", vec![doc_lead()])),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let c = client(&docs, &dir).await;
    let page = c
        .fetch_page(EntityKind::Deal, &Cursor::default())
        .await
        .unwrap();
    assert!(page.done);
    let [Record::Deal(d)] = page.records.as_slice() else {
        panic!("{:?}", page.records)
    };
    assert_eq!(d.id, "17657");
    assert_eq!(d.title, "Тестовая сделка");
    assert_eq!(
        (d.pipeline_id.as_str(), d.stage_id.as_str()),
        ("1113", "2030")
    );
    assert_eq!(d.semantics, Semantics::Open);
    assert_eq!(d.amount, 25000.0);
    assert_eq!(d.responsible_id.as_deref(), Some("321123"));
    assert_eq!(d.company_id.as_deref(), Some("40401297"));
    assert_eq!(d.tags, vec!["Тег для примера".to_string()]);
    assert!(d.closed_at.is_none());
    let leads = docs
        .asked()
        .into_iter()
        .find(|a| a.path() == "/api/v4/leads")
        .unwrap();
    assert!(has(&leads, "limit", "250") && has(&leads, "page", "1"));
    assert!(has(&leads, "order[id]", "asc") && has(&leads, "with", "contacts"));
}

/// The unsorted page (https://www.amocrm.ru/developers/content/crm_platform/unsorted-api): the
/// unsorted status is a system status of the pipeline, so `GET /api/v4/leads` lists the leads
/// of pending items too. One in the pipelines page's `type` 1 status is not mirrored as a deal.
#[tokio::test]
async fn client_skips_leads_in_the_unsorted_status() {
    let docs = Docs::start(|a| match a.path() {
        "/api/v4/leads/pipelines" => hal_json(doc_pipelines()),
        _ => {
            let mut pending = doc_lead();
            pending["id"] = json!(236768);
            pending["status_id"] = json!(58560479);
            pending["pipeline_id"] = json!(6950551);
            hal_json(hal("leads", vec![doc_lead(), pending]))
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let c = client(&docs, &dir).await;
    let page = c
        .fetch_page(EntityKind::Deal, &Cursor::default())
        .await
        .unwrap();
    let ids: Vec<&str> = page.records.iter().map(Record::id).collect();
    assert_eq!(ids, vec!["17657"]);
}

/// Tasks page (https://www.amocrm.ru/developers/content/crm_platform/tasks-api): the task
/// example, bound to a lead (`entity_type` `leads`), completed, deadline `complete_till`.
#[tokio::test]
async fn client_reads_tasks() {
    let docs = Docs::start(|_| hal_json(hal("tasks", vec![doc_task()]))).await;
    let dir = tempfile::tempdir().unwrap();
    let c = client(&docs, &dir).await;
    let page = c
        .fetch_page(EntityKind::Task, &Cursor::default())
        .await
        .unwrap();
    let [Record::Task(t)] = page.records.as_slice() else {
        panic!("{:?}", page.records)
    };
    assert_eq!(t.id, "56981");
    assert_eq!(t.title, "Назначить встречу с клиентом");
    assert!(t.completed);
    assert_eq!(
        t.entity,
        Some(EntityRef::new(EntityKind::Deal, "180765".to_string()))
    );
    assert_eq!(t.responsible_id.as_deref(), Some("123123"));
    assert_eq!(t.deadline.map(|d| d.timestamp()), Some(1575910423));
    let asked = &docs.asked()[0];
    assert_eq!(asked.path(), "/api/v4/tasks");
    assert!(has(asked, "limit", "250"));
}

/// Events page (https://www.amocrm.ru/developers/content/crm_platform/events-and-notes,
/// «Список событий»): at most 100 a page, `filter[created_at]` as a timestamp or
/// `[from]`/`[to]`, and 204 when no event matches. An idle probe is that one request.
#[tokio::test]
async fn client_probe_with_no_events_is_one_request() {
    let docs = Docs::start(|_| Answer::text(204, "")).await;
    let dir = tempfile::tempdir().unwrap();
    let c = client(&docs, &dir).await;
    let since = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    let cursors: Vec<(EntityKind, Cursor)> = EntityKind::ALL
        .iter()
        .map(|k| {
            (
                *k,
                Cursor {
                    since: Some(since),
                    position: None,
                    high_water: None,
                },
            )
        })
        .collect();
    let changes = c.fetch_changes(&cursors).await.unwrap();
    assert!(changes.is_empty(), "{changes:?}");
    let asked = docs.asked();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].path(), "/api/v4/events");
    assert!(has(&asked[0], "filter[created_at][from]", "1700000000"));
    assert!(has(&asked[0], "limit", "100"));
}

/// Unsorted page (https://www.amocrm.ru/developers/content/crm_platform/unsorted-api,
/// «Список неразобранного»): `limit` at most 250, `order` on `created_at`; the example item is a
/// pending lead holding its lead 236768 (the deal record it lives in).
#[tokio::test]
async fn client_reads_unsorted_items_as_pending_leads() {
    let docs = Docs::start(|_| hal_json(hal("unsorted", vec![doc_unsorted_item()]))).await;
    let dir = tempfile::tempdir().unwrap();
    let c = client(&docs, &dir).await;
    let page = c
        .fetch_page(EntityKind::Lead, &Cursor::default())
        .await
        .unwrap();
    let [Record::Lead(l)] = page.records.as_slice() else {
        panic!("{:?}", page.records)
    };
    assert_eq!(
        l.id,
        "5af9dedb6f2c6a29eaac6ee37fc75ffbb66e139e4603bdd0e14e39d4b319"
    );
    assert_eq!(l.semantics, Semantics::Open);
    assert_eq!(l.deal_id.as_deref(), Some("236768"));
    assert_eq!(l.contact_id.as_deref(), Some("583338"));
    assert_eq!(l.source.as_deref(), Some("WEB"));
    let asked = docs.asked();
    assert_eq!(
        asked.len(),
        1,
        "the listed items are pending: nothing else to ask"
    );
    assert_eq!(asked[0].path(), "/api/v4/leads/unsorted");
    assert!(has(&asked[0], "limit", "250") && has(&asked[0], "order[created_at]", "asc"));
}

/// Unsorted page: accepting moves the item's lead to the next status, declining deletes it
/// («Отклонить», «чтобы быстро удалить сделку из воронки»). The outcome is read by id from
/// `GET /api/v4/leads?filter[id][]=…` (leads page, filters).
#[tokio::test]
async fn client_reads_the_outcome_of_unsorted_items() {
    let docs = Docs::start(|a| match a.path() {
        "/api/v4/leads/pipelines" => hal_json(doc_pipelines()),
        "/api/v4/leads/unsorted" => hal_json(hal("unsorted", vec![doc_unsorted_item()])),
        _ => {
            // Accepted: lead 236768 moved to «Первичный контакт».
            let mut moved = doc_lead();
            moved["id"] = json!(236768);
            moved["status_id"] = json!(58560483);
            hal_json(hal("leads", vec![moved]))
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let c = client(&docs, &dir).await;
    let page = c
        .fetch_page(EntityKind::Lead, &Cursor::default())
        .await
        .unwrap();
    let Record::Lead(pending) = page.records[0].clone() else {
        panic!()
    };
    let mut gone = pending.clone();
    gone.id = "other".into();
    gone.deal_id = Some("236769".into());
    let decided = c.lead_outcomes(&[pending, gone]).await.unwrap();
    assert_eq!(decided.len(), 2);
    assert_eq!(decided[0].semantics, Semantics::Won);
    assert_eq!(decided[0].deal_id.as_deref(), Some("236768"));
    assert_eq!(
        decided[1].semantics,
        Semantics::Lost,
        "declined: the lead is gone"
    );
    let ask = docs
        .asked()
        .into_iter()
        .find(|a| a.path() == "/api/v4/leads")
        .unwrap();
    assert!(has(&ask, "filter[id][]", "236768") && has(&ask, "filter[id][]", "236769"));
}

/// Errors page (https://www.amocrm.ru/developers/content/api/errors): a 400 with
/// `validation-errors` names the item (`request_id`), the field path and the code.
#[tokio::test]
async fn client_reports_validation_errors_with_their_path() {
    let docs = Docs::start(|_| problem(400, doc_validation_error())).await;
    let dir = tempfile::tempdir().unwrap();
    let c = client(&docs, &dir).await;
    let err = c
        .create_task(&NewTask {
            title: "Перезвонить".into(),
            description: String::new(),
            responsible_id: "123123".into(),
            deadline: chrono::DateTime::from_timestamp(1575910423, 0).unwrap(),
            entity: Some(EntityRef::new(EntityKind::Deal, "180765".to_string())),
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert_eq!(err.status, Some(400));
    let text = err.to_string();
    assert!(text.contains("custom_fields_values.0.field_id"), "{text}");
    assert!(text.contains("NotSupportedChoice"), "{text}");
    assert!(text.contains("item 0"), "{text}");
    // The request itself: a JSON array (tasks page, «Добавление задач»).
    let asked = &docs.asked()[0];
    assert_eq!(asked.method, "POST");
    assert_eq!(asked.path(), "/api/v4/tasks");
    let body = asked.json();
    assert_eq!(body[0]["entity_type"], "leads");
    assert_eq!(body[0]["entity_id"], 180765);
    assert_eq!(body[0]["complete_till"], 1575910423);
}

/// Every v4 page lists 401 «Пользователь не авторизован», answered as problem+json: with a
/// long-lived token nothing can be refreshed, so it is an auth error at once.
#[tokio::test]
async fn client_reports_401_as_an_auth_error() {
    let docs =
        Docs::start(|_| problem(401, doc_problem(401, "Unauthorized", "Unauthorized"))).await;
    let dir = tempfile::tempdir().unwrap();
    let c = client(&docs, &dir).await;
    let err = c.ping().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Auth);
    assert_eq!(err.status, Some(401));
    assert_eq!(docs.asked().len(), 1);
}

/// 402 (an unpaid account, fact sheet §11) and 403 (rights, IP restriction, anti-abuse
/// lock-out) as problem+json: permanent; a 403 is first waited out a few times.
#[tokio::test]
async fn client_reports_402_and_403() {
    let docs = Docs::start(|a| match a.path() {
        "/api/v4/users" => problem(
            402,
            doc_problem(402, "Payment Required", "Payment Required"),
        ),
        _ => problem(403, doc_problem(403, "Forbidden", "Forbidden")),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let c = client(&docs, &dir).await;
    let err = c.users().await.unwrap_err();
    assert_eq!((err.kind, err.status), (ErrorKind::Permanent, Some(402)));
    assert_eq!(docs.asked().len(), 1, "a 402 is not retried");
    let err = c.ping().await.unwrap_err();
    assert_eq!((err.kind, err.status), (ErrorKind::Permanent, Some(403)));
    assert_eq!(docs.asked().len(), 1 + 4, "three waits, then the refusal");
}

/// 429 (fact sheet §3: more than 7 requests a second; the body may not be JSON): the client
/// pauses and asks again.
#[tokio::test]
async fn client_waits_out_429() {
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let n = seen.clone();
    let docs = Docs::start(move |_| {
        if n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            Answer::text(429, "Too Many Requests")
        } else {
            hal_json(doc_account())
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let c = client(&docs, &dir).await;
    assert_eq!(c.ping().await.unwrap(), "Пример (example)");
    assert_eq!(docs.asked().len(), 2);
}

/// Add calls page (https://developers.kommo.com/reference/add-calls; the amoCRM calls page,
/// https://www.amocrm.ru/developers/content/crm_platform/calls-api, lists `direction`,
/// `duration` and `source` as required): the created call's `id` is read from
/// `_embedded.calls`, matched by `request_id`.
#[tokio::test]
async fn client_logs_a_call() {
    let docs = Docs::start(|a| match a.path() {
        "/api/v4/calls" => hal_json(doc_call_created()),
        // No contact or company has the number yet (empty lists are 204).
        _ => Answer::text(204, ""),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let c = client(&docs, &dir).await;
    let id = c
        .register_call(&CallRecord {
            external_id: "call-1".into(),
            direction: Direction::In,
            phone: "+79998888888".into(),
            started_at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            duration_s: 54,
            answered: true,
            responsible_id: None,
            recording_url: None,
            entity: None,
        })
        .await
        .unwrap();
    assert_eq!(id, "4745251");
    let post = docs
        .asked()
        .into_iter()
        .find(|a| a.path() == "/api/v4/calls")
        .unwrap();
    let item = &post.json()[0];
    assert_eq!(item["direction"], "inbound");
    assert_eq!(item["duration"], 54);
    assert!(item["source"].is_string());
    assert_eq!(item["request_id"], "0");
}

/// Pipelines page (https://www.amocrm.ru/developers/content/crm_platform/leads_pipelines):
/// statuses 142 and 143 are won and lost in every pipeline.
#[tokio::test]
async fn client_reads_pipelines() {
    let docs = Docs::start(|_| hal_json(doc_pipelines())).await;
    let dir = tempfile::tempdir().unwrap();
    let c = client(&docs, &dir).await;
    let pipelines = c.pipelines().await.unwrap();
    let p = pipelines.iter().find(|p| p.id == "6950551").unwrap();
    assert!(p.is_default);
    assert_eq!(p.stages.len(), 4);
    let sem = |id: &str| p.stages.iter().find(|s| s.id == id).unwrap().semantics;
    assert_eq!(sem("142"), Semantics::Won);
    assert_eq!(sem("143"), Semantics::Lost);
    assert_eq!(sem("58560483"), Semantics::Open);
}

// ---------------------------------------------------------------------------------------------
// Simulator half.

/// Account parameters page: the simulator's account has every field of the model.
#[tokio::test]
async fn sim_account_has_the_documented_fields() {
    let h = sim_world(small_world()).await;
    let (status, v) = sim_get(&h, "/api/v4/account").await;
    assert_eq!(status, 200);
    assert_same_shape(&doc_account(), &v, "account");
}

/// Leads page, one-lead example: same keys and types (the simulator keeps no custom fields on
/// deals: `custom_fields_values` is null there, which the page's model allows, "array|null"
/// on https://developers.kommo.com/reference/getting-a-lead-by-its-id).
#[tokio::test]
async fn sim_lead_has_the_documented_shape() {
    let h = sim_world(small_world()).await;
    let id = *h.sim.world().deals.keys().next().unwrap();
    let (status, v) = sim_get(&h, &format!("/api/v4/leads/{id}")).await;
    assert_eq!(status, 200);
    let mut docs = doc_lead();
    docs["custom_fields_values"] = Value::Null;
    assert_same_shape(&docs, &v, "lead");
    let (_, list) = sim_get(&h, "/api/v4/leads?limit=250").await;
    assert_same_shape(&hal("leads", vec![docs]), &list, "leads");
}

/// Unsorted page: the lead of a pending item is listed by `GET /api/v4/leads`, in the
/// pipeline's unsorted status (`type` 1 on the pipelines page).
#[tokio::test]
async fn sim_lists_the_leads_of_pending_items() {
    let h = sim_world(small_world()).await;
    let (_, items) = sim_get(&h, "/api/v4/leads/unsorted?limit=250").await;
    let held = items["_embedded"]["unsorted"][0]["_embedded"]["leads"][0]["id"].clone();
    let (_, leads) = sim_get(&h, "/api/v4/leads?limit=250").await;
    let lead = leads["_embedded"]["leads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == held)
        .expect("the pending item's lead is listed")
        .clone();
    let mut docs = doc_lead();
    docs["custom_fields_values"] = Value::Null;
    docs["_embedded"]["companies"] = json!([]);
    assert_same_shape(&docs, &lead, "pending lead");
    let (_, pipelines) = sim_get(&h, "/api/v4/leads/pipelines").await;
    let column = pipelines["_embedded"]["pipelines"][0]["_embedded"]["statuses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["type"] == 1)
        .unwrap()
        .clone();
    assert_eq!(lead["status_id"], column["id"]);
}

/// Tasks page, task example: same keys and types.
#[tokio::test]
async fn sim_task_has_the_documented_shape() {
    let h = sim_world(small_world()).await;
    let deal = *h.sim.world().deals.keys().next().unwrap();
    let (status, created) = sim_send(
        &h,
        reqwest::Method::POST,
        "/api/v4/tasks",
        Some(
            json!([{"text": "Назначить встречу с клиентом", "complete_till": 1575910423,
                     "entity_id": deal, "entity_type": "leads", "task_type_id": 2,
                     "responsible_user_id": 1}]),
        ),
    )
    .await;
    assert_eq!(status, 200);
    // Completed with a result, as the page's example is.
    let id = created["_embedded"]["tasks"][0]["id"].as_u64().unwrap();
    let (status, _) = sim_send(
        &h,
        reqwest::Method::PATCH,
        &format!("/api/v4/tasks/{id}"),
        Some(json!({"is_completed": true, "result": {"text": "Результат есть"}})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, v) = sim_get(&h, "/api/v4/tasks?limit=250").await;
    assert_eq!(status, 200);
    assert_same_shape(&hal("tasks", vec![doc_task()]), &v, "tasks");
}

/// Pipelines page: pipelines and statuses with the documented fields.
#[tokio::test]
async fn sim_pipelines_have_the_documented_shape() {
    let h = sim_world(small_world()).await;
    let (status, v) = sim_get(&h, "/api/v4/leads/pipelines").await;
    assert_eq!(status, 200);
    assert_same_shape(&doc_pipelines(), &v, "pipelines");
}

/// Unsorted page, list example: a pending web request has every key of the documented item
/// (`form_sent_at` a string, `visitor_uid` present).
#[tokio::test]
async fn sim_unsorted_item_has_the_documented_shape() {
    let h = sim_world(small_world()).await;
    let (status, v) = sim_get(&h, "/api/v4/leads/unsorted?limit=250&order[created_at]=asc").await;
    assert_eq!(status, 200);
    assert_same_shape(&hal("unsorted", vec![doc_unsorted_item()]), &v, "unsorted");
}

/// Declining page: the simulator answers a decline with the item's uid, category, pipeline,
/// creation time and what it held; the item then leaves the list (204: nothing left).
#[tokio::test]
async fn sim_decline_answers_in_the_documented_shape() {
    let h = sim_world(small_world()).await;
    let (_, items) = sim_get(&h, "/api/v4/leads/unsorted?limit=250").await;
    let uid = items["_embedded"]["unsorted"][0]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, v) = sim_send(
        &h,
        reqwest::Method::DELETE,
        &format!("/api/v4/leads/unsorted/{uid}/decline"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_same_shape(&doc_declined(), &v, "decline");
    let (status, _) = sim_get(&h, "/api/v4/leads/unsorted?limit=250").await;
    assert_eq!(status, 204);
}

/// Add calls page: a call to a known number answers with the documented fields.
#[tokio::test]
async fn sim_call_answer_has_the_documented_shape() {
    let h = sim_world(small_world()).await;
    let (status, _) = sim_send(
        &h,
        reqwest::Method::POST,
        "/api/v4/contacts",
        Some(
            json!([{"name": "Иван", "custom_fields_values": [{"field_code": "PHONE",
            "values": [{"value": "+79998888888", "enum_code": "WORK"}]}]}]),
        ),
    )
    .await;
    assert_eq!(status, 200);
    let (status, v) = sim_send(
        &h,
        reqwest::Method::POST,
        "/api/v4/calls",
        Some(
            json!([{"direction": "inbound", "uniq": "a1fe231cc88e64ba2e8822ba2b3ewrw",
                     "duration": 54, "source": "onlinePBX", "phone": "79998888888",
                     "request_id": "0"}]),
        ),
    )
    .await;
    assert_eq!(status, 200);
    assert_same_shape(&doc_call_created(), &v, "calls");
}

/// Errors page: a refused item answers 400 with `validation-errors` in the documented shape.
#[tokio::test]
async fn sim_validation_error_has_the_documented_shape() {
    let h = sim_world(small_world()).await;
    let (status, v) = sim_send(
        &h,
        reqwest::Method::POST,
        "/api/v4/calls",
        Some(json!([{"direction": "sideways", "duration": 1, "source": "x", "request_id": "0"}])),
    )
    .await;
    assert_eq!(status, 400);
    assert_same_shape(&doc_validation_error(), &v, "validation");
    // Without a token: 401 as problem+json.
    let r = reqwest::Client::new()
        .get(format!("{}/api/v4/account", h.amo_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let v: Value = r.json().await.unwrap();
    assert_same_shape(&doc_problem(401, "Unauthorized", ""), &v, "401");
}

/// Events page: 204 with an empty body when no event matches the filter.
#[tokio::test]
async fn sim_events_without_a_match_are_204() {
    let h = sim_world(small_world()).await;
    let (status, v) = sim_get(
        &h,
        "/api/v4/events?filter[created_at][from]=4102444800&limit=100",
    )
    .await;
    assert_eq!(status, 204);
    assert!(v.is_null());
}
