//! Developer and operator tasks: `cargo xtask setup|build|run|test|demo|bench|fuzz|vm-test|dist`.
//!
//! `setup` makes a fresh Debian machine ready (nightly with rust-src, a bpf-linker built
//! against the nightly's own LLVM, the Debian packages the tests use); it is idempotent and
//! quick when everything is there, and every other task runs it first.

use std::{
    env,
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, anyhow, bail};
use clap::{Parser, Subcommand};
use zkconn_common::hooks::Hook;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "zkconn's build, run and test tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need (nightly + rust-src, bpf-linker, Debian packages).
    Setup,
    /// Set up, then build target/release/zkconn.
    Build,
    /// Set up, build, and run zkconn as root (through sudo when not root): `zkconn top`
    /// on this host's real traffic, or the zkconn command given after `--`.
    Run {
        /// Arguments for zkconn (after `--`); none runs `top`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Set up, build, and show zkconn top on a demo: a real ZooKeeper with a small limit, an
    /// HBase RegionServer JVM, and two YARN containers of one application, one leaking
    /// until refused. Everything started is stopped on exit.
    Demo,
    /// Set up (plus Debian's libbpf-tools for tcplife), build, and run the benchmarks as
    /// root; they print tables and write docs/benchmarks.md (the 30-minute soak included).
    Bench {
        /// Only the soak (30 minutes): its section of docs/benchmarks.md is replaced.
        #[arg(long)]
        soak_only: bool,
    },
    /// Set up (plus cargo-fuzz), then run every fuzz target for --seconds each, starting
    /// from the committed seeds in fuzz/seeds/. A crash fails the task and leaves its input
    /// in fuzz/artifacts/.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u32,
        /// Only these targets (default: all of them).
        targets: Vec<String>,
    },
    /// Set up (plus qemu, busybox, cpio and arm64 binutils), build, then check every hook's
    /// counting on this host and inside Debian's 5.10, 6.1 and 6.12 kernels and the arm64 6.1
    /// kernel (the arm64 build) booted under qemu (software emulation); prints the matrix and
    /// writes it into docs/kernels.md.
    VmTest {
        /// Only these kernels: 5.10, 6.1, 6.12, 6.1-arm64 (default: every one).
        kernels: Vec<String>,
    },
    /// Set up (plus the Rust musl target), then write target/dist/: a statically linked
    /// zkconn in a tarball with its docs, unit, rules, dashboard, completions and man page,
    /// a .deb, an .rpm, and SHA256SUMS.
    Dist {
        /// Also install, run and remove the .deb in a Debian 11 root (debootstrap) and the
        /// .rpm in a scratch root, as `cargo xtask test` does.
        #[arg(long)]
        check: bool,
    },
    /// Set up, then run every test: unit tests, the root integration tests against a real
    /// ZooKeeper, and the kernel matrix (`vm-test`, without rewriting docs/kernels.md). With
    /// extra arguments (a test-name filter, --nocapture) the kernel matrix is skipped.
    Test {
        /// Only the unit tests (no root, no ZooKeeper).
        #[arg(long)]
        unit_only: bool,
        /// Extra arguments for the integration test binary (a test-name filter, --nocapture).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
}

/// Debian packages: ZooKeeper server and client jars, a JDK for the test clients, `ss`/`ip`,
/// tmux for the end-to-end test of `zkconn top`, Prometheus (and promtool) and bpftool for
/// the daemon's tests, openssl, curl and htpasswd for its TLS and basic-authentication test.
const DEBIAN_PACKAGES: &[&str] = &[
    "zookeeper",
    "openjdk-17-jdk-headless",
    "iproute2",
    "tmux",
    "prometheus",
    "bpftool",
    // NAT in the tests (a masquerading host).
    "nftables",
    "openssl",
    "curl",
    "apache2-utils",
];
const BPF_LINKER_VERSION: &str = "0.13.0";

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let root = workspace_root()?;
    match cli.task {
        Task::Setup => setup(),
        Task::Build => {
            setup()?;
            build(&root)
        }
        Task::Run { args } => {
            setup()?;
            build(&root)?;
            let mut cmd = as_root(root.join("target/release/zkconn"));
            if args.is_empty() {
                cmd.arg("top");
            }
            check(cmd.args(args), "zkconn")
        }
        Task::Demo => {
            setup()?;
            build(&root)?;
            run_tests_bin(&root, "zkconn-demo", &[], "the demo")
        }
        Task::Bench { soak_only } => {
            setup()?;
            install_debian(&["libbpf-tools"])?;
            build(&root)?;
            let out = root.join("docs/benchmarks.md");
            if soak_only {
                run_tests_bin(
                    &root,
                    "zkconn-bench",
                    &["soak-into".as_ref(), out.as_os_str(), "30".as_ref()],
                    "the soak",
                )
            } else {
                run_tests_bin(&root, "zkconn-bench", &[out.as_os_str()], "the benchmarks")
            }
        }
        Task::Fuzz { seconds, targets } => {
            setup()?;
            fuzz(&root, seconds, &targets)
        }
        Task::VmTest { kernels } => {
            setup()?;
            install_debian(vm::DEBIAN_PACKAGES)?;
            build(&root)?;
            vm::run(&root, &kernels, vm::Doc::Write)
        }
        Task::Dist { check } => {
            setup()?;
            install_debian(dist::DEBIAN_PACKAGES)?;
            if check {
                dist::check_packages(&root)
            } else {
                dist::run(&root)
            }
        }
        Task::Test { unit_only, args } => {
            setup()?;
            test(&root, unit_only, &args)
        }
    }
}

/// Every fuzz target, in fuzz/Cargo.toml.
const FUZZ_TARGETS: &[&str] = &[
    "cli_values",
    "zoo_cfg",
    "rules",
    "proc_files",
    "command_line",
    "kernel_formats",
];
const CARGO_FUZZ_VERSION: &str = "0.13.2";

fn fuzz(root: &Path, seconds: u32, only: &[String]) -> anyhow::Result<()> {
    if output(Command::new("cargo").args(["fuzz", "--version"])).is_none() {
        eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION}");
        check(
            Command::new("cargo").args([
                "install",
                "cargo-fuzz",
                "--locked",
                "--version",
                CARGO_FUZZ_VERSION,
            ]),
            "cargo install cargo-fuzz",
        )?;
    }
    if let Some(unknown) = only.iter().find(|t| !FUZZ_TARGETS.contains(&t.as_str())) {
        bail!(
            "no fuzz target {unknown}; the targets are {}",
            FUZZ_TARGETS.join(", ")
        );
    }
    for target in FUZZ_TARGETS
        .iter()
        .filter(|t| only.is_empty() || only.iter().any(|o| o == *t))
    {
        // New inputs go to the (ignored) corpus; the committed seeds are read only.
        let corpus = root.join("fuzz/corpus").join(target);
        let seeds = root.join("fuzz/seeds").join(target);
        std::fs::create_dir_all(&corpus)?;
        eprintln!("xtask: fuzzing {target} for {seconds} s");
        check(
            Command::new("cargo")
                .current_dir(root.join("fuzz"))
                .args(["+nightly", "fuzz", "run", target])
                .arg(&corpus)
                .arg(&seeds)
                .args([
                    "--",
                    &format!("-max_total_time={seconds}"),
                    "-rss_limit_mb=4096",
                ]),
            &format!("fuzz target {target} (a crash input is in fuzz/artifacts/{target}/)"),
        )?;
    }
    Ok(())
}

/// Builds `bin` of the tests package and runs it as root with `args`, pointed at the
/// zkconn that `build` made.
fn run_tests_bin(
    root: &Path,
    bin: &str,
    args: &[&std::ffi::OsStr],
    what: &str,
) -> anyhow::Result<()> {
    let mut cmd = as_root(build_tests_bin(root, bin, what)?);
    cmd.env("ZKCONN_BIN", root.join("target/release/zkconn"))
        .args(args);
    check(&mut cmd, what)
}

/// Builds `bin` of the tests package (release) and returns its path.
fn build_tests_bin(root: &Path, bin: &str, what: &str) -> anyhow::Result<PathBuf> {
    check(
        Command::new("cargo").current_dir(root).args([
            "build",
            "--release",
            "--package",
            "integration-tests",
            "--bin",
            bin,
        ]),
        &format!("building {what}"),
    )?;
    Ok(root.join("target/release").join(bin))
}

fn workspace_root() -> anyhow::Result<PathBuf> {
    let manifest = env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .ok_or_else(|| anyhow!("run this through `cargo xtask`"))?;
    manifest
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("xtask has no parent directory"))
}

fn is_root() -> bool {
    // Effective uid from /proc avoids an unsafe libc call for one number.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// `program` as root: directly when we are root, else through sudo keeping PATH (for cargo).
fn as_root(program: impl AsRef<std::ffi::OsStr>) -> Command {
    if is_root() {
        Command::new(program)
    } else {
        let mut cmd = Command::new("sudo");
        cmd.arg("--preserve-env=PATH,CARGO_HOME,RUSTUP_HOME,HOME,ZKCONN_BIN,ZKCONN_TEST_HOOK")
            .arg(program);
        cmd
    }
}

fn check(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn setup() -> anyhow::Result<()> {
    setup_debian()?;
    setup_nightly()?;
    setup_bpf_linker()
}

fn setup_debian() -> anyhow::Result<()> {
    install_debian(DEBIAN_PACKAGES)
}

/// Installs those of `packages` that are missing, never removing any package (see
/// [`apt`]).
fn install_debian(packages: &[&str]) -> anyhow::Result<()> {
    let private = workspace_root()?.join("target/apt");
    apt::install(packages, &private)
}

fn nightly_sysroot() -> Option<PathBuf> {
    output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .map(|s| PathBuf::from(s.trim()))
}

fn setup_nightly() -> anyhow::Result<()> {
    if nightly_sysroot().is_none() {
        eprintln!("xtask: installing the nightly toolchain");
        check(
            Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
                "--component",
                "rust-src",
            ]),
            "rustup toolchain install nightly",
        )?;
    }
    let sysroot = nightly_sysroot().ok_or_else(|| anyhow!("nightly rustc does not run"))?;
    if !sysroot.join("lib/rustlib/src/rust/library").is_dir() {
        eprintln!("xtask: adding rust-src to nightly");
        check(
            Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]),
            "rustup component add rust-src",
        )?;
    }
    Ok(())
}

/// The nightly's `libLLVM.so.<major>.<minor>-rust-...` and its major version.
fn nightly_llvm() -> anyhow::Result<(PathBuf, String, String)> {
    let sysroot = nightly_sysroot().ok_or_else(|| anyhow!("nightly rustc does not run"))?;
    let lib = sysroot.join("lib");
    let name = std::fs::read_dir(&lib)
        .with_context(|| format!("cannot list {}", lib.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find(|n| n.starts_with("libLLVM.so."))
        .ok_or_else(|| anyhow!("nightly at {} ships no libLLVM.so.*", sysroot.display()))?;
    let major = name
        .trim_start_matches("libLLVM.so.")
        .split('.')
        .next()
        .filter(|m| !m.is_empty() && m.chars().all(|c| c.is_ascii_digit()))
        .ok_or_else(|| anyhow!("cannot read the LLVM major version from {name}"))?
        .to_owned();
    Ok((lib.join(&name), name, major))
}

fn cargo_home() -> PathBuf {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
}

fn setup_bpf_linker() -> anyhow::Result<()> {
    let (llvm_lib, llvm_name, major) = nightly_llvm()?;
    // The prefix stays: its path is baked into bpf-linker as rpath.
    let prefix = cargo_home().join("zkconn-llvm").join(&llvm_name);
    let stamp = prefix.join("bpf-linker.stamp");
    let wanted = format!("{BPF_LINKER_VERSION} llvm-{major} {llvm_name}");
    let works = output(Command::new("bpf-linker").arg("--version")).is_some();
    if works && std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == wanted) {
        return Ok(());
    }
    if works && !stamp.exists() && prefix.join("lib").join(&llvm_name).exists() {
        // Built by hand with the same recipe: adopt it.
        std::fs::write(&stamp, &wanted).context("cannot write the bpf-linker stamp")?;
        return Ok(());
    }
    eprintln!("xtask: building bpf-linker {BPF_LINKER_VERSION} against nightly's LLVM {major}");
    let lib_dir = prefix.join("lib");
    std::fs::create_dir_all(&lib_dir)
        .with_context(|| format!("cannot create {}", lib_dir.display()))?;
    for link in ["libLLVM.so", llvm_name.as_str()] {
        let path = lib_dir.join(link);
        let _ = std::fs::remove_file(&path);
        std::os::unix::fs::symlink(&llvm_lib, &path)
            .with_context(|| format!("cannot link {}", path.display()))?;
    }
    check(
        Command::new("cargo")
            .env("LLVM_PREFIX", &prefix)
            .args([
                "install",
                "--force",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
            ])
            .arg(format!("llvm-{major}")),
        "cargo install bpf-linker",
    )?;
    std::fs::write(&stamp, &wanted).context("cannot write the bpf-linker stamp")
}

fn build(root: &Path) -> anyhow::Result<()> {
    check(
        Command::new("cargo")
            .current_dir(root)
            .args(["build", "--release", "--package", "zkconn"]),
        "cargo build",
    )
}

fn test(root: &Path, unit_only: bool, args: &[OsString]) -> anyhow::Result<()> {
    check(
        Command::new("cargo").current_dir(root).args([
            "test",
            "--release",
            "--package",
            "zkconn-common",
            "--package",
            "zkconn",
            "--package",
            "xtask",
        ]),
        "unit tests",
    )?;
    if unit_only {
        return Ok(());
    }
    build(root)?;
    // The integration tests load eBPF and create cgroups: they run as root, two at a time
    // (each starts its own ZooKeeper JVM; this is a 2-core machine). zkconn's own choice of
    // hook (`auto`) carries the whole suite; the tests of counting run again once with every
    // other hook this kernel has.
    let all = all_tests(root)?;
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    integration_tests(root, None, &all, args)?;
    for hook in other_hooks(root) {
        integration_tests(root, Some(hook), COUNTING_TESTS, args)?;
    }
    if !args.is_empty() {
        return Ok(());
    }
    // Hooks this kernel refuses (fentry and kprobes here) are tested on kernels that have
    // them.
    println!(
        "== every hook on Debian's 5.10, 6.1 and 6.12 kernels and the arm64 6.1 kernel under \
         qemu, with the static binaries (cargo xtask vm-test)"
    );
    install_debian(vm::DEBIAN_PACKAGES)?;
    vm::run(root, &[], vm::Doc::Leave)?;
    println!("== the packages of cargo xtask dist: the .deb in a Debian 11 root, the .rpm");
    install_debian(dist::DEBIAN_PACKAGES)?;
    dist::check_packages(root)
}

/// Every integration test: each file of `tests/tests/`, so a new one cannot be left out.
fn all_tests(root: &Path) -> anyhow::Result<Vec<String>> {
    let dir = root.join("tests/tests");
    let mut tests = Vec::new();
    for entry in
        std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
    {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs")
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
            tests.push(stem.to_owned());
        }
    }
    tests.sort();
    for t in COUNTING_TESTS {
        anyhow::ensure!(
            tests.iter().any(|x| x == t),
            "COUNTING_TESTS names {t}, which tests/tests/ does not have"
        );
    }
    Ok(tests)
}

/// The tests whose results depend on the hook.
const COUNTING_TESTS: &[&str] = &[
    "accounting",
    "exactness",
    "suspects",
    "netns",
    "ownership",
    "repair",
    "server_side",
];

/// Hooks besides the one `auto` picks (the first that attaches) that attach on this kernel,
/// found by starting the built zkconn once with each forced.
fn other_hooks(root: &Path) -> Vec<&'static str> {
    let zkconn = root.join("target/release/zkconn");
    let attaching: Vec<&str> = Hook::AUTO_ORDER
        .into_iter()
        .map(Hook::name)
        .filter(|hook| {
            as_root(&zkconn)
                .args(["snapshot", "--json", "--port", "1", "--hook", hook])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    attaching.into_iter().skip(1).collect()
}

fn integration_tests(
    root: &Path,
    hook: Option<&str>,
    tests: &[&str],
    args: &[OsString],
) -> anyhow::Result<()> {
    let mut cmd = as_root("cargo");
    cmd.current_dir(root)
        .env("ZKCONN_BIN", root.join("target/release/zkconn"))
        .env("ZKCONN_TEST_HOOK", hook.unwrap_or(""))
        .args(["test", "--release", "--package", "integration-tests"]);
    for t in tests {
        cmd.args(["--test", t]);
    }
    cmd.arg("--").args(["--test-threads", "2"]).args(args);
    let what = match hook {
        Some(h) => format!("integration tests with --hook {h}"),
        None => "integration tests".to_owned(),
    };
    if let Some(h) = hook {
        println!("== the tests of counting again, with --hook {h}");
    }
    check(&mut cmd, &what)
}

mod apt;
mod dist;
#[cfg(test)]
mod imports;
mod vm;

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory as _;
        super::Cli::command().debug_assert();
    }
}
