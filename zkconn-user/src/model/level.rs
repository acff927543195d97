//! The roll-up vocabulary: which kind of row an owner is ([`Level`]) and which row exactly
//! ([`RowId`]). History keys its series by it, suspects name their subject with it, `top`
//! groups and selects by it and metrics label by it: one spelling for all of them.

use serde::Serialize;
use zkconn_common::OwnerKey;

use super::{ApplicationRow, CgroupRow, ContainerRow, ProcessRow, ServiceRow};
use crate::attribution::hierarchy::Hierarchy;

/// The kinds of owner rows, from one process up to a service.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    #[default]
    Process,
    Cgroup,
    Container,
    Application,
    Service,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Process => "process",
            Self::Cgroup => "cgroup",
            Self::Container => "container",
            Self::Application => "application",
            Self::Service => "service",
        }
    }
}

/// A cgroup row's key: the kernel's id under cgroup v2, the path in its hierarchy under v1.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CgroupKey {
    V2(u64),
    V1(Hierarchy, String),
}

/// One owner row, the same across snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RowId {
    Process(OwnerKey),
    Cgroup(CgroupKey),
    Container(String),
    Application(String),
    Service(String),
}

impl RowId {
    pub fn level(&self) -> Level {
        match self {
            Self::Process(_) => Level::Process,
            Self::Cgroup(_) => Level::Cgroup,
            Self::Container(_) => Level::Container,
            Self::Application(_) => Level::Application,
            Self::Service(_) => Level::Service,
        }
    }

    /// The roll-ups a process counts in besides its cgroup row: its service, and its YARN
    /// container and application when it has them.
    pub fn roll_ups_of(p: &ProcessRow) -> impl Iterator<Item = RowId> + '_ {
        std::iter::once(Self::Service(p.who.service.clone()))
            .chain(p.who.yarn_container.clone().map(Self::Container))
            .chain(p.who.yarn_application.clone().map(Self::Application))
    }
}

impl ProcessRow {
    pub fn id(&self) -> RowId {
        RowId::Process(self.key)
    }

    /// Its user's name, else its uid as a number (a uid no name service knows).
    pub fn user_or_uid(&self) -> Option<String> {
        self.user
            .clone()
            .or_else(|| self.uid.map(|u| u.to_string()))
    }
}

impl CgroupRow {
    pub fn key(&self) -> CgroupKey {
        match self.hierarchy {
            Hierarchy::V2 => CgroupKey::V2(self.id),
            h => CgroupKey::V1(h, self.path.clone().unwrap_or_default()),
        }
    }

    pub fn row_id(&self) -> RowId {
        RowId::Cgroup(self.key())
    }
}

impl ContainerRow {
    pub fn id(&self) -> RowId {
        RowId::Container(self.container.clone())
    }
}

impl ApplicationRow {
    pub fn id(&self) -> RowId {
        RowId::Application(self.application.clone())
    }
}

impl ServiceRow {
    pub fn id(&self) -> RowId {
        RowId::Service(self.service.clone())
    }
}

impl super::Suspect {
    /// Whether this suspect is row `id` itself (a process suspect is named by its pid).
    pub fn is_of(&self, id: &RowId) -> bool {
        let is = |level: Level, name: &Option<String>, row: &String| {
            self.subject == level && name.as_ref() == Some(row)
        };
        match id {
            RowId::Process(k) => self.subject == Level::Process && self.pid == Some(k.tgid),
            // Cgroups are not ranked themselves: their processes are.
            RowId::Cgroup(_) => false,
            RowId::Container(c) => is(Level::Container, &self.container, c),
            RowId::Application(a) => is(Level::Application, &self.application, a),
            RowId::Service(v) => is(Level::Service, &self.service, v),
        }
    }
}
