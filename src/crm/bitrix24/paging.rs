//! Bitrix24 list reads: fast ID paging (`>ID`, `start=-1`) with several pages chained in one
//! `batch` through `$result[...]` references, and the directory reads (users, pipelines,
//! phone lookup).

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use crate::crm::{Cursor, Page, Result};
use crate::domain::{EntityKind, EntityRef, Pipeline, Record, User};
use crate::http::php_query;

use super::retry::retry_wait;
use super::{Bitrix24, MAX_BATCH, PAGE, PAGES_FULL, PAGES_INCREMENTAL, SYSTEM, map, scope, text};

/// Rows of a list answer (`result[]`, or `result.tasks[]` for wrapped lists).
pub(super) fn list_rows(res: &Value, wrapped: Option<&str>) -> Option<Vec<Value>> {
    let rows = match wrapped {
        Some(w) => res.get(w),
        None => Some(res),
    };
    match rows {
        Some(Value::Array(a)) => Some(a.clone()),
        Some(Value::Object(m)) => Some(m.values().cloned().collect()),
        _ => None,
    }
}

/// Chained fast-paging commands: the first starts after `last`, each next one after the last
/// id of the previous page (`$result[prev][49][ID]`).
pub(super) fn chained_cmds(
    spec: &map::ListSpec,
    base: &Value,
    filter: Map<String, Value>,
    last: u64,
    pages: usize,
    prefix: &str,
) -> Vec<(String, String)> {
    let mut cmds = Vec::with_capacity(pages);
    for i in 0..pages {
        let key = format!("{prefix}{i:02}");
        let mut p = base.clone();
        let mut f = filter.clone();
        if i == 0 {
            f.insert(format!(">{}", spec.id_field), json!(last));
        }
        p["filter"] = Value::Object(f);
        let mut q = php_query::build(&p);
        if i > 0 {
            let prev = format!("{prefix}{:02}", i - 1);
            let path = match spec.wrapped {
                Some(w) => format!("$result[{prev}][{w}][{}][{}]", PAGE - 1, spec.row_id),
                None => format!("$result[{prev}][{}][{}]", PAGE - 1, spec.row_id),
            };
            q.push_str(&format!("&filter[>{}]={path}", spec.id_field));
        }
        cmds.push((key, format!("{}?{q}", spec.method)));
    }
    cmds
}

/// Values of a multiple string field (`["a","b"]`, `false`/`""`/null when empty).
pub(super) fn flag_values(v: &Value) -> Vec<String> {
    match v {
        Value::Array(_) | Value::Object(_) => php_query::as_list(v)
            .iter()
            .filter_map(text)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        Value::String(s) if !s.trim().is_empty() => vec![s.trim().to_string()],
        _ => Vec::new(),
    }
}

impl Bitrix24 {
    /// The list spec of a kind, with the flag field selected where flags live.
    pub(super) fn spec(&self, entity: EntityKind) -> map::ListSpec {
        let mut spec = map::ListSpec::of(entity);
        if let Some(f) = &self.flag_field
            && matches!(
                entity,
                EntityKind::Deal | EntityKind::Contact | EntityKind::Company
            )
        {
            spec.select.push(f.clone());
        }
        spec
    }

    /// `pages` chained list commands (keys `{prefix}00`, `{prefix}01`, ...) continuing `cursor`.
    pub(super) fn page_cmds(
        &self,
        spec: &map::ListSpec,
        cursor: &Cursor,
        pages: usize,
        prefix: &str,
    ) -> Vec<(String, String)> {
        let last: u64 = cursor
            .position
            .as_deref()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let mut filter = Map::new();
        if let Some(since) = cursor.since {
            filter.insert(
                format!(">={}", spec.date_field),
                Value::String(since.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()),
            );
        }
        let mut base = json!({
            "order": {spec.id_field: "ASC"},
            "select": spec.select,
        });
        if spec.fast {
            base["start"] = json!(-1);
        }
        chained_cmds(spec, &base, filter, last, pages, prefix)
    }

    /// Turns the answers of [`Self::page_cmds`] into a page; also says how many rows the first
    /// command returned.
    // Long: one walk over the chained pages that moves position, high water and end of list
    // together.
    pub(super) fn parse_pages(
        &self,
        entity: EntityKind,
        spec: &map::ListSpec,
        cursor: &Cursor,
        cmds: &[(String, String)],
        results: &Map<String, Value>,
        errors: &Map<String, Value>,
    ) -> Result<(Page, usize)> {
        let last: u64 = cursor
            .position
            .as_deref()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let mut records = Vec::new();
        let mut position = last;
        let mut high = cursor.high_water;
        let mut done = false;
        let mut first_rows = 0;
        for (i, (key, _)) in cmds.iter().enumerate() {
            if let Some(e) = errors.get(key) {
                if i == 0 {
                    let url = self.shown_url(spec.method);
                    return Err(self.classify(spec.method, &url, None, e));
                }
                break;
            }
            let Some(res) = results.get(key) else {
                if i == 0 {
                    return Err(self.decode(spec.method, "batch answer lacks the first page"));
                }
                break;
            };
            let rows = list_rows(res, spec.wrapped)
                .ok_or_else(|| self.decode(spec.method, "list result is not an array"))?;
            if i == 0 {
                first_rows = rows.len();
            }
            for row in &rows {
                let mapped = match map::record(entity, row) {
                    Ok(m) => m,
                    // A row that cannot be read (a date in year 9999, a field of the wrong
                    // shape) is refused alone: one poisoned record must not stop the sync of
                    // every other. Without an id there is no way past it, so the page fails.
                    Err(why) => match map::row_id(row, spec.row_id) {
                        Some(id) => {
                            tracing::warn!(system = SYSTEM, method = spec.method, record = id, reason = %why, "record refused");
                            position = position.max(id);
                            continue;
                        }
                        None => return Err(self.decode(spec.method, why)),
                    },
                };
                let Some(mut rec) = mapped else {
                    // A row we do not mirror (e.g. a task-type activity); still advance past it.
                    if let Some(id) = map::row_id(row, spec.row_id) {
                        position = position.max(id);
                    }
                    continue;
                };
                let id = map::row_id(row, spec.row_id)
                    .ok_or_else(|| self.decode(spec.method, "row without a numeric id"))?;
                position = position.max(id);
                if let Some(f) = &self.flag_field {
                    let flags = row.get(f.as_str()).map(flag_values).unwrap_or_default();
                    match &mut rec {
                        Record::Deal(d) => d.tags = flags,
                        Record::Contact(c) => c.tags = flags,
                        Record::Company(c) => c.tags = flags,
                        _ => {}
                    }
                }
                let up = rec.updated_at();
                high = Some(high.map_or(up, |h| h.max(up)));
                records.push(rec);
            }
            if rows.len() < PAGE {
                done = true;
                break;
            }
        }
        let next = Cursor {
            since: cursor.since,
            position: (!done).then(|| position.to_string()),
            high_water: high,
        };
        Ok((
            Page {
                records,
                next,
                done,
                deleted: Vec::new(),
            },
            first_rows,
        ))
    }

    /// Reads one batch of chained list pages.
    pub(super) async fn read_pages(&self, entity: EntityKind, cursor: &Cursor) -> Result<Page> {
        let spec = self.spec(entity);
        let pages = if cursor.since.is_some() {
            PAGES_INCREMENTAL
        } else {
            PAGES_FULL
        };
        let cmds = self.page_cmds(&spec, cursor, pages, "p");
        let (results, errors) = self.batch(&cmds).await?;
        self.parse_pages(entity, &spec, cursor, &cmds, &results, &errors)
            .map(|(page, _)| page)
    }

    /// Every id of a list method, 50 chained ID-only pages per `batch`.
    pub(super) async fn all_ids(
        &self,
        spec: &map::ListSpec,
        extra_filter: Map<String, Value>,
        prefix: &str,
    ) -> Result<Vec<String>> {
        let mut base = json!({
            "order": {spec.id_field: "ASC"},
            "select": [spec.id_field],
        });
        if spec.fast {
            base["start"] = json!(-1);
        }
        let mut ids = Vec::new();
        let mut last = 0u64;
        loop {
            let cmds = chained_cmds(spec, &base, extra_filter.clone(), last, MAX_BATCH, "i");
            let (results, errors) = self.batch(&cmds).await?;
            let mut done = false;
            for (i, (key, _)) in cmds.iter().enumerate() {
                if let Some(e) = errors.get(key) {
                    if i == 0 {
                        let url = self.shown_url(spec.method);
                        return Err(self.classify(spec.method, &url, None, e));
                    }
                    done = true;
                    break;
                }
                let Some(rows) = results.get(key).and_then(|r| list_rows(r, spec.wrapped)) else {
                    return Err(self.decode(spec.method, "list result is not an array"));
                };
                for row in &rows {
                    let id = map::row_id(row, spec.row_id)
                        .ok_or_else(|| self.decode(spec.method, "row without a numeric id"))?;
                    last = last.max(id);
                    ids.push(format!("{prefix}{id}"));
                }
                if rows.len() < PAGE {
                    done = true;
                    break;
                }
            }
            if done {
                return Ok(ids);
            }
        }
    }

    pub(super) async fn do_users(&self) -> Result<Vec<User>> {
        let mut out = Vec::new();
        let mut start = 0u64;
        loop {
            let env = self
                .call(
                    "user.get",
                    &json!({"sort": "ID", "order": "ASC", "start": start}),
                )
                .await
                .map_err(|e| {
                    if scope::is_refusal(&e) {
                        scope::refused_for("user", e)
                    } else {
                        e
                    }
                })?;
            let Some(rows) = env["result"].as_array() else {
                return Err(self.decode("user.get", "result is not an array"));
            };
            for row in rows {
                out.push(map::user(row).map_err(|m| self.decode("user.get", m))?);
            }
            match env.get("next").and_then(|n| text(n)?.parse::<u64>().ok()) {
                Some(n) if n > start && !rows.is_empty() => start = n,
                _ => break,
            }
        }
        Ok(out)
    }

    // Long: builds the pipelines from one batch answer (categories, the default one when missing,
    // the stages of each); split, every step would pass the whole answer on.
    pub(super) async fn do_pipelines(&self) -> Result<Vec<Pipeline>> {
        let status = |entity: &str| {
            format!(
                "crm.status.list?{}",
                php_query::build(
                    &json!({"filter": {"ENTITY_ID": entity}, "order": {"SORT": "ASC"}})
                )
            )
        };
        let cmds = vec![
            (
                "cats".to_string(),
                "crm.category.list?entityTypeId=2".to_string(),
            ),
            ("leads".to_string(), status("STATUS")),
            ("s0".to_string(), status("DEAL_STAGE")),
        ];
        let (res, errs) = self.batch(&cmds).await?;
        if let Some((k, e)) = errs.iter().next() {
            let m = if k == "cats" {
                "crm.category.list"
            } else {
                "crm.status.list"
            };
            let url = self.shown_url(m);
            let e = self.classify(m, &url, None, e);
            return Err(if scope::is_refusal(&e) {
                scope::refused_for("crm", e)
            } else {
                e
            });
        }
        let cats = res
            .get("cats")
            .and_then(|c| c.get("categories"))
            .and_then(Value::as_array)
            .cloned()
            .ok_or_else(|| self.decode("crm.category.list", "no categories in the answer"))?;
        let mut cat_list: Vec<(String, String, bool, i64)> = cats
            .iter()
            .filter_map(|c| {
                let id = c.get("id").and_then(text)?;
                let name = c.get("name").and_then(text).unwrap_or_default();
                let def = c
                    .get("isDefault")
                    .and_then(text)
                    .is_some_and(|d| d == "Y" || d == "true");
                let sort = c
                    .get("sort")
                    .and_then(text)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                Some((id, name, def, sort))
            })
            .collect();
        if !cat_list.iter().any(|c| c.0 == "0") {
            cat_list.insert(0, ("0".into(), "General".into(), true, 0));
        }
        cat_list.sort_by_key(|c| c.3);
        let others: Vec<(String, String)> = cat_list
            .iter()
            .filter(|c| c.0 != "0")
            .map(|c| (format!("s{}", c.0), status(&format!("DEAL_STAGE_{}", c.0))))
            .collect();
        let mut stage_rows: HashMap<String, Value> = HashMap::new();
        stage_rows.insert("0".into(), res.get("s0").cloned().unwrap_or(Value::Null));
        for chunk in others.chunks(50) {
            let (r, e) = self.batch(chunk).await?;
            if let Some((_, e)) = e.iter().next() {
                let url = self.shown_url("crm.status.list");
                return Err(self.classify("crm.status.list", &url, None, e));
            }
            for (k, v) in r {
                stage_rows.insert(k.trim_start_matches('s').to_string(), v);
            }
        }
        let mut out = Vec::new();
        for (id, name, def, _) in &cat_list {
            let rows = stage_rows.get(id).cloned().unwrap_or(Value::Null);
            let stages = map::stages(id, &rows);
            out.push(Pipeline {
                id: id.clone(),
                name: name.clone(),
                is_default: *def,
                stages,
            });
        }
        out.push(Pipeline {
            id: "leads".into(),
            name: "Leads".into(),
            is_default: false,
            stages: map::stages("leads", res.get("leads").unwrap_or(&Value::Null)),
        });
        Ok(out)
    }

    pub(super) async fn do_fetch_page(&self, entity: EntityKind, cursor: &Cursor) -> Result<Page> {
        // `batch` itself is retried by `call`; a refused first command (its method over the
        // operating budget, a transient failure inside the batch) is retried here.
        let mut attempt = 0;
        let mut refusals = self.throttle.start();
        loop {
            match self.read_pages(entity, cursor).await {
                Err(e) if e.method != "batch" => {
                    match retry_wait(&e, &mut attempt, &mut refusals) {
                        Some(wait) => self.wait(wait, &e.method).await?,
                        None => return Err(e),
                    }
                }
                other => return other,
            }
        }
    }

    pub(super) async fn do_find_by_phone(&self, e164: &str) -> Result<Vec<EntityRef>> {
        let digits: String = e164.chars().filter(|c| c.is_ascii_digit()).collect();
        let mut values = vec![e164.to_string(), digits.clone()];
        if digits.len() == 11 && digits.starts_with('7') {
            values.push(format!("8{}", &digits[1..]));
            values.push(digits[1..].to_string());
        }
        values.dedup();
        let env = self
            .call(
                "crm.duplicate.findbycomm",
                &json!({"type": "PHONE", "values": values}),
            )
            .await?;
        let mut out: Vec<EntityRef> = Vec::new();
        if let Value::Object(m) = &env["result"] {
            for (ty, ids) in m {
                let kind = match ty.as_str() {
                    "LEAD" => EntityKind::Lead,
                    "CONTACT" => EntityKind::Contact,
                    "COMPANY" => EntityKind::Company,
                    _ => continue,
                };
                for id in php_query::as_list(ids) {
                    if let Some(id) = text(&id) {
                        let r = EntityRef::new(kind, id);
                        if !out.contains(&r) {
                            out.push(r);
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}
