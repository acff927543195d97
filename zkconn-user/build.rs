//! Builds the kernel programs (`zkconn-ebpf`, nightly, `bpfel-unknown-none`) with aya-build
//! and leaves the object in `OUT_DIR/zkconn`, where `src/probe` embeds it.
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let manifest_dir =
        std::env::var("CARGO_MANIFEST_DIR").context("cargo did not set CARGO_MANIFEST_DIR")?;
    commit(&manifest_dir);
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

/// `ZKCONN_COMMIT` for `zkconn --version`: `git describe` of the tree being built, or
/// "unknown commit" outside a git checkout (a source tarball).
fn commit(manifest_dir: &str) {
    let describe = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty", "--tags"])
        .current_dir(manifest_dir)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    let text = describe.map_or_else(|| "unknown commit".to_owned(), |d| format!("commit {d}"));
    println!("cargo:rustc-env=ZKCONN_COMMIT={text}");
    // A new commit moves HEAD's branch and rewrites the index; an edit makes the tree
    // dirty, which `git describe --dirty` must see.
    for path in [
        "../.git/HEAD",
        "../.git/index",
        "src",
        "../zkconn-common/src",
    ] {
        println!("cargo:rerun-if-changed={path}");
    }
}
