//! The `dozor` binary: see `dozor --help`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = dozor::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("dozor: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(dozor::cli::run(cli))
}
