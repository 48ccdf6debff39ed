//! `dozor check`: is the config valid, and does every configured system accept our credentials?

use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::{Cli, CmdResult, load_config, open_store};
use crate::http::{Error, ErrorKind};
use crate::tenant;

/// One line of the table.
struct Row {
    tenant: String,
    system: String,
    account: String,
    ok: bool,
    latency: Option<Duration>,
    hint: String,
}

/// What to do about a failed credential check, per system.
fn hint(system: &str, e: &Error) -> String {
    // The message names each missing scope, what it blocks and where to tick it.
    if e.code.as_deref() == Some("insufficient_scope") {
        return format!("scopes missing — {e}");
    }
    let fix = match (e.kind, system) {
        (ErrorKind::Auth, "bitrix24") => {
            "credentials refused: check crm.webhook_url (recreate the inbound webhook if its secret changed) or re-install the OAuth app"
        }
        (ErrorKind::Auth, "amocrm") => {
            "credentials refused: re-authorise the integration (refresh token revoked or older than 3 months) or issue a new long-lived token"
        }
        (ErrorKind::Auth, "comagic") => {
            "access token refused: check telephony.access_token; also whitelist this server's IP in CoMagic (API settings)"
        }
        (ErrorKind::Auth, "calltouch") => {
            "refused: check telephony.client_api_id and telephony.site_id"
        }
        (ErrorKind::Auth, "telegram") => {
            "bot token refused: check telegram.bot_token (from @BotFather)"
        }
        (ErrorKind::Auth, _) => "credentials refused",
        (ErrorKind::RateLimited, _) => "rate limited right now: try again in a minute",
        (ErrorKind::Transient, _) => "not reachable: check the URL, DNS and firewall",
        (ErrorKind::Decode, _) => "answered something that is not its API: check the URL",
        (ErrorKind::Permanent, _) => "request refused",
    };
    format!("{fix} — {e}")
}

async fn timed<T, F: std::future::Future<Output = Result<T, Error>>>(
    f: F,
) -> (Result<T, Error>, Duration) {
    let start = Instant::now();
    let r = f.await;
    (r, start.elapsed())
}

fn row<T: std::fmt::Display>(
    tenant: &str,
    system: &str,
    account: String,
    r: (Result<T, Error>, Duration),
) -> Row {
    let (res, latency) = r;
    match res {
        Ok(who) => Row {
            tenant: tenant.into(),
            system: system.into(),
            account,
            ok: true,
            latency: Some(latency),
            hint: format!("as {who}"),
        },
        Err(e) => Row {
            tenant: tenant.into(),
            system: system.into(),
            account,
            ok: false,
            latency: Some(latency),
            hint: hint(system, &e),
        },
    }
}

// Long: the check command prints one verdict per connector and setting in the order the operator
// reads them.
pub(crate) async fn check(cli: &Cli) -> CmdResult {
    let loaded = load_config(cli)?;
    let file = loaded
        .file
        .as_ref()
        .map(|f| f.display().to_string())
        .unwrap_or_default();
    println!(
        "config {file}: valid, {} tenant(s)",
        loaded.config.tenants.len()
    );
    if let Some(w) = loaded
        .file
        .as_deref()
        .and_then(crate::config::permission_warning)
    {
        println!("warning: {w}");
    }
    if let Some(w) = loaded.config.server.exposure_warning() {
        println!("warning: {w}");
    }
    for w in &loaded.warnings {
        println!("warning: {w}");
    }
    for t in &loaded.config.tenants {
        println!("{}", t.rules.summary(&t.id, false));
    }
    let mut rows = Vec::new();
    let db_url = crate::store::redact_db_url(&loaded.config.database_url());
    let start = Instant::now();
    // A damaged or replaced database, or an unusable data_dir, needs an operator: exit 2.
    let mut needs_operator = false;
    let store = match open_store(cli, &loaded.config).await {
        Ok(s) => {
            rows.push(Row {
                tenant: "-".into(),
                system: "database".into(),
                account: db_url,
                ok: true,
                latency: Some(start.elapsed()),
                hint: "schema up to date".into(),
            });
            Some(s)
        }
        Err(e) => {
            needs_operator = e.needs_operator();
            rows.push(Row {
                tenant: "-".into(),
                system: "database".into(),
                account: db_url,
                ok: false,
                latency: Some(start.elapsed()),
                hint: if needs_operator {
                    e.to_string()
                } else {
                    format!("check database.url and that the server runs — {e}")
                },
            });
            None
        }
    };
    let mut staff: Vec<(String, Vec<String>)> = Vec::new();
    if let Some(store) = &store {
        for t in &loaded.config.tenants {
            let tenant = match tenant::connect(t, store).await {
                Ok(x) => x,
                Err(e) => {
                    rows.push(Row {
                        tenant: t.id.clone(),
                        system: "crm".into(),
                        account: String::new(),
                        ok: false,
                        latency: None,
                        hint: hint("crm", &e),
                    });
                    continue;
                }
            };
            let crm = tenant.crm.clone();
            rows.push(row(
                &t.id,
                crm.kind().as_str(),
                crm.account(),
                timed(crm.ping()).await,
            ));
            if let Some(tel) = tenant.telephony.clone() {
                let ping = row(
                    &t.id,
                    tel.kind().as_str(),
                    tel.account(),
                    timed(tel.ping()).await,
                );
                let ok = ping.ok && rows.last().is_some_and(|r| r.ok);
                rows.push(ping);
                if ok {
                    staff.push((t.id.clone(), staff_lines(&tenant, tel.as_ref()).await));
                }
            }
            if let Some(tg) = &tenant.telegram {
                rows.push(row(
                    &t.id,
                    "telegram",
                    tg.account(),
                    timed(async {
                        tg.get_me().await.map(|u| match u.username {
                            Some(name) => format!("@{name}"),
                            None => u.first_name,
                        })
                    })
                    .await,
                ));
            }
        }
    }
    print_table(&rows);
    for (tenant, lines) in &staff {
        println!(
            "\ntelephony employees of {tenant} → CRM users (matched by config / name / extension):"
        );
        for l in lines {
            println!("  {l}");
        }
    }
    let failed = rows.iter().filter(|r| !r.ok).count();
    if failed == 0 {
        println!("\nall {} checks passed", rows.len());
        Ok(ExitCode::SUCCESS)
    } else {
        println!("\n{failed} of {} checks failed", rows.len());
        Ok(ExitCode::from(if needs_operator { 2 } else { 1 }))
    }
}

/// The employee ↔ user map of a tenant whose CRM and telephony both answered.
async fn staff_lines(
    tenant: &tenant::Tenant,
    tel: &dyn crate::telephony::Telephony,
) -> Vec<String> {
    let users = match tenant.crm.users().await {
        Ok(u) => u,
        Err(e) => return vec![format!("warning: CRM users not read: {e}")],
    };
    let employees = match tel.employees().await {
        Ok(e) => e,
        Err(e) => return vec![format!("warning: telephony employees not read: {e}")],
    };
    let configured = tenant
        .cfg
        .telephony
        .as_ref()
        .map(|t| t.employees().clone())
        .unwrap_or_default();
    let map = crate::matching::StaffMap::build(&employees, &users, &configured);
    if map.links.is_empty() {
        return vec!["no employees yet".into()];
    }
    map.lines(&users)
}

fn print_table(rows: &[Row]) {
    let w = |f: &dyn Fn(&Row) -> usize, min: usize| rows.iter().map(f).max().unwrap_or(0).max(min);
    let (wt, ws, wa) = (
        w(&|r| r.tenant.chars().count(), 6),
        w(&|r| r.system.chars().count(), 6),
        w(&|r| r.account.chars().count(), 7).min(48),
    );
    println!(
        "\n{:<wt$}  {:<ws$}  {:<wa$}  {:<6}  {:>8}  hint",
        "tenant", "system", "account", "status", "latency"
    );
    for r in rows {
        let account: String = r.account.chars().take(wa).collect();
        let latency = r
            .latency
            .map(|d| format!("{} ms", d.as_millis()))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<wt$}  {:<ws$}  {:<wa$}  {:<6}  {:>8}  {}",
            r.tenant,
            r.system,
            account,
            if r.ok { "OK" } else { "FAIL" },
            latency,
            r.hint
        );
    }
}
