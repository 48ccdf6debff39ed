//! `dozor revert`: hands the records of an action back to their previous owners.

use std::process::ExitCode;

use anyhow::Context;

use super::{Cli, CmdResult, load_config, open_store, select};
use crate::ledger::{self, Effect, Outcome, Proposal};
use crate::tenant;

pub(crate) async fn revert(cli: &Cli, a: &super::RevertArgs) -> CmdResult {
    let loaded = load_config(cli)?;
    let tenants = select(&loaded.config, a.tenant.as_deref())?;
    let store = open_store(cli, &loaded.config).await?;
    let mut found = 0;
    let mut failed = 0;
    for t in tenants {
        let rows: Vec<_> = store
            .actions_in_state(&t.id, "done")
            .await?
            .into_iter()
            .filter(|r| r.key.starts_with(&a.key) && r.kind == "set_responsible")
            .collect();
        if rows.is_empty() {
            continue;
        }
        let tenant = tenant::connect(t, &store)
            .await
            .with_context(|| format!("tenant {}", t.id))?;
        let sinks = tenant.sinks();
        for r in rows {
            found += 1;
            let effect = Effect::stored(&r)
                .with_context(|| format!("action {} has an unreadable payload", r.key))?;
            let Effect::SetResponsible {
                entity,
                user_id,
                previous: Some(previous),
            } = effect
            else {
                println!("{}: no previous owner recorded, nothing to revert", r.key);
                continue;
            };
            let p = Proposal {
                key: format!("revert:{}", r.key),
                rule: "revert",
                entity: Some(entity.clone()),
                summary: format!("{}:{} back to {previous}", entity.kind.as_str(), entity.id),
                effect: Effect::SetResponsible {
                    entity,
                    user_id: previous,
                    previous: Some(user_id),
                },
            };
            match ledger::apply(&store, &t.id, &sinks, &p, crate::config::RuleMode::On).await? {
                Outcome::Done(_) => println!("reverted {}: {}", r.key, p.summary),
                Outcome::AlreadyDone => println!("{} was already reverted", r.key),
                Outcome::Retry(e) | Outcome::Failed(e) | Outcome::Dead(e) => {
                    failed += 1;
                    eprintln!("could not revert {}: {e}", r.key);
                }
                Outcome::Deferred => {
                    failed += 1;
                    eprintln!(
                        "could not revert {} now: an earlier attempt failed and waits for its next try (see `dozor audit --rule revert`)",
                        r.key
                    );
                }
                Outcome::Shadow | Outcome::Skipped => {}
            }
        }
    }
    if found == 0 {
        eprintln!(
            "no done owner change has a key starting with `{}` (see `dozor audit`)",
            a.key
        );
        return Ok(ExitCode::from(1));
    }
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
