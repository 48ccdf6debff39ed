//! One CRM under test, so that a scenario both connectors must pass is written once and run
//! for Bitrix24 and amoCRM, each with its own figures.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeZone;
use dozor::crm::amocrm::{AmoCrm, Tuning};
use dozor::crm::bitrix24::Bitrix24;
use dozor::crm::{Crm, Cursor};
use dozor::domain::{CrmKind, EntityKind, Record, Ts};
use dozor::http::Throttle;
use dozor::store::{Store, TokenStore};
use dozor_sim::world::{LeadStatus, SimCompany, SimLead, SimUtm, World};
use dozor_sim::{SimHandle, SimOptions, System};

/// The CRM a shared scenario runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrmCase {
    Bitrix24,
    Amocrm,
}

impl CrmCase {
    /// The simulated system that answers this CRM's requests.
    pub fn system(self) -> System {
        match self {
            CrmCase::Bitrix24 => System::Bitrix24,
            CrmCase::Amocrm => System::Amocrm,
        }
    }

    /// The product's name for this CRM (tenant configs).
    pub fn kind(self) -> CrmKind {
        match self {
            CrmCase::Bitrix24 => CrmKind::Bitrix24,
            CrmCase::Amocrm => CrmKind::Amocrm,
        }
    }

    /// The simulator options of this CRM's connector suite.
    pub fn opts(self) -> SimOptions {
        match self {
            CrmCase::Bitrix24 => super::anchored(11, super::march_noon()),
            CrmCase::Amocrm => super::sim_opts(3),
        }
    }

    /// The generated company of [`Self::opts`], on a free loopback port.
    pub async fn start(self) -> SimHandle {
        super::start_sim(self.opts()).await
    }

    /// The simulator serving `world` with [`Self::opts`].
    pub async fn serve(self, world: World) -> SimHandle {
        super::serve_world(self.opts(), world).await
    }

    /// The kind of record the bulk world holds: contacts on Bitrix24 (paged by `>ID` in
    /// batches), deals on amoCRM (paged by page number).
    pub fn bulk_kind(self) -> EntityKind {
        match self {
            CrmCase::Bitrix24 => EntityKind::Contact,
            CrmCase::Amocrm => EntityKind::Deal,
        }
    }

    /// The simulator's name for [`Self::bulk_kind`].
    pub fn bulk_owner(self) -> dozor_sim::world::Owner {
        match self {
            CrmCase::Bitrix24 => dozor_sim::world::Owner::Contact,
            CrmCase::Amocrm => dozor_sim::world::Owner::Deal,
        }
    }

    /// A world of one user and `n` records of [`Self::bulk_kind`].
    pub fn bulk_world(self, n: usize) -> World {
        match self {
            CrmCase::Bitrix24 => super::contacts_world(n),
            CrmCase::Amocrm => super::deals_world(n),
        }
    }

    /// The simulator serving [`Self::bulk_world`] of `n` records.
    pub async fn start_bulk(self, n: usize) -> SimHandle {
        self.serve(self.bulk_world(n)).await
    }

    /// Records of [`Self::bulk_kind`] that take more than one page: a batch of 50 chained
    /// lists of 50 and a second batch on Bitrix24, two pages of 250 and a third on amoCRM.
    pub fn several_pages(self) -> usize {
        match self {
            CrmCase::Bitrix24 => 2600,
            CrmCase::Amocrm => 600,
        }
    }

    /// Records of [`Self::bulk_kind`] one page (one request) holds.
    pub fn page_size(self) -> usize {
        match self {
            CrmCase::Bitrix24 => 2500,
            CrmCase::Amocrm => 250,
        }
    }

    /// The ids of the bulk world's records in `h`, ascending.
    pub fn bulk_ids(self, h: &SimHandle) -> Vec<u64> {
        let w = h.sim.world();
        match self {
            CrmCase::Bitrix24 => w.contacts.keys().copied().collect(),
            CrmCase::Amocrm => w.deals.keys().copied().collect(),
        }
    }

    /// The connector on the simulator (Bitrix24 by webhook, amoCRM by long-lived token), its
    /// tokens in `store`, throttled answers waited out by `throttle`.
    pub async fn client(
        self,
        h: &SimHandle,
        store: Arc<dyn TokenStore>,
        throttle: Throttle,
    ) -> Box<dyn Crm> {
        match self {
            CrmCase::Bitrix24 => Box::new(
                Bitrix24::new("t1", &super::b24_webhook(h.b24_webhook_url()), store)
                    .await
                    .unwrap()
                    .with_throttle(throttle),
            ),
            CrmCase::Amocrm => Box::new(
                AmoCrm::new("t1", &super::amo_sim(h), store)
                    .await
                    .unwrap()
                    .with_tuning(Tuning {
                        throttle,
                        ..Tuning::default()
                    }),
            ),
        }
    }

    /// The connector as the simulator's tenant config sets it up (Bitrix24 by webhook with
    /// flags in `UF_CRM_DOZOR_FLAGS`, amoCRM by long-lived token), tokens in memory, the
    /// product's throttle waits.
    pub async fn plain_client(self, h: &SimHandle) -> Box<dyn Crm> {
        let tokens = Arc::new(super::MemTokens::default());
        match self {
            CrmCase::Bitrix24 => {
                let cfg = dozor::config::Bitrix24Config {
                    flag_field: Some("UF_CRM_DOZOR_FLAGS".into()),
                    ..super::b24_webhook(h.b24_webhook_url())
                };
                Box::new(Bitrix24::new("t1", &cfg, tokens).await.unwrap())
            }
            CrmCase::Amocrm => self.client(h, tokens, Throttle::default()).await,
        }
    }

    /// The connector with a credential the CRM never issued: `secret` as the webhook's secret
    /// (Bitrix24) or as the long-lived token (amoCRM).
    pub async fn forged_client(self, h: &SimHandle, secret: &str) -> Box<dyn Crm> {
        let tokens = Arc::new(super::MemTokens::default());
        match self {
            CrmCase::Bitrix24 => {
                let url = format!("{}/b24/rest/1/{secret}/", h.base_url());
                Box::new(
                    Bitrix24::new("t1", &super::b24_webhook(url), tokens)
                        .await
                        .unwrap(),
                )
            }
            CrmCase::Amocrm => Box::new(
                AmoCrm::new("t1", &super::amo_long_lived(h.amo_url(), secret), tokens)
                    .await
                    .unwrap(),
            ),
        }
    }

    /// The connector as an OAuth application (Bitrix24) or integration (amoCRM) starting from
    /// `refresh`, its token pairs in `store`.
    pub async fn oauth_client(
        self,
        h: &SimHandle,
        refresh: &str,
        store: Arc<dyn TokenStore>,
    ) -> Box<dyn Crm> {
        match self {
            CrmCase::Bitrix24 => Box::new(
                Bitrix24::new("t1", &super::b24_oauth(h, refresh), store)
                    .await
                    .unwrap(),
            ),
            CrmCase::Amocrm => Box::new(
                AmoCrm::new("t1", &super::amo_oauth(h, refresh), store)
                    .await
                    .unwrap(),
            ),
        }
    }

    /// The refresh token the simulator issued with the application's installation.
    pub fn first_refresh_token(self, h: &SimHandle) -> String {
        match self {
            CrmCase::Bitrix24 => h.sim.creds.b24_refresh_token.clone(),
            CrmCase::Amocrm => h.sim.creds.amo_refresh_token.clone(),
        }
    }

    /// Token pairs the simulator has issued for a refresh token so far.
    pub fn token_grants(self, h: &SimHandle) -> u64 {
        match self {
            CrmCase::Bitrix24 => h.sim.b24.refresh_count(),
            CrmCase::Amocrm => h.sim.amo.token_grants(),
        }
    }

    /// Whether the simulator would still exchange `token` for a new pair.
    pub fn refresh_token_live(self, h: &SimHandle, token: &str) -> bool {
        match self {
            CrmCase::Bitrix24 => h.sim.b24.current_refresh_token() == token,
            CrmCase::Amocrm => h.sim.amo.refresh_token_valid(token),
        }
    }

    /// The stats key of a refresh grant.
    pub fn token_method(self) -> &'static str {
        match self {
            CrmCase::Bitrix24 => "oauth.token",
            CrmCase::Amocrm => "POST /oauth2/access_token",
        }
    }

    /// Every credential of the simulator's account: none may ever show in an error.
    pub fn secrets(self, h: &SimHandle) -> Vec<String> {
        let c = &h.sim.creds;
        match self {
            CrmCase::Bitrix24 => vec![
                c.b24_webhook_secret.clone(),
                c.b24_client_secret.clone(),
                c.b24_refresh_token.clone(),
                h.sim.b24.current_refresh_token(),
            ],
            CrmCase::Amocrm => {
                let mut all = vec![
                    c.amo_long_lived_token.clone(),
                    c.amo_client_secret.clone(),
                    c.amo_refresh_token.clone(),
                ];
                all.extend(h.sim.amo.last_used_refresh_token());
                all
            }
        }
    }

    /// How many records of [`Self::bulk_kind`] the mirror in `store` holds.
    pub async fn mirrored(self, store: &Store) -> usize {
        match self {
            CrmCase::Bitrix24 => store.contacts("t1").await.unwrap().len(),
            CrmCase::Amocrm => store.deals("t1").await.unwrap().len(),
        }
    }

    /// The world's id of the record the connector calls `id` (an amoCRM lead is the unsorted
    /// item `unsorted-N`).
    pub fn world_id(self, id: &str) -> u64 {
        id.strip_prefix("unsorted-").unwrap_or(id).parse().unwrap()
    }

    /// Tenant "demo" as the product connects it from the simulator's tenant config (Bitrix24
    /// by webhook, amoCRM as an OAuth integration at 7 requests a second), its store a SQLite
    /// file in `dir`.
    pub async fn tenant(self, h: &SimHandle, dir: &std::path::Path) -> (Store, Arc<dyn Crm>) {
        use dozor::domain::TelephonyKind;
        let db = super::sqlite_url(dir);
        let text = super::tenant_config(h, self.kind(), TelephonyKind::Comagic, &db, "ru");
        let c = &h.sim.creds;
        let text = super::rules_on(text).replace(
            &format!("refresh_token = \"{}\"", c.amo_refresh_token),
            &format!(
                "refresh_token = \"{}\"\nrate_per_sec = 7",
                c.amo_refresh_token
            ),
        );
        let cfg = dozor::config::parse(&text, None, None).unwrap().config;
        let store = Store::open(&db, 4).await.unwrap();
        let t = dozor::tenant::connect(&cfg.tenants[0], &store)
            .await
            .unwrap();
        (store, t.crm.clone())
    }
}

/// Two active users of the simulator's world.
pub fn two_users(h: &SimHandle) -> (u64, u64) {
    let w = h.sim.world();
    let mut active = w.users.iter().filter(|u| u.active).map(|u| u.id);
    (active.next().unwrap(), active.next().unwrap())
}

/// Throttle waits short enough for a test: 20 ms doubling to 160 ms, a minute in all.
pub fn quick_throttle() -> Throttle {
    Throttle {
        first: Duration::from_millis(20),
        cap: Duration::from_millis(160),
        budget: Duration::from_secs(60),
    }
}

/// Reads every page of `kind` from `from`; returns the records, the number of pages and the
/// final cursor. A page that is not the last says where to go on; the last one does not.
pub async fn full_pass(
    c: &dyn Crm,
    kind: EntityKind,
    from: Cursor,
) -> (Vec<Record>, usize, Cursor) {
    let mut cursor = from;
    let mut out = Vec::new();
    let mut pages = 0;
    loop {
        let page = c.fetch_page(kind, &cursor).await.unwrap();
        pages += 1;
        out.extend(page.records);
        cursor = page.next;
        if page.done {
            assert!(cursor.position.is_none(), "{kind:?}: {cursor:?}");
            return (out, pages, cursor);
        }
        assert!(cursor.position.is_some(), "{kind:?}: {cursor:?}");
        assert!(pages < 100, "runaway paging");
    }
}

/// The cursor the sync stores once a pass has ended: its high water becomes the next `since`.
pub fn after_pass(ended: &Cursor) -> Cursor {
    Cursor {
        since: ended.high_water,
        ..Cursor::default()
    }
}

/// The newest change in the world: its anchor or any record's modification time.
pub fn newest(w: &World) -> Ts {
    let times = [
        w.leads.values().map(|x| x.updated_at).max(),
        w.deals.values().map(|x| x.updated_at).max(),
        w.contacts.values().map(|x| x.updated_at).max(),
        w.companies.values().map(|x| x.updated_at).max(),
        w.tasks.values().map(|x| x.updated_at).max(),
        w.activities.values().map(|x| x.updated_at).max(),
    ];
    times.into_iter().flatten().fold(w.anchor.unwrap(), Ts::max)
}

/// Three contacts of [`super::contacts_world`] and the sales pipeline, the first contact, a
/// lead and a company holding one number each in another shape (`8 (912) 345-67-89`,
/// `+7 912 345 67 89`, `79123456789`). Returns the world and the three ids.
pub fn one_number_world() -> (World, [u64; 3]) {
    let mut w = super::contacts_world(3);
    w.pipelines.push(super::sales_pipeline());
    let t0 = chrono::Utc.with_ymd_and_hms(2026, 1, 10, 9, 0, 0).unwrap();
    let contact = *w.contacts.keys().next().unwrap();
    w.contacts.get_mut(&contact).unwrap().phones = vec!["8 (912) 345-67-89".into()];
    let lead = w.next_id();
    w.leads.insert(
        lead,
        SimLead {
            id: lead,
            title: "Заявка".into(),
            name: "Олег".into(),
            phone: Some("+7 912 345 67 89".into()),
            email: None,
            source: "CALL".into(),
            status: LeadStatus::New,
            responsible_id: 1,
            contact_id: None,
            company_id: None,
            utm: SimUtm::default(),
            created_at: t0,
            updated_at: t0,
            closed_at: None,
        },
    );
    let company = w.next_id();
    w.companies.insert(
        company,
        SimCompany {
            id: company,
            title: "ООО Тест".into(),
            phones: vec!["79123456789".into()],
            emails: vec![],
            responsible_id: 1,
            tags: vec![],
            created_at: t0,
            updated_at: t0,
        },
    );
    (w, [contact, lead, company])
}

/// Panics when `e`, as shown, debugged or in its message, carries any of `secrets`.
pub fn assert_no_secret(e: &dozor::http::Error, secrets: &[String]) {
    let text = format!("{e} {e:?} {}", e.message);
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        assert!(!text.contains(s.as_str()), "{s:?} shown in: {text}");
    }
}
