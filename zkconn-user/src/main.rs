//! `zkconn`: who holds this host's ZooKeeper connections.
//!
//! `main` parses and validates everything, runs the command, and prints an error once,
//! as one sentence chain (`{:#}`). A closed stdout (`| head`) is not an error.

mod attribution;
mod cli;
mod collector;
mod limits;
mod model;
mod output;
mod probe;
mod procfs;
mod seed;
mod targets;
mod users;

use std::{io::Write as _, process::ExitCode};

use anyhow::Context as _;
use clap::Parser as _;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    attribution::Rules,
    cli::{AttributionArgs, Cli, Command, SnapshotArgs, TargetArgs},
    collector::Collector,
    limits::Limits,
    targets::{Targets, ZooCfg},
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .target(env_logger::Target::Stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if err
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("zkconn: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Snapshot(args) => {
            // Every flag is validated before anything touches the kernel.
            let (targets, zoo_limit) = resolve_targets(&args.targets)?;
            let limits = Limits::new(args.limits.max_client_cnxns, zoo_limit, &args.limits.limit)?;
            let rules = load_rules(&args.attribution)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(snapshot(args, targets, rules, limits))
        }
    }
}

/// Builds the target set from `--zk`, `--port` and `--zoo-cfg`; also returns the zoo.cfg's
/// `maxClientCnxns`.
pub fn resolve_targets(args: &TargetArgs) -> anyhow::Result<(Targets, Option<u32>)> {
    let mut endpoints = Vec::new();
    let mut ports = Vec::new();
    let mut max_client_cnxns = None;
    for zk in &args.zk {
        endpoints.extend(targets::parse_connect_string(zk).context("--zk")?);
    }
    for list in &args.port {
        ports.extend(targets::parse_port_list(list).context("--port")?);
    }
    if let Some(path) = &args.zoo_cfg {
        let cfg = ZooCfg::read(path).context("--zoo-cfg")?;
        max_client_cnxns = cfg.max_client_cnxns;
        let (e, p) = cfg.targets();
        if e.is_empty() && p.is_empty() {
            anyhow::bail!(
                "--zoo-cfg {}: the file names no clientPort, secureClientPort or server.N client port",
                path.display()
            );
        }
        endpoints.extend(e);
        ports.extend(p);
    }
    Ok((Targets::resolve(&endpoints, &ports)?, max_client_cnxns))
}

/// Reads `--rules`, or no rules.
pub fn load_rules(args: &AttributionArgs) -> anyhow::Result<Rules> {
    match &args.rules {
        Some(path) => Rules::read(path).context("--rules"),
        None => Ok(Rules::default()),
    }
}

async fn snapshot(
    args: SnapshotArgs,
    targets: Targets,
    rules: Rules,
    limits: Limits,
) -> anyhow::Result<()> {
    let mut collector = Collector::start(targets, &args.probe, rules, limits)?;
    // Handlers first: a SIGINT right after "ready" must end the observation, not the process.
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    // With -v, scripts and tests wait for this line to know the hooks are live.
    log::info!("ready: observing for {:?}", args.duration);
    let deadline = tokio::time::sleep(args.duration);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut deadline => break,
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            res = collector.next_events() => res?,
        }
    }
    let snap = collector.snapshot()?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        output::json(&mut out, &snap)?;
    } else {
        output::text(&mut out, &snap)?;
    }
    out.flush()?;
    Ok(())
}
