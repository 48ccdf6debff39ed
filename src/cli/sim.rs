//! `dozor sim`: serve the simulator until interrupted.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;

use super::{Cli, CmdResult, SimArgs, init_logging};
use crate::config::LogFormat;
use dozor_sim::{self as sim, SimOptions};

pub(crate) async fn sim(cli: &Cli, a: &SimArgs) -> CmdResult {
    let format = match cli.log_format {
        Some(super::LogFormatArg::Json) => LogFormat::Json,
        _ => LogFormat::Human,
    };
    init_logging(format, "info");
    let opts = SimOptions {
        seed: a.seed,
        scale: a.scale,
        anchor: None,
        enforce_limits: !a.no_limits,
        b24_enterprise: a.enterprise,
    };
    let addr: SocketAddr = ([127, 0, 0, 1], a.port).into();
    let handle = sim::start(opts, addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let c = &handle.sim.creds;
    println!("dozor simulator on {}", handle.base_url());
    println!("  Bitrix24 webhook  {}", handle.b24_webhook_url());
    println!(
        "  Bitrix24 OAuth    portal {}  client_id {}  client_secret {}  refresh_token {}",
        handle.b24_portal_url(),
        c.b24_client_id,
        c.b24_client_secret,
        c.b24_refresh_token
    );
    println!(
        "  amoCRM            {}  long_lived_token {}  (OAuth: client_id {} client_secret {} redirect_uri {} refresh_token {})",
        handle.amo_url(),
        c.amo_long_lived_token,
        c.amo_client_id,
        c.amo_client_secret,
        c.amo_redirect_uri,
        c.amo_refresh_token
    );
    println!(
        "  CoMagic           {}  access_token {}",
        handle.comagic_url(),
        c.comagic_access_token
    );
    println!(
        "  Calltouch         {}  site_id {}  client_api_id {}",
        handle.calltouch_url(),
        c.calltouch_site_id,
        c.calltouch_client_api_id
    );
    println!(
        "  Telegram          {}  bot_token {}",
        handle.telegram_url(),
        c.telegram_bot_token
    );
    println!(
        "  control           {}/_sim/summary, /_sim/stats, POST /_sim/faults/{{system}}, /_sim/tenant_config?db=URL, POST /_sim/world/churn",
        handle.base_url()
    );
    {
        let w = handle.sim.world();
        println!(
            "  data: seed {} scale {}: {} deals, {} leads, {} contacts, {} companies, {} tasks, {} activities, {} calls",
            w.seed,
            w.scale,
            w.deals.len(),
            w.leads.len(),
            w.contacts.len(),
            w.companies.len(),
            w.tasks.len(),
            w.activities.len(),
            w.calls.len()
        );
    }
    super::run::shutdown_signal().await;
    handle.stop().await;
    Ok(ExitCode::SUCCESS)
}
