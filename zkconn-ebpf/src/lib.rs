//! The kernel programs live in `main.rs` (a `bin` target built for `bpfel-unknown-none` by
//! aya-build). This empty library exists because `zkconn` has a build-dependency on this
//! crate, which cargo only accepts for a crate with a library target.
#![no_std]
