//! Webhook silence: a source whose webhooks stopped arriving while polling keeps finding
//! changes (an expired handler, a proxy change) is a problem for the ops chat.

use std::collections::BTreeMap;

use chrono::Utc;

use super::Problem;
use crate::engine::CycleSummary;

/// How long polling may keep finding changes while no webhook delivery arrives before the
/// webhooks of that source count as stopped.
pub(crate) const WEBHOOK_SILENCE: chrono::Duration = chrono::Duration::minutes(60);

/// Tells a silent webhook from a quiet CRM: per source with a webhook configured, the newest
/// change polling found. Changes found by polling while deliveries have been missing for
/// [`WEBHOOK_SILENCE`] mean the deliveries stopped (an expired handler, a proxy change).
pub(crate) struct WebhookWatch {
    started: chrono::DateTime<Utc>,
    /// (tenant, source) -> when polling last found changes.
    polled: BTreeMap<(String, String), chrono::DateTime<Utc>>,
    cycles: BTreeMap<String, u64>,
}

impl WebhookWatch {
    pub(crate) fn new(now: chrono::DateTime<Utc>) -> WebhookWatch {
        WebhookWatch {
            started: now,
            polled: BTreeMap::new(),
            cycles: BTreeMap::new(),
        }
    }

    /// The "webhooks stopped" problems of `t` after a cycle. `last_delivery(source)` is when
    /// that source's receiver last accepted a delivery.
    pub(crate) fn after_cycle(
        &mut self,
        t: &crate::config::TenantConfig,
        summary: &CycleSummary,
        last_delivery: impl Fn(&str) -> Option<chrono::DateTime<Utc>>,
        now: chrono::DateTime<Utc>,
    ) -> Vec<Problem> {
        let n = self.cycles.entry(t.id.clone()).or_default();
        *n += 1;
        // The first cycle reads what changed while dozor was not running: not a webhook matter.
        if *n > 1 {
            for r in &summary.synced {
                if r.total() > 0 {
                    self.polled.insert((t.id.clone(), r.source.clone()), now);
                }
            }
        }
        let w = &t.webhooks;
        let configured = [
            ("bitrix24", w.bitrix24_token.is_some()),
            ("amocrm", w.amocrm_secret.is_some()),
            ("comagic", w.comagic_secret.is_some()),
        ];
        let mut out = Vec::new();
        for (source, on) in configured {
            let Some(changed) = self.polled.get(&(t.id.clone(), source.to_string())) else {
                continue;
            };
            let heard = last_delivery(source).unwrap_or(self.started);
            if on && *changed - heard > WEBHOOK_SILENCE {
                let mins = (now - heard).num_minutes().max(0) as u64;
                out.push(Problem::webhooks_stopped(source, mins, t.lang));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::selfcheck::Check;
    use crate::sync::SyncReport;

    fn tenant(with_hook: bool) -> crate::config::TenantConfig {
        let hook = if with_hook {
            "[tenants.webhooks]\nbitrix24_token = \"b24apptoken0123456789\"\n"
        } else {
            ""
        };
        let text = format!(
            "[[tenants]]\nid = \"acme\"\nname = \"Acme\"\n[tenants.crm]\nkind = \"bitrix24\"\n\
             webhook_url = \"https://acme.bitrix24.ru/rest/1/abcdef0123456789/\"\n{hook}"
        );
        crate::config::parse(&text, None, None)
            .unwrap()
            .config
            .tenants
            .remove(0)
    }

    fn cycle(changed: usize) -> CycleSummary {
        CycleSummary {
            synced: vec![SyncReport {
                source: "bitrix24".into(),
                items: [("deal".to_string(), changed)].into_iter().collect(),
                elapsed: std::time::Duration::ZERO,
            }],
            ..CycleSummary::default()
        }
    }

    #[test]
    fn silent_webhooks_are_told_from_a_quiet_crm() {
        let t0 = Utc::now();
        let m = |x: i64| t0 + chrono::Duration::minutes(x);
        let t = tenant(true);
        let mut w = WebhookWatch::new(t0);
        // The first cycle's changes happened while dozor was away.
        assert!(w.after_cycle(&t, &cycle(500), |_| None, m(1)).is_empty());
        // A quiet CRM: no changes, no deliveries, for hours: nothing to say.
        assert!(w.after_cycle(&t, &cycle(0), |_| None, m(300)).is_empty());
        // Deliveries keep coming along with the changes polling sees.
        let mut w = WebhookWatch::new(t0);
        w.after_cycle(&t, &cycle(0), |_| None, m(1));
        let recent = |_: &str| Some(m(118));
        assert!(w.after_cycle(&t, &cycle(3), recent, m(120)).is_empty());
        // Polling finds changes, and the last delivery is over an hour older: stopped.
        let p = w.after_cycle(&t, &cycle(3), |_| Some(m(100)), m(200));
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].check, Check::WebhooksStopped);
        assert!(p[0].text.contains("100"), "{}", p[0].text);
        // Without a webhook configured there is nothing to watch.
        let t = tenant(false);
        let mut w = WebhookWatch::new(t0);
        w.after_cycle(&t, &cycle(0), |_| None, m(1));
        assert!(w.after_cycle(&t, &cycle(3), |_| None, m(200)).is_empty());
    }
}
