//! The command line: argument parsing, logging set-up and the commands themselves.
//!
//! Every command returns an exit code: 0 success, 1 a runtime failure (a system unreachable, a
//! cycle with errors), 2 a configuration or usage error, or a data_dir or database an operator
//! must act on (unusable data_dir, damaged or replaced database), 3 (`once`) every source was
//! read but at least one action failed (refused, dead, or waiting for a retry after a transient
//! error; the summary counts them). Errors are printed as one readable message on stderr, never
//! as a panic.

mod audit;
mod backup;
mod check;
mod common;
mod demo;
mod once;
mod report;
mod report_calls;
mod retry;
mod revert;
mod run;
mod sim;

pub(crate) use common::{CmdResult, Failure, init_logging};
use common::{load_config, log_rule_modes, open_store, select};

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::Lang;

/// dozor keeps a sales department's CRM honest: it syncs Bitrix24 or amoCRM and the telephony
/// (CoMagic, Calltouch), enforces the sales-discipline rules and reports to Telegram.
#[derive(Debug, Parser)]
#[command(name = "dozor", version, propagate_version = true)]
pub struct Cli {
    /// Config file [default: ./config/dozor.toml, then /etc/dozor/dozor.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,
    /// Log format: human for terminals, json for journald and log collectors
    #[arg(long, global = true, value_enum)]
    pub(crate) log_format: Option<LogFormatArg>,
    /// Start over on purpose when the database is missing, empty, damaged or another
    /// installation's, although the install marker (`install-id` beside the database, or in
    /// data_dir for PostgreSQL) says dozor has run here before.
    /// A damaged SQLite file is moved aside, never deleted. Without a restored ledger dozor
    /// may repeat tasks, messages and reports it already made.
    #[arg(long, global = true)]
    pub(crate) reinitialise_database: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum LogFormatArg {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the daemon: scheduled sync, rules and reports, plus the health, metrics and webhook
    /// server. Stops cleanly on SIGTERM or SIGINT.
    Run,
    /// Run one full sync and rules cycle for every tenant, print a summary and exit (3 when an
    /// action failed).
    Once(OnceArgs),
    /// Validate the config and try every configured system's credentials; prints a table of
    /// system, account, status, latency and a hint. Exits 1 if any system failed.
    Check,
    /// Build a report from the mirror and print it, send it to Telegram, or write it to a file.
    Report(ReportArgs),
    /// Show dozor at work with no config at all: starts the simulator, syncs a simulated sales
    /// department, runs the rules and prints the actions and the daily report.
    Demo(DemoArgs),
    /// Serve the simulator (Bitrix24, amoCRM, CoMagic, Calltouch and Telegram fakes) for trying
    /// dozor or testing against it.
    Sim(SimArgs),
    /// List what dozor did: actions by time, rule, entity and outcome.
    Audit(AuditArgs),
    /// Undo owner changes: hands the records of an action (or of every action whose key starts
    /// with the given key, e.g. one dormant-client handover) back to their previous owners.
    Revert(RevertArgs),
    /// Try a `dead` or `failed` action again now, with a fresh retry budget (after fixing what
    /// made it fail). The key is the one `dozor audit --state dead` prints.
    Retry(RetryArgs),
    /// Copy the SQLite database to PATH while dozor runs (a consistent snapshot, mode 0600).
    /// To restore: stop dozor, copy the file over data_dir/dozor.db, start dozor.
    Backup(BackupArgs),
}

#[derive(Debug, Args)]
pub(crate) struct RetryArgs {
    /// The action key, as `dozor audit` prints it
    pub(crate) key: String,
    /// Only this tenant
    #[arg(long)]
    pub(crate) tenant: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct BackupArgs {
    /// The file to write
    #[arg(value_name = "PATH")]
    pub(crate) path: PathBuf,
    /// Replace PATH if it exists
    #[arg(long)]
    pub(crate) force: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RevertArgs {
    /// The action key (as `dozor audit` shows it) or a key prefix
    pub(crate) key: String,
    /// Only this tenant
    #[arg(long)]
    pub(crate) tenant: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct OnceArgs {
    /// Evaluate every rule in shadow mode: read and report, write nothing
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Only this tenant
    #[arg(long)]
    pub(crate) tenant: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum ReportKind {
    Daily,
    Weekly,
    Monthly,
    /// Telephony calls of a day against the CRM timeline: the ones that never reached it
    Calls,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum ReportFormat {
    Html,
    Md,
    Json,
}

#[derive(Debug, Args)]
pub(crate) struct ReportArgs {
    /// Which report
    #[arg(value_enum)]
    pub(crate) kind: ReportKind,
    /// Print to the terminal (the default)
    #[arg(long, conflicts_with = "send")]
    pub(crate) print: bool,
    /// Send to the tenant's owner chat in Telegram
    #[arg(long)]
    pub(crate) send: bool,
    /// Write to a file in this format (with --out)
    #[arg(long, value_enum, requires = "out")]
    pub(crate) format: Option<ReportFormat>,
    /// Output file for --format
    #[arg(long, value_name = "FILE")]
    pub(crate) out: Option<PathBuf>,
    /// The day the report covers, YYYY-MM-DD [default: yesterday in the tenant's time zone]
    #[arg(long, value_name = "DATE")]
    pub(crate) date: Option<chrono::NaiveDate>,
    /// Only this tenant
    #[arg(long)]
    pub(crate) tenant: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum CrmArg {
    Bitrix24,
    Amocrm,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum TelephonyArg {
    Comagic,
    Calltouch,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum LangArg {
    Ru,
    En,
}

impl From<LangArg> for Lang {
    fn from(l: LangArg) -> Lang {
        match l {
            LangArg::Ru => Lang::Ru,
            LangArg::En => Lang::En,
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Which CRM to simulate
    #[arg(long, value_enum, default_value = "bitrix24")]
    pub(crate) crm: CrmArg,
    /// Which telephony to simulate
    #[arg(long, value_enum, default_value = "comagic")]
    pub(crate) telephony: TelephonyArg,
    /// Language of the messages and the report
    #[arg(long, value_enum, default_value = "ru")]
    pub(crate) lang: LangArg,
    /// Seed of the simulated data (same seed, same company)
    #[arg(long, default_value_t = 42)]
    pub(crate) seed: u64,
    /// Size of the simulated company (1 = about 200 clients and deals)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub(crate) scale: u32,
    /// Keep the demo database here instead of a temporary directory
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct SimArgs {
    /// Port on 127.0.0.1 (0 = any free port)
    #[arg(long, default_value_t = 8099)]
    pub(crate) port: u16,
    /// Seed of the generated data
    #[arg(long, default_value_t = 42)]
    pub(crate) seed: u64,
    /// Size of the simulated company (1 = about 200 clients and deals; 500 = 100 000 deals)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=2000))]
    pub(crate) scale: u32,
    /// Do not enforce the services' rate limits
    #[arg(long)]
    pub(crate) no_limits: bool,
    /// Bitrix24 Enterprise limits (5 req/s, burst 250) instead of 2 req/s, burst 50
    #[arg(long)]
    pub(crate) enterprise: bool,
}

#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    /// Only this tenant
    #[arg(long)]
    pub(crate) tenant: Option<String>,
    /// Only this rule
    #[arg(long)]
    pub(crate) rule: Option<String>,
    /// Only actions on this entity, as KIND:ID (deal:123, contact:7)
    #[arg(long, value_name = "KIND:ID")]
    pub(crate) entity: Option<String>,
    /// Only actions in this state: done, failed, dead, intent, shadow
    #[arg(long)]
    pub(crate) state: Option<String>,
    /// Only actions since this date (YYYY-MM-DD)
    #[arg(long)]
    pub(crate) since: Option<chrono::NaiveDate>,
    /// How many entries
    #[arg(long, default_value_t = 50)]
    pub(crate) limit: i64,
    /// JSON lines instead of a table
    #[arg(long)]
    pub(crate) json: bool,
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> ExitCode {
    let result = match &cli.command {
        Command::Run => run::run(&cli).await,
        Command::Once(a) => once::once(&cli, a).await,
        Command::Check => check::check(&cli).await,
        Command::Report(a) => report::report(&cli, a).await,
        Command::Demo(a) => demo::demo(&cli, a).await,
        Command::Sim(a) => sim::sim(&cli, a).await,
        Command::Audit(a) => audit::audit(&cli, a).await,
        Command::Revert(a) => revert::revert(&cli, a).await,
        Command::Retry(a) => retry::retry(&cli, a).await,
        Command::Backup(a) => backup::backup(&cli, a).await,
    };
    match result {
        Ok(code) => code,
        Err(Failure::Config(e)) => {
            eprintln!("dozor: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Operator(e)) => {
            eprintln!("dozor: {e:#}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("dozor: {e:#}");
            ExitCode::from(1)
        }
    }
}
