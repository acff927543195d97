//! Builds the kernel programs (`zkconn-ebpf`, nightly, `bpfel-unknown-none`) with aya-build
//! and leaves the object in `OUT_DIR/zkconn`, where `src/probe` embeds it.
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let manifest_dir =
        std::env::var("CARGO_MANIFEST_DIR").context("cargo did not set CARGO_MANIFEST_DIR")?;
    let root_dir = std::path::Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow!("{manifest_dir} has no parent directory"))?
        .join("zkconn-ebpf");
    let root_dir = root_dir
        .to_str()
        .ok_or_else(|| anyhow!("{} is not UTF-8", root_dir.display()))?;
    aya_build::build_ebpf(
        [Package {
            name: "zkconn-ebpf",
            root_dir,
            ..Default::default()
        }],
        Toolchain::default(),
    )
    .context(
        "building the eBPF programs failed; run `cargo xtask setup` to install nightly, \
         rust-src and bpf-linker",
    )
}
