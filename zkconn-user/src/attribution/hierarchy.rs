//! Which cgroup hierarchy the per-cgroup rows are keyed by: cgroup v2, or a v1 hierarchy on
//! hosts where v2 says nothing (cgroup v1-only hosts such as RHEL 8 and CentOS 7 by default,
//! and hybrid hosts that leave every process in the v2 root while YARN, the kubelet or
//! Docker place them in v1 groups).
//!
//! The kernel's cgroup id (`bpf_get_current_cgroup_id`) is always the v2 one: on such hosts
//! it is the root for every process, and rows keyed by it collapse into one.
//!
//! Owns: the choice per host (once, at start) and per process, from `/proc/PID/cgroup`
//! lines. Must not: read anything (callers pass the lines) or count (that is `model`).

use serde::Serialize;

use super::{Kind, cgroup::CgroupLine};

/// A cgroup hierarchy rows can be keyed by.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
pub enum Hierarchy {
    /// cgroup v2: rows keyed by the kernel's cgroup id.
    #[default]
    #[serde(rename = "v2")]
    V2,
    /// The v1 hierarchy of the `cpu` controller: where YARN's LinuxContainerExecutor (its
    /// `cpu,cpuacct` line), the kubelet and Docker put containers on v1 hosts.
    #[serde(rename = "v1:cpu")]
    V1Cpu,
    /// systemd's named v1 hierarchy, for hosts without a `cpu` hierarchy.
    #[serde(rename = "v1:name=systemd")]
    V1Systemd,
}

impl Hierarchy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V2 => "v2",
            Self::V1Cpu => "v1:cpu",
            Self::V1Systemd => "v1:name=systemd",
        }
    }
}

impl std::fmt::Display for Hierarchy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A process's cgroup in a v1 hierarchy.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct V1Cgroup {
    /// [`Hierarchy::V1Cpu`] or [`Hierarchy::V1Systemd`].
    pub hierarchy: Hierarchy,
    pub path: String,
}

/// Where one process's connections are counted among the cgroup rows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Grouping {
    /// In the row of the kernel's (v2) cgroup id of each connection.
    #[default]
    V2,
    /// In the row of this v1 cgroup.
    V1(V1Cgroup),
}

impl Grouping {
    pub fn hierarchy(&self) -> Hierarchy {
        match self {
            Self::V2 => Hierarchy::V2,
            Self::V1(c) => c.hierarchy,
        }
    }
}

fn is_cpu(line: &CgroupLine) -> bool {
    !line.is_v2() && line.controllers.split(',').any(|c| c == "cpu")
}

fn is_systemd(line: &CgroupLine) -> bool {
    !line.is_v2() && line.controllers == "name=systemd"
}

fn is_root(path: &str) -> bool {
    path.is_empty() || path == "/"
}

/// The process's v1 cgroup rows can use: the `cpu` controller's, else systemd's.
pub fn v1_cgroup(lines: &[CgroupLine]) -> Option<V1Cgroup> {
    let (line, hierarchy) = lines
        .iter()
        .find(|l| is_cpu(l))
        .map(|l| (l, Hierarchy::V1Cpu))
        .or_else(|| {
            lines
                .iter()
                .find(|l| is_systemd(l))
                .map(|l| (l, Hierarchy::V1Systemd))
        })?;
    Some(V1Cgroup {
        hierarchy,
        path: line.path.clone(),
    })
}

/// The hierarchy of this host, from every process's `/proc/PID/cgroup`: v2 when cgroup2 is
/// mounted and some process sits below its root; else the `cpu` controller's v1 hierarchy
/// when a process shows one, else systemd's; else v2 (nothing better to key by).
pub fn detect<'a>(
    cgroup2_mounted: bool,
    processes: impl IntoIterator<Item = &'a [CgroupLine]>,
) -> Hierarchy {
    let (mut spread, mut cpu, mut systemd) = (false, false, false);
    for lines in processes {
        spread |= lines.iter().any(|l| l.is_v2() && !is_root(&l.path));
        cpu |= lines.iter().any(is_cpu);
        systemd |= lines.iter().any(is_systemd);
    }
    if cgroup2_mounted && spread {
        Hierarchy::V2
    } else if cpu {
        Hierarchy::V1Cpu
    } else if systemd {
        Hierarchy::V1Systemd
    } else {
        Hierarchy::V2
    }
}

/// A container runtime's kind, when `path` names a container.
fn container_kind(path: &str) -> Option<Kind> {
    let (kind, _) = super::classify_cgroup(Some(path));
    matches!(kind, Kind::Yarn | Kind::Kubernetes | Kind::Docker).then_some(kind)
}

/// Where one process counts, on a host whose hierarchy is `host`:
///
/// - by its v1 cgroup when its v2 cgroup is the root (or absent) and its v1 one is not;
/// - by its v1 cgroup when that names a container (YARN, Kubernetes, Docker) its v2 cgroup
///   does not: on a hybrid host, YARN's containers sit in the NodeManager's systemd unit in
///   v2 and in their own groups only under the v1 `cpu` hierarchy;
/// - else by v2 when its v2 cgroup is below the root;
/// - else (both at the root) by the host's hierarchy.
pub fn group_of(host: Hierarchy, lines: &[CgroupLine]) -> Grouping {
    let v2 = lines
        .iter()
        .find(|l| l.is_v2())
        .map(|l| l.path.as_str())
        .filter(|p| !is_root(p));
    let Some(v1) = v1_cgroup(lines) else {
        return Grouping::V2;
    };
    if is_root(&v1.path) {
        return match v2 {
            None if host != Hierarchy::V2 => Grouping::V1(v1),
            _ => Grouping::V2,
        };
    }
    match v2 {
        None => Grouping::V1(v1),
        Some(v2) => match container_kind(&v1.path) {
            Some(kind) if container_kind(v2) != Some(kind) => Grouping::V1(v1),
            _ => Grouping::V2,
        },
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;
    use crate::attribution::cgroup::parse_proc_cgroup;

    const YARN_V1: &str = "/hadoop-yarn/container_e17_1410901177871_0001_01_000005";

    /// RHEL 8 by default: v1 only, no `0::` line (cgroup2 never mounted).
    fn rhel8(cpu: &str) -> String {
        format!(
            "12:pids:/\n11:cpuset:/\n4:cpu,cpuacct:{cpu}\n3:memory:{cpu}\n\
             1:name=systemd:/system.slice/hadoop-yarn-nodemanager.service\n"
        )
    }

    #[rstest]
    #[case::rhel8_yarn_container(
        Hierarchy::V1Cpu,
        &rhel8(YARN_V1),
        Grouping::V1(V1Cgroup { hierarchy: Hierarchy::V1Cpu, path: YARN_V1.into() })
    )]
    #[case::rhel8_at_the_root(
        Hierarchy::V1Cpu,
        &rhel8("/"),
        Grouping::V1(V1Cgroup { hierarchy: Hierarchy::V1Cpu, path: "/".into() })
    )]
    // This machine: hybrid, every process in the v2 root.
    #[case::hybrid_in_the_v2_root(
        Hierarchy::V1Cpu,
        &format!("1:cpu:{YARN_V1}\n0::/\n"),
        Grouping::V1(V1Cgroup { hierarchy: Hierarchy::V1Cpu, path: YARN_V1.into() })
    )]
    // A host spread over v2, and a process in the v2 root but a v1 group.
    #[case::v2_host_process_in_the_v2_root(
        Hierarchy::V2,
        &format!("4:cpu,cpuacct:{YARN_V1}\n0::/\n"),
        Grouping::V1(V1Cgroup { hierarchy: Hierarchy::V1Cpu, path: YARN_V1.into() })
    )]
    // Hybrid with systemd: the container is in the NodeManager's unit in v2.
    #[case::hybrid_yarn_in_the_nodemanager_unit(
        Hierarchy::V2,
        &format!("4:cpu,cpuacct:{YARN_V1}\n0::/system.slice/hadoop-yarn-nodemanager.service\n"),
        Grouping::V1(V1Cgroup { hierarchy: Hierarchy::V1Cpu, path: YARN_V1.into() })
    )]
    // The same container in v2 too (Hadoop with v2 support): v2 wins.
    #[case::yarn_in_both(
        Hierarchy::V2,
        &format!("4:cpu,cpuacct:{YARN_V1}\n0::{YARN_V1}\n"),
        Grouping::V2
    )]
    // A systemd unit mirrored in both: v2.
    #[case::unit_in_both(
        Hierarchy::V2,
        "4:cpu,cpuacct:/system.slice/x.service\n0::/system.slice/x.service\n",
        Grouping::V2
    )]
    // Docker on hybrid: /docker/<id> in v1, its scope in v2: the same container, v2.
    #[case::docker_in_both(
        Hierarchy::V2,
        &format!("4:cpu:/docker/{HEX}\n0::/system.slice/docker-{HEX}.scope\n"),
        Grouping::V2
    )]
    // Unified host: only the v2 line.
    #[case::unified(Hierarchy::V2, "0::/user.slice/user-1000.slice\n", Grouping::V2)]
    #[case::unified_root(Hierarchy::V2, "0::/\n", Grouping::V2)]
    // Both at the root on a v2 host: the v2 root row.
    #[case::both_roots_on_a_v2_host(Hierarchy::V2, "1:cpu:/\n0::/\n", Grouping::V2)]
    // No cpu hierarchy: systemd's.
    #[case::systemd_only(
        Hierarchy::V1Systemd,
        "1:name=systemd:/system.slice/hbase.service\n",
        Grouping::V1(V1Cgroup { hierarchy: Hierarchy::V1Systemd, path: "/system.slice/hbase.service".into() })
    )]
    // Nothing known (a process gone before anyone looked, without kernel names).
    #[case::nothing(Hierarchy::V1Cpu, "", Grouping::V2)]
    fn where_a_process_counts(
        #[case] host: Hierarchy,
        #[case] proc_cgroup: &str,
        #[case] expected: Grouping,
    ) {
        assert_eq!(group_of(host, &parse_proc_cgroup(proc_cgroup)), expected);
    }

    const HEX: &str = "3f4a5b6c7d8e9f00112233445566778899aabbccddeeff00112233445566778a";

    fn strings(texts: &[&str]) -> Vec<String> {
        texts.iter().map(|t| (*t).to_owned()).collect()
    }

    #[rstest]
    // RHEL 8 / CentOS 7: no cgroup2.
    #[case::v1_only(false, vec![rhel8(YARN_V1), rhel8("/")], Hierarchy::V1Cpu)]
    // cgroup2 mounted (hybrid), every process in its root: this machine.
    #[case::hybrid_all_in_the_v2_root(
        true,
        vec!["1:cpu:/\n0::/\n".into(), format!("1:cpu:{YARN_V1}\n0::/\n")],
        Hierarchy::V1Cpu
    )]
    // Hybrid with systemd: processes spread over v2.
    #[case::hybrid_spread(
        true,
        strings(&[
            "4:cpu,cpuacct:/\n0::/\n",
            "4:cpu,cpuacct:/system.slice/a.service\n0::/system.slice/a.service\n",
        ]),
        Hierarchy::V2
    )]
    #[case::unified(true, strings(&["0::/init.scope\n", "0::/system.slice/a.service\n"]), Hierarchy::V2)]
    // A `0::` line below the root but cgroup2 not mounted cannot be read by id: v1.
    #[case::v2_line_without_a_mount(false, strings(&["1:cpu:/\n0::/x\n"]), Hierarchy::V1Cpu)]
    #[case::no_cpu_hierarchy(false, strings(&["1:name=systemd:/\n"]), Hierarchy::V1Systemd)]
    #[case::nothing_readable(true, Vec::new(), Hierarchy::V2)]
    fn the_hosts_hierarchy(
        #[case] cgroup2_mounted: bool,
        #[case] processes: Vec<String>,
        #[case] expected: Hierarchy,
    ) {
        let parsed: Vec<Vec<CgroupLine>> = processes.iter().map(|p| parse_proc_cgroup(p)).collect();
        assert_eq!(
            detect(cgroup2_mounted, parsed.iter().map(Vec::as_slice)),
            expected
        );
    }

    #[rstest]
    #[case("4:cpu,cpuacct:/a\n1:name=systemd:/b\n", Some((Hierarchy::V1Cpu, "/a")))]
    #[case("3:cpuacct:/x\n2:cpu:/a\n", Some((Hierarchy::V1Cpu, "/a")))]
    // cpuset is not cpu.
    #[case("3:cpuset:/x\n1:name=systemd:/b\n", Some((Hierarchy::V1Systemd, "/b")))]
    #[case("0::/a\n", None)]
    fn the_v1_cgroup_is_cpus_else_systemds(
        #[case] proc_cgroup: &str,
        #[case] expected: Option<(Hierarchy, &str)>,
    ) {
        let got = v1_cgroup(&parse_proc_cgroup(proc_cgroup));
        assert_eq!(
            got.as_ref().map(|c| (c.hierarchy, c.path.as_str())),
            expected
        );
    }

    #[test]
    fn hierarchies_serialise_as_documented() {
        let names: Vec<String> = [Hierarchy::V2, Hierarchy::V1Cpu, Hierarchy::V1Systemd]
            .iter()
            .map(|h| serde_json::to_string(h).unwrap())
            .collect();
        assert_eq!(names, ["\"v2\"", "\"v1:cpu\"", "\"v1:name=systemd\""]);
        assert_eq!(Hierarchy::V1Cpu.to_string(), "v1:cpu");
    }
}
