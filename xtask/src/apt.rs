//! Debian packages for setup, installed without ever removing one the machine had.
//!
//! Owns: deciding what is missing, and installing it with `apt-get --no-remove`. When the
//! machine's own sources can only provide a package by removing another (a machine with
//! qemu-utils from the backports suite, asked for qemu-system-x86 from the release: qemu's
//! packages require each other's exact version), the same suite's backports are tried
//! through a private list beside the build (the machine's apt sources are left as they are).
//! If that still means a removal, setup stops with one sentence naming the packages.
//! Must not: change /etc/apt, or remove anything.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, anyhow, bail};

use crate::{as_root, check, output};

/// Installs those of `packages` that are missing. `private` is a directory for the private
/// backports list, used only if needed.
pub fn install(packages: &[&str], private: &Path) -> anyhow::Result<()> {
    let missing: Vec<String> = packages
        .iter()
        .filter(|p| !installed(p))
        .map(|p| (*p).to_owned())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
    check(
        as_root("apt-get").arg("update").arg("-qq"),
        "apt-get update",
    )?;
    // From the release itself, unless that would remove a package, or cannot work at all
    // (a package already taken from backports pins its siblings to the same version).
    let from_release = simulate(&[], &missing);
    let why_not = match &from_release {
        Ok(removals) if removals.is_empty() => return apt_install(&[], &missing),
        Ok(removals) => format!("it would remove {}", removals.join(" ")),
        Err(e) => format!("{e:#}"),
    };
    let codename = codename()?;
    let backports = format!("{codename}-backports");
    let opts = private_sources(private, &backports)?;
    check(
        as_root("apt-get").args(&opts).arg("update").arg("-qq"),
        "apt-get update (with the backports suite)",
    )?;
    let mut with_suite = opts.clone();
    with_suite.extend(["-t".to_owned(), backports.clone()]);
    let removals_bpo = simulate(&with_suite, &missing)
        .with_context(|| format!("from {codename}: {why_not}; from {backports} neither"))?;
    if removals_bpo.is_empty() {
        eprintln!(
            "xtask: taking {} from {backports}: from {codename} {why_not}",
            missing.join(" ")
        );
        return apt_install(&with_suite, &missing);
    }
    bail!(
        "installing {} from {codename}: {why_not}; from {backports} it would remove {}, which \
         this machine already has; zkconn's setup never removes packages: install {} by hand in \
         a way that keeps them",
        missing.join(" "),
        removals_bpo.join(" "),
        missing.join(" ")
    )
}

fn installed(package: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_some_and(|s| s.contains("install ok installed"))
}

fn apt_install(opts: &[String], packages: &[String]) -> anyhow::Result<()> {
    check(
        as_root("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(opts)
            .args([
                "install",
                "-y",
                "-qq",
                "--no-install-recommends",
                "--no-remove",
            ])
            .args(packages),
        "apt-get install",
    )
}

/// The packages `apt-get install` would remove (a dry run).
fn simulate(opts: &[String], packages: &[String]) -> anyhow::Result<Vec<String>> {
    let out = Command::new("apt-get")
        .args(opts)
        .args(["install", "-s", "--no-install-recommends"])
        .args(packages)
        .output()
        .context("cannot run apt-get")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "apt-get cannot install {}: {}",
            packages.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(removals(&text))
}

/// Package names of the `Remv NAME [...]` lines of `apt-get -s`.
fn removals(simulation: &str) -> Vec<String> {
    simulation
        .lines()
        .filter_map(|l| l.strip_prefix("Remv "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The release's code name (`VERSION_CODENAME` of /etc/os-release).
pub fn codename() -> anyhow::Result<String> {
    let text = std::fs::read_to_string("/etc/os-release").context("cannot read /etc/os-release")?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| anyhow!("/etc/os-release names no VERSION_CODENAME"))
}

/// apt options for the machine's own sources plus `suite` of the Debian archive they use,
/// with lists of their own under `dir`.
fn private_sources(dir: &Path, suite: &str) -> anyhow::Result<Vec<String>> {
    let release = suite.trim_end_matches("-backports");
    let archive = archive_uri(release)?;
    let parts = dir.join("sources.list.d");
    let lists = dir.join("lists");
    std::fs::create_dir_all(lists.join("partial"))
        .and_then(|()| std::fs::create_dir_all(&parts))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    // The machine's own sources, then the suite.
    for entry in std::fs::read_dir("/etc/apt/sources.list.d")
        .into_iter()
        .flatten()
    {
        let path = entry?.path();
        if let Some(name) = path.file_name() {
            std::fs::copy(&path, parts.join(name))
                .with_context(|| format!("cannot copy {}", path.display()))?;
        }
    }
    let list = dir.join("sources.list");
    let own = std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    std::fs::write(&list, format!("{own}\ndeb {archive} {suite} main\n"))
        .with_context(|| format!("cannot write {}", list.display()))?;
    let opt = |k: &str, v: &PathBuf| format!("-oDir::{k}={}", v.display());
    Ok(vec![
        opt("Etc::SourceList", &list),
        opt("Etc::SourceParts", &parts),
        opt("State::Lists", &lists),
    ])
}

/// apt options that see only `suite` (e.g. `bullseye`, an older release whose kernel the
/// matrix boots) of the Debian archive this machine uses, for `arch` (e.g. `arm64`) or the
/// machine's own architecture, with lists and caches of their own under `dir`; their lists
/// are brought up to date. Nothing of the machine's apt state is touched: the packages are
/// only downloaded, never installed.
pub fn only_suite(dir: &Path, suite: &str, arch: Option<&str>) -> anyhow::Result<Vec<String>> {
    let archive = archive_uri(&codename()?)?;
    let parts = dir.join("sources.list.d");
    let lists = dir.join("lists");
    let cache = dir.join("cache");
    for d in [
        lists.join("partial"),
        parts.clone(),
        cache.join("archives/partial"),
    ] {
        std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let list = dir.join("sources.list");
    let only_arch = arch.map_or(String::new(), |a| format!("[arch={a}] "));
    std::fs::write(&list, format!("deb {only_arch}{archive} {suite} main\n"))
        .with_context(|| format!("cannot write {}", list.display()))?;
    let opt = |k: &str, v: &PathBuf| format!("-oDir::{k}={}", v.display());
    let mut opts = vec![
        opt("Etc::SourceList", &list),
        opt("Etc::SourceParts", &parts),
        opt("State::Lists", &lists),
        opt("Cache", &cache),
    ];
    if let Some(a) = arch {
        opts.push(format!("-oAPT::Architecture={a}"));
        opts.push(format!("-oAPT::Architectures={a}"));
    }
    check(
        as_root("apt-get").args(&opts).arg("update").arg("-qq"),
        &format!(
            "apt-get update (the {suite} suite of {archive}, in {})",
            dir.display()
        ),
    )?;
    Ok(opts)
}

/// The URI of the Debian archive this machine's own release comes from.
pub fn archive() -> anyhow::Result<String> {
    archive_uri(&codename()?)
}

/// The URI of the Debian archive the machine takes `release` from, from its own apt sources
/// (one-line `deb URI release ...` or deb822 `URIs:`/`Suites:` stanzas).
fn archive_uri(release: &str) -> anyhow::Result<String> {
    let mut texts = vec![std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default()];
    for entry in std::fs::read_dir("/etc/apt/sources.list.d")
        .into_iter()
        .flatten()
    {
        let Ok(entry) = entry else { continue };
        texts.push(std::fs::read_to_string(entry.path()).unwrap_or_default());
    }
    texts
        .iter()
        .find_map(|t| uri_for(t, release))
        .ok_or_else(|| {
            anyhow!("no apt source of this machine serves the {release} suite of Debian's archive")
        })
}

fn uri_for(text: &str, release: &str) -> Option<String> {
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("deb") {
            let mut rest = words.skip_while(|w| w.starts_with('['));
            if let (Some(uri), Some(suite)) = (rest.next(), rest.next())
                && suite == release
            {
                return Some(uri.to_owned());
            }
        }
    }
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
        };
        if let (Some(uris), Some(suites)) = (field("URIs:"), field("Suites:"))
            && suites.split_whitespace().any(|s| s == release)
        {
            return uris.split_whitespace().next().map(str::to_owned);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removals_are_read_from_a_dry_run() {
        let sim = "Remv qemu-utils [1:10.0.2+ds-2+deb13u1~bpo12+1]\n\
                   Inst qemu-system-x86 (1:7.2+dfsg-7+deb12u18+b3 Debian:12 [amd64])\n\
                   Conf qemu-system-x86 (1:7.2+dfsg-7+deb12u18+b3 Debian:12 [amd64])\n";
        assert_eq!(removals(sim), ["qemu-utils"]);
        assert!(removals("Inst cpio (2.13)\n").is_empty());
    }

    #[test]
    fn the_archive_is_found_in_either_source_format() {
        let deb822 = "Types: deb\nURIs: http://archive.example/debian\n\
                      Suites: bookworm bookworm-updates\n\n\
                      Types: deb\nURIs: http://security.example/debian-security\n\
                      Suites: bookworm-security\n";
        assert_eq!(
            uri_for(deb822, "bookworm").as_deref(),
            Some("http://archive.example/debian")
        );
        let one_line = "deb [arch=amd64] http://mirror.example/debian bookworm main\n";
        assert_eq!(
            uri_for(one_line, "bookworm").as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(uri_for(one_line, "bullseye"), None);
    }
}
