//! The CRM's remembered answers about phone numbers the mirror lacked (`phone_lookups`), and
//! which of the records an answer named the mirror holds by now. When an answer is still good
//! is the caller's rule (`matching`): the store only keeps what was answered and when.

use std::collections::{HashMap, HashSet};

use sqlx::Row;

use super::in_list::Bind;
use super::{Op, Result, Store, from_secs, to_secs};
use crate::domain::{EntityKind, EntityRef, Ts};

/// One remembered answer: the records the CRM found (empty: none carries the number) and the
/// moment it answered.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Remembered {
    pub(crate) found: Vec<EntityRef>,
    pub(crate) asked_at: Ts,
}

impl Store {
    /// The remembered answers for those of `phones` that have one.
    pub(crate) async fn remembered_lookups(
        &self,
        tenant: &str,
        phones: &[String],
    ) -> Result<HashMap<String, Remembered>> {
        let rows = self
            .rows_in(
                "SELECT phone, found, asked_at FROM phone_lookups WHERE tenant = $1 AND phone IN ({in})",
                &[Bind::Text(tenant.to_string())],
                phones,
                "reading remembered phone look-ups",
            )
            .await?;
        let mut out = HashMap::new();
        for r in rows {
            // A row this build cannot read is as good as none: the number is asked again.
            let Some(found) = parse_found(&r.get::<String, _>(1)) else {
                continue;
            };
            out.insert(
                r.get::<String, _>(0),
                Remembered {
                    found,
                    asked_at: from_secs(r.get::<i64, _>(2)),
                },
            );
        }
        Ok(out)
    }

    /// Remembers the CRM's answer about `phone`, replacing any earlier one.
    pub(crate) async fn remember_lookup(
        &self,
        tenant: &str,
        phone: &str,
        answer: &Remembered,
    ) -> Result<()> {
        let found: Vec<(&str, &str)> = answer
            .found
            .iter()
            .map(|e| (e.kind.as_str(), e.id.as_str()))
            .collect();
        let found = serde_json::to_string(&found).unwrap_or_else(|_| "[]".into());
        sqlx::query(
            "INSERT INTO phone_lookups (tenant, phone, found, asked_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant, phone) DO UPDATE SET found = excluded.found, asked_at = excluded.asked_at",
        )
        .bind(tenant)
        .bind(phone)
        .bind(found)
        .bind(to_secs(answer.asked_at))
        .execute(self.pool())
        .await
        .op("remembering a phone look-up")?;
        Ok(())
    }

    /// Those of the leads, contacts and companies in `refs` the mirror holds.
    pub(crate) async fn mirrored(
        &self,
        tenant: &str,
        refs: &[EntityRef],
    ) -> Result<HashSet<EntityRef>> {
        let mut out = HashSet::new();
        for (kind, table) in [
            (EntityKind::Lead, "leads"),
            (EntityKind::Contact, "contacts"),
            (EntityKind::Company, "companies"),
        ] {
            let ids: Vec<String> = refs
                .iter()
                .filter(|e| e.kind == kind)
                .map(|e| e.id.clone())
                .collect();
            if ids.is_empty() {
                continue;
            }
            let sql = format!("SELECT id FROM {table} WHERE tenant = $1 AND id IN ({{in}})");
            let rows = self
                .rows_in(
                    &sql,
                    &[Bind::Text(tenant.to_string())],
                    &ids,
                    "reading which records the mirror holds",
                )
                .await?;
            out.extend(
                rows.into_iter()
                    .map(|r| EntityRef::new(kind, r.get::<String, _>(0))),
            );
        }
        Ok(out)
    }
}

/// `[["contact","275"], ...]` back to records; `None` for text this build does not read.
fn parse_found(text: &str) -> Option<Vec<EntityRef>> {
    let pairs: Vec<(String, String)> = serde_json::from_str(text).ok()?;
    pairs
        .into_iter()
        .map(|(k, id)| Some(EntityRef::new(EntityKind::parse(&k)?, id)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn found_records_read_back_and_unknown_text_reads_as_nothing() {
        assert_eq!(
            parse_found(r#"[["contact","275"],["lead","9"]]"#),
            Some(vec![
                EntityRef::new(EntityKind::Contact, "275"),
                EntityRef::new(EntityKind::Lead, "9")
            ])
        );
        assert_eq!(parse_found("[]"), Some(vec![]));
        assert_eq!(parse_found(r#"[["planet","1"]]"#), None);
        assert_eq!(parse_found("contact:1"), None);
    }
}
