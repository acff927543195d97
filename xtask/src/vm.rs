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

use crate::{as_root, build_tests_bin, check, output};

/// What the guests are made of: qemu to boot them, busybox for their init, cpio to pack it.
pub const DEBIAN_PACKAGES: &[&str] = &["qemu-system-x86", "busybox-static", "cpio"];

/// Whether a run rewrites the matrix in docs/kernels.md (`vm-test`) or only checks it
/// (`test`, so a test run leaves the tree as it was).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Doc {
    Write,
    Leave,
}

/// The kernel series of the matrix and the Debian package that follows each one.
const KERNELS: &[(&str, &str)] = &[
    ("6.1", "linux-image-cloud-amd64"),
    ("6.12", "linux-image-6.12-cloud-amd64"),
];

/// Every hook, in the order the check runs them; `auto` first shows what zkconn picks.
const HOOKS: &[&str] = &["auto", "btf", "fentry", "tracepoint", "kprobe"];

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
    hook: String,
    /// The check itself failed (a client or listener of its own), so nothing is known.
    broken: bool,
    attached: bool,
    reported: String,
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
        .find(|k| !KERNELS.iter().any(|(series, _)| series == k))
    {
        bail!(
            "no kernel series {unknown} in the matrix; it has {}",
            KERNELS
                .iter()
                .map(|(s, _)| *s)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let vmcheck = build_tests_bin(root, "zkconn-vmcheck", "the kernel check")?;
    let work = root.join("target/vm");
    fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let zkconn = root.join("target/release/zkconn");

    let mut runs = vec![host_run(&zkconn, &vmcheck)?];
    print_run(&runs[0]);
    let initramfs = build_initramfs(&work, &zkconn, &vmcheck)?;
    for (series, package) in KERNELS
        .iter()
        .filter(|(s, _)| only.is_empty() || only.iter().any(|o| o == s))
    {
        let vmlinuz = fetch_kernel(&work, series, package)?;
        eprintln!("xtask: booting {} under qemu", vmlinuz.display());
        let run = guest_run(&work, series, &vmlinuz, &initramfs)?;
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
                .filter(|h| h.broken || (h.attached && !h.exact))
                .map(move |h| format!("{} with --hook {}: {}", r.kernel, h.hook, h.detail));
            failed.chain(inexact)
        })
        .collect();
    if !bad.is_empty() {
        bail!("the kernel matrix is not clean: {}", bad.join("; "));
    }
    Ok(())
}

fn host_run(zkconn: &Path, vmcheck: &Path) -> anyhow::Result<KernelRun> {
    let kernel = output(Command::new("uname").arg("-r"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "?".to_owned());
    eprintln!("xtask: checking every hook on this host ({kernel})");
    let out = as_root(vmcheck)
        .env("ZKCONN_BIN", zkconn)
        .args(HOOKS)
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run the kernel check on this host")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(KernelRun {
        kernel,
        place: "the host that ran vm-test".to_owned(),
        hooks: parse_results(&text),
        failure: (!out.status.success()).then(|| format!("the check exited with {}", out.status)),
    })
}

/// The newest package of `series` that `package` depends on, downloaded and unpacked once;
/// returns its vmlinuz.
fn fetch_kernel(work: &Path, series: &str, package: &str) -> anyhow::Result<PathBuf> {
    let depends = output(Command::new("apt-cache").args(["depends", "--important", package]))
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
        let debs = work.join("debs");
        fs::create_dir_all(&debs)?;
        eprintln!("xtask: downloading {image}");
        check(
            Command::new("apt-get")
                .current_dir(&debs)
                // Root downloads into a directory the _apt user cannot write: say so.
                .args(["download", "-qq", "-o", "APT::Sandbox::User=root", &image]),
            &format!("apt-get download {image}"),
        )?;
        let deb = fs::read_dir(&debs)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{image}_")) && n.ends_with(".deb"))
            })
            .ok_or_else(|| anyhow!("apt-get download left no {image} package"))?;
        fs::create_dir_all(&dir)?;
        check(
            Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir),
            &format!("unpacking {}", deb.display()),
        )?;
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
echo "zkconn-vm: kernel $(uname -r)"
ZKCONN_BIN=/zkconn /zkconn-vmcheck HOOKS
echo "zkconn-vm: end $?"
poweroff -f
"#;

/// An initramfs (newc cpio) of busybox, zkconn (without debug info), the check and the
/// libraries `ldd` lists for them.
fn build_initramfs(work: &Path, zkconn: &Path, vmcheck: &Path) -> anyhow::Result<PathBuf> {
    let tree = work.join("initramfs");
    if tree.exists() {
        fs::remove_dir_all(&tree).with_context(|| format!("cannot clear {}", tree.display()))?;
    }
    for dir in ["bin", "etc", "proc", "sys", "dev", "tmp"] {
        fs::create_dir_all(tree.join(dir))?;
    }
    let busybox = Path::new("/bin/busybox");
    fs::copy(busybox, tree.join("bin/busybox"))
        .context("cannot copy /bin/busybox (Debian's busybox-static)")?;
    check(
        Command::new("objcopy")
            .arg("--strip-debug")
            .arg(zkconn)
            .arg(tree.join("zkconn")),
        "objcopy --strip-debug zkconn",
    )?;
    fs::copy(vmcheck, tree.join("zkconn-vmcheck"))?;
    for binary in [zkconn, vmcheck] {
        for lib in shared_libraries(binary)? {
            let to = tree.join(lib.strip_prefix("/").unwrap_or(&lib));
            if let Some(parent) = to.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::copy(&lib, &to).with_context(|| format!("cannot copy {}", lib.display()))?;
        }
    }
    fs::write(tree.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n")?;
    let init = tree.join("init");
    fs::write(&init, INIT.replace("HOOKS", &HOOKS.join(" ")))?;
    fs::set_permissions(&init, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let archive = work.join("initramfs.cpio");
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

/// The shared libraries `binary` loads, with the dynamic loader.
fn shared_libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let text = output(Command::new("ldd").arg(binary))
        .ok_or_else(|| anyhow!("ldd {} failed", binary.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

fn guest_run(
    work: &Path,
    series: &str,
    vmlinuz: &Path,
    initramfs: &Path,
) -> anyhow::Result<KernelRun> {
    let mut tries = 1;
    loop {
        match boot(work, series, vmlinuz, initramfs)? {
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
    series: &str,
    vmlinuz: &Path,
    initramfs: &Path,
) -> anyhow::Result<Option<KernelRun>> {
    let log_path = work.join(format!("guest-{series}.log"));
    let log = fs::File::create(&log_path)?;
    let started = Instant::now();
    let booted = || {
        fs::read(&log_path)
            .is_ok_and(|b| String::from_utf8_lossy(&b).contains("zkconn-vm: kernel "))
    };
    let mut qemu = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-m", "1G", "-smp", "2"])
        .args(["-nographic", "-no-reboot", "-kernel"])
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start qemu-system-x86_64 (Debian's qemu-system-x86)")?;
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
    let kernel = text
        .lines()
        .find_map(|l| l.split("zkconn-vm: kernel ").nth(1))
        .map(|k| k.trim().to_owned())
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
        place: "qemu (TCG), 2 vCPUs, Debian cloud-amd64 package".to_owned(),
        hooks: parse_results(&text),
        failure,
    }))
}

/// The `zkconn-vm: hook=...` lines of the check.
fn parse_results(text: &str) -> Vec<HookResult> {
    text.lines()
        .filter_map(|l| l.split("zkconn-vm: ").nth(1))
        .filter(|l| l.starts_with("hook="))
        .map(|l| {
            let field = |name: &str| {
                let start = l.find(&format!("{name}="))? + name.len() + 1;
                let rest = &l[start..];
                Some(match rest.strip_prefix('"') {
                    // A quoted value ends at the last quote of the line.
                    Some(q) => q[..q.rfind('"').unwrap_or(q.len())].replace("\\\"", "\""),
                    None => rest.split_whitespace().next().unwrap_or("").to_owned(),
                })
            };
            HookResult {
                hook: field("hook").unwrap_or_default(),
                broken: field("error").is_some(),
                attached: field("attached").as_deref() == Some("yes"),
                reported: field("reported").unwrap_or_default(),
                exact: field("exact").as_deref() == Some("yes"),
                detail: field("differences")
                    .or_else(|| field("reason"))
                    .or_else(|| field("error"))
                    .unwrap_or_default(),
            }
        })
        .collect()
}

/// A refusal without zkconn's framing around the kernel's reason.
fn short_reason(detail: &str) -> String {
    let reason = detail
        .split_once("is not available on this kernel: ")
        .map_or(detail, |(_, r)| r);
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
        "exact".to_owned()
    } else {
        format!("**not exact**: {}", h.detail.replace('|', "/"))
    }
}

fn print_run(run: &KernelRun) {
    println!("{} ({}):", run.kernel, run.place);
    for h in &run.hooks {
        println!("  --hook {:<10} {}", h.hook, cell(h));
    }
    if let Some(f) = &run.failure {
        println!("  FAILED: {f}");
    }
}

/// The matrix as a markdown table: a row per kernel, a column per hook.
fn matrix(runs: &[KernelRun]) -> String {
    let mut t = String::from("| kernel | where |");
    for hook in HOOKS.iter().filter(|h| **h != "auto") {
        let _ = write!(t, " `{hook}` |");
    }
    t.push_str(" `auto` picks |\n|---|---|");
    for _ in HOOKS {
        t.push_str("---|");
    }
    t.push('\n');
    for run in runs {
        let _ = write!(t, "| {} | {} |", run.kernel, run.place);
        for hook in HOOKS.iter().filter(|h| **h != "auto") {
            let c = run
                .hooks
                .iter()
                .find(|h| h.hook == *hook)
                .map_or_else(|| "not run".to_owned(), cell);
            let _ = write!(t, " {c} |");
        }
        let auto = run.hooks.iter().find(|h| h.hook == "auto");
        let picks = match (auto, &run.failure) {
            (_, Some(f)) => format!("run failed: {f}"),
            (Some(a), None) if a.attached && a.exact => format!("`{}`, exact", a.reported),
            (Some(a), None) => cell(a),
            (None, None) => "not run".to_owned(),
        };
        let _ = writeln!(t, " {picks} |");
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
            zkconn-vm: hook=auto attached=yes reported=btf exact=yes\n\
            [  3.1] zkconn-vm: hook=kprobe attached=no reason=\"zkconn: --hook kprobe (k) is not available on this kernel: no \\\"kprobe\\\"; --hook auto picks one that is\"\n\
            zkconn-vm: hook=btf attached=yes reported=btf exact=no differences=\"B open is 2, not 3\"\n";
        let r = parse_results(text);
        assert_eq!(r.len(), 3);
        assert!(r.iter().all(|h| !h.broken));
        assert!(r[0].attached && r[0].exact && r[0].reported == "btf");
        assert!(!r[1].attached);
        assert_eq!(cell(&r[1]), "refused: no \"kprobe\"");
        assert!(r[2].attached && !r[2].exact);
        assert_eq!(cell(&r[2]), "**not exact**: B open is 2, not 3");
    }

    #[test]
    fn a_failed_check_is_neither_a_refusal_nor_a_pass() {
        let r = parse_results("zkconn-vm: hook=btf attached=? error=\"the client said x\"\n");
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
