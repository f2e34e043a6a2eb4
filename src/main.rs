//! The `update-orchestrator` binary: parse, run, map the outcome to an exit code.

use std::io::Write;
use std::process::ExitCode;
use update_orchestrator::{app, cli, progress};

fn main() -> ExitCode {
    let args: Result<Vec<String>, _> = std::env::args_os()
        .skip(1)
        .map(|a| a.into_string())
        .collect();
    let Ok(args) = args else {
        update_orchestrator::say!("update-orchestrator: arguments must be valid UTF-8");
        return ExitCode::from(cli::exit::USAGE);
    };
    let top = match cli::parse("update-orchestrator", &args) {
        cli::Parsed::Run(top) => top,
        cli::Parsed::Exit { output, status: 0 } => {
            // `--help | head` closes the pipe early: not an error, and never a panic.
            let _ = writeln!(std::io::stdout(), "{output}");
            return ExitCode::SUCCESS;
        }
        cli::Parsed::Exit { output, status } => {
            update_orchestrator::say!("{output}");
            return ExitCode::from(status);
        }
    };
    let (verbose, quiet) = top.log_verbosity();
    init_logging(verbose, quiet);
    match app::run(top) {
        Ok(outcome) => ExitCode::from(outcome.exit_code()),
        Err(error) => {
            update_orchestrator::say!("update-orchestrator: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

/// Warnings by default (errors only with `--quiet`); each `-v` one step more: info, debug,
/// trace. `RUST_LOG` overrides. Records go to stderr through the logger that suspends the bars.
fn init_logging(verbose: u8, quiet: bool) {
    const LEVELS: [log::LevelFilter; 5] = [
        log::LevelFilter::Error,
        log::LevelFilter::Warn,
        log::LevelFilter::Info,
        log::LevelFilter::Debug,
        log::LevelFilter::Trace,
    ];
    let base = if quiet { 0 } else { 1 };
    let level = LEVELS[(base + usize::from(verbose)).min(LEVELS.len() - 1)];
    let mut builder = env_logger::Builder::new();
    builder
        .filter_level(level)
        .format_timestamp(None)
        .parse_default_env();
    // ureq's trace level dumps raw requests, header values (tokens) included: never go past
    // debug there, whatever RUST_LOG asks.
    for module in ["ureq", "ureq_proto", "rustls"] {
        builder.filter_module(module, level.min(log::LevelFilter::Debug));
    }
    progress::install_logger(builder);
}
