//! Attribution: turns what is known of a process into where it runs (`kind`) and what it is
//! (`service`), with the YARN container and application, HBase role, systemd unit,
//! Kubernetes pod or Docker container it belongs to.
//!
//! Owns: the precedence between clues (YARN, then HBase daemon, then Kubernetes, Docker,
//! systemd, then a plain process; site rules last, overriding) and the labels people read.
//! Must not: read `/proc` (callers pass [`Clues`], so every rule is tested on fixtures) or
//! see anything it would have to redact: command lines arrive already redacted and the
//! environment only as the one variable YARN sets.

pub mod cgroup;
pub mod hierarchy;
pub mod rules;
pub mod service;
pub mod yarn;

use serde::{Deserialize, Serialize};

pub use self::rules::Rules;
use self::{
    cgroup::{CgroupLine, Runtime, Shape, short_id},
    yarn::ContainerId,
};

/// Where a process runs, in precedence order.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Inside a YARN container (an HBase client in a container is this: HBASE-16117).
    Yarn,
    /// An HBase daemon (RegionServer, Master, Thrift, REST, HQuorumPeer).
    Hbase,
    Kubernetes,
    Docker,
    /// In a systemd `.service` unit.
    Systemd,
    /// None of the above.
    #[default]
    Process,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Yarn => "yarn",
            Kind::Hbase => "hbase",
            Kind::Kubernetes => "kubernetes",
            Kind::Docker => "docker",
            Kind::Systemd => "systemd",
            Kind::Process => "process",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a YARN container id was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum YarnSource {
    /// A cgroup path (any v1 hierarchy or v2).
    Cgroup,
    /// The `CONTAINER_ID` environment variable the NodeManager sets.
    Environ,
    /// The working directory `usercache/<user>/appcache/<application>/<container>`.
    Cwd,
}

/// What classification looks at, captured while the process lived.
#[derive(Clone, Copy, Debug)]
pub struct Clues<'a> {
    pub comm: &'a str,
    pub exe: Option<&'a str>,
    /// Redacted arguments.
    pub argv: &'a [String],
    /// The same, joined with spaces: what rules' `cmdline` patterns see.
    pub cmdline: &'a str,
    pub cgroups: &'a [CgroupLine],
    /// The value of `CONTAINER_ID`, the only environment variable zkconn keeps.
    pub container_env: Option<&'a str>,
    pub cwd: Option<&'a str>,
}

/// Who a process is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Attribution {
    pub kind: Kind,
    /// What it is: "HBase RegionServer", "Spark executor", or the executable's name.
    pub service: String,
    /// What people read: the service, qualified by its container, pod or unit.
    pub label: String,
    #[serde(default, deserialize_with = "crate::intern::de_opt")]
    pub hbase_role: Option<crate::intern::Name>,
    pub yarn_container: Option<String>,
    pub yarn_application: Option<String>,
    pub yarn_source: Option<YarnSource>,
    pub unit: Option<String>,
    pub pod_uid: Option<String>,
    pub container_id: Option<String>,
    pub container_runtime: Option<Runtime>,
    pub main_class: Option<String>,
    /// The site rule that applied (its `name`, else `#<position>`).
    pub rule: Option<String>,
}

/// Cgroup lines in the order their shapes are trusted: v2, systemd's v1 hierarchy, then the
/// other v1 hierarchies.
fn ordered(lines: &[CgroupLine]) -> Vec<&CgroupLine> {
    let rank = |l: &CgroupLine| {
        if l.is_v2() {
            0
        } else if l.controllers == "name=systemd" {
            1
        } else {
            2
        }
    };
    let mut sorted: Vec<&CgroupLine> = lines.iter().collect();
    sorted.sort_by_key(|l| rank(l));
    sorted
}

/// Classifies one process. Pure: same clues and rules, same answer.
pub fn classify(c: &Clues<'_>, rules: &Rules) -> Attribution {
    let jvm = service::parse_java(c.argv);
    let known = jvm.as_ref().and_then(service::known_jvm);

    let lines = ordered(c.cgroups);
    let yarn = lines
        .iter()
        .find_map(|l| ContainerId::find_in(&l.path).map(|id| (id, YarnSource::Cgroup)))
        .or_else(|| {
            c.container_env
                .and_then(|v| ContainerId::parse(v.trim()))
                .map(|id| (id, YarnSource::Environ))
        })
        .or_else(|| {
            c.cwd
                .and_then(yarn::container_from_cwd)
                .map(|id| (id, YarnSource::Cwd))
        });
    let shape = lines
        .iter()
        .filter_map(|l| cgroup::classify_path(&l.path))
        .find(|s| !matches!(s, Shape::Yarn(_)));

    let mut a = Attribution {
        main_class: jvm.as_ref().and_then(|j| j.main_class.clone()),
        hbase_role: known.and_then(|k| k.hbase_role),
        service: known.map_or_else(
            || service::fallback(c.exe, c.argv, c.comm, jvm.as_ref()),
            |k| k.service.to_owned(),
        ),
        ..Attribution::default()
    };
    match shape {
        Some(Shape::Kubernetes {
            pod_uid,
            container_id,
            runtime,
        }) => {
            a.kind = Kind::Kubernetes;
            a.pod_uid = Some(pod_uid);
            a.container_id = container_id;
            a.container_runtime = Some(runtime);
        }
        Some(Shape::Docker { container_id }) => {
            a.kind = Kind::Docker;
            a.container_id = Some(container_id);
            a.container_runtime = Some(Runtime::Docker);
        }
        Some(Shape::Systemd { unit }) => {
            a.kind = Kind::Systemd;
            a.unit = Some(unit);
        }
        Some(Shape::Yarn(_)) | None => a.kind = Kind::Process,
    }
    if a.hbase_role.is_some() {
        a.kind = Kind::Hbase;
    }
    if let Some((id, source)) = yarn {
        a.kind = Kind::Yarn;
        a.yarn_application = Some(id.application().to_owned());
        a.yarn_container = Some(id.to_string());
        a.yarn_source = Some(source);
    }

    let paths: Vec<&str> = c.cgroups.iter().map(|l| l.path.as_str()).collect();
    let subject = rules::Subject {
        main_class: a.main_class.as_deref(),
        cmdline: c.cmdline,
        comm: c.comm,
        exe: c.exe,
        cgroups: &paths,
    };
    if let Some((pos, rule)) = rules.find_indexed(&subject) {
        if let Some(kind) = rule.kind {
            a.kind = kind;
        }
        if let Some(service) = &rule.service {
            a.service.clone_from(service);
        }
        a.rule = Some(rule.name.clone().unwrap_or_else(|| format!("#{}", pos + 1)));
    }
    a.label = label(&a);
    a
}

/// The service, qualified by where it runs.
fn label(a: &Attribution) -> String {
    let s = &a.service;
    match a.kind {
        Kind::Yarn => match &a.yarn_container {
            Some(c) => format!("{s} in {c}"),
            None => s.clone(),
        },
        Kind::Kubernetes => match &a.pod_uid {
            Some(p) => format!("{s} in pod {}", p.get(..8).unwrap_or(p)),
            None => s.clone(),
        },
        Kind::Docker => match &a.container_id {
            Some(c) => format!("{s} in docker {}", short_id(c)),
            None => s.clone(),
        },
        Kind::Systemd => match &a.unit {
            Some(u) if u.trim_end_matches(".service") != s => format!("{s} ({u})"),
            _ => s.clone(),
        },
        Kind::Hbase | Kind::Process => s.clone(),
    }
}

/// Kind and label of a cgroup from its path alone.
pub fn classify_cgroup(path: Option<&str>) -> (Kind, String) {
    let Some(path) = path else {
        return (Kind::Process, "(removed)".into());
    };
    match cgroup::classify_path(path) {
        Some(shape @ Shape::Yarn(_)) => (Kind::Yarn, shape.label()),
        Some(shape @ Shape::Kubernetes { .. }) => (Kind::Kubernetes, shape.label()),
        Some(shape @ Shape::Docker { .. }) => (Kind::Docker, shape.label()),
        Some(shape @ Shape::Systemd { .. }) => (Kind::Systemd, shape.label()),
        None => (Kind::Process, path.to_owned()),
    }
}

#[cfg(test)]
mod tests;
