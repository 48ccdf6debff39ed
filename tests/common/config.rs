//! Connector configs as the tests write them: one builder a kind of set-up, so a test names
//! only what it changes (`Bitrix24Config { flag_field: …, ..b24_webhook(url) }`).

use dozor::config::{AmocrmConfig, Bitrix24Config, Bitrix24Plan, ComagicConfig, Secret};

/// Bitrix24 through an inbound webhook at `url`, Enterprise plan, no flag field.
pub fn b24_webhook(url: impl Into<String>) -> Bitrix24Config {
    Bitrix24Config {
        plan: Bitrix24Plan::Enterprise,
        ..Bitrix24Config::webhook(url)
    }
}

/// Bitrix24 as an OAuth application of the simulator's portal, starting from `refresh`.
pub fn b24_oauth(h: &dozor_sim::SimHandle, refresh: &str) -> Bitrix24Config {
    let c = &h.sim.creds;
    Bitrix24Config {
        webhook_url: None,
        portal_url: Some(h.b24_portal_url()),
        client_id: Some(c.b24_client_id.clone()),
        client_secret: Some(Secret::new(c.b24_client_secret.clone())),
        refresh_token: Some(Secret::new(refresh)),
        oauth_url: format!("{}/b24", h.base_url()),
        ..b24_webhook("")
    }
}

/// amoCRM at `base_url` with a long-lived `token`, 7 requests a second.
pub fn amo_long_lived(base_url: impl Into<String>, token: impl Into<String>) -> AmocrmConfig {
    AmocrmConfig {
        base_url: base_url.into(),
        long_lived_token: Some(Secret::new(token)),
        long_lived_token_file: None,
        client_id: None,
        client_secret: None,
        client_secret_file: None,
        redirect_uri: None,
        refresh_token: None,
        refresh_token_file: None,
        rate_per_sec: 7,
    }
}

/// amoCRM with the simulator's long-lived token.
pub fn amo_sim(h: &dozor_sim::SimHandle) -> AmocrmConfig {
    amo_long_lived(h.amo_url(), h.sim.creds.amo_long_lived_token.clone())
}

/// amoCRM as an OAuth integration of the simulator's account, starting from `refresh`.
pub fn amo_oauth(h: &dozor_sim::SimHandle, refresh: &str) -> AmocrmConfig {
    let c = &h.sim.creds;
    AmocrmConfig {
        long_lived_token: None,
        client_id: Some(c.amo_client_id.clone()),
        client_secret: Some(Secret::new(c.amo_client_secret.clone())),
        redirect_uri: Some(c.amo_redirect_uri.clone()),
        refresh_token: Some(Secret::new(refresh)),
        ..amo_long_lived(h.amo_url(), "")
    }
}

/// CoMagic's Data API at `base_url` with `token`, no zone override, no employee map.
pub fn comagic_config(base_url: impl Into<String>, token: impl Into<String>) -> ComagicConfig {
    ComagicConfig {
        base_url: base_url.into(),
        access_token: Some(Secret::new(token)),
        access_token_file: None,
        timezone: None,
        employees: Default::default(),
    }
}
