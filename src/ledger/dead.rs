//! Dead actions reach the ops chat once.
//!
//! An action that failed as often as the retry policy allows is parked as `dead` by the ledger.
//! After each cycle the dead actions not reported yet are stamped with the key of one ops
//! message (`deadletter:TENANT:UNIX_SECONDS`) in the database, and that message goes out
//! through the ledger. A crash between the stamp and the send leaves the same rows under the
//! same key, so the next cycle sends that message (once) instead of a second one.

use crate::config::{Lang, RuleMode};
use crate::domain::plural;
use crate::notify::telegram::escape_html as esc;
use crate::store::{ActionRow, Store, StoreError};

use super::{Effect, Outcome, Proposal, Sinks, apply};

/// The ledger rule name of these messages.
pub(crate) const RULE: &str = "deadletter";

/// Lines listed in one message; the rest are counted.
const SHOWN: usize = 10;

/// Who gets the report and how it is worded.
pub struct Audience<'a> {
    pub chat: Option<i64>,
    /// The tenant as people call it.
    pub label: &'a str,
    pub lang: Lang,
}

/// Reports the dead actions of `tenant` not reported yet; returns the messages' outcomes.
pub async fn report(
    store: &Store,
    tenant: &str,
    to: &Audience<'_>,
    sinks: &Sinks<'_>,
) -> Result<Vec<Outcome>, StoreError> {
    let key = format!("{RULE}:{tenant}:{}", chrono::Utc::now().timestamp());
    let pending = store.dead_to_report(tenant, RULE, &key).await?;
    let mut out = Vec::new();
    for (key, rows) in pending {
        let Some(chat) = to.chat else {
            tracing::error!(
                tenant,
                dead = rows.len(),
                "actions parked as dead; no ops or owner chat to tell (see `dozor audit --state dead`)"
            );
            continue;
        };
        let p = Proposal {
            key,
            rule: RULE,
            entity: None,
            effect: Effect::Telegram {
                chat,
                thread: None,
                html: message(to, &rows),
            },
            summary: format!("{} dead action(s) reported", rows.len()),
        };
        out.push(apply(store, tenant, sinks, &p, RuleMode::On).await?);
    }
    Ok(out)
}

/// The ops message for `rows`: what failed, why, and what to do.
fn message(to: &Audience<'_>, rows: &[ActionRow]) -> String {
    let n = rows.len() as u64;
    let mut lines = Vec::new();
    for r in rows.iter().take(SHOWN) {
        let what = r.payload["summary"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or(&r.key);
        let why: String = r
            .error
            .as_deref()
            .unwrap_or("?")
            .chars()
            .take(300)
            .collect();
        lines.push(format!(
            "• {}\n  <i>{}</i>\n  <code>{}</code>",
            esc(what),
            esc(&why),
            esc(&r.key)
        ));
    }
    let rest = rows.len().saturating_sub(SHOWN) as u64;
    let label = esc(to.label);
    match to.lang {
        Lang::Ru => {
            let mut s = format!(
                "⛔ <b>{label}</b>: dozor перестал повторять {n} {} — {} не удалось выполнить за все попытки:\n\n{}",
                plural::ru(n, "действие", "действия", "действий"),
                plural::ru(n, "его", "их", "их"),
                lines.join("\n")
            );
            if rest > 0 {
                s.push_str(&format!(
                    "\n… и ещё {rest} {}",
                    plural::ru(rest, "действие", "действия", "действий")
                ));
            }
            s.push_str("\n\nУстраните причину и повторите: <code>dozor retry КЛЮЧ</code>. Все такие действия: <code>dozor audit --state dead</code>.");
            s
        }
        Lang::En => {
            let mut s = format!(
                "⛔ <b>{label}</b>: dozor stopped retrying {n} {} that failed on every attempt:\n\n{}",
                plural::en(n, "action", "actions"),
                lines.join("\n")
            );
            if rest > 0 {
                s.push_str(&format!(
                    "\n… and {rest} more {}",
                    plural::en(rest, "action", "actions")
                ));
            }
            s.push_str("\n\nFix the cause, then retry: <code>dozor retry KEY</code>. All of them: <code>dozor audit --state dead</code>.");
            s
        }
    }
}
