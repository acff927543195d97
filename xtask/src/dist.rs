//! `cargo xtask dist`: what an operator installs. A statically linked zkconn (musl, the eBPF
//! object inside, stripped) in a tarball with README, LICENSE, the systemd unit, the
//! Prometheus rules, the Grafana dashboard, shell completions and the man page, and
//! `SHA256SUMS`, in `target/dist/`.
//!
//! Owns: the static build and the tarball. Must not: install anything on this machine but
//! the Rust target it builds for.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, anyhow, bail};

use crate::{check, output};

/// The target of the static binary.
pub const MUSL: &str = "x86_64-unknown-linux-musl";

/// Adds the musl target to the toolchain (rustup) when missing.
pub fn setup_musl() -> anyhow::Result<()> {
    let installed =
        output(Command::new("rustup").args(["target", "list", "--installed"])).unwrap_or_default();
    if installed.lines().any(|l| l.trim() == MUSL) {
        return Ok(());
    }
    eprintln!("xtask: adding the Rust target {MUSL}");
    check(
        Command::new("rustup").args(["target", "add", MUSL]),
        &format!("rustup target add {MUSL}"),
    )
}

/// Builds `package`'s `bin` statically for musl and returns its path; refuses a binary
/// that names a dynamic loader or a shared library.
pub fn static_binary(root: &Path, package: &str, bin: &str) -> anyhow::Result<PathBuf> {
    setup_musl()?;
    check(
        Command::new("cargo").current_dir(root).args([
            "build",
            "--release",
            "--target",
            MUSL,
            "--package",
            package,
            "--bin",
            bin,
        ]),
        &format!("building {bin} for {MUSL}"),
    )?;
    let path = root.join("target").join(MUSL).join("release").join(bin);
    let needs = dynamic_needs(&path)?;
    if !needs.is_empty() {
        bail!(
            "{} is not static: it needs {}",
            path.display(),
            needs.join(", ")
        );
    }
    Ok(path)
}

/// The dynamic loader and shared libraries an ELF file asks for (`readelf`), empty for a
/// static one.
pub fn dynamic_needs(path: &Path) -> anyhow::Result<Vec<String>> {
    let headers = output(Command::new("readelf").arg("-lW").arg(path))
        .ok_or_else(|| anyhow!("readelf -l {} failed (binutils)", path.display()))?;
    let dynamic = output(Command::new("readelf").arg("-dW").arg(path))
        .ok_or_else(|| anyhow!("readelf -d {} failed (binutils)", path.display()))?;
    let mut needs: Vec<String> = headers
        .lines()
        .filter_map(|l| l.split("[Requesting program interpreter: ").nth(1))
        .map(|l| l.trim_end_matches(']').to_owned())
        .collect();
    needs.extend(
        dynamic
            .lines()
            .filter(|l| l.contains("(NEEDED)"))
            .filter_map(|l| l.split("Shared library: [").nth(1))
            .map(|l| l.trim_end_matches(']').to_owned()),
    );
    Ok(needs)
}

pub fn run(root: &Path) -> anyhow::Result<()> {
    let bin = static_binary(root, "zkconn", "zkconn")?;
    let version = output(Command::new(&bin).arg("--version"))
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_owned))
        .ok_or_else(|| anyhow!("{} --version printed nothing", bin.display()))?;
    let dist = root.join("target/dist");
    let name = format!("zkconn-{version}-{MUSL}");
    let stage = dist.join(&name);
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("cannot clear {}", stage.display()))?;
    }
    for dir in ["completions", "man", "deploy/prometheus", "deploy/grafana"] {
        fs::create_dir_all(stage.join(dir))?;
    }
    check(
        Command::new("objcopy")
            .arg("--strip-all")
            .arg(&bin)
            .arg(stage.join("zkconn")),
        "objcopy --strip-all zkconn",
    )?;
    for file in [
        "README.md",
        "LICENSE",
        "deploy/zkconn.service",
        "deploy/prometheus/zkconn.rules.yml",
        "deploy/grafana/zkconn-fleet.json",
    ] {
        fs::copy(root.join(file), stage.join(file))
            .with_context(|| format!("cannot copy {file}"))?;
    }
    for (shell, file) in [
        ("bash", "zkconn.bash"),
        ("zsh", "_zkconn"),
        ("fish", "zkconn.fish"),
    ] {
        let script = output(Command::new(&bin).args(["completions", shell]))
            .ok_or_else(|| anyhow!("zkconn completions {shell} failed"))?;
        fs::write(stage.join("completions").join(file), script)?;
    }
    let man = output(Command::new(&bin).arg("man")).ok_or_else(|| anyhow!("zkconn man failed"))?;
    fs::write(stage.join("man/zkconn.1"), man)?;

    let tarball = format!("{name}.tar.gz");
    check(
        Command::new("tar").current_dir(&dist).args([
            "--owner=0",
            "--group=0",
            "-czf",
            &tarball,
            &name,
        ]),
        "tar",
    )?;
    let sums = output(Command::new("sha256sum").current_dir(&dist).arg(&tarball))
        .ok_or_else(|| anyhow!("sha256sum failed"))?;
    fs::write(dist.join("SHA256SUMS"), sums)?;
    let size = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    println!(
        "{}: zkconn {version}, static ({MUSL}), {:.1} MB stripped; tarball {:.1} MB",
        dist.join(&tarball).display(),
        size(&stage.join("zkconn")) as f64 / 1e6,
        size(&dist.join(&tarball)) as f64 / 1e6
    );
    Ok(())
}
