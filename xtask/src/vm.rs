//! `cargo xtask vm-test`: the kernel matrix. Every hook's counting is checked on this host and
//! inside kernels from Debian's `linux-image-*` packages, booted under qemu with software
//! emulation (KVM does not work on this project's machines) into an initramfs of busybox,
//! zkconn and its check (`tests/src/bin/zkconn-vmcheck.rs`). The matrix is printed and written
//! into docs/kernels.md between its markers.
//!
//! Everything comes from Debian's packages: the kernels (`apt-get download`), qemu, busybox
//! and cpio. Work files stay under `target/vm/`.

use std::{
    fmt::Write as _,
    fs,
    io::Read as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use zkconn_common::hooks::{Hook, UNAVAILABLE};

use crate::{
    as_root, check,
    dist::{AARCH64, Target, X86_64},
    output,
};

/// What the guests are made of: qemu to boot them (x86-64 and arm64), busybox for their init,
/// cpio to pack it, and the static builds' toolchain (objcopy for arm64 programs, the C
/// compiler for TLS's assembly and C, see [`crate::dist::static_binary`]).
pub const DEBIAN_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "qemu-system-arm",
    "busybox-static",
    "cpio",
    "binutils-aarch64-linux-gnu",
    "gcc-aarch64-linux-gnu",
    "libc6-dev-arm64-cross",
];

/// Whether a run rewrites the matrix in docs/kernels.md (`vm-test`) or only checks it
/// (`test`, so a test run leaves the tree as it was).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Doc {
    Write,
    Leave,
}

/// One kernel of the matrix.
struct Kernel {
    /// What `vm-test KERNEL` calls it.
    name: &'static str,
    /// Its version series (the package must bring `linux-image-SERIES.*`).
    series: &'static str,
    /// The Debian package that follows the series.
    package: &'static str,
    /// The Debian suite it comes from (`None`: this machine's own release).
    suite: Option<&'static str>,
    /// The machine it runs on, and zkconn is built for.
    target: Target,
}

const KERNELS: &[Kernel] = &[
    // Debian 11's kernel: BPF memory charged to RLIMIT_MEMLOCK (before 5.11), every bpf()
    // command refused without CAP_BPF while unprivileged BPF is disabled (before 5.19).
    Kernel {
        name: "5.10",
        series: "5.10",
        package: "linux-image-cloud-amd64",
        suite: Some("bullseye"),
        target: X86_64,
    },
    Kernel {
        name: "6.1",
        series: "6.1",
        package: "linux-image-cloud-amd64",
        suite: None,
        target: X86_64,
    },
    Kernel {
        name: "6.12",
        series: "6.12",
        package: "linux-image-6.12-cloud-amd64",
        suite: None,
        target: X86_64,
    },
    // Graviton and Ampere Hadoop nodes: the arm64 build on Debian 12's arm64 kernel, with
    // its own eBPF object (kprobes read arm64's pt_regs).
    Kernel {
        name: "6.1-arm64",
        series: "6.1",
        package: "linux-image-cloud-arm64",
        suite: None,
        target: AARCH64,
    },
];

/// How the check starts zkconn: the `--mode` it names, whether it takes the unit's
/// capability bounding set, the memlock limit (`None`: the unit's), and the hooks it runs.
struct Mode {
    name: &'static str,
    unit: bool,
    memlock: Option<&'static str>,
    all_hooks: bool,
    /// `--fallback` for zkconn: features replaced even where the kernel has them.
    fallback: Option<&'static str>,
}

const MODES: &[Mode] = &[
    Mode {
        name: "root",
        unit: false,
        memlock: None,
        all_hooks: true,
        fallback: None,
    },
    // Exactly as deploy/zkconn.service runs it: its bounding set, no new privileges, its
    // LimitMEMLOCK.
    Mode {
        name: "unit",
        unit: true,
        memlock: None,
        all_hooks: true,
        fallback: None,
    },
    // The unit's capabilities with systemd's default memlock limit before v253 (64 KiB):
    // from 5.11 it does not matter; before, zkconn must refuse in one sentence that names
    // LimitMEMLOCK.
    Mode {
        name: "unit-memlock-64k",
        unit: true,
        memlock: Some("65536"),
        all_hooks: false,
        fallback: None,
    },
    // What kernels before 5.5 and 5.8 get (older helpers, a perf event array for the ring
    // buffer), forced on every kernel and hook.
    Mode {
        name: "fallbacks",
        unit: false,
        memlock: None,
        all_hooks: true,
        fallback: Some("monotonic-clock,probe-read,perf-buffer"),
    },
];

/// Every hook, in the order the check runs them; `auto` first shows what zkconn picks.
const HOOKS: &[&str] = &[
    "auto",
    Hook::AUTO_ORDER[0].name(),
    Hook::AUTO_ORDER[1].name(),
    Hook::AUTO_ORDER[2].name(),
    Hook::AUTO_ORDER[3].name(),
];

/// A guest that has not powered off by then has hung.
const GUEST_TIMEOUT: Duration = Duration::from_secs(900);
/// The guest's init prints its first line 3-5 s after qemu starts; now and then a guest
/// under software emulation stalls before that and never moves again. Such a boot is
/// abandoned after this long and tried once more.
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
const BOOT_TRIES: u32 = 3;

const BEGIN: &str = "<!-- vm-test:begin -->";
const END: &str = "<!-- vm-test:end -->";

/// What one hook did on one kernel, from a `zkconn-vm:` line.
struct HookResult {
    mode: String,
    hook: String,
    /// The check itself failed (a client or listener of its own), so nothing is known.
    broken: bool,
    attached: bool,
    reported: String,
    /// The capabilities zkconn kept after attach.
    kept: String,
    /// Why the hook was checked a second time (a count differed in the first; how many
    /// program runs the kernel skipped there).
    retried: Option<String>,
    exact: bool,
    detail: String,
}

struct KernelRun {
    kernel: String,
    place: String,
    hooks: Vec<HookResult>,
    /// Set when the guest did not reach the end of its script.
    failure: Option<String>,
}

pub fn run(root: &Path, only: &[String], doc: Doc) -> anyhow::Result<()> {
    if let Some(unknown) = only
        .iter()
        .find(|k| !KERNELS.iter().any(|kernel| kernel.name == k.as_str()))
    {
        bail!(
            "no kernel {unknown} in the matrix; it has {}",
            KERNELS
                .iter()
                .map(|k| k.name)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let work = root.join("target/vm");
    fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let checks = invocations(&unit_limits(root)?);
    // The statically linked binaries `cargo xtask dist` ships: the guests get no shared
    // library at all, which proves they need none. One initramfs per machine.
    let mut initramfs: Vec<(Target, PathBuf)> = Vec::new();
    let mut runs = Vec::new();
    for target in crate::dist::TARGETS {
        let wanted: Vec<&Kernel> = KERNELS
            .iter()
            .filter(|k| k.target == target)
            .filter(|k| only.is_empty() || only.iter().any(|o| o == k.name))
            .collect();
        if wanted.is_empty() && target != X86_64 {
            continue;
        }
        let zkconn = crate::dist::static_binary(root, "zkconn", "zkconn", target)?;
        let vmcheck =
            crate::dist::static_binary(root, "integration-tests", "zkconn-vmcheck", target)?;
        if target == X86_64 {
            runs.push(host_run(&zkconn, &vmcheck, &checks)?);
            print_run(&runs[0]);
        }
        if wanted.is_empty() {
            continue;
        }
        let busybox = busybox_for(&work, target)?;
        initramfs.push((
            target,
            build_initramfs(&work, target, &busybox, &zkconn, &vmcheck, &checks)?,
        ));
    }
    for kernel in KERNELS
        .iter()
        .filter(|k| only.is_empty() || only.iter().any(|o| o == k.name))
    {
        let Some((_, image)) = initramfs.iter().find(|(t, _)| *t == kernel.target) else {
            continue;
        };
        let vmlinuz = fetch_kernel(&work, kernel)?;
        eprintln!("xtask: booting {} under qemu", vmlinuz.display());
        let run = guest_run(&work, kernel, &vmlinuz, image)?;
        print_run(&run);
        runs.push(run);
    }

    let table = matrix(&runs);
    println!("\n{table}");
    if only.is_empty() && doc == Doc::Write {
        write_doc(&root.join("docs/kernels.md"), &table)?;
        eprintln!("xtask: wrote the matrix into docs/kernels.md");
    }
    let bad: Vec<String> = runs
        .iter()
        .flat_map(|r| {
            let failed = r.failure.iter().map(move |f| format!("{}: {f}", r.kernel));
            let inexact = r
                .hooks
                .iter()
                .filter_map(|h| problem(h).map(|p| format!("{} {p}", r.kernel)));
            failed.chain(inexact)
        })
        .collect();
    if !bad.is_empty() {
        bail!("the kernel matrix is not clean: {}", bad.join("; "));
    }
    Ok(())
}

fn host_run(zkconn: &Path, vmcheck: &Path, checks: &[Vec<String>]) -> anyhow::Result<KernelRun> {
    let release = output(Command::new("uname").arg("-r"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "?".to_owned());
    let sysctl = |name: &str| {
        fs::read_to_string(format!("/proc/sys/kernel/{name}"))
            .map_or_else(|_| "?".to_owned(), |v| v.trim().to_owned())
    };
    let group_dead = fs::read_to_string(
        "/sys/kernel/tracing/events/sched/sched_process_exit/format",
    )
    .map_or("no", |f| {
        if f.contains("group_dead") {
            "yes"
        } else {
            "no"
        }
    });
    let kernel = kernel_name(&format!(
        "{release} unprivileged_bpf_disabled={} perf_event_paranoid={} exit_group_dead={group_dead}",
        sysctl("unprivileged_bpf_disabled"),
        sysctl("perf_event_paranoid")
    ));
    eprintln!("xtask: checking every hook on this host ({kernel})");
    let mut text = String::new();
    let mut failure = None;
    for args in checks {
        let out = as_root(vmcheck)
            .env("ZKCONN_BIN", zkconn)
            .args(args)
            .stderr(Stdio::inherit())
            .output()
            .context("cannot run the kernel check on this host")?;
        text.push_str(&String::from_utf8_lossy(&out.stdout));
        if !out.status.success() {
            failure = Some(format!("the check exited with {}", out.status));
        }
    }
    Ok(KernelRun {
        kernel,
        place: "the host that ran vm-test".to_owned(),
        hooks: parse_results(&text),
        failure,
    })
}

/// What deploy/zkconn.service grants zkconn: its capability bounding set (comma-joined)
/// and its `LimitMEMLOCK` (bytes or `infinity`; systemd's default before v253 when absent).
struct UnitLimits {
    caps: String,
    memlock: String,
}

fn unit_limits(root: &Path) -> anyhow::Result<UnitLimits> {
    let path = root.join("deploy/zkconn.service");
    let text =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_unit(&text).with_context(|| format!("in {}", path.display()))
}

fn parse_unit(text: &str) -> anyhow::Result<UnitLimits> {
    let value = |key: &str| {
        text.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .find_map(|l| l.trim().strip_prefix(key))
            .map(str::trim)
    };
    let caps = value("CapabilityBoundingSet=")
        .ok_or_else(|| anyhow!("no CapabilityBoundingSet= line"))?
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(",");
    let memlock = match value("LimitMEMLOCK=") {
        None => "65536".to_owned(),
        Some("infinity") => "infinity".to_owned(),
        Some(v) => {
            let (digits, unit) =
                v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
            let scale: u64 = match unit {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                _ => bail!("LimitMEMLOCK={v} is not understood here (bytes, K, M, G, infinity)"),
            };
            (digits.parse::<u64>().context("LimitMEMLOCK")? * scale).to_string()
        }
    };
    Ok(UnitLimits { caps, memlock })
}

/// The check's command lines, one per mode.
fn invocations(unit: &UnitLimits) -> Vec<Vec<String>> {
    MODES
        .iter()
        .map(|m| {
            let mut args = vec!["--mode".to_owned(), m.name.to_owned()];
            if m.unit {
                args.extend(["--caps".to_owned(), unit.caps.clone()]);
                args.extend([
                    "--memlock".to_owned(),
                    m.memlock.unwrap_or(&unit.memlock).to_owned(),
                ]);
            }
            if let Some(f) = m.fallback {
                args.extend(["--fallback".to_owned(), f.to_owned()]);
            }
            let hooks: &[&str] = if m.all_hooks { HOOKS } else { &["auto"] };
            args.extend(hooks.iter().map(|h| (*h).to_owned()));
            args
        })
        .collect()
}

/// `RELEASE key=value...` (the sysctls that decide what zkconn may do) as the matrix shows
/// it.
fn kernel_name(line: &str) -> String {
    let mut words = line.split_whitespace();
    let release = words.next().unwrap_or("?");
    let sysctls: Vec<&str> = words.collect();
    if sysctls.is_empty() {
        release.to_owned()
    } else {
        format!("{release} ({})", sysctls.join(", "))
    }
}

/// Why one result spoils the matrix, if it does.
fn problem(h: &HookResult) -> Option<String> {
    let what = format!("({}) with --hook {}", h.mode, h.hook);
    if h.broken || (h.attached && !h.exact) {
        return Some(format!("{what}: {}", h.detail));
    }
    if h.attached {
        return None;
    }
    let mode = MODES.iter().find(|m| m.name == h.mode);
    match mode {
        // A limit zkconn cannot live with must be said in one sentence naming the fix.
        Some(m) if m.memlock.is_some() && !h.detail.contains("LimitMEMLOCK") => Some(format!(
            "{what}: refused without naming LimitMEMLOCK: {}",
            h.detail
        )),
        Some(m) if m.memlock.is_some() => None,
        // Some hook always fits; `auto` must find it.
        _ if h.hook == "auto" => Some(format!("{what}: no hook attached: {}", h.detail)),
        // A kernel may lack a hook or forbid it, but its verifier refusing zkconn's own
        // programs (too much stack on an older kernel, say) is zkconn's bug, whatever
        // another hook does.
        _ if h.detail.contains("the kernel's verifier refused") => {
            Some(format!("{what}: the verifier refused it: {}", h.detail))
        }
        _ => None,
    }
}

/// The newest package of `series` that `package` depends on (in `suite` of Debian's
/// archive, or this machine's own release), downloaded and unpacked once; returns its
/// vmlinuz.
fn fetch_kernel(work: &Path, kernel: &Kernel) -> anyhow::Result<PathBuf> {
    let (series, package) = (kernel.series, kernel.package);
    let opts = apt_options(work, kernel.suite, kernel.target)?;
    let depends =
        output(
            Command::new("apt-cache")
                .args(&opts)
                .args(["depends", "--important", package]),
        )
        .ok_or_else(|| {
            anyhow!("apt-cache knows no {package}; run `apt-get update` and try again")
        })?;
    let image = depends
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|d| d.starts_with("linux-image-"))
        .ok_or_else(|| anyhow!("{package} depends on no linux-image package"))?
        .to_owned();
    if !image.starts_with(&format!("linux-image-{series}.")) {
        bail!(
            "{package} now brings {image}, not a {series} kernel; update the matrix in xtask/src/vm.rs"
        );
    }
    let dir = work.join("kernels").join(&image);
    let boot = dir.join("boot");
    if !boot.is_dir() {
        fetch_deb(work, &opts, &image, &dir)?;
    }
    fs::read_dir(&boot)
        .with_context(|| format!("cannot list {}", boot.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .ok_or_else(|| anyhow!("{image} has no vmlinuz"))
}

/// The guest's `/init`: mount what zkconn needs, run the check for every hook, power off.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tracefs tracefs /sys/kernel/tracing
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ip link set lo up
echo "zkconn-vm: kernel $(uname -r) unprivileged_bpf_disabled=$(cat /proc/sys/kernel/unprivileged_bpf_disabled) perf_event_paranoid=$(cat /proc/sys/kernel/perf_event_paranoid) exit_group_dead=$(grep -q group_dead /sys/kernel/tracing/events/sched/sched_process_exit/format && echo yes || echo no)"
CHECKS
echo "zkconn-vm: end $?"
poweroff -f
"#;

/// `package` (of the options' suite and architecture) downloaded and unpacked into `dir`.
fn fetch_deb(work: &Path, opts: &[String], package: &str, dir: &Path) -> anyhow::Result<()> {
    let debs = work.join("debs");
    fs::create_dir_all(&debs)?;
    eprintln!("xtask: downloading {package}");
    check(
        Command::new("apt-get")
            .current_dir(&debs)
            // Root downloads into a directory the _apt user cannot write: say so.
            .args(opts)
            .args(["download", "-qq", "-o", "APT::Sandbox::User=root", package]),
        &format!("apt-get download {package}"),
    )?;
    let name = package.split(':').next().unwrap_or(package);
    let arch = opts
        .iter()
        .find_map(|o| o.strip_prefix("-oAPT::Architecture="))
        .map(str::to_owned);
    let deb = fs::read_dir(&debs)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with(&format!("{name}_"))
                    && n.ends_with(".deb")
                    && arch
                        .as_ref()
                        .is_none_or(|a| n.ends_with(&format!("_{a}.deb")))
            })
        })
        .ok_or_else(|| anyhow!("apt-get download left no {package} package"))?;
    fs::create_dir_all(dir)?;
    check(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(dir),
        &format!("unpacking {}", deb.display()),
    )
}

/// apt options for `suite` (`None`: this machine's release) and `target`'s architecture:
/// the machine's own apt for its own release and architecture, otherwise lists of their own
/// under `target/vm/apt/`.
fn apt_options(work: &Path, suite: Option<&str>, target: Target) -> anyhow::Result<Vec<String>> {
    if suite.is_none() && target == X86_64 {
        return Ok(Vec::new());
    }
    let suite = match suite {
        Some(s) => s.to_owned(),
        None => crate::apt::codename()?,
    };
    let arch = (target != X86_64).then_some(target.deb);
    let dir = work
        .join("apt")
        .join(arch.map_or(suite.clone(), |a| format!("{suite}-{a}")));
    crate::apt::only_suite(&dir, &suite, arch)
}

/// A statically linked busybox for `target`: this machine's (Debian's busybox-static), or
/// the package of the target's architecture.
fn busybox_for(work: &Path, target: Target) -> anyhow::Result<PathBuf> {
    if target == X86_64 {
        return Ok(PathBuf::from("/bin/busybox"));
    }
    let dir = work.join(format!("busybox-{}", target.deb));
    let bin = dir.join("bin/busybox");
    if !bin.exists() {
        let opts = apt_options(work, None, target)?;
        fetch_deb(work, &opts, "busybox-static", &dir)?;
    }
    Ok(bin)
}

/// An initramfs (newc cpio) of busybox, zkconn (stripped, as shipped) and the check, all
/// three statically linked: no shared library is in it.
fn build_initramfs(
    work: &Path,
    target: Target,
    busybox: &Path,
    zkconn: &Path,
    vmcheck: &Path,
    checks: &[Vec<String>],
) -> anyhow::Result<PathBuf> {
    let tree = work.join(format!("initramfs-{}", target.deb));
    if tree.exists() {
        fs::remove_dir_all(&tree).with_context(|| format!("cannot clear {}", tree.display()))?;
    }
    for dir in ["bin", "etc", "proc", "sys", "dev", "tmp"] {
        fs::create_dir_all(tree.join(dir))?;
    }
    fs::copy(busybox, tree.join("bin/busybox")).with_context(|| {
        format!(
            "cannot copy {} (Debian's busybox-static)",
            busybox.display()
        )
    })?;
    // Stripped as `cargo xtask dist` ships it.
    check(
        Command::new(target.objcopy)
            .arg("--strip-all")
            .arg(zkconn)
            .arg(tree.join("zkconn")),
        &format!("{} --strip-all zkconn", target.objcopy),
    )?;
    fs::copy(vmcheck, tree.join("zkconn-vmcheck"))?;
    fs::write(tree.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n")?;
    let init = tree.join("init");
    let lines: Vec<String> = checks
        .iter()
        .map(|args| format!("ZKCONN_BIN=/zkconn /zkconn-vmcheck {}", args.join(" ")))
        .collect();
    fs::write(&init, INIT.replace("CHECKS", &lines.join("\n")))?;
    fs::set_permissions(&init, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let archive = work.join(format!("initramfs-{}.cpio", target.deb));
    let file = fs::File::create(&archive)?;
    let list = Command::new("find")
        .current_dir(&tree)
        .arg(".")
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run find")?;
    let status = Command::new("cpio")
        .current_dir(&tree)
        .args(["--quiet", "-o", "-H", "newc"])
        .stdin(list.stdout.ok_or_else(|| anyhow!("find gave no output"))?)
        .stdout(file)
        .status()
        .context("cannot run cpio (Debian's cpio)")?;
    if !status.success() {
        bail!("cpio failed ({status})");
    }
    Ok(archive)
}

fn guest_run(
    work: &Path,
    kernel: &Kernel,
    vmlinuz: &Path,
    initramfs: &Path,
) -> anyhow::Result<KernelRun> {
    let series = kernel.name;
    let mut tries = 1;
    loop {
        match boot(work, kernel, vmlinuz, initramfs)? {
            Some(run) => return Ok(run),
            None if tries < BOOT_TRIES => {
                eprintln!(
                    "xtask: the {series} guest stalled before its init ran; booting it again"
                );
                tries += 1;
            }
            None => bail!(
                "the {series} guest stalled before its init ran, {BOOT_TRIES} times; see \
                 target/vm/guest-{series}.log"
            ),
        }
    }
}

/// One boot; `None` when the guest stalled before its init printed anything.
fn boot(
    work: &Path,
    kernel: &Kernel,
    vmlinuz: &Path,
    initramfs: &Path,
) -> anyhow::Result<Option<KernelRun>> {
    let series = kernel.name;
    let log_path = work.join(format!("guest-{series}.log"));
    let log = fs::File::create(&log_path)?;
    let started = Instant::now();
    let booted = || {
        fs::read(&log_path)
            .is_ok_and(|b| String::from_utf8_lossy(&b).contains("zkconn-vm: kernel "))
    };
    let (qemu_bin, machine, console, package): (&str, &[&str], &str, &str) =
        if kernel.target == X86_64 {
            ("qemu-system-x86_64", &[], "ttyS0", "qemu-system-x86")
        } else {
            (
                "qemu-system-aarch64",
                &["-M", "virt", "-cpu", "max"],
                "ttyAMA0",
                "qemu-system-arm",
            )
        };
    let mut qemu = Command::new(qemu_bin)
        .args(machine)
        .args(["-accel", "tcg", "-m", "1G", "-smp", "2"])
        .args(["-nographic", "-no-reboot", "-kernel"])
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", &format!("console={console} panic=-1 quiet")])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {qemu_bin} (Debian's {package})"))?;
    let mut timed_out = false;
    let mut init_ran = false;
    loop {
        if qemu.try_wait()?.is_some() {
            break;
        }
        init_ran = init_ran || booted();
        if !init_ran && started.elapsed() > BOOT_TIMEOUT {
            let _ = qemu.kill();
            let _ = qemu.wait();
            return Ok(None);
        }
        if started.elapsed() > GUEST_TIMEOUT {
            let _ = qemu.kill();
            let _ = qemu.wait();
            timed_out = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut text = String::new();
    fs::File::open(&log_path)?.read_to_string(&mut text)?;
    let arch = kernel.target.deb;
    let kernel = text
        .lines()
        .find_map(|l| l.split("zkconn-vm: kernel ").nth(1))
        .map(kernel_name)
        .unwrap_or_else(|| format!("{series} (did not boot)"));
    let ended = text.lines().any(|l| l.contains("zkconn-vm: end"));
    let failure = if timed_out {
        Some(format!(
            "no power-off within {} s; see {}",
            GUEST_TIMEOUT.as_secs(),
            log_path.display()
        ))
    } else if !ended {
        Some(format!(
            "the guest stopped before its end; see {}",
            log_path.display()
        ))
    } else {
        None
    };
    eprintln!(
        "xtask: the {series} guest ran {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(Some(KernelRun {
        kernel,
        place: format!("qemu (TCG), 2 vCPUs, Debian cloud-{arch} package"),
        hooks: parse_results(&text),
        failure,
    }))
}

/// One `zkconn-vm: {JSON}` line of the check (`tests/src/bin/zkconn-vmcheck.rs`).
#[derive(serde::Deserialize)]
struct HookLine {
    mode: String,
    hook: String,
    #[serde(default)]
    attached: bool,
    #[serde(default)]
    reported: String,
    #[serde(default)]
    kept: String,
    #[serde(default)]
    exact: bool,
    #[serde(default)]
    differences: Vec<String>,
    /// Why this is a second run (the first one's counts differed; how many program runs the
    /// kernel skipped there).
    retried: Option<String>,
    reason: Option<String>,
    /// The check itself failed.
    error: Option<String>,
}

/// The hook lines of the check; a line that is not JSON (cut by the console) is a broken
/// check of an unknown hook, never dropped.
fn parse_results(text: &str) -> Vec<HookResult> {
    text.lines()
        .filter_map(|l| l.split("zkconn-vm: ").nth(1))
        .filter(|l| l.starts_with('{'))
        .map(|l| match serde_json::from_str::<HookLine>(l) {
            Ok(h) => HookResult {
                broken: h.error.is_some(),
                detail: if h.differences.is_empty() {
                    h.reason.or(h.error).unwrap_or_default()
                } else {
                    h.differences.join("; ")
                },
                mode: h.mode,
                hook: h.hook,
                attached: h.attached,
                reported: h.reported,
                kept: h.kept,
                retried: h.retried,
                exact: h.exact,
            },
            Err(e) => HookResult {
                mode: "?".to_owned(),
                hook: "?".to_owned(),
                broken: true,
                attached: false,
                reported: String::new(),
                kept: String::new(),
                retried: None,
                exact: false,
                detail: format!("unreadable line ({e}): {l}"),
            },
        })
        .collect()
}

/// A refusal without zkconn's framing around the kernel's reason.
fn short_reason(detail: &str) -> String {
    let reason = detail.split_once(UNAVAILABLE).map_or(detail, |(_, r)| r);
    reason
        .trim_end_matches("; --hook auto picks one that is")
        .replace(
            ". Verifier output: : Operation not permitted (os error 1)",
            "",
        )
        .replace('|', "/")
}

fn cell(h: &HookResult) -> String {
    if h.broken {
        format!("**check failed**: {}", h.detail.replace('|', "/"))
    } else if !h.attached {
        format!("refused: {}", short_reason(&h.detail))
    } else if h.exact {
        match &h.retried {
            Some(r) => format!("exact on a second run ({})", r.replace('|', "/")),
            None => "exact".to_owned(),
        }
    } else {
        format!("**not exact**: {}", h.detail.replace('|', "/"))
    }
}

fn print_run(run: &KernelRun) {
    println!("{} ({}):", run.kernel, run.place);
    for h in &run.hooks {
        println!("  {:<17} --hook {:<10} {}", h.mode, h.hook, cell(h));
    }
    if let Some(f) = &run.failure {
        println!("  FAILED: {f}");
    }
}

/// The matrix as a markdown table: a row per kernel and mode, a column per hook.
fn matrix(runs: &[KernelRun]) -> String {
    let mut t = String::from("| kernel | where | run as |");
    for hook in HOOKS.iter().filter(|h| **h != "auto") {
        let _ = write!(t, " `{hook}` |");
    }
    t.push_str(" `auto` picks | kept after attach |\n|---|---|---|");
    for _ in HOOKS {
        t.push_str("---|");
    }
    t.push_str("---|\n");
    for run in runs {
        for mode in MODES {
            let results: Vec<&HookResult> =
                run.hooks.iter().filter(|h| h.mode == mode.name).collect();
            if results.is_empty() && run.failure.is_none() {
                continue;
            }
            let _ = write!(t, "| {} | {} | {} |", run.kernel, run.place, mode.name);
            for hook in HOOKS.iter().filter(|h| **h != "auto") {
                let c = results
                    .iter()
                    .find(|h| h.hook == *hook)
                    .map_or_else(|| "not run".to_owned(), |h| cell(h));
                let _ = write!(t, " {c} |");
            }
            let auto = results.iter().find(|h| h.hook == "auto");
            let picks = match (auto, &run.failure) {
                (_, Some(f)) => format!("run failed: {f}"),
                (Some(a), None) if a.attached && a.exact => format!("`{}`, exact", a.reported),
                (Some(a), None) => cell(a),
                (None, None) => "not run".to_owned(),
            };
            let kept = auto
                .filter(|a| a.attached)
                .map_or_else(|| "-".to_owned(), |a| a.kept.replace('+', ", "));
            let _ = writeln!(t, " {picks} | {kept} |");
        }
    }
    t
}

/// Replaces what lies between the markers in `doc` with `table`.
fn write_doc(doc: &Path, table: &str) -> anyhow::Result<()> {
    let text = fs::read_to_string(doc).with_context(|| format!("cannot read {}", doc.display()))?;
    let (head, rest) = text
        .split_once(BEGIN)
        .ok_or_else(|| anyhow!("{} has no {BEGIN} marker", doc.display()))?;
    let (_, tail) = rest
        .split_once(END)
        .ok_or_else(|| anyhow!("{} has no {END} marker", doc.display()))?;
    let new = format!("{head}{BEGIN}\n{table}{END}{tail}");
    fs::write(doc, new).with_context(|| format!("cannot write {}", doc.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_read_back_from_the_check_lines() {
        let text = "noise\nzkconn-vm: kernel 6.1.0-57-cloud-amd64\n\
            zkconn-vm: {\"mode\":\"root\",\"hook\":\"auto\",\"attached\":true,\"reported\":\"btf\",\"kept\":\"none\",\"exact\":true,\"differences\":[]}\n\
            [  3.1] zkconn-vm: {\"mode\":\"root\",\"hook\":\"kprobe\",\"attached\":false,\"reason\":\"zkconn: --hook kprobe (k) is not available on this kernel: no \\\"kprobe\\\"; --hook auto picks one that is\"}\n\
            zkconn-vm: {\"mode\":\"root\",\"hook\":\"btf\",\"attached\":true,\"reported\":\"btf\",\"kept\":\"none\",\"exact\":false,\"differences\":[\"B open is 2, not 3\",\"C closed is 1, not 2\"]}\n\
            zkconn-vm: {\"mode\":\"root\",\"hook\":\"fen";
        let r = parse_results(text);
        assert_eq!(r.len(), 4);
        assert!(r[..3].iter().all(|h| !h.broken));
        assert!(r[0].attached && r[0].exact && r[0].reported == "btf");
        assert!(!r[1].attached);
        assert_eq!(cell(&r[1]), "refused: no \"kprobe\"");
        assert!(r[2].attached && !r[2].exact);
        assert_eq!(
            cell(&r[2]),
            "**not exact**: B open is 2, not 3; C closed is 1, not 2"
        );
        // A line the console cut is a failed check, not a missing one.
        assert!(r[3].broken && cell(&r[3]).starts_with("**check failed**: unreadable line"));
    }

    #[test]
    fn the_units_limits_are_read_from_the_unit() -> anyhow::Result<()> {
        let unit = "[Service]\n# CapabilityBoundingSet=CAP_SYS_ADMIN\n\
                    CapabilityBoundingSet=CAP_BPF CAP_PERFMON\nLimitMEMLOCK=infinity\n";
        let limits = parse_unit(unit)?;
        assert_eq!(limits.caps, "CAP_BPF,CAP_PERFMON");
        assert_eq!(limits.memlock, "infinity");
        let limits = parse_unit("CapabilityBoundingSet=CAP_BPF\nLimitMEMLOCK=8M\n")?;
        assert_eq!(limits.memlock, "8388608");
        // systemd's default before v253 when the unit says nothing.
        assert_eq!(
            parse_unit("CapabilityBoundingSet=CAP_BPF\n")?.memlock,
            "65536"
        );
        assert!(parse_unit("LimitMEMLOCK=infinity\n").is_err());
        Ok(())
    }

    #[test]
    fn refusals_spoil_the_matrix_only_where_something_must_attach() {
        let line = |mode: &str, hook: &str, rest: &str| {
            format!("zkconn-vm: {{\"mode\":\"{mode}\",\"hook\":\"{hook}\",{rest}}}\n")
        };
        let refused = |why: &str| format!("\"attached\":false,\"reason\":\"{why}\"");
        let text = [
            line("root", "kprobe", &refused("no kprobes")),
            line("unit", "auto", &refused("EPERM")),
            line("unit-memlock-64k", "auto", &refused("raise LimitMEMLOCK")),
            line("unit-memlock-64k", "auto", &refused("EPERM")),
            line(
                "unit",
                "btf",
                "\"attached\":true,\"reported\":\"btf\",\"kept\":\"CAP_BPF\",\"exact\":true",
            ),
            line(
                "root",
                "tracepoint",
                &refused(
                    "the kernel's verifier refused zk_inet_sock_set_state (combined stack size \
                     of 4 calls is 544)",
                ),
            ),
        ]
        .concat();
        let text = text.as_str();
        let r = parse_results(text);
        let problems: Vec<Option<String>> = r.iter().map(problem).collect();
        assert!(
            problems[5]
                .as_deref()
                .is_some_and(|p| p.contains("the verifier refused it"))
        );
        assert!(problems[0].is_none());
        assert!(
            problems[1]
                .as_deref()
                .is_some_and(|p| p.contains("no hook attached"))
        );
        assert!(problems[2].is_none());
        assert!(
            problems[3]
                .as_deref()
                .is_some_and(|p| p.contains("LimitMEMLOCK"))
        );
        assert!(problems[4].is_none());
        assert_eq!(
            (r[4].mode.as_str(), r[4].kept.as_str()),
            ("unit", "CAP_BPF")
        );
    }

    #[test]
    fn a_second_run_after_skipped_kernel_runs_is_said() {
        let text = "zkconn-vm: {\"mode\":\"fallbacks\",\"hook\":\"tracepoint\",\"attached\":true,\
            \"reported\":\"tracepoint\",\"kept\":\"none\",\"exact\":true,\"differences\":[],\
            \"skipped\":0,\"retried\":\"first run: C (killed) closed is 2, not 3; the kernel skipped 1 \
            program runs\"}\n";
        let r = parse_results(text);
        assert_eq!(
            cell(&r[0]),
            "exact on a second run (first run: C (killed) closed is 2, not 3; the kernel \
             skipped 1 program runs)"
        );
        assert!(problem(&r[0]).is_none());
    }

    #[test]
    fn a_failed_check_is_neither_a_refusal_nor_a_pass() {
        let r = parse_results(
            "zkconn-vm: {\"mode\":\"root\",\"hook\":\"btf\",\"error\":\"the client said x\"}\n",
        );
        assert!(r[0].broken);
        assert_eq!(cell(&r[0]), "**check failed**: the client said x");
    }

    #[test]
    fn the_doc_is_rewritten_between_its_markers_only() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("zkconn-xtask-{}", std::process::id()));
        fs::create_dir_all(&dir)?;
        let doc = dir.join("kernels.md");
        fs::write(&doc, format!("before\n{BEGIN}\nold\n{END}\nafter\n"))?;
        write_doc(&doc, "| new |\n")?;
        assert_eq!(
            fs::read_to_string(&doc)?,
            format!("before\n{BEGIN}\n| new |\n{END}\nafter\n")
        );
        fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
