//! The `harbor-pilot` binary: parses the command line and runs the subcommand.

use std::io::{self, Write as _};
use std::process::ExitCode;

use clap::Parser as _;
use harbor_pilot::cli::{Cli, Command};
use harbor_pilot::commands;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut stdin = io::stdin().lock();
    let mut stdout = io::stdout().lock();
    let mut stderr = io::stderr();
    let result = match &cli.command {
        Command::Rewrite(args) => commands::rewrite(args, &mut stdout),
        Command::Review(args) => commands::review(args, &mut stdin, &mut stdout, &mut stderr),
        Command::Scan(args) => commands::scan(args, &mut stdin, &mut stdout),
        Command::CheckConfig(args) => commands::check_config(args, &mut stdout),
    };
    let result = result
        .map_err(anyhow::Error::from)
        .and_then(|()| Ok(stdout.flush()?));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` prints the whole cause chain on one line.
            let _ = writeln!(stderr, "error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
