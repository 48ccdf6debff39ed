//! The change probe: one events query tells which kinds changed and what was deleted.
//!
//! `GET /api/v4/events?filter[created_at][from]=<oldest since>&limit=100`. A 204 means nothing
//! happened: the whole idle cycle is that one request. Otherwise the events are read (up to
//! [`MAX_EVENT_PAGES`] pages) and mapped to kinds; only those kinds get a page. An event counts
//! for a kind when it is newer than that kind's `since` (strictly: an event in the very second
//! of the last read is taken as already seen, so an idle account stays at one request; a change
//! made in that same second after the read waits for the kind's next change). Deletions
//! (`lead_deleted`, `contact_deleted`, `company_deleted`, `task_deleted`) at or after `since`
//! go into [`Page::deleted`]. Types are filtered with `filter[type][]`, as an array.

use std::collections::{HashMap, HashSet};

use chrono::{Duration, TimeZone, Utc};
use serde_json::Value;

use super::AmoCrm;
use crate::crm::{Crm, Cursor, Page, Result};
use crate::domain::EntityKind;

/// Pages of events read per probe; past this every probed kind is read and deletions come from
/// a query for deletion events only.
pub(crate) const MAX_EVENT_PAGES: u32 = 30;
const EVENTS_LIMIT: u32 = 100;
/// Sent as `filter[type][]`, one per type: the events page
/// (https://www.amocrm.ru/developers/content/crm_platform/events-and-notes) takes the type filter
/// as a single type or an array.
const DELETION_TYPES: [&str; 4] = [
    "lead_deleted",
    "contact_deleted",
    "company_deleted",
    "task_deleted",
];

/// The kind a deletion event removes.
fn deleted_kind(kind: &str) -> Option<EntityKind> {
    match kind {
        "lead_deleted" => Some(EntityKind::Deal),
        "contact_deleted" => Some(EntityKind::Contact),
        "company_deleted" => Some(EntityKind::Company),
        "task_deleted" => Some(EntityKind::Task),
        _ => None,
    }
}

/// The deletion event type of a kind, for kinds that have one.
fn deletion_type(kind: EntityKind) -> Option<&'static str> {
    match kind {
        EntityKind::Deal => Some("lead_deleted"),
        EntityKind::Contact => Some("contact_deleted"),
        EntityKind::Company => Some("company_deleted"),
        EntityKind::Task => Some("task_deleted"),
        _ => None,
    }
}

/// The kinds an event may have changed; `None` = unsure (every kind is read).
pub(crate) fn event_kinds(kind: &str, entity: &str) -> Option<Vec<EntityKind>> {
    if kind.starts_with("task_") {
        return Some(vec![EntityKind::Task]);
    }
    if matches!(kind, "incoming_call" | "outgoing_call") || kind.contains("note") {
        return Some(vec![EntityKind::Activity]);
    }
    if kind.contains("unsorted") || kind.starts_with("incoming_lead") {
        return Some(vec![EntityKind::Lead]);
    }
    let by_prefix = [
        ("lead_", EntityKind::Deal),
        ("contact_", EntityKind::Contact),
        ("company_", EntityKind::Company),
    ];
    if let Some((_, k)) = by_prefix.iter().find(|(p, _)| kind.starts_with(p)) {
        return Some(vec![*k]);
    }
    match entity {
        "lead" | "leads" => Some(vec![EntityKind::Deal]),
        "contact" | "contacts" => Some(vec![EntityKind::Contact]),
        "company" | "companies" => Some(vec![EntityKind::Company]),
        "task" | "tasks" => Some(vec![EntityKind::Task]),
        "unsorted" => Some(vec![EntityKind::Lead]),
        _ => None,
    }
}

fn entity_id(e: &Value) -> Option<String> {
    match &e["entity_id"] {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

#[derive(Default)]
struct Probe {
    changed: HashSet<EntityKind>,
    all: bool,
    /// Deleted ids per kind with the newest deletion time.
    deleted: HashMap<EntityKind, (Vec<String>, i64)>,
}

impl Probe {
    fn take(&mut self, e: &Value, since: &HashMap<EntityKind, i64>) {
        let kind = e["type"].as_str().unwrap_or("");
        let at = e["created_at"].as_i64().unwrap_or(i64::MAX);
        if let Some(k) = deleted_kind(kind) {
            if let (Some(s), Some(id)) = (since.get(&k), entity_id(e))
                && at >= *s
            {
                let d = self.deleted.entry(k).or_default();
                if !d.0.contains(&id) {
                    d.0.push(id);
                }
                d.1 = d.1.max(at);
            }
            return;
        }
        match event_kinds(kind, e["entity_type"].as_str().unwrap_or("")) {
            Some(kinds) => {
                for k in kinds {
                    if since.get(&k).is_some_and(|s| at > *s) {
                        self.changed.insert(k);
                    }
                }
            }
            None => self.all = true,
        }
    }
}

impl AmoCrm {
    async fn events_pages(
        &self,
        from: i64,
        types: &[&str],
        probe: &mut Probe,
        since: &HashMap<EntityKind, i64>,
    ) -> Result<bool> {
        for page in 1..=MAX_EVENT_PAGES {
            let mut q = vec![("filter[created_at][from]".to_string(), from.to_string())];
            for t in types {
                q.push(("filter[type][]".into(), (*t).into()));
            }
            q.push(("limit".into(), EVENTS_LIMIT.to_string()));
            if page > 1 {
                q.push(("page".into(), page.to_string()));
            }
            let (items, more) = self.list_page("/api/v4/events", "events", &q).await?;
            for e in &items {
                probe.take(e, since);
            }
            if !more {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Ids of `kind` deleted at or after `from` (unix seconds), from the events log.
    pub(super) async fn deleted_since(&self, kind: EntityKind, from: i64) -> Result<Vec<u64>> {
        let Some(types) = deletion_type(kind) else {
            return Ok(Vec::new());
        };
        let since = HashMap::from([(kind, from)]);
        let mut probe = Probe::default();
        self.events_pages(from, &[types], &mut probe, &since)
            .await?;
        Ok(probe
            .deleted
            .remove(&kind)
            .map(|(ids, _)| ids.iter().filter_map(|id| id.parse().ok()).collect())
            .unwrap_or_default())
    }

    pub(super) async fn do_fetch_changes(
        &self,
        cursors: &[(EntityKind, Cursor)],
    ) -> Result<Vec<(EntityKind, Page)>> {
        let since: HashMap<EntityKind, i64> = cursors
            .iter()
            .filter_map(|(k, c)| c.since.map(|s| (*k, s.timestamp())))
            .collect();
        let mut probe = Probe::default();
        if let Some(oldest) = since.values().min().copied() {
            let complete = self.events_pages(oldest, &[], &mut probe, &since).await?;
            if !complete {
                probe.all = true;
                self.events_pages(oldest, &DELETION_TYPES, &mut probe, &since)
                    .await?;
            }
        }
        let mut out = Vec::new();
        for (kind, cursor) in cursors {
            let must = cursor.since.is_none() || cursor.position.is_some();
            let deleted = probe.deleted.remove(kind);
            if must || probe.all || probe.changed.contains(kind) {
                let mut page = self.fetch_page(*kind, cursor).await?;
                for id in deleted.map(|d| d.0).unwrap_or_default() {
                    if !page.deleted.contains(&id) {
                        page.deleted.push(id);
                    }
                }
                out.push((*kind, page));
            } else if let Some((ids, newest)) = deleted {
                // Only deletions: nothing to read; move past them so they are not reported
                // again.
                let after = Utc
                    .timestamp_opt(newest, 0)
                    .single()
                    .map(|t| t + Duration::seconds(1));
                let next_since = match (cursor.since, after) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
                out.push((
                    *kind,
                    Page {
                        records: Vec::new(),
                        next: Cursor {
                            since: next_since,
                            position: None,
                            high_water: next_since,
                        },
                        done: true,
                        deleted: ids,
                    },
                ));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_map_to_kinds() {
        assert_eq!(
            event_kinds("lead_added", "lead"),
            Some(vec![EntityKind::Deal])
        );
        assert_eq!(
            event_kinds("entity_responsible_changed", "contact"),
            Some(vec![EntityKind::Contact])
        );
        assert_eq!(
            event_kinds("task_completed", "lead"),
            Some(vec![EntityKind::Task])
        );
        assert_eq!(
            event_kinds("incoming_call", "contact"),
            Some(vec![EntityKind::Activity])
        );
        assert_eq!(
            event_kinds("common_note_added", "lead"),
            Some(vec![EntityKind::Activity])
        );
        assert_eq!(
            event_kinds("unsorted_added", "unsorted"),
            Some(vec![EntityKind::Lead])
        );
        assert_eq!(event_kinds("something_new", "catalog"), None);
        assert_eq!(deleted_kind("contact_deleted"), Some(EntityKind::Contact));
        for kind in EntityKind::ALL {
            if let Some(t) = deletion_type(kind) {
                assert_eq!(deleted_kind(t), Some(kind));
            }
        }
    }
}
