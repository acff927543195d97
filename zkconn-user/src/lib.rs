//! zkconn: who holds this host's ZooKeeper connections. The library behind the `zkconn`
//! binary; its parsers are also what the fuzz targets (`fuzz/`) exercise.
//!
//! Data flows one way: `probe` (kernel programs and maps; `poll` where none can load) →
//! `source` (all I/O: events, seeding, `/proc`, cgroups, NAT; a plain `Reading`) →
//! `engine` (pure: attribution, `model` rows, `history` judgement, assembly into a
//! `Snapshot`) → sinks run by the one `driver` loop: `output` (tables and JSON), `check`
//! (Nagios), `tui` (`top`), `daemon` with `metrics`.

pub mod alarm;
pub mod archive;
pub mod ask;
pub mod attribution;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config_file;
pub mod daemon;
pub mod driver;
pub mod engine;
pub mod gate;
pub mod history;
pub mod intern;
pub mod judge_clients;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod model;
pub mod nat;
pub mod ndjson;
pub mod output;
pub mod poll;
pub mod probe;
pub mod procfs;
pub mod properties;
pub mod reconcile;
pub mod report;
pub mod seed;
pub mod series;
pub mod setup;
pub mod sockdiag;
pub mod source;
pub mod systemd;
pub mod targets;
pub mod threshold;
pub mod trend;
pub mod tui;
pub mod users;
pub mod verdict;
pub mod web;

pub use setup::Setup;
