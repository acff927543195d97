//! Every hook zkconn has, forced with `--hook`, on this kernel: it attaches and the snapshot
//! names it, or it is refused with one sentence naming the hook and the kernel's reason, exit
//! 1, no panic, and nothing left in the kernel (a hook that failed part-way is unloaded).
//! `auto` picks the first that attaches, in the documented order. Root only; run with
//! `cargo xtask test`. Counting under each hook is checked by the other tests here (for the
//! hooks this kernel has) and by `cargo xtask vm-test` on other kernels.

use std::process::{Command, Stdio};

use anyhow::{Context as _, Result};
use integration_tests::{bpf_ids, wait_gone_from_kernel, zkconn_bin};
use serde_json::Value;
use zkconn_common::hooks::{Hook, UNAVAILABLE};

fn snapshot(hook: Option<&str>) -> Result<std::process::Output> {
    let mut cmd = Command::new(zkconn_bin());
    cmd.args(["snapshot", "--json", "--port", "1"]);
    if let Some(h) = hook {
        cmd.args(["--hook", h]);
    }
    cmd.stdin(Stdio::null())
        .output()
        .context("cannot run zkconn")
}

#[test]
fn every_hook_attaches_and_says_so_or_is_refused_by_name() -> Result<()> {
    let before = bpf_ids()?;
    let mut attached = Vec::new();
    // `auto`'s order, as docs/kernels.md and `zkconn --help` give it.
    for hook in Hook::AUTO_ORDER.map(Hook::name) {
        let out = snapshot(Some(hook))?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "--hook {hook}: {err}");
        if out.status.success() {
            let snap: Value = serde_json::from_slice(&out.stdout)?;
            assert_eq!(snap["probe"]["hook"], hook, "--hook {hook}");
            attached.push(hook);
            continue;
        }
        assert_eq!(out.status.code(), Some(1), "--hook {hook}: {err}");
        let sentence = err
            .lines()
            .find(|l| l.starts_with("zkconn: "))
            .with_context(|| format!("--hook {hook} printed no zkconn: sentence: {err}"))?;
        let prefix = format!("zkconn: --hook {hook} (");
        assert!(
            sentence.starts_with(&prefix) && sentence.contains(&format!("){UNAVAILABLE}")),
            "--hook {hook}: {sentence}"
        );
        // The kernel's reason follows, not an empty one.
        let reason = sentence.split_once(UNAVAILABLE).map_or("", |(_, r)| r);
        assert!(reason.len() > 10, "--hook {hook}: no reason in {sentence}");
    }
    assert!(!attached.is_empty(), "no hook attaches on this kernel");

    let out = snapshot(None)?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snap: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(snap["probe"]["hook"], attached[0], "auto");

    let left = wait_gone_from_kernel(&before)?;
    assert!(left.is_empty(), "left in the kernel: {left:?}");
    Ok(())
}
