//! A configured tenant made live: its CRM, telephony and Telegram clients, built from config.
//!
//! This is the one place that knows which connector type serves which config variant; the rest
//! of dozor holds `dyn Crm` and `dyn Telephony`.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::{CrmConfig, TelephonyConfig, TenantConfig};
use crate::crm::Crm;
use crate::domain::calendar::BusinessCalendar;
use crate::notify::telegram::Telegram;
use crate::store::{Store, TokenStore};
use crate::telephony::Telephony;

/// One tenant with its clients.
pub struct Tenant {
    pub(crate) cfg: TenantConfig,
    pub(crate) calendar: BusinessCalendar,
    pub crm: Arc<dyn Crm>,
    pub telephony: Option<Arc<dyn Telephony>>,
    pub telegram: Option<Telegram>,
}

impl Tenant {
    pub fn id(&self) -> &str {
        &self.cfg.id
    }

    pub(crate) fn tz(&self) -> chrono_tz::Tz {
        self.calendar.tz
    }

    /// The tenant as people call it: its `name`, else its id.
    pub(crate) fn label(&self) -> &str {
        if self.cfg.name.is_empty() {
            self.id()
        } else {
            &self.cfg.name
        }
    }

    /// Where the ledger lands this tenant's effects: its CRM and, when configured, its bot.
    pub(crate) fn sinks(&self) -> crate::ledger::Sinks<'_> {
        crate::ledger::Sinks {
            crm: self.crm.as_ref(),
            telegram: self.telegram.as_ref(),
        }
    }

    /// The chat operational messages go to: `ops_chat`, else the owner chat.
    pub(crate) fn ops_chat(&self) -> Option<i64> {
        crate::notify::route(
            self.cfg.telegram.as_ref(),
            crate::notify::MessageKind::SelfCheck,
        )
        .map(|r| r.chat)
    }
}

/// Builds the clients of `cfg`. Building makes no request except where a connector must load
/// stored tokens; credentials are first tried by `dozor check` or the first cycle.
pub async fn connect(cfg: &TenantConfig, store: &Store) -> Result<Tenant, crate::http::Error> {
    connect_until(cfg, store, CancellationToken::new()).await
}

/// [`connect`] for a daemon: once `stop` is cancelled, every client's waits (rate limits,
/// backoffs, Retry-After, Telegram pacing) end at once and no further request is sent.
pub(crate) async fn connect_until(
    cfg: &TenantConfig,
    store: &Store,
    stop: CancellationToken,
) -> Result<Tenant, crate::http::Error> {
    let calendar = cfg.business_calendar.clone();
    let tokens: Arc<dyn TokenStore> = Arc::new(store.clone());
    let crm: Arc<dyn Crm> = match &cfg.crm {
        CrmConfig::Bitrix24(b) => Arc::new(
            crate::crm::bitrix24::Bitrix24::new(&cfg.id, b, tokens.clone())
                .await?
                .with_stop(stop.clone()),
        ),
        CrmConfig::Amocrm(a) => Arc::new(
            crate::crm::amocrm::AmoCrm::new(&cfg.id, a, tokens.clone())
                .await?
                .with_stop(stop.clone()),
        ),
    };
    let telephony: Option<Arc<dyn Telephony>> = match &cfg.telephony {
        Some(TelephonyConfig::Comagic(c)) => Some(Arc::new(
            crate::telephony::comagic::Comagic::new(c, calendar.tz).with_stop(stop.clone()),
        )),
        Some(TelephonyConfig::Calltouch(c)) => Some(Arc::new(
            crate::telephony::calltouch::Calltouch::new(c, calendar.tz).with_stop(stop.clone()),
        )),
        None => None,
    };
    let telegram = cfg
        .telegram
        .as_ref()
        .map(|t| Telegram::new(t).with_stop(stop.clone()));
    Ok(Tenant {
        cfg: cfg.clone(),
        calendar,
        crm,
        telephony,
        telegram,
    })
}
