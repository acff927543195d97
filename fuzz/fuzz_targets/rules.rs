//! Site rules files (`--rules`, TOML with regular expressions).
#![no_main]

use libfuzzer_sys::fuzz_target;
use zkconn::attribution::rules::Rules;

fuzz_target!(|text: &str| {
    if let Err(e) = Rules::parse(text) {
        // Every refusal is one line: it is printed as one sentence.
        assert!(!e.to_string().contains('\n'), "{e}");
    }
});
