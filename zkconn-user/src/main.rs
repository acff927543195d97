//! `zkconn`: who holds this host's ZooKeeper connections.
//!
//! `main` parses and validates everything, runs the command, and prints an error once,
//! as one sentence chain (`{:#}`). A closed stdout (`| head`) is not an error.

use std::{io::Write as _, process::ExitCode};

use anyhow::Context as _;
use clap::Parser as _;
use zkconn::{
    Setup, check,
    cli::{CheckArgs, Cli, Command, Shell, SnapshotArgs},
    daemon,
    driver::{self, Watch},
    model::Snapshot,
    output, tui,
};

fn main() -> ExitCode {
    let parsed = Cli::try_parse().and_then(|cli| match cli.command {
        // No subcommand: `top` (global flags are all there can be).
        None => {
            let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
            args.insert(1.min(args.len()), "top".into());
            Cli::try_parse_from(args)
        }
        Some(_) => Ok(cli),
    });
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            // A monitoring plugin reports its own usage errors as UNKNOWN, not CRITICAL.
            let is_check =
                std::env::args().skip(1).find(|a| !a.starts_with('-')) == Some("check".to_owned());
            if is_check && e.use_stderr() {
                // One status line on stdout, as the plugin's monitoring system reads it.
                let text = e.to_string();
                let first = text.lines().next().unwrap_or_default();
                println!(
                    "ZKCONN UNKNOWN - {}",
                    first.strip_prefix("error: ").unwrap_or(first)
                );
                return ExitCode::from(check::UNKNOWN);
            }
            e.exit()
        }
    };
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let level = format!("{level},aya=warn");
    // While `top` draws, logs go to a buffer: its latest line is shown in the footer and
    // all of it is printed once the terminal is restored.
    let logs = tui::LogBuffer::default();
    let drawing = matches!(cli.command, Some(Command::Top(_)));
    let filter = tracing_subscriber::EnvFilter::try_from_env("ZKCONN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let subscriber = tracing_subscriber::fmt().with_env_filter(filter);
    if drawing {
        let buffer = logs.clone();
        subscriber
            .with_ansi(false)
            .with_writer(move || buffer.clone())
            .init();
    } else if zkconn::systemd::stderr_is_journal() {
        // The journal stamps each line and reads its priority from a `<N>` prefix.
        subscriber
            .with_ansi(false)
            .event_format(zkconn::systemd::JournalFormat)
            .with_writer(std::io::stderr)
            .init();
    } else {
        subscriber
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .init();
    }
    if let Some(Command::Check(args)) = cli.command {
        return match run_check(args) {
            Ok(code) => ExitCode::from(code),
            Err(err) => {
                println!("ZKCONN UNKNOWN - {err:#}");
                ExitCode::from(check::UNKNOWN)
            }
        };
    }
    let result = run(cli, logs.clone());
    for line in logs.drain() {
        eprintln!("{line}");
    }
    match result {
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

fn run(cli: Cli, logs: tui::LogBuffer) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::Snapshot(args)) => {
            let setup = Setup::new(&args.watch)?;
            runtime()?.block_on(snapshot(args, setup))
        }
        Some(Command::Top(args)) if args.history.is_some() => {
            let (Some(dir), Some(at)) = (&args.history, &args.at) else {
                anyhow::bail!("top --history needs --at TIME");
            };
            let opened = tui::past::open(dir, at)?;
            tui::require_terminal()?;
            runtime()?.block_on(tui::past::run(opened, logs))
        }
        Some(Command::Top(args)) => {
            let setup = Setup::new(&args.watch)?;
            tui::require_terminal()?;
            runtime()?.block_on(async {
                let watch = Watch::start(setup, &args.watch.probe)?;
                watch.keep_asking_limits();
                tui::run(watch, args.interval, logs).await
            })
        }
        Some(Command::History(args)) => {
            let mut out = std::io::stdout().lock();
            match (
                &args.at,
                zkconn::series::Subject::of_args(&args.subject),
                &args.from,
            ) {
                (Some(at), _, _) => zkconn::archive::show(&mut out, &args.history, at, args.json),
                (None, Some(subject), Some(from)) => zkconn::series::show(
                    &mut out,
                    &args.history,
                    &subject,
                    from,
                    &args.to,
                    args.json,
                ),
                // clap requires --at, or --from with a subject.
                _ => Err(anyhow::anyhow!(
                    "give --at TIME, or --from TIME with --process, --container, \
                     --application, --service, --server or --client"
                )),
            }
        }
        Some(Command::Report(args)) => {
            let centre = match args.around {
                Some(t) => zkconn::report::Centre::Around(t),
                None => zkconn::report::Centre::LastAlarm,
            };
            let mut out = std::io::stdout().lock();
            zkconn::report::run(&mut out, &args.history, &centre, args.window, args.out)
        }
        Some(Command::Daemon(args)) => {
            let setup = Setup::new(&args.watch)?;
            runtime()?.block_on(daemon::run(args, setup))
        }
        Some(Command::Completions { shell }) => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let shell = match shell {
                Shell::Bash => clap_complete::Shell::Bash,
                Shell::Zsh => clap_complete::Shell::Zsh,
                Shell::Fish => clap_complete::Shell::Fish,
            };
            let mut out = std::io::stdout().lock();
            clap_complete::generate(shell, &mut cmd, "zkconn", &mut out);
            out.flush()?;
            Ok(())
        }
        Some(Command::Man { dir: None }) => {
            let cmd = <Cli as clap::CommandFactory>::command();
            let mut out = std::io::stdout().lock();
            clap_mangen::Man::new(cmd).render(&mut out)?;
            out.flush()?;
            Ok(())
        }
        Some(Command::Man { dir: Some(dir) }) => {
            let cmd = <Cli as clap::CommandFactory>::command();
            let page = |path: std::path::PathBuf, man: clap_mangen::Man| -> anyhow::Result<()> {
                let mut text = Vec::new();
                man.render(&mut text)?;
                std::fs::write(&path, text)
                    .with_context(|| format!("cannot write {}", path.display()))
            };
            for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
                let name = format!("zkconn-{}", sub.get_name());
                let sub = sub.clone().display_name(name.clone());
                page(dir.join(format!("{name}.1")), clap_mangen::Man::new(sub))?;
            }
            page(dir.join("zkconn.1"), clap_mangen::Man::new(cmd))
        }
        Some(Command::Check(_)) | None => unreachable!("handled in main"),
    }
}

/// Runs `check`; returns the plugin exit code.
fn run_check(args: CheckArgs) -> anyhow::Result<u8> {
    if args.timeout <= args.duration {
        anyhow::bail!(
            "-t {:?} leaves no time after --duration {:?}; give a longer -t",
            args.timeout,
            args.duration
        );
    }
    // A watchdog, not a future: loading the programs blocks. Exiting closes every BPF
    // link, so nothing stays attached.
    let timeout = args.timeout;
    std::thread::spawn(move || {
        std::thread::sleep(timeout);
        println!("ZKCONN UNKNOWN - no verdict within -t {timeout:?}; raise -t");
        std::process::exit(i32::from(check::UNKNOWN));
    });
    let setup = Setup::new(&args.watch)?;
    let snap = runtime()?.block_on(async {
        let mut watch = Watch::start(setup, &args.watch.probe)?;
        observe(&mut watch, args.duration).await
    })?;
    let (status, line) = check::verdict(&snap);
    println!("{line}");
    Ok(check::exit_code(status))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Observes for `duration` (or until SIGINT/SIGTERM), sampling the history each second,
/// then takes the snapshot.
async fn observe(watch: &mut Watch, duration: std::time::Duration) -> anyhow::Result<Snapshot> {
    // Handlers first: a SIGINT right after "ready" must end the observation, not the process.
    let mut stop = driver::Stop::install()?;
    // With -v, scripts and tests wait for this line to know the hooks are live.
    tracing::info!("ready: observing for {duration:?}");
    driver::run(watch, &mut stop, &mut driver::Observe::for_(duration)).await?;
    watch.snapshot()
}

async fn snapshot(args: SnapshotArgs, setup: Setup) -> anyhow::Result<()> {
    let mut watch = Watch::start(setup, &args.watch.probe)?;
    let snap = observe(&mut watch, args.duration).await?;
    // Stdout is line-buffered: a document of thousands of lines would be as many writes.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if args.json {
        output::json(&mut out, &snap)?;
    } else {
        output::text(&mut out, &snap)?;
    }
    out.flush()?;
    Ok(())
}
