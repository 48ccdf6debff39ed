//! amoCRM list reads: a page of each kind (filtered by `updated_at`, or newest first on
//! accounts without the filtering add-on), the end-of-pass deletion check of [`super::paging`],
//! the directory (users, pipelines), phone search and the outcome of open unsorted leads.

use serde_json::Value;

use crate::crm::{Cursor, Page, Result};
use crate::domain::{EntityKind, EntityRef, Lead, Pipeline, Record, Ts, User, phone};
use crate::http::{Error, ErrorKind};

use super::paging::{self, PagePos};
use super::{AmoCrm, PAGE_LIMIT, SYSTEM, map};

/// Entities whose call notes are activities, in the order a pass reads them.
pub(super) const NOTE_ENTITIES: [&str; 3] = ["leads", "contacts", "companies"];

/// A refusal of the request itself (400, 404, 422: the parameter is gone), not of the
/// credentials, the rate or the server.
pub(super) fn search_refused(e: &Error) -> bool {
    e.kind == ErrorKind::Permanent && matches!(e.status, Some(400 | 404 | 405 | 422))
}

pub(super) fn page_of(cursor: &Cursor) -> u32 {
    cursor
        .position
        .as_deref()
        .and_then(|p| p.parse::<u32>().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(1)
}

pub(super) fn next_cursor(
    cursor: &Cursor,
    records: &[Record],
    position: Option<String>,
) -> (Cursor, bool) {
    let newest = records.iter().map(Record::updated_at).max();
    let high_water: Option<Ts> = match (cursor.high_water, newest) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    match position {
        Some(p) => (
            Cursor {
                since: cursor.since,
                position: Some(p),
                high_water,
            },
            false,
        ),
        None => (
            Cursor {
                since: high_water.or(cursor.since),
                position: None,
                high_water,
            },
            true,
        ),
    }
}

impl AmoCrm {
    /// One page of a HAL list: its items and whether `_links.next` exists.
    pub(super) async fn list_page(
        &self,
        path: &str,
        key: &str,
        query: &[(String, String)],
    ) -> Result<(Vec<Value>, bool)> {
        let Some(v) = self.get(path, query).await? else {
            return Ok((Vec::new(), false));
        };
        let items = match &v["_embedded"][key] {
            Value::Array(a) => a.clone(),
            Value::Null => Vec::new(),
            _ => {
                return Err(self.err(
                    ErrorKind::Decode,
                    &format!("GET {path}"),
                    &format!("{}{path}", self.base),
                    format!("_embedded.{key} is not a list"),
                ));
            }
        };
        let has_next = v["_links"]["next"]["href"].is_string();
        Ok((items, has_next))
    }

    /// The open leads (unsorted items) of `open` whose item was accepted or declined, read from
    /// the leads the items hold: `GET /api/v4/leads?filter[id][]=…`, up to [`PAGE_LIMIT`] ids a
    /// request. The unsorted page (https://www.amocrm.ru/developers/content/crm_platform/unsorted-api):
    /// «Принять» moves the item's lead to the next status, «Отклонить» deletes it from the
    /// pipeline; a lead still in an unsorted status (`type` 1) is pending and left out.
    pub(super) async fn do_lead_outcomes(&self, open: &[Lead]) -> Result<Vec<Lead>> {
        let held: Vec<(u64, &Lead)> = open
            .iter()
            .filter(|l| l.semantics == crate::domain::Semantics::Open)
            .filter_map(|l| Some((l.deal_id.as_deref()?.parse::<u64>().ok()?, l)))
            .collect();
        let mut out = Vec::new();
        if held.is_empty() {
            return Ok(out);
        }
        let unsorted = self.unsorted_statuses().await?;
        let path = "/api/v4/leads";
        for chunk in held.chunks(PAGE_LIMIT as usize) {
            let mut q: Vec<(String, String)> = chunk
                .iter()
                .map(|(id, _)| ("filter[id][]".to_string(), id.to_string()))
                .collect();
            q.push(("limit".to_string(), PAGE_LIMIT.to_string()));
            let (leads, _) = self.list_page(path, "leads", &q).await?;
            let asked: std::collections::HashSet<u64> = chunk.iter().map(|(id, _)| *id).collect();
            let mut by_id: std::collections::HashMap<u64, Value> = leads
                .into_iter()
                .filter_map(|l| l["id"].as_u64().map(|id| (id, l)))
                .collect();
            if by_id.keys().any(|id| !asked.contains(id)) {
                // The account ignored the id filter: a lead missing from this answer says
                // nothing, so each is read by id instead.
                tracing::warn!(
                    system = SYSTEM,
                    "the account ignored filter[id]; reading the leads of unsorted items one by one"
                );
                by_id.clear();
                for (id, _) in chunk {
                    if let Some(l) = self.get(&format!("{path}/{id}"), &[]).await? {
                        by_id.insert(*id, l);
                    }
                }
            }
            let now = chrono::Utc::now();
            for (id, lead) in chunk {
                let found = by_id.get(id);
                let state = map::unsorted_state(found, &unsorted);
                if state == map::UnsortedState::Pending {
                    continue;
                }
                match map::decided(lead, state, found, now) {
                    Ok(l) => out.push(l),
                    Err(why) => {
                        tracing::warn!(system = SYSTEM, lead = %lead.id, reason = %why, "outcome of an unsorted item refused")
                    }
                }
            }
        }
        Ok(out)
    }

    /// The "unsorted" statuses, read with the pipelines once and kept until the next
    /// directory refresh (see [`Crm::pipelines`]).
    pub(super) async fn unsorted_statuses(&self) -> Result<std::collections::HashSet<u64>> {
        let cached = self
            .unsorted_statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(statuses) = cached {
            return Ok(statuses);
        }
        let pipelines = self.get("/api/v4/leads/pipelines", &[]).await?;
        Ok(self.keep_unsorted_statuses(pipelines.as_ref()))
    }

    pub(super) fn keep_unsorted_statuses(
        &self,
        pipelines: Option<&Value>,
    ) -> std::collections::HashSet<u64> {
        let statuses = pipelines.map(map::unsorted_statuses).unwrap_or_default();
        *self
            .unsorted_statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(statuses.clone());
        statuses
    }

    pub(super) async fn all_pages(&self, path: &str, key: &str) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        for page in 1..=10_000u32 {
            let q = vec![
                ("limit".to_string(), PAGE_LIMIT.to_string()),
                ("page".to_string(), page.to_string()),
            ];
            let (items, next) = self.list_page(path, key, &q).await?;
            out.extend(items);
            if !next {
                break;
            }
        }
        Ok(out)
    }

    /// Whether the account filters leads, contacts and companies by `updated_at` (the
    /// filtering add-on, `is_api_filter_enabled`); read once and cached until the next
    /// directory refresh. An account that does not say is taken as one without it: reading
    /// newest first is right on both kinds, only slower on the other.
    pub(super) async fn api_filter_enabled(&self) -> Result<bool> {
        if let Some(on) = *self.api_filter.lock().unwrap_or_else(|e| e.into_inner()) {
            return Ok(on);
        }
        let path = "/api/v4/account";
        let q = [("with".to_string(), "is_api_filter_enabled".to_string())];
        let v = self.get(path, &q).await?;
        let on = v
            .as_ref()
            .and_then(|v| v["is_api_filter_enabled"].as_bool())
            .unwrap_or(false);
        if !on {
            tracing::info!(
                system = SYSTEM,
                "the account has no API filtering add-on: changes of deals, contacts and \
                 companies are read newest first up to the last sync"
            );
        }
        *self.api_filter.lock().unwrap_or_else(|e| e.into_inner()) = Some(on);
        Ok(on)
    }

    /// A `query=` search page, or `None` once the account refuses `query` (the filters page,
    /// https://www.amocrm.ru/developers/content/crm_platform/filters-api, says it "will be
    /// deprecated soon"). The mirror's phone index is asked first; this search only finds
    /// records the mirror has not seen yet, so its end costs freshness, not correctness.
    pub(super) async fn search_page(
        &self,
        path: &str,
        key: &str,
        query: &[(String, String)],
    ) -> Result<Option<(Vec<Value>, bool)>> {
        match self.list_page(path, key, query).await {
            Ok(page) => Ok(Some(page)),
            Err(e) if search_refused(&e) => {
                tracing::warn!(system = SYSTEM, path, error = %e, "amoCRM refused the query search; numbers are looked up in the mirror only");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    pub(super) fn currency(&self) -> String {
        self.currency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(super) async fn read_page(
        &self,
        path: &str,
        key: &str,
        order: &str,
        extra: &[(&str, &str)],
        cursor: &Cursor,
        page: u32,
    ) -> Result<(Vec<Value>, bool)> {
        let mut q: Vec<(String, String)> = Vec::new();
        if let Some(since) = cursor.since {
            q.push((
                "filter[updated_at][from]".into(),
                since.timestamp().to_string(),
            ));
        }
        q.push((format!("order[{order}]"), "asc".into()));
        self.read_page_with(path, key, q, extra, page).await
    }

    /// One page newest first, without the `updated_at` filter (an account without the
    /// filtering add-on). Items older than `since` are dropped and end the pass: everything
    /// after them is older still.
    pub(super) async fn read_newest_first(
        &self,
        path: &str,
        key: &str,
        extra: &[(&str, &str)],
        since: i64,
        page: u32,
    ) -> Result<(Vec<Value>, bool)> {
        let q = vec![("order[updated_at]".to_string(), "desc".to_string())];
        let (mut items, more) = self.read_page_with(path, key, q, extra, page).await?;
        let before = items.len();
        // An item without a readable `updated_at` is kept: the mapper refuses it by name.
        items.retain(|v| v["updated_at"].as_i64().is_none_or(|u| u >= since));
        let reached_cursor = items.len() < before;
        Ok((items, more && !reached_cursor))
    }

    pub(super) async fn read_page_with(
        &self,
        path: &str,
        key: &str,
        mut q: Vec<(String, String)>,
        extra: &[(&str, &str)],
        page: u32,
    ) -> Result<(Vec<Value>, bool)> {
        q.push(("limit".into(), PAGE_LIMIT.to_string()));
        q.push(("page".into(), page.to_string()));
        for (k, v) in extra {
            q.push(((*k).into(), (*v).into()));
        }
        self.list_page(path, key, &q).await
    }

    /// At the last page of a run: asks for deletions of `entity` since the run started and,
    /// when there were any, says where to re-read from (see [`paging`]). The deleted ids go
    /// into `deleted` either way.
    pub(super) async fn after_last_page(
        &self,
        entity: EntityKind,
        pos: PagePos,
        deleted: &mut Vec<String>,
    ) -> Result<Option<PagePos>> {
        let Some(started) = pos.started.filter(|_| pos.spans_pages()) else {
            return Ok(None);
        };
        let checked_at = chrono::Utc::now().timestamp();
        let gone = self.deleted_since(entity, started).await?;
        deleted.extend(gone.iter().map(u64::to_string));
        let restart = self.traces.with(entity, |t| {
            let new = t.take_new(&gone);
            if new.is_empty() {
                return Ok(None);
            }
            // Newest first, ids say nothing of where a record sat: back to the first page.
            t.restart_page(&new)
                .map(|p| Some(if pos.newest_first { 1 } else { p }))
                .ok_or(new.len())
        });
        match restart {
            Ok(Some(page)) => {
                tracing::info!(
                    system = SYSTEM,
                    entity = entity.as_str(),
                    page,
                    "records deleted during the pass; re-reading from the page they were on"
                );
                Ok(Some(PagePos {
                    page,
                    first: page,
                    started: Some(checked_at),
                    newest_first: pos.newest_first,
                }))
            }
            Ok(None) => Ok(None),
            Err(n) => {
                tracing::warn!(
                    system = SYSTEM,
                    entity = entity.as_str(),
                    deleted = n,
                    "records keep being deleted during the pass; ending it after {} re-reads",
                    paging::MAX_REPAIRS
                );
                Ok(None)
            }
        }
    }

    pub(super) async fn do_users(&self) -> Result<Vec<User>> {
        let path = "/api/v4/users";
        self.all_pages(path, "users")
            .await?
            .iter()
            .map(|v| map::user(v).map_err(|e| self.decode_err(path, e)))
            .collect()
    }

    pub(super) async fn do_pipelines(&self) -> Result<Vec<Pipeline>> {
        // A directory refresh: the filtering add-on may have been switched since; read the
        // flag again before the next incremental read.
        *self.api_filter.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let path = "/api/v4/leads/pipelines";
        let v = self.get(path, &[]).await?;
        self.keep_unsorted_statuses(v.as_ref());
        let items = v
            .as_ref()
            .and_then(|v| v["_embedded"]["pipelines"].as_array())
            .cloned()
            .unwrap_or_default();
        let mut out: Vec<Pipeline> = items
            .iter()
            .map(|p| map::pipeline(p).map_err(|e| self.decode_err(path, e)))
            .collect::<Result<_>>()?;
        out.push(map::lead_pipeline());
        Ok(out)
    }

    // Long: one arm per family of kinds (listed entities, call notes, unsorted items), each with its
    // path, order and cursor handling; the arms read best side by side.
    pub(super) async fn do_fetch_page(&self, entity: EntityKind, cursor: &Cursor) -> Result<Page> {
        let currency = self.currency();
        let mut deleted = Vec::new();
        let (records, position): (Vec<Record>, Option<String>) = match entity {
            EntityKind::Deal | EntityKind::Contact | EntityKind::Company | EntityKind::Task => {
                let (path, key, order, extra): (&str, &str, &str, &[(&str, &str)]) = match entity {
                    EntityKind::Deal => ("/api/v4/leads", "leads", "id", &[("with", "contacts")]),
                    EntityKind::Contact => ("/api/v4/contacts", "contacts", "id", &[]),
                    EntityKind::Company => ("/api/v4/companies", "companies", "id", &[]),
                    _ => ("/api/v4/tasks", "tasks", "id", &[]),
                };
                let since = cursor.since.map(|s| s.timestamp());
                let newest_first = match since {
                    Some(_) if entity != EntityKind::Task => !self.api_filter_enabled().await?,
                    _ => false,
                };
                let pos = match cursor.position.as_deref().and_then(PagePos::parse) {
                    // A pass begun in the other order (the add-on switched) starts over.
                    Some(pos) if pos.newest_first == newest_first => pos,
                    _ => {
                        self.traces.reset(entity);
                        let now = chrono::Utc::now().timestamp();
                        if newest_first {
                            PagePos::start_newest_first(now)
                        } else {
                            PagePos::start(now)
                        }
                    }
                };
                let (items, more) = match since.filter(|_| newest_first) {
                    Some(since) => {
                        self.read_newest_first(path, key, extra, since, pos.page)
                            .await?
                    }
                    None => {
                        self.read_page(path, key, order, extra, cursor, pos.page)
                            .await?
                    }
                };
                self.traces.with(entity, |t| {
                    t.saw_page(pos.page, items.iter().filter_map(|v| v["id"].as_u64()))
                });
                // Leads in an unsorted status are the leads of pending unsorted items (the
                // unsorted page: the status is a system status of the pipeline, its leads
                // listed as any other): mirrored as leads, not as open deals. Once accepted
                // they move on and come back here as deals.
                let pending = if entity == EntityKind::Deal && !items.is_empty() {
                    self.unsorted_statuses().await?
                } else {
                    Default::default()
                };
                let records = items
                    .iter()
                    .filter(|v| {
                        v["status_id"]
                            .as_u64()
                            .is_none_or(|s| !pending.contains(&s))
                    })
                    .filter_map(|v| {
                        let mapped = match entity {
                            EntityKind::Deal => map::deal(v, &currency).map(Record::Deal),
                            EntityKind::Contact => map::contact(v).map(Record::Contact),
                            EntityKind::Company => map::company(v).map(Record::Company),
                            _ => map::task(v).map(Record::Task),
                        };
                        self.readable(path, v, mapped).transpose()
                    })
                    .collect::<Result<Vec<_>>>()?;
                let next = if more {
                    Some(pos.next_page())
                } else {
                    self.after_last_page(entity, pos, &mut deleted).await?
                };
                (records, next.map(|p| p.to_string()))
            }
            EntityKind::Lead => {
                // Unsorted items have no updated_at filter: read by creation and keep the
                // changed ones.
                let path = "/api/v4/leads/unsorted";
                let page = page_of(cursor);
                let q = vec![
                    ("order[created_at]".to_string(), "asc".to_string()),
                    ("limit".to_string(), PAGE_LIMIT.to_string()),
                    ("page".to_string(), page.to_string()),
                ];
                let (items, more) = self.list_page(path, "unsorted", &q).await?;
                let since = cursor.since.map(|s| s.timestamp());
                let changed: Vec<&Value> = items
                    .iter()
                    .filter(|v| {
                        since.is_none_or(|s| map::unsorted_updated(v).is_none_or(|u| u >= s))
                    })
                    .collect();
                // The list holds only items awaiting a decision: each is pending. Accepted and
                // declined ones leave it and are told by `lead_outcomes`.
                let records = changed
                    .into_iter()
                    .filter_map(|v| {
                        let mapped = map::unsorted(v).map(Record::Lead);
                        self.readable(path, v, mapped).transpose()
                    })
                    .collect::<Result<Vec<_>>>()?;
                (records, more.then(|| (page + 1).to_string()))
            }
            EntityKind::Activity => {
                // Position `ENTITY:PAGE` walks the call notes of leads, contacts, companies.
                let (ent_idx, page) =
                    match cursor.position.as_deref().and_then(|p| p.split_once(':')) {
                        Some((e, p)) => (
                            NOTE_ENTITIES.iter().position(|x| *x == e).unwrap_or(0),
                            p.parse::<u32>().ok().filter(|p| *p >= 1).unwrap_or(1),
                        ),
                        None => (0, 1),
                    };
                let ent = NOTE_ENTITIES[ent_idx];
                let path = format!("/api/v4/{ent}/notes");
                let extra = [
                    ("filter[note_type][]", "call_in"),
                    ("filter[note_type][]", "call_out"),
                ];
                let (items, more) = self
                    .read_page(&path, "notes", "id", &extra, cursor, page)
                    .await?;
                let mut records = Vec::new();
                for v in &items {
                    // Notes of other types map to `None`: not mirrored.
                    if let Some(Some(a)) = self.readable(&path, v, map::call_note(v, ent))? {
                        records.push(Record::Activity(a));
                    }
                }
                let position = if more {
                    Some(format!("{ent}:{}", page + 1))
                } else {
                    NOTE_ENTITIES
                        .get(ent_idx + 1)
                        .map(|next| format!("{next}:1"))
                };
                (records, position)
            }
        };
        let (next, done) = next_cursor(cursor, &records, position);
        Ok(Page {
            records,
            next,
            done,
            deleted,
        })
    }

    pub(super) async fn do_find_by_phone(&self, e164: &str) -> Result<Vec<EntityRef>> {
        let digits: String = e164.chars().filter(char::is_ascii_digit).collect();
        let wanted = phone::normalize(e164).unwrap_or_else(|_| format!("+{digits}"));
        let found = self
            .search_phone(e164, false, |p, _| {
                phone::normalize(p).is_ok_and(|n| n == wanted)
            })
            .await?;
        Ok(found
            .into_iter()
            .map(|(kind, id, _)| EntityRef::new(kind, id.to_string()))
            .collect())
    }

    /// Contacts and companies the `query` search finds for the last ten digits of `e164` (they
    /// match however the number was typed: +7, 8, spaces, dashes), kept where `holds(phone,
    /// last_ten)` accepts one of their phones; each with its id and answer row, contacts with
    /// their deals when `with_leads`. Empty for a number of fewer than ten digits; where the
    /// account refuses `query` (marked for deprecation) the search ends with what it has.
    pub(super) async fn search_phone(
        &self,
        e164: &str,
        with_leads: bool,
        holds: impl Fn(&str, &str) -> bool,
    ) -> Result<Vec<(EntityKind, u64, Value)>> {
        let digits: String = e164.chars().filter(char::is_ascii_digit).collect();
        if digits.len() < 10 {
            return Ok(Vec::new());
        }
        let needle = digits[digits.len() - 10..].to_string();
        let mut out = Vec::new();
        for (path, key, kind) in [
            ("/api/v4/contacts", "contacts", EntityKind::Contact),
            ("/api/v4/companies", "companies", EntityKind::Company),
        ] {
            let mut q = vec![
                ("query".to_string(), needle.clone()),
                ("limit".to_string(), "50".to_string()),
            ];
            if with_leads && kind == EntityKind::Contact {
                q.push(("with".into(), "leads".into()));
            }
            let Some((items, _)) = self.search_page(path, key, &q).await? else {
                break;
            };
            for v in items {
                let rec: map::WirePerson = map::decode(&v).map_err(|e| self.decode_err(path, e))?;
                let hit = map::field_values(&rec.custom_fields_values, "PHONE")
                    .iter()
                    .any(|p| holds(p, &needle));
                if hit {
                    out.push((kind, rec.id, v));
                }
            }
        }
        Ok(out)
    }
}
