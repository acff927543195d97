//! Connect strings, port lists, durations and percentages: whatever an operator types.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zkconn::{alarm, cli, targets};

fuzz_target!(|text: &str| {
    if let Ok(hosts) = targets::parse_connect_string(text) {
        assert!(!hosts.is_empty(), "an accepted connect string names a host");
    }
    if let Ok(ports) = targets::parse_port_list(text) {
        assert!(
            ports.iter().all(|&p| p != 0),
            "port 0 accepted from {text:?}"
        );
    }
    if let Ok(d) = cli::parse_duration(text) {
        assert!(d.as_secs() <= 31_536_000);
    }
    if let Ok(p) = alarm::parse_percent(text) {
        assert!((0.0..=100.0).contains(&p));
    }
});
