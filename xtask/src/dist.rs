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

/// A machine the static binary is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// Rust's target triple (musl: statically linked).
    pub triple: &'static str,
    /// Debian's name of the architecture.
    pub deb: &'static str,
    /// RPM's name of it.
    pub rpm: &'static str,
    /// binutils' objcopy for its ELF files (Debian's `binutils-aarch64-linux-gnu` for arm64).
    pub objcopy: &'static str,
    /// The C compiler and archiver for the target's C and assembly (ring's, for TLS).
    pub cc: &'static str,
    pub ar: &'static str,
}

pub const X86_64: Target = Target {
    triple: "x86_64-unknown-linux-musl",
    deb: "amd64",
    rpm: "x86_64",
    objcopy: "objcopy",
    cc: "gcc",
    ar: "ar",
};

/// Cross-built here, linked by the Rust toolchain's own lld; Debian's cross gcc compiles
/// ring's C and assembly (TLS), with glibc's arm64 headers for its `<stdint.h>` (ring calls
/// no libc). The eBPF object differs only where the kernel's calling convention shows
/// (`pt_regs` in kprobes), which aya-build takes from the target.
pub const AARCH64: Target = Target {
    triple: "aarch64-unknown-linux-musl",
    deb: "arm64",
    rpm: "aarch64",
    objcopy: "aarch64-linux-gnu-objcopy",
    cc: "aarch64-linux-gnu-gcc",
    ar: "aarch64-linux-gnu-ar",
};

pub const TARGETS: [Target; 2] = [X86_64, AARCH64];

/// The target of the static binary for this machine.
pub const MUSL: &str = X86_64.triple;

/// Adds `target` to the toolchain (rustup) when missing.
pub fn setup_target(target: Target) -> anyhow::Result<()> {
    let triple = target.triple;
    let installed =
        output(Command::new("rustup").args(["target", "list", "--installed"])).unwrap_or_default();
    if installed.lines().any(|l| l.trim() == triple) {
        return Ok(());
    }
    eprintln!("xtask: adding the Rust target {triple}");
    check(
        Command::new("rustup").args(["target", "add", triple]),
        &format!("rustup target add {triple}"),
    )
}

/// Builds `package`'s `bin` statically for `target` and returns its path; refuses a binary
/// that names a dynamic loader or a shared library.
pub fn static_binary(
    root: &Path,
    package: &str,
    bin: &str,
    target: Target,
) -> anyhow::Result<PathBuf> {
    setup_target(target)?;
    let triple = target.triple;
    let mut cargo = Command::new("cargo");
    // ring (TLS for --web-config-file) compiles C and assembly for the target: Debian's gcc
    // for x86-64 (its objects link with musl; ring needs no libc headers beyond the
    // compiler's), the cross gcc for arm64.
    let env_triple = triple.replace('-', "_");
    cargo.env(format!("CC_{env_triple}"), target.cc);
    cargo.env(format!("AR_{env_triple}"), target.ar);
    if target != X86_64 {
        let prefix = format!("CARGO_TARGET_{}", triple.to_uppercase().replace('-', "_"));
        cargo.env(format!("{prefix}_LINKER"), "rust-lld");
        // lld adds no build id unless asked (the x86-64 build gets one from its C driver):
        // crash dumps need it to find the matching symbols.
        cargo.env(format!("{prefix}_RUSTFLAGS"), "-C link-arg=--build-id=sha1");
    }
    check(
        cargo.current_dir(root).args([
            "build",
            "--release",
            "--target",
            triple,
            "--package",
            package,
            "--bin",
            bin,
        ]),
        &format!("building {bin} for {triple}"),
    )?;
    let path = root.join("target").join(triple).join("release").join(bin);
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
    let dist = root.join("target/dist");
    // Only this build's artifacts: an older version's package left beside them would be
    // shipped and checked by mistake.
    if dist.exists() {
        fs::remove_dir_all(&dist).with_context(|| format!("cannot clear {}", dist.display()))?;
    }
    fs::create_dir_all(&dist)?;
    let mut made = Vec::new();
    let mut version = None;
    let mut first_stage: Option<PathBuf> = None;
    for target in TARGETS {
        let bin = static_binary(root, "zkconn", "zkconn", target)?;
        // Only this machine's binary runs here; the others share its version.
        let version = match &version {
            Some(v) => String::clone(v),
            None => {
                let v = output(Command::new(&bin).arg("--version"))
                    .and_then(|v| v.split_whitespace().nth(1).map(str::to_owned))
                    .ok_or_else(|| anyhow!("{} --version printed nothing", bin.display()))?;
                version = Some(v.clone());
                v
            }
        };
        let stage = stage(root, &dist, &bin, &version, target, first_stage.as_deref())?;
        let deb = deb(&dist, &stage, &version, target)?;
        let rpm = rpm(&dist, &stage, &version, target)?;
        let name = stage
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| anyhow!("{} has no name", stage.display()))?
            .to_owned();
        let tarball = dist.join(format!("{name}.tar.gz"));
        check(
            Command::new("tar").current_dir(&dist).args([
                "--owner=0",
                "--group=0",
                "-czf",
                &format!("{name}.tar.gz"),
                &name,
            ]),
            "tar",
        )?;
        let size = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        println!(
            "{}: zkconn {version}, static ({}), {:.1} MB stripped; tarball {:.1} MB",
            tarball.display(),
            target.triple,
            size(&stage.join("zkconn")) as f64 / 1e6,
            size(&tarball) as f64 / 1e6
        );
        for package in [&deb, &rpm] {
            println!(
                "{}: {:.1} MB",
                package.display(),
                size(package) as f64 / 1e6
            );
        }
        made.extend([tarball, deb, rpm]);
        if first_stage.is_none() {
            first_stage = Some(stage);
        }
    }
    let names = made
        .iter()
        .map(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("{} has no file name", p.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let sums = output(Command::new("sha256sum").current_dir(&dist).args(&names))
        .ok_or_else(|| anyhow!("sha256sum failed"))?;
    fs::write(dist.join("SHA256SUMS"), sums)?;
    Ok(())
}

/// `target/dist/zkconn-<version>-<triple>/`: the stripped binary and everything shipped
/// beside it. Completions and man pages come from running this machine's binary; another
/// target's stage copies them from `native` (the same text).
fn stage(
    root: &Path,
    dist: &Path,
    bin: &Path,
    version: &str,
    target: Target,
    native: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    let stage = dist.join(format!("zkconn-{version}-{}", target.triple));
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("cannot clear {}", stage.display()))?;
    }
    for dir in ["completions", "man", "deploy/prometheus", "deploy/grafana"] {
        fs::create_dir_all(stage.join(dir))?;
    }
    check(
        Command::new(target.objcopy)
            .arg("--strip-all")
            .arg(bin)
            .arg(stage.join("zkconn")),
        &format!("{} --strip-all zkconn", target.objcopy),
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
    match native {
        Some(native) => {
            for dir in ["completions", "man"] {
                for entry in fs::read_dir(native.join(dir))? {
                    let path = entry?.path();
                    if let Some(name) = path.file_name() {
                        fs::copy(&path, stage.join(dir).join(name))?;
                    }
                }
            }
        }
        None => {
            for (shell, file) in [
                ("bash", "zkconn.bash"),
                ("zsh", "_zkconn"),
                ("fish", "zkconn.fish"),
            ] {
                let script = output(Command::new(bin).args(["completions", shell]))
                    .ok_or_else(|| anyhow!("zkconn completions {shell} failed"))?;
                fs::write(stage.join("completions").join(file), script)?;
            }
            check(
                Command::new(bin)
                    .args(["man", "--dir"])
                    .arg(stage.join("man")),
                "zkconn man --dir",
            )?;
        }
    }
    // The README links these.
    fs::create_dir_all(stage.join("docs"))?;
    for entry in fs::read_dir(root.join("docs"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "md")
            && let Some(name) = path.file_name()
        {
            fs::copy(&path, stage.join("docs").join(name))?;
        }
    }
    Ok(stage)
}

/// The site's flags, kept across upgrades (a dpkg conffile).
const DEFAULTS: &str = "\
# Flags for `zkconn daemon` (see `man zkconn`). Point it at the ensemble with --zoo-cfg of the
# client configuration or --zk zk1:2181,zk2:2181,zk3:2181. Upgrades never overwrite this file.
ZKCONN_ARGS=\"--listen 127.0.0.1:9661 --zoo-cfg /etc/zookeeper/conf/zoo.cfg\"
";

/// Where a distribution family puts what the packages install.
struct Layout {
    /// The directory of systemd units shipped by packages.
    units: &'static str,
    /// The file the unit reads the site's flags from (kept across upgrades).
    flags: &'static str,
    /// Where zsh finds completion functions of packages.
    zsh: &'static str,
}

const DEBIAN: Layout = Layout {
    units: "lib/systemd/system",
    flags: "etc/default/zkconn",
    zsh: "usr/share/zsh/vendor-completions",
};

const RPM: Layout = Layout {
    units: "usr/lib/systemd/system",
    flags: "etc/sysconfig/zkconn",
    zsh: "usr/share/zsh/site-functions",
};

/// The file tree a package installs, under `root`, from the staged tarball tree: the
/// binary, the unit (reading the site's flags from `layout.flags`), completions, the man
/// page and the docs.
fn package_tree(root: &Path, stage: &Path, layout: &Layout) -> anyhow::Result<()> {
    if root.exists() {
        fs::remove_dir_all(root).with_context(|| format!("cannot clear {}", root.display()))?;
    }
    let put = |from: &Path, to: &str, mode: u32| -> anyhow::Result<()> {
        let dest = root.join(to);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::copy(from, &dest).with_context(|| format!("cannot copy {}", from.display()))?;
        fs::set_permissions(&dest, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        Ok(())
    };
    put(&stage.join("zkconn"), "usr/bin/zkconn", 0o755)?;
    put(
        &stage.join("completions/zkconn.bash"),
        "usr/share/bash-completion/completions/zkconn",
        0o644,
    )?;
    put(
        &stage.join("completions/_zkconn"),
        &format!("{}/_zkconn", layout.zsh),
        0o644,
    )?;
    put(
        &stage.join("completions/zkconn.fish"),
        "usr/share/fish/vendor_completions.d/zkconn.fish",
        0o644,
    )?;
    // The rules and the dashboard are data, not documentation: `--excludedocs` keeps them.
    for (file, to) in [
        ("README.md", "usr/share/doc/zkconn/README.md"),
        ("LICENSE", "usr/share/doc/zkconn/copyright"),
        (
            "deploy/prometheus/zkconn.rules.yml",
            "usr/share/zkconn/prometheus/zkconn.rules.yml",
        ),
        (
            "deploy/grafana/zkconn-fleet.json",
            "usr/share/zkconn/grafana/zkconn-fleet.json",
        ),
    ] {
        put(&stage.join(file), to, 0o644)?;
    }
    for entry in fs::read_dir(stage.join("docs"))? {
        let path = entry?.path();
        if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
            put(&path, &format!("usr/share/doc/zkconn/docs/{name}"), 0o644)?;
        }
    }
    let man = root.join("usr/share/man/man1");
    fs::create_dir_all(&man)?;
    for entry in fs::read_dir(stage.join("man"))? {
        let path = entry?.path();
        let Some(name) = path.file_name() else {
            continue;
        };
        fs::copy(&path, man.join(name))?;
        check(
            Command::new("gzip").args(["-9n"]).arg(man.join(name)),
            "gzip a man page",
        )?;
    }
    // The unit as shipped, with the binary where the package puts it and the site's flags
    // from their own file.
    let unit = fs::read_to_string(stage.join("deploy/zkconn.service"))?;
    let exec = unit
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .ok_or_else(|| anyhow!("deploy/zkconn.service has no ExecStart="))?;
    let unit = unit
        .replace(
            exec,
            &format!(
                "EnvironmentFile=-/{}\nExecStart=/usr/bin/zkconn daemon $ZKCONN_ARGS",
                layout.flags
            ),
        )
        .replace(
            "# Edit the targets for the site: --zoo-cfg, or --zk with the ensemble's connect \
             string.",
            &format!(
                "# The site's flags (--zoo-cfg, or --zk with the ensemble's connect string) are \
                 in /{}.",
                layout.flags
            ),
        )
        .replace(
            "Capabilities: docs/fleet.md.",
            "Capabilities: /usr/share/doc/zkconn/docs/fleet.md.",
        );
    let unit_path = root.join(layout.units).join("zkconn.service");
    fs::create_dir_all(unit_path.parent().ok_or_else(|| anyhow!("no parent"))?)?;
    fs::write(&unit_path, unit)?;
    let flags = root.join(layout.flags);
    fs::create_dir_all(flags.parent().ok_or_else(|| anyhow!("no parent"))?)?;
    fs::write(flags, DEFAULTS)?;
    Ok(())
}

const DESCRIPTION: &str = "zkconn counts every TCP connection from this host to ZooKeeper in \
     the kernel (eBPF), per process and per cgroup, names every owner (HBase role, YARN \
     container, pod, unit) and computes headroom against maxClientCnxns. Statically linked; \
     the systemd unit is installed but not enabled.";

/// Maintainer scripts: never start or enable zkconn, stop it on removal, restart a running
/// one on upgrade, and forget the operator's `enable` on purge. Only where systemd runs.
const DEB_POSTINST: &str = "#!/bin/sh
set -e
if [ \"$1\" = configure ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
    # An upgrade restarts a running zkconn on the new binary; a first install starts nothing.
    if [ -n \"$2\" ]; then systemctl try-restart zkconn.service || true; fi
fi
";
const DEB_PRERM: &str = "#!/bin/sh
set -e
if [ \"$1\" = remove ] && [ -d /run/systemd/system ]; then
    systemctl stop zkconn.service || true
fi
";
const DEB_POSTRM: &str = "#!/bin/sh
set -e
if [ \"$1\" = purge ]; then
    rm -f /etc/systemd/system/multi-user.target.wants/zkconn.service
fi
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
";
const RPM_SCRIPTS: &str = "%post
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi

%preun
if [ $1 -eq 0 ]; then
    if [ -d /run/systemd/system ]; then
        systemctl --no-reload disable --now zkconn.service || true
    fi
    rm -f /etc/systemd/system/multi-user.target.wants/zkconn.service
fi

%postun
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
    if [ $1 -ge 1 ]; then systemctl try-restart zkconn.service || true; fi
fi
";

/// `text` in lines of at most `width` characters, broken at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        match lines.last_mut() {
            Some(line) if line.len() + 1 + word.len() <= width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_owned()),
        }
    }
    lines
}

/// `zkconn_<version>_<arch>.deb`, with Debian's own dpkg-deb.
fn deb(dist: &Path, stage: &Path, version: &str, target: Target) -> anyhow::Result<PathBuf> {
    let arch = target.deb;
    let root = dist.join(format!("deb-root-{arch}"));
    package_tree(&root, stage, &DEBIAN)?;
    let control = root.join("DEBIAN");
    fs::create_dir_all(&control)?;
    let installed_kib = dir_size(&root)? / 1024;
    fs::write(
        control.join("control"),
        format!(
            "Package: zkconn\nVersion: {version}\nArchitecture: {arch}\nMaintainer: zkconn \
             <zkconn@localhost>\nInstalled-Size: {installed_kib}\nSection: admin\nPriority: \
             optional\nDescription: who holds this host's ZooKeeper connections\n{}\n",
            wrap(DESCRIPTION, 72)
                .iter()
                .map(|l| format!(" {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        ),
    )?;
    fs::write(control.join("conffiles"), format!("/{}\n", DEBIAN.flags))?;
    let mut files = Vec::new();
    list_files(&root, &root, &mut files)?;
    files.retain(|f| !f.starts_with("DEBIAN/"));
    files.sort();
    let sums = output(Command::new("md5sum").current_dir(&root).args(&files))
        .ok_or_else(|| anyhow!("md5sum failed"))?;
    fs::write(control.join("md5sums"), sums)?;
    for (script, text) in [
        ("postinst", DEB_POSTINST),
        ("prerm", DEB_PRERM),
        ("postrm", DEB_POSTRM),
    ] {
        let path = control.join(script);
        fs::write(&path, text)?;
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    let deb = dist.join(format!("zkconn_{version}_{arch}.deb"));
    check(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&root)
            .arg(&deb),
        "dpkg-deb --build",
    )?;
    Ok(deb)
}

/// The directories that are zkconn's own in the .rpm, so erasing removes them.
const RPM_DIRS: [&str; 5] = [
    "usr/share/doc/zkconn",
    "usr/share/doc/zkconn/docs",
    "usr/share/zkconn",
    "usr/share/zkconn/prometheus",
    "usr/share/zkconn/grafana",
];

/// `zkconn-<version>-1.<arch>.rpm`, with rpmbuild (Debian's `rpm`): the same files in the
/// places RPM distributions use, the flags file `%config(noreplace)`, no scriptlets.
fn rpm(dist: &Path, stage: &Path, version: &str, target: Target) -> anyhow::Result<PathBuf> {
    let arch = target.rpm;
    let tree = dist.join(format!("rpm-root-{arch}"));
    package_tree(&tree, stage, &RPM)?;
    let top = dist.join("rpmbuild");
    if top.exists() {
        fs::remove_dir_all(&top)?;
    }
    fs::create_dir_all(&top)?;
    let mut files = Vec::new();
    list_files(&tree, &tree, &mut files)?;
    files.sort();
    let mut listed: Vec<String> = files
        .iter()
        .map(|f| {
            if f == RPM.flags {
                format!("%config(noreplace) /{f}")
            } else if f == "usr/share/doc/zkconn/copyright" {
                format!("%license /{f}")
            } else if f.starts_with("usr/share/doc/") {
                format!("%doc /{f}")
            } else {
                format!("/{f}")
            }
        })
        .collect();
    for dir in RPM_DIRS {
        listed.push(format!("%dir /{dir}"));
    }
    let spec = top.join("zkconn.spec");
    fs::write(
        &spec,
        format!(
            "Name: zkconn\nVersion: {version}\nRelease: 1\nSummary: who holds this host's \
             ZooKeeper connections\nLicense: Apache-2.0\nAutoReqProv: no\n\
             \n%description\n{}\n\n%install\ncp -a {}/. %{{buildroot}}/\n\n{RPM_SCRIPTS}\n\
             %files\n{}\n",
            wrap(DESCRIPTION, 72).join("\n"),
            tree.display(),
            listed.join("\n")
        ),
    )?;
    check(
        Command::new("rpmbuild")
            .arg("-bb")
            .arg("--define")
            .arg(format!("_topdir {}", top.display()))
            .args(["--define", "_build_id_links none"])
            .args(["--define", "__strip /bin/true"])
            // Packaging only: nothing is compiled, so any architecture builds here (a
            // `BuildArch:` foreign to this machine would be refused).
            .args(["--target", arch])
            .arg(&spec),
        "rpmbuild",
    )?;
    let built = top.join(format!("RPMS/{arch}/zkconn-{version}-1.{arch}.rpm"));
    let rpm = dist.join(format!("zkconn-{version}-1.{arch}.rpm"));
    fs::copy(&built, &rpm).with_context(|| format!("rpmbuild left no {}", built.display()))?;
    Ok(rpm)
}

/// Paths of the files under `dir`, relative to `base`.
fn list_files(base: &Path, dir: &Path, out: &mut Vec<String>) -> anyhow::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            list_files(base, &path, out)?;
        } else {
            let rel = path.strip_prefix(base)?;
            out.push(rel.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

fn dir_size(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// What building the .rpm and checking the packages need from Debian.
pub const DEBIAN_PACKAGES: &[&str] = &[
    "debootstrap",
    "rpm",
    "binutils-aarch64-linux-gnu",
    "gcc-aarch64-linux-gnu",
    "libc6-dev-arm64-cross",
];

/// Mounts made for the check, undone in reverse order however it ends.
struct Mounts(Vec<PathBuf>);

impl Drop for Mounts {
    fn drop(&mut self) {
        for path in self.0.iter().rev() {
            let _ = Command::new("umount").arg("-R").arg(path).status();
        }
    }
}

/// Builds the artifacts and checks both packages.
pub fn check_packages(root: &Path) -> anyhow::Result<()> {
    run(root)?;
    check_deb(root)?;
    check_rpm(root)?;
    check_arm64(root)
}

/// The arm64 packages cannot run here (their guest run is the kernel matrix's): each says
/// it is arm64, lists what the amd64 one lists, and holds a static AArch64 zkconn.
fn check_arm64(root: &Path) -> anyhow::Result<()> {
    let dist = root.join("target/dist");
    let deb = artifact(&dist, "_arm64.deb")?;
    let arch = output(
        Command::new("dpkg-deb")
            .arg("-f")
            .arg(&deb)
            .arg("Architecture"),
    )
    .ok_or_else(|| anyhow!("dpkg-deb -f {} failed", deb.display()))?;
    if arch.trim() != "arm64" {
        bail!("{} says Architecture {arch}", deb.display());
    }
    let contents = |deb: &Path| -> anyhow::Result<Vec<String>> {
        let text = output(Command::new("dpkg-deb").arg("--contents").arg(deb))
            .ok_or_else(|| anyhow!("dpkg-deb --contents {} failed", deb.display()))?;
        Ok(text
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5).map(str::to_owned))
            .collect())
    };
    let amd64 = artifact(&dist, "_amd64.deb")?;
    if contents(&deb)? != contents(&amd64)? {
        bail!("the arm64 .deb does not hold the files the amd64 one holds");
    }
    let scratch = dist.join("arm64-check");
    if scratch.exists() {
        fs::remove_dir_all(&scratch)?;
    }
    check(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&scratch),
        "dpkg-deb -x (arm64)",
    )?;
    let bin = scratch.join("usr/bin/zkconn");
    let header = output(Command::new("readelf").arg("-h").arg(&bin))
        .ok_or_else(|| anyhow!("readelf -h {} failed", bin.display()))?;
    if !header.contains("AArch64") {
        bail!("the arm64 .deb's zkconn is not an AArch64 program");
    }
    let needs = dynamic_needs(&bin)?;
    if !needs.is_empty() {
        bail!(
            "the arm64 zkconn is not static: it needs {}",
            needs.join(", ")
        );
    }
    let rpm = artifact(&dist, ".aarch64.rpm")?;
    let rpm_arch = output(
        Command::new("rpm")
            .args(["-qp", "--qf", "%{ARCH}"])
            .arg(&rpm),
    )
    .ok_or_else(|| anyhow!("rpm -qp {} failed", rpm.display()))?;
    if rpm_arch.trim() != "aarch64" {
        bail!("{} says ARCH {rpm_arch}", rpm.display());
    }
    let files = |rpm: &Path| {
        output(Command::new("rpm").arg("-qpl").arg(rpm))
            .ok_or_else(|| anyhow!("rpm -qpl {} failed", rpm.display()))
    };
    if files(&rpm)? != files(&artifact(&dist, ".x86_64.rpm")?)? {
        bail!("the aarch64 .rpm does not list the files the x86_64 one lists");
    }
    fs::remove_dir_all(&scratch)?;
    eprintln!("xtask: the arm64 .deb and aarch64 .rpm hold a static AArch64 zkconn");
    Ok(())
}

/// The one file in `dist` whose name ends with `suffix`.
fn artifact(dist: &Path, suffix: &str) -> anyhow::Result<PathBuf> {
    fs::read_dir(dist)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(suffix))
        })
        .ok_or_else(|| anyhow!("cargo xtask dist left no *{suffix} in {}", dist.display()))
}

/// The .rpm: its file list is the tree it was built from, it has no scriptlets, and rpm
/// installs it into a scratch root and erases it cleanly.
fn check_rpm(root: &Path) -> anyhow::Result<()> {
    let dist = root.join("target/dist");
    let rpm = artifact(&dist, ".x86_64.rpm")?;
    let listed = output(Command::new("rpm").arg("-qpl").arg(&rpm))
        .ok_or_else(|| anyhow!("rpm -qpl {} failed", rpm.display()))?;
    let mut expected: Vec<String> = RPM_DIRS.iter().map(|d| (*d).to_owned()).collect();
    list_files(
        &dist.join("rpm-root-x86_64"),
        &dist.join("rpm-root-x86_64"),
        &mut expected,
    )?;
    let mut listed: Vec<&str> = listed.lines().map(|l| l.trim_start_matches('/')).collect();
    listed.sort_unstable();
    expected.sort();
    if listed != expected {
        bail!("the .rpm lists {listed:?}, not the files it was built from ({expected:?})");
    }
    let scripts =
        output(Command::new("rpm").args(["-qp", "--scripts"]).arg(&rpm)).unwrap_or_default();
    for (when, does) in [
        ("preuninstall", "disable --now zkconn.service"),
        (
            "preuninstall",
            "rm -f /etc/systemd/system/multi-user.target.wants/zkconn.service",
        ),
        ("postuninstall", "try-restart zkconn.service"),
        ("postinstall", "daemon-reload"),
    ] {
        if !scripts.contains(&format!("{when} scriptlet")) || !scripts.contains(does) {
            bail!("the .rpm's {when} scriptlet lacks `{does}`: {scripts}");
        }
    }
    if scripts.contains("enable ") || scripts.contains("systemctl start") {
        bail!("the .rpm's scriptlets enable or start zkconn: {scripts}");
    }
    let scratch = root.join("target/deb-test/rpm-root");
    if scratch.exists() {
        fs::remove_dir_all(&scratch)?;
    }
    fs::create_dir_all(&scratch)?;
    check(
        Command::new("rpm")
            .arg("--root")
            .arg(&scratch)
            .arg("--initdb"),
        "rpm --initdb",
    )?;
    check(
        Command::new("rpm")
            .arg("--root")
            .arg(&scratch)
            // The scratch root has no shell for the scriptlets; they are checked above.
            .args(["-i", "--nodeps", "--noscripts"])
            .arg(&rpm),
        "rpm -i into a scratch root",
    )?;
    for file in [
        "usr/bin/zkconn",
        "usr/lib/systemd/system/zkconn.service",
        "etc/sysconfig/zkconn",
    ] {
        if !scratch.join(file).exists() {
            bail!("the .rpm did not install /{file}");
        }
    }
    let out = Command::new(scratch.join("usr/bin/zkconn"))
        .arg("--version")
        .output()?;
    if !out.status.success() {
        bail!("the .rpm's zkconn does not run");
    }
    check(
        Command::new("rpm")
            .arg("--root")
            .arg(&scratch)
            .args(["-e", "--noscripts", "zkconn"]),
        "rpm -e in the scratch root",
    )?;
    for left in [
        "usr/bin/zkconn",
        "etc/sysconfig/zkconn",
        "usr/share/doc/zkconn",
        "usr/share/zkconn",
    ] {
        if scratch.join(left).exists() {
            bail!("rpm -e left /{left} behind");
        }
    }
    eprintln!(
        "xtask: the .rpm lists its files and directories, its scriptlets stop, disable and \
         restart but never enable, and it installs and erases cleanly"
    );
    Ok(())
}

/// The .deb in a Debian 11 root made with debootstrap (kept under `target/deb-test/`): it
/// installs, leaves the unit installed but not enabled, runs `zkconn snapshot --json` there
/// (the static binary on an older glibc), and removes and purges cleanly.
fn check_deb(root: &Path) -> anyhow::Result<()> {
    let dist = root.join("target/dist");
    let deb = artifact(&dist, "_amd64.deb")?;
    let chroot = root.join("target/deb-test/bullseye");
    if !chroot.join("usr/bin/dpkg").exists() {
        let partial = root.join("target/deb-test/bullseye.partial");
        if partial.exists() {
            fs::remove_dir_all(&partial)?;
        }
        let archive = crate::apt::archive()?;
        eprintln!(
            "xtask: making a Debian 11 root with debootstrap (once; kept in target/deb-test/)"
        );
        check(
            Command::new("debootstrap")
                .args(["--variant=minbase", "bullseye"])
                .arg(&partial)
                .arg(&archive),
            "debootstrap bullseye",
        )?;
        fs::rename(&partial, &chroot)?;
    }
    let mut mounts = Mounts(Vec::new());
    for (what, kind) in [("proc", "proc"), ("sys", "rbind"), ("dev", "rbind")] {
        let at = chroot.join(what);
        let mut cmd = Command::new("mount");
        if kind == "proc" {
            cmd.args(["-t", "proc", "proc"]);
        } else {
            cmd.arg("--rbind").arg(format!("/{what}"));
        }
        check(
            cmd.arg(&at),
            &format!("mounting {what} in the Debian 11 root"),
        )?;
        mounts.0.push(at.clone());
        if kind == "rbind" {
            let _ = Command::new("mount")
                .args(["--make-rslave"])
                .arg(&at)
                .status();
        }
    }
    fs::copy(&deb, chroot.join("tmp/zkconn.deb"))?;
    let inside = |args: &[&str]| {
        let mut cmd = Command::new("chroot");
        cmd.arg(&chroot).args(args);
        cmd
    };
    check(
        &mut inside(&["dpkg", "-i", "/tmp/zkconn.deb"]),
        "dpkg -i in Debian 11",
    )?;
    for file in [
        "usr/bin/zkconn",
        "lib/systemd/system/zkconn.service",
        "etc/default/zkconn",
        "usr/share/man/man1/zkconn.1.gz",
        "usr/share/man/man1/zkconn-daemon.1.gz",
        "usr/share/bash-completion/completions/zkconn",
        "usr/share/doc/zkconn/docs/fleet.md",
        "usr/share/zkconn/prometheus/zkconn.rules.yml",
    ] {
        if !chroot.join(file).exists() {
            bail!("the .deb did not install /{file}");
        }
    }
    if chroot
        .join("etc/systemd/system/multi-user.target.wants/zkconn.service")
        .exists()
    {
        bail!("the .deb enabled zkconn.service; it must only install it");
    }
    // The unit as packaged passes systemd's own verification (pointed at a binary that
    // exists on this host).
    let unit = fs::read_to_string(chroot.join("lib/systemd/system/zkconn.service"))?;
    let scratch = root.join("target/deb-test/zkconn.service");
    let bin = root.join("target").join(MUSL).join("release/zkconn");
    fs::write(
        &scratch,
        unit.replace("/usr/bin/zkconn", &bin.display().to_string()),
    )?;
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&scratch)
        .output()
        .context("cannot run systemd-analyze")?;
    let complaints: Vec<String> = String::from_utf8_lossy(&verify.stderr)
        .lines()
        .filter(|l| l.contains("zkconn.service"))
        .map(str::to_owned)
        .collect();
    if !complaints.is_empty() {
        bail!(
            "the packaged unit fails systemd-analyze verify: {}",
            complaints.join("; ")
        );
    }
    let out = inside(&["/usr/bin/zkconn", "snapshot", "--json", "--port", "1"])
        .output()
        .context("cannot run zkconn in the Debian 11 root")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !text.contains("\"schema\": \"zkconn.snapshot/v1\"") {
        bail!(
            "zkconn snapshot in Debian 11 failed ({}): {}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    check(
        &mut inside(&["dpkg", "-r", "zkconn"]),
        "dpkg -r in Debian 11",
    )?;
    if chroot.join("usr/bin/zkconn").exists() || !chroot.join("etc/default/zkconn").exists() {
        bail!("dpkg -r must remove the binary and keep the site's /etc/default/zkconn");
    }
    // What `systemctl enable zkconn` leaves (there is no systemd in this root): purging
    // must take it away, or a later install would come up enabled.
    let wants = chroot.join("etc/systemd/system/multi-user.target.wants");
    fs::create_dir_all(&wants)?;
    let link = wants.join("zkconn.service");
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink("/lib/systemd/system/zkconn.service", &link)?;
    check(
        &mut inside(&["dpkg", "-P", "zkconn"]),
        "dpkg -P in Debian 11",
    )?;
    if chroot.join("etc/default/zkconn").exists() {
        bail!("dpkg -P left /etc/default/zkconn");
    }
    if fs::symlink_metadata(&link).is_ok() {
        bail!("dpkg -P left zkconn enabled (multi-user.target.wants/zkconn.service)");
    }
    drop(mounts);
    eprintln!("xtask: the .deb installs, runs and is removed cleanly in Debian 11");
    Ok(())
}
