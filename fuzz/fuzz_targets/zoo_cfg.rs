//! zoo.cfg files (`--zoo-cfg`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use zkconn::targets::ZooCfg;

fuzz_target!(|text: &str| {
    if let Ok(cfg) = ZooCfg::parse("fuzz.cfg", text) {
        let _ = cfg.targets();
    }
});
