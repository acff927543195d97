//! What `deploy/` ships: the alerting rules pass promtool's check and their unit tests, the
//! systemd unit passes systemd's own verification, and the dashboard and rules only use
//! metrics that zkconn exports (as documented in docs/metrics.md, which a unit test of
//! zkconn keeps equal to the exposition).

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

fn repo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?} (cargo xtask setup installs it)"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("{cmd:?} failed: {text}");
    }
    Ok(text)
}

#[test]
fn alerting_rules_pass_promtool_check_and_unit_tests() -> Result<()> {
    let dir = repo().join("deploy/prometheus");
    let out = run(Command::new("promtool").current_dir(&dir).args([
        "check",
        "rules",
        "zkconn.rules.yml",
    ]))?;
    assert!(out.contains("SUCCESS: 4 rules found"), "{out}");
    let out = run(Command::new("promtool").current_dir(&dir).args([
        "test",
        "rules",
        "zkconn.rules.test.yml",
    ]))?;
    assert!(out.contains("SUCCESS"), "{out}");
    Ok(())
}

#[test]
fn the_systemd_unit_verifies() -> Result<()> {
    // systemd checks that ExecStart exists: point it at the binary under test.
    let unit = std::fs::read_to_string(repo().join("deploy/zkconn.service"))?;
    let bin = integration_tests::zkconn_bin();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("zkconn.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/zkconn", &bin.display().to_string()),
    )?;
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .context("cannot run systemd-analyze")?;
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    // Only complaints about this unit count (the host's own units may have some).
    let ours: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("zkconn.service"))
        .collect();
    assert!(ours.is_empty(), "{}", ours.join("\n"));
    for needed in [
        "CAP_BPF",
        "CAP_PERFMON",
        "CAP_SYS_PTRACE",
        "CAP_DAC_READ_SEARCH",
        "CAP_NET_ADMIN",
    ] {
        assert!(unit.contains(needed), "{needed}");
    }
    assert!(unit.contains("--listen 127.0.0.1:9661"));
    Ok(())
}

/// `zkconn_...` names in `text`, with PromQL's `_total` etc. as written.
fn metric_names(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .match_indices("zkconn_")
        .map(|(i, _)| {
            text[i..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect::<String>()
        })
        .filter(|n| n.len() > "zkconn_".len() && !n.ends_with('_'))
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn the_dashboard_and_rules_use_only_exported_metrics() -> Result<()> {
    let doc = std::fs::read_to_string(repo().join("docs/metrics.md"))?;
    let dashboard = std::fs::read_to_string(repo().join("deploy/grafana/zkconn-fleet.json"))?;
    let parsed: serde_json::Value = serde_json::from_str(&dashboard)?;
    let panels = parsed["panels"].as_array().map_or(0, Vec::len);
    assert_eq!(panels, 11);
    let rules = std::fs::read_to_string(repo().join("deploy/prometheus/zkconn.rules.yml"))?;
    let used: Vec<String> = metric_names(&dashboard)
        .into_iter()
        .chain(metric_names(&rules))
        .collect();
    assert!(used.len() >= 8, "{used:?}");
    for name in used {
        assert!(
            doc.contains(&format!("`{name}`")),
            "{name} is not an exported metric"
        );
    }
    Ok(())
}
