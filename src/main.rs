//! The `harbor-pilot` binary: parses the command line and runs the subcommand.

use std::io::{self, Write as _};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use harbor_pilot::cli::{Cli, Command, ExportCommand, PrewarmArgs, ServeArgs};
use harbor_pilot::{app, commands, shutdown, telemetry};
use harbor_pilot_core::config::ConfigError;

/// mimalloc instead of glibc's malloc: an admission makes ~45 small allocations (the
/// pod's strings and maps, the answer), and under glibc they cost 7-10 % of the
/// server's throughput (per-request CPU time 22.7 -> 20.7 µs for a 3-container pod,
/// 86 -> 77 µs for 50; README "Performance"). Built without transparent huge pages:
/// with them an idle process held 31 MiB instead of 18 MiB.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let result = match &Cli::parse().command {
        Command::Serve(args) => serve(args),
        Command::Prewarm(args) => prewarm(args),
        command => offline(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `scan … | head`: the reader has all it wanted; no error message.
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            report(&error);
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// Prints `error` on stderr: the whole cause chain on one line (`{:#}`), except that a
/// configuration file with several problems gets one line per problem.
fn report(error: &anyhow::Error) {
    let mut stderr = io::stderr().lock();
    let mut context = Vec::new();
    for cause in error.chain() {
        if let Some(ConfigError::Invalid(problems)) = cause.downcast_ref::<ConfigError>()
            && problems.len() > 1
        {
            let _ = writeln!(
                stderr,
                "error: {}: {} problems",
                context.join(": "),
                problems.len()
            );
            for problem in problems {
                let _ = writeln!(stderr, "  {problem}");
            }
            return;
        }
        context.push(cause.to_string());
    }
    let _ = writeln!(stderr, "error: {error:#}");
}

/// The webhook: logging, an async runtime, and the server until SIGTERM/SIGINT.
fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    // Dropped last: the lines logged up to the end reach stderr before `main` reports
    // an error or exits.
    let _logs = telemetry::init(args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // What each runtime thread builds on first use, built before it takes work
        // (`runtime_thread_started` says what, and what it measured).
        .on_thread_start(harbor_pilot::warm_up::runtime_thread_started)
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(app::run(args.settings(), shutdown::signal()))?;
    Ok(())
}

/// `prewarm`: pulls through Harbor, prints the report; fails when an image failed.
fn prewarm(args: &PrewarmArgs) -> anyhow::Result<()> {
    if args.sources.is_empty() && args.lists.is_empty() && !args.from_cluster {
        anyhow::bail!(
            "nothing to prewarm: give images, manifest files, `-`, --list or --from-cluster"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let rows = runtime.block_on(harbor_pilot::prewarm::prewarm(
        args,
        &mut io::stdin().lock(),
    ))?;
    let mut stdout = io::stdout().lock();
    stdout.write_all(harbor_pilot::prewarm::render_report(&rows).as_bytes())?;
    stdout.flush()?;
    let failed = rows.iter().filter(|r| r.result.is_err()).count();
    if failed > 0 {
        anyhow::bail!(
            "{failed} of {} images did not pull through Harbor",
            rows.len()
        );
    }
    Ok(())
}

/// The subcommands that read input and print.
fn offline(command: &Command) -> anyhow::Result<()> {
    let mut stdin = io::stdin().lock();
    let mut stdout = io::stdout().lock();
    let mut stderr = io::stderr();
    match command {
        Command::Serve(args) => serve(args),
        Command::Prewarm(args) => prewarm(args),
        Command::Rewrite(args) => Ok(commands::rewrite(args, &mut stdout)?),
        Command::Review(args) => Ok(commands::review(
            args,
            &mut stdin,
            &mut stdout,
            &mut stderr,
        )?),
        Command::Scan(args) => Ok(commands::scan(args, &mut stdin, &mut stdout)?),
        Command::CheckConfig(args) => Ok(commands::check_config(args, &mut stdout)?),
        Command::Certs(args) => Ok(commands::certs(args, &mut stdout)?),
        Command::Export(ExportCommand::Talos(args)) => {
            Ok(commands::export_talos(args, &mut stdout)?)
        }
        Command::Export(ExportCommand::Containerd(args)) => {
            Ok(commands::export_containerd(args, &mut stdout)?)
        }
    }?;
    Ok(stdout.flush()?)
}
