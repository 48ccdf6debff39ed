//! Bitrix24 incremental reads: the change probe over several kinds in one `batch`, and the
//! full id lists the sync compares against to find deletions.

use serde_json::{Map, json};

use crate::crm::{Cursor, Page, Result};
use crate::domain::EntityKind;

use super::retry::retry_wait;
use super::{Bitrix24, MAX_BATCH, SYSTEM, map, scope};

impl Bitrix24 {
    /// One `batch` with the first pages of every kind; kinds whose first page is empty are left
    /// out.
    pub(super) async fn probe_changes(
        &self,
        cursors: &[(EntityKind, Cursor)],
    ) -> Result<Vec<(EntityKind, Page)>> {
        let per = (MAX_BATCH / cursors.len().max(1)).max(1);
        let mut plan = Vec::with_capacity(cursors.len());
        let mut cmds = Vec::new();
        for (i, (kind, cursor)) in cursors.iter().enumerate() {
            let spec = self.spec(*kind);
            let mine = self.page_cmds(&spec, cursor, per, &format!("k{i}p"));
            cmds.extend(mine.iter().cloned());
            plan.push((*kind, cursor, spec, mine));
        }
        let (results, errors) = self.batch(&cmds).await?;
        let mut out = Vec::new();
        for (kind, cursor, spec, mine) in &plan {
            match self.parse_pages(*kind, spec, cursor, mine, &results, &errors) {
                Ok((page, first_rows)) => {
                    if first_rows > 0 {
                        out.push((*kind, page));
                    }
                }
                // One kind the credentials may not read must not keep the others out of the
                // mirror: it is set aside and reported by the sync (see `Crm::refused_kinds`).
                Err(e) if scope::is_refusal(&e) => {
                    let e = scope::kind_refused(*kind, e);
                    tracing::warn!(system = SYSTEM, entity = kind.as_str(), error = %e, "kind not readable with these credentials");
                    self.refused
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((*kind, e));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    pub(super) async fn do_fetch_changes(
        &self,
        cursors: &[(EntityKind, Cursor)],
    ) -> Result<Vec<(EntityKind, Page)>> {
        self.refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let mut out = Vec::new();
        for chunk in cursors.chunks(MAX_BATCH) {
            let mut attempt = 0;
            let mut refusals = self.throttle.start();
            loop {
                match self.probe_changes(chunk).await {
                    Err(e) if e.method != "batch" => {
                        match retry_wait(&e, &mut attempt, &mut refusals) {
                            Some(wait) => self.wait(wait, &e.method).await?,
                            None => return Err(e),
                        }
                    }
                    Err(e) => return Err(e),
                    Ok(pages) => {
                        out.extend(pages);
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    pub(super) async fn do_existing_ids(&self, entity: EntityKind) -> Result<Option<Vec<String>>> {
        let spec = map::ListSpec::of(entity);
        let mut ids = self.all_ids(&spec, Map::new(), "").await?;
        if entity == EntityKind::Task {
            // CRM to-dos are mirrored as tasks `todo-N`.
            let todo = map::ListSpec::of(EntityKind::Activity);
            let mut f = Map::new();
            f.insert("PROVIDER_ID".into(), json!("CRM_TODO"));
            ids.extend(self.all_ids(&todo, f, "todo-").await?);
        }
        Ok(Some(ids))
    }
}
