//! Helpers for zkconn's root integration tests: a real ZooKeeper server per test on its own
//! 127.x address and free port, real clients (the ZooKeeper Java library, plain TCP from
//! Python) as separate processes, real cgroup v2 groups, and the real `zkconn` binary.
//! Every process a helper starts is killed by pid and reaped when the helper is dropped.
//!
//! One module per concern: [`zookeeper`], [`clients`], [`cgroups`], [`netns`], [`sockets`]
//! (the independent truth), [`zkconn`] (the binary's modes), [`document`], [`http`]; [`reap`]
//! is the one guard every started process is held by.

pub mod cgroups;
pub mod clients;
pub mod document;
pub mod edge;
pub mod http;
pub mod limits;
pub mod netns;
pub mod reap;
pub mod sockets;
pub mod zkconn;
pub mod zookeeper;

pub use self::{
    cgroups::*, clients::*, document::*, http::*, netns::*, reap::*, sockets::*, zkconn::*,
    zookeeper::*,
};
