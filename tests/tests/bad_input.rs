//! Runs every row of docs/bad-input.md: each mistake is refused with its sentence and exit
//! code, never a panic, and leaves nothing in the kernel. Root only (some rows drop to uid
//! 65534); run with `cargo xtask test`.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};
use integration_tests::{bpf_ids, wait_gone_from_kernel, zkconn_bin};

struct Row {
    number: String,
    nobody: bool,
    args: Vec<String>,
    exit: i32,
    says: String,
}

fn repo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The table rows: `| # | command | exit | the message says |`.
fn rows() -> Result<Vec<Row>> {
    let doc = std::fs::read_to_string(repo().join("docs/bad-input.md"))?;
    let mut rows = Vec::new();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split(" | ").map(str::trim).collect();
        let [first, command, exit, says] = cells.as_slice() else {
            continue;
        };
        let Some(number) = first.strip_prefix("| ") else {
            continue;
        };
        if !number.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let nobody = command.starts_with("*as nobody* ");
        let command = command.trim_start_matches("*as nobody* ").trim_matches('`');
        let mut args: Vec<String> = command.split_whitespace().map(str::to_owned).collect();
        if args.first().map(String::as_str) != Some("zkconn") {
            bail!("row {number}: the command must start with zkconn: {command}");
        }
        args.remove(0);
        let says = says.trim_end_matches(" |").trim();
        // The quoted text is the cell without its outer backticks.
        let says = says
            .strip_prefix("`` ")
            .and_then(|s| s.strip_suffix(" ``"))
            .or_else(|| says.strip_prefix('`').and_then(|s| s.strip_suffix('`')))
            .unwrap_or(says);
        rows.push(Row {
            number: number.to_owned(),
            nobody,
            args,
            exit: exit
                .parse()
                .with_context(|| format!("row {number}: exit {exit}"))?,
            says: says.to_owned(),
        });
    }
    Ok(rows)
}

#[test]
fn every_documented_mistake_is_refused_with_its_sentence() -> Result<()> {
    let rows = rows()?;
    assert!(rows.len() >= 15, "only {} rows", rows.len());
    let before = bpf_ids()?;
    let mut failures = Vec::new();
    for row in &rows {
        let mut cmd = if row.nobody {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(zkconn_bin());
            c
        } else {
            Command::new(zkconn_bin())
        };
        let out = cmd
            .args(&row.args)
            .current_dir(repo())
            .stdin(std::process::Stdio::null())
            .output()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let code = out.status.code();
        if code != Some(row.exit) || !text.contains(&row.says) || text.contains("panicked") {
            failures.push(format!(
                "row {} ({:?}): exit {code:?}, wanted {} and {:?}; got: {text}",
                row.number, row.args, row.exit, row.says
            ));
        }
        // zkconn's own refusals are one line (clap's usage errors add a hint after a blank
        // line).
        if !text.starts_with("error: ") && text.trim().lines().count() != 1 {
            failures.push(format!("row {}: more than one line: {text}", row.number));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let left = wait_gone_from_kernel(&before)?;
    assert!(left.is_empty(), "left in the kernel: {left:?}");
    Ok(())
}

/// Limits that need more input than a table row holds: more server addresses than the
/// kernel's endpoint table, a zoo.cfg over 1 MiB, more than 1,000 rules, a FIFO. Each is
/// refused with its sentence before anything is loaded, and nothing hangs.
#[test]
fn oversized_inputs_are_refused_before_anything_is_loaded() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let servers: Vec<String> = (0..5000)
        .map(|i| format!("10.{}.{}.1:2181", i / 250, i % 250))
        .collect();
    let big_cfg = dir.path().join("zoo.cfg");
    std::fs::write(&big_cfg, "#".repeat(2 << 20))?;
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"r\"\ncmdline = \"x\"\nservice = \"S\"\n".repeat(1001),
    )?;
    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().context("path")?)?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        bail!("mkfifo: {}", std::io::Error::last_os_error());
    }
    let before = bpf_ids()?;
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--zk".into(), servers.join(",")],
            "name 5000 server addresses, and the kernel's table holds 4096",
        ),
        (
            vec!["--zoo-cfg".into(), big_cfg.display().to_string()],
            "larger than 1024 KiB",
        ),
        (
            vec![
                "--port".into(),
                "2181".into(),
                "--rules".into(),
                rules.display().to_string(),
            ],
            "1001 rules, and zkconn takes at most 1000",
        ),
        (
            vec![
                "--port".into(),
                "2181".into(),
                "--rules".into(),
                fifo.display().to_string(),
            ],
            "not a regular file",
        ),
    ];
    for (args, says) in cases {
        // A hang (reading a FIFO) would end as timeout's 124, not zkconn's 1.
        let out = Command::new("timeout")
            .arg("30")
            .arg(zkconn_bin())
            .arg("snapshot")
            .args(&args)
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
    let left = wait_gone_from_kernel(&before)?;
    assert!(left.is_empty(), "left in the kernel: {left:?}");
    Ok(())
}
