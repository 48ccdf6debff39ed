//! A tenant's sections other than its connectors and rules: roles, routing, calendar,
//! reports, marketing and webhook secrets.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{NaiveDate, NaiveTime, Weekday};
use serde::{Deserialize, Serialize};

use super::*;
use crate::domain::calendar::BusinessCalendar;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Short stable name: lowercase letters, digits, `-` and `_`. Used in ledger keys.
    pub id: String,
    #[serde(default)]
    pub(crate) name: String,
    #[serde(default = "default_tz")]
    pub timezone: String,
    #[serde(default)]
    pub(crate) lang: Lang,
    pub crm: CrmConfig,
    #[serde(default)]
    pub telephony: Option<TelephonyConfig>,
    #[serde(default)]
    pub telegram: Option<TelegramConfig>,
    #[serde(default)]
    pub calendar: CalendarConfig,
    /// `timezone` and `calendar` as one business calendar, built when the config is loaded
    /// (Moscow's 09:00-18:00, Monday to Friday, for a config not loaded through [`parse`]).
    #[serde(skip, default = "BusinessCalendar::moscow_default")]
    pub(crate) business_calendar: BusinessCalendar,
    #[serde(default)]
    pub reports: ReportsConfig,
    #[serde(default)]
    pub rules: RulesConfig,
    #[serde(default)]
    pub(crate) roles: RolesConfig,
    /// Who gets the lead of an unknown caller.
    #[serde(default)]
    pub routing: RoutingConfig,
    #[serde(default)]
    pub(crate) marketing: MarketingConfig,
    /// Tokens of the webhook receivers; a receiver without its token stays off.
    #[serde(default)]
    pub webhooks: WebhooksConfig,
    /// Accept plain `http://` to a host other than this one for this tenant's CRM, telephony
    /// and Telegram URLs, which all carry secrets. Off: such a URL is refused at load.
    #[serde(default)]
    pub(crate) allow_insecure_http: bool,
}

/// Secrets that authenticate pushes from the CRM, the telephony and Telegram. Each receiver is
/// enabled by setting its token (inline or in a `*_file`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Bitrix24 outgoing webhook / app `application_token` (sent as `auth[application_token]`).
    pub(crate) bitrix24_token: Option<Secret>,
    pub(crate) bitrix24_token_file: Option<PathBuf>,
    /// Secret path segment of the amoCRM webhook URL.
    pub(crate) amocrm_secret: Option<Secret>,
    pub(crate) amocrm_secret_file: Option<PathBuf>,
    /// Secret path segment of the CoMagic notification URL.
    pub comagic_secret: Option<Secret>,
    pub(crate) comagic_secret_file: Option<PathBuf>,
    /// `secret_token` given to Telegram's setWebhook (header X-Telegram-Bot-Api-Secret-Token).
    pub(crate) telegram_secret: Option<Secret>,
    pub(crate) telegram_secret_file: Option<PathBuf>,
}

/// How clients are handed to marketing (after three unanswered calls).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct MarketingConfig {
    /// The flag (amoCRM tag; Bitrix24 `flag_field` value) that puts a client into retargeting.
    pub(crate) retarget_tag: String,
}

impl Default for MarketingConfig {
    fn default() -> Self {
        MarketingConfig {
            retarget_tag: "ретаргетинг".into(),
        }
    }
}

/// Who does what in the sales department, by CRM user id.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RolesConfig {
    /// Takes over dormant clients ("нулевые") with their deals and tasks.
    pub(crate) reactivation_manager: Option<String>,
    /// Managers on duty for missed calls from clients without an owner, in order.
    #[serde(default)]
    pub(crate) on_duty: Vec<String>,
    /// CRM users whose clients dozor never reassigns (e.g. the owner's own accounts).
    #[serde(default)]
    pub(crate) protected: Vec<String>,
}

/// How an on-duty manager is picked when routing falls through to `roles.on_duty`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDutyPick {
    /// Always the first manager on the list (the others stand in when it is changed).
    #[default]
    First,
    /// In turn: each new lead goes to the next manager on the list.
    RoundRobin,
}

/// Who owns the lead dozor creates for an unknown caller. The first match wins: the virtual
/// number the client dialled, then the call's source, then its UTM source, then the employee
/// who took the call, then a manager on duty.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// Virtual number (any spelling; stored in E.164 after loading) → CRM user id.
    #[serde(default)]
    pub virtual_numbers: BTreeMap<String, String>,
    /// Call source or UTM source (case-insensitive; stored lowercase after loading) → CRM user id.
    #[serde(default)]
    pub(crate) sources: BTreeMap<String, String>,
    #[serde(default)]
    pub on_duty: OnDutyPick,
}

impl RoutingConfig {
    /// Checks the routes and brings their keys to the form calls are compared in (E.164,
    /// lowercase). Errors name the key under `routing` that is wrong.
    pub(super) fn normalize(&mut self) -> Result<(), Invalid> {
        let mut numbers = BTreeMap::new();
        for (raw, user) in &self.virtual_numbers {
            let key = format!("routing.virtual_numbers.\"{raw}\"");
            let e164 = crate::domain::phone::normalize(raw).map_err(|e| {
                Invalid::new(
                    key.clone(),
                    format!("`{raw}` is not a phone number ({e}); write the virtual number as the client dials it, e.g. \"+7 495 123-45-67\""),
                )
            })?;
            check_user(&key, user)?;
            if numbers.insert(e164.clone(), user.clone()).is_some() {
                return Err(Invalid::new(
                    key,
                    format!("{e164} is routed twice (two spellings of one number)"),
                ));
            }
        }
        self.virtual_numbers = numbers;
        let mut sources = BTreeMap::new();
        for (raw, user) in &self.sources {
            let key = format!("routing.sources.\"{raw}\"");
            let source = raw.trim().to_lowercase();
            if source.is_empty() {
                return Err(Invalid::new(key, "the source must not be empty"));
            }
            check_user(&key, user)?;
            if sources.insert(source.clone(), user.clone()).is_some() {
                return Err(Invalid::new(
                    key,
                    format!(
                        "source `{source}` is routed twice (sources are compared case-insensitively)"
                    ),
                ));
            }
        }
        self.sources = sources;
        Ok(())
    }

    /// The user a source (call source or UTM source) is routed to.
    pub fn by_source(&self, source: &str) -> Option<&String> {
        self.sources.get(&source.trim().to_lowercase())
    }
}

pub(super) fn check_user(key: &str, user: &str) -> Result<(), Invalid> {
    if user.trim().is_empty() {
        return Err(Invalid::new(key, "the CRM user id must not be empty"));
    }
    Ok(())
}

pub(super) fn default_tz() -> String {
    "Europe/Moscow".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CalendarConfig {
    /// Working hours, `HH:MM-HH:MM` in the tenant's time zone.
    pub(crate) work_hours: String,
    /// Working days: `mon`..`sun`.
    pub(crate) work_days: Vec<String>,
    /// Non-working dates, `YYYY-MM-DD`.
    pub holidays: Vec<String>,
}

impl Default for CalendarConfig {
    fn default() -> Self {
        CalendarConfig {
            work_hours: "09:00-18:00".into(),
            work_days: ["mon", "tue", "wed", "thu", "fri"]
                .map(String::from)
                .to_vec(),
            holidays: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportsConfig {
    /// When each report goes out, in the tenant's time zone.
    pub(crate) daily: CronSchedule,
    pub(crate) weekly: CronSchedule,
    pub(crate) monthly: CronSchedule,
    /// Monthly revenue plan per CRM user id, for plan %.
    pub plans: BTreeMap<String, f64>,
}

impl Default for ReportsConfig {
    fn default() -> Self {
        ReportsConfig {
            daily: CronSchedule::fixed("0 0 9 * * *"),
            weekly: CronSchedule::fixed("0 0 9 * * Mon"),
            monthly: CronSchedule::fixed("0 0 9 1 * *"),
            plans: BTreeMap::new(),
        }
    }
}

/// A cron expression (sec min hour day month weekday), parsed when the config is loaded: an
/// expression that does not parse is a config error naming its key, not a report that never
/// goes out.
#[derive(Debug, Clone)]
pub struct CronSchedule(cron::Schedule);

impl CronSchedule {
    /// An expression written in dozor's own code (the defaults).
    fn fixed(expr: &str) -> Self {
        expr.parse()
            .unwrap_or_else(|e| panic!("built-in schedule `{expr}`: {e}"))
    }

    pub(crate) fn schedule(&self) -> &cron::Schedule {
        &self.0
    }
}

impl std::str::FromStr for CronSchedule {
    type Err = String;

    fn from_str(expr: &str) -> Result<Self, String> {
        cron::Schedule::from_str(expr)
            .map(CronSchedule)
            .map_err(|e| {
                format!("`{expr}` is not a cron expression (sec min hour day month weekday): {e}")
            })
    }
}

impl<'de> Deserialize<'de> for CronSchedule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Whether a rule acts.
pub(super) fn parse_hm(s: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(s.trim(), "%H:%M").ok()
}

/// The tenant's business calendar, or the key that is wrong.
pub fn calendar_of(t: &TenantConfig) -> Result<BusinessCalendar, Invalid> {
    let tz: chrono_tz::Tz = t.timezone.parse().map_err(|_| {
        Invalid::new(
            "timezone".to_string(),
            format!("unknown time zone `{}`", t.timezone),
        )
    })?;
    let bad_hours = || {
        Invalid::new(
            "calendar.work_hours".to_string(),
            format!(
                "`{}`: expected HH:MM-HH:MM with start before end",
                t.calendar.work_hours
            ),
        )
    };
    let (a, b) = t
        .calendar
        .work_hours
        .split_once('-')
        .ok_or_else(bad_hours)?;
    let (start, end) = (
        parse_hm(a).ok_or_else(bad_hours)?,
        parse_hm(b).ok_or_else(bad_hours)?,
    );
    if start >= end {
        return Err(bad_hours());
    }
    let mut work_days = Vec::new();
    for (i, d) in t.calendar.work_days.iter().enumerate() {
        let wd: Weekday = d.parse().map_err(|_| {
            Invalid::new(
                format!("calendar.work_days[{i}]"),
                format!("`{d}`: use mon, tue, wed, thu, fri, sat, sun"),
            )
        })?;
        work_days.push(wd);
    }
    if work_days.is_empty() {
        return Err(Invalid::new(
            "calendar.work_days",
            "at least one working day is needed",
        ));
    }
    let mut holidays = Vec::new();
    for (i, h) in t.calendar.holidays.iter().enumerate() {
        holidays.push(NaiveDate::parse_from_str(h, "%Y-%m-%d").map_err(|_| {
            Invalid::new(
                format!("calendar.holidays[{i}]"),
                format!("`{h}`: expected YYYY-MM-DD"),
            )
        })?);
    }
    Ok(BusinessCalendar {
        tz,
        start,
        end,
        work_days,
        holidays,
    })
}
