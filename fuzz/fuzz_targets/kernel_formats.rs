//! What zkconn reads from the kernel at load time: tracepoint formats (tracefs) and BTF.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zkconn::probe::{btf::Btf, tracefs};

fuzz_target!(|data: &[u8]| {
    if let Ok(btf) = Btf::parse(data) {
        let _ = btf.member_offset("tcp_sock", "bytes_received");
    }
    let _ = tracefs::parse_format(&String::from_utf8_lossy(data));
});
