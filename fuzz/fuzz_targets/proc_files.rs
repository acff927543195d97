//! /proc/net/tcp{,6}, /proc/PID/stat (a hostile comm), /proc/PID/cgroup and cgroup paths.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zkconn::{attribution, procfs};

fuzz_target!(|text: &str| {
    let _ = procfs::parse_proc_net_tcp(text);
    let _ = procfs::parse_stat(text);
    for line in attribution::cgroup::parse_proc_cgroup(text) {
        let _ = attribution::classify_cgroup(Some(&line.path));
    }
    let _ = attribution::classify_cgroup(Some(text));
});
