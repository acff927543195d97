//! Rebuild the kernel programs when bpf-linker changes (a new LLVM can change codegen).
use std::env;

fn main() {
    let linker = env::var_os("PATH").and_then(|paths| {
        env::split_paths(&paths)
            .map(|dir| dir.join("bpf-linker"))
            .find(|candidate| candidate.is_file())
    });
    if let Some(linker) = linker {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
