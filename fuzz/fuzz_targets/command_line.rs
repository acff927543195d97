//! /proc/PID/cmdline (NUL-separated) through redaction and classification, with the
//! input also used as working directory, CONTAINER_ID and cgroup.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zkconn::{
    attribution::{self, Clues, Rules, cgroup::parse_proc_cgroup},
    procfs,
};

fuzz_target!(|raw: &[u8]| {
    let argv = procfs::redact_argv(raw);
    // Redaction keeps the number and order of arguments.
    let given = raw.split(|&b| b == 0).filter(|a| !a.is_empty()).count();
    assert_eq!(argv.len(), given);
    let cmdline = argv.join(" ");
    let text = String::from_utf8_lossy(raw);
    let cgroups = parse_proc_cgroup(&text);
    let who = attribution::classify(
        &Clues {
            comm: argv.first().map_or("", String::as_str),
            exe: argv.first().map(String::as_str),
            argv: &argv,
            cmdline: &cmdline,
            cgroups: &cgroups,
            container_env: Some(&text),
            cwd: Some(&text),
        },
        &Rules::default(),
    );
    // Whatever it is, it is named.
    assert!(!who.label.is_empty() || argv.is_empty(), "{who:?}");
});
