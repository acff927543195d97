//! What a cgroup path says about where a process runs: a YARN container, a Kubernetes pod,
//! a Docker container, a systemd service.
//!
//! Owns: the path shapes of YARN's LinuxContainerExecutor, the kubelet (cgroupfs and systemd
//! drivers; docker, containerd and CRI-O runtimes), Docker and systemd, for cgroup v1 and v2.
//! Must not: read anything.

use super::yarn::ContainerId;

/// One line of `/proc/PID/cgroup`: `hierarchy-id:controllers:path`. cgroup v2 is hierarchy
/// 0 with no controllers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupLine {
    pub hierarchy: u32,
    pub controllers: String,
    pub path: String,
}

impl CgroupLine {
    pub fn is_v2(&self) -> bool {
        self.hierarchy == 0 && self.controllers.is_empty()
    }
}

/// Parses `/proc/PID/cgroup`; lines that do not have the three fields are skipped.
pub fn parse_proc_cgroup(text: &str) -> Vec<CgroupLine> {
    text.lines()
        .filter_map(|line| {
            let (hierarchy, rest) = line.split_once(':')?;
            let (controllers, path) = rest.split_once(':')?;
            Some(CgroupLine {
                hierarchy: hierarchy.parse().ok()?,
                controllers: controllers.to_owned(),
                path: path.to_owned(),
            })
        })
        .collect()
}

/// The container runtime named in a Kubernetes cgroup path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Docker,
    Containerd,
    Crio,
    /// cgroupfs driver paths do not name the runtime.
    Unknown,
}

/// What one cgroup path shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shape {
    Yarn(ContainerId),
    Kubernetes {
        /// The pod UID with dashes, as `kubectl get pod -o jsonpath={.metadata.uid}` prints it.
        pod_uid: String,
        /// 64 hex digits; absent for the pod-level cgroup itself.
        container_id: Option<String>,
        runtime: Runtime,
    },
    Docker {
        container_id: String,
    },
    Systemd {
        unit: String,
    },
}

impl Shape {
    /// A short human name for the cgroup.
    pub fn label(&self) -> String {
        match self {
            Shape::Yarn(id) => id.to_string(),
            Shape::Kubernetes {
                pod_uid,
                container_id,
                ..
            } => match container_id {
                Some(c) => format!("pod {pod_uid} container {}", short_id(c)),
                None => format!("pod {pod_uid}"),
            },
            Shape::Docker { container_id } => format!("docker {}", short_id(container_id)),
            Shape::Systemd { unit } => unit.clone(),
        }
    }
}

/// The 12-digit prefix `docker ps` and `crictl ps` show.
pub fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Classifies one cgroup path. YARN wins over the others: a container launched by a
/// NodeManager that itself runs in a pod or a unit is still that YARN container.
pub fn classify_path(path: &str) -> Option<Shape> {
    if let Some(id) = ContainerId::find_in(path) {
        return Some(Shape::Yarn(id));
    }
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segments.iter().any(|s| s.starts_with("kubepods")) {
        return kubernetes(&segments);
    }
    if let Some(shape) = docker(&segments) {
        return Some(shape);
    }
    segments
        .iter()
        .rev()
        .find(|s| s.len() > ".service".len() && s.ends_with(".service"))
        .map(|unit| Shape::Systemd {
            unit: (*unit).to_owned(),
        })
}

fn kubernetes(segments: &[&str]) -> Option<Shape> {
    // cgroupfs driver: `pod<uid-with-dashes>`; systemd driver:
    // `kubepods-<qos>-pod<uid_with_underscores>.slice`.
    let pod_uid = segments.iter().find_map(|s| {
        let s = s.strip_suffix(".slice").unwrap_or(s);
        let at = s.rfind("pod")?;
        let uid = &s[at + 3..];
        let ok = uid.len() == 36
            && uid
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == '-' || c == '_');
        ok.then(|| uid.replace('_', "-"))
    })?;
    let (container_id, runtime) = segments
        .last()
        .and_then(|last| container_segment(last))
        .map_or((None, Runtime::Unknown), |(id, rt)| (Some(id), rt));
    Some(Shape::Kubernetes {
        pod_uid,
        container_id,
        runtime,
    })
}

/// `<64hex>`, or `<runtime>-<64hex>.scope` of the systemd driver.
fn container_segment(segment: &str) -> Option<(String, Runtime)> {
    let (runtime, rest) = if let Some(r) = segment.strip_prefix("docker-") {
        (Runtime::Docker, r)
    } else if let Some(r) = segment.strip_prefix("cri-containerd-") {
        (Runtime::Containerd, r)
    } else if let Some(r) = segment.strip_prefix("crio-") {
        (Runtime::Crio, r)
    } else {
        (Runtime::Unknown, segment)
    };
    let id = rest.strip_suffix(".scope").unwrap_or(rest);
    is_container_hex(id).then(|| (id.to_owned(), runtime))
}

fn is_container_hex(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

fn docker(segments: &[&str]) -> Option<Shape> {
    // cgroupfs driver: `/docker/<64hex>`; systemd driver: `/system.slice/docker-<64hex>.scope`.
    let at = segments
        .windows(2)
        .find(|w| w[0] == "docker" && is_container_hex(w[1]))
        .map(|w| w[1].to_owned());
    let scope = || {
        segments.iter().find_map(|s| {
            let id = s.strip_prefix("docker-")?.strip_suffix(".scope")?;
            is_container_hex(id).then(|| id.to_owned())
        })
    };
    at.or_else(scope)
        .map(|container_id| Shape::Docker { container_id })
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    const HEX: &str = "3f4a5b6c7d8e9f00112233445566778899aabbccddeeff00112233445566778a";

    #[test]
    fn proc_cgroup_lines() {
        let lines = parse_proc_cgroup(
            "12:cpu,cpuacct:/hadoop-yarn/container_1_0001_01_000001\n1:name=systemd:/system.slice/x.service\n0::/\nbroken\n",
        );
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].hierarchy, 12);
        assert_eq!(lines[0].controllers, "cpu,cpuacct");
        assert!(!lines[1].is_v2());
        assert!(lines[2].is_v2());
        assert_eq!(lines[2].path, "/");
    }

    fn k8s(pod: &str, id: Option<&str>, runtime: Runtime) -> Option<Shape> {
        Some(Shape::Kubernetes {
            pod_uid: pod.to_owned(),
            container_id: id.map(str::to_owned),
            runtime,
        })
    }

    const POD: &str = "0c7a3c9e-5d1f-4b7a-9d2e-3f4a5b6c7d8e";

    #[rstest]
    // YARN, v1 and v2, site-specific hierarchy names
    #[case(
        "/hadoop-yarn/container_e17_1410901177871_0001_01_000005",
        Some(Shape::Yarn(ContainerId::parse("container_e17_1410901177871_0001_01_000005").unwrap()))
    )]
    #[case(
        "/yarn/container_1410901177871_0001_01_000002",
        Some(Shape::Yarn(ContainerId::parse("container_1410901177871_0001_01_000002").unwrap()))
    )]
    // Kubernetes, cgroupfs driver (v1 layout), three QoS classes
    #[case(&format!("/kubepods/besteffort/pod{POD}/{HEX}"), k8s(POD, Some(HEX), Runtime::Unknown))]
    #[case(&format!("/kubepods/burstable/pod{POD}/{HEX}"), k8s(POD, Some(HEX), Runtime::Unknown))]
    #[case(&format!("/kubepods/pod{POD}/{HEX}"), k8s(POD, Some(HEX), Runtime::Unknown))]
    #[case(&format!("/kubepods/burstable/pod{POD}"), k8s(POD, None, Runtime::Unknown))]
    // Kubernetes, systemd driver (v2 layout), three runtimes
    #[case(
        &format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{HEX}.scope", POD.replace('-', "_")),
        k8s(POD, Some(HEX), Runtime::Containerd)
    )]
    #[case(
        &format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/crio-{HEX}.scope", POD.replace('-', "_")),
        k8s(POD, Some(HEX), Runtime::Crio)
    )]
    #[case(
        &format!("/kubepods.slice/kubepods-pod{}.slice/docker-{HEX}.scope", POD.replace('-', "_")),
        k8s(POD, Some(HEX), Runtime::Docker)
    )]
    // Docker, both drivers
    #[case(&format!("/docker/{HEX}"), Some(Shape::Docker { container_id: HEX.into() }))]
    #[case(
        &format!("/system.slice/docker-{HEX}.scope"),
        Some(Shape::Docker { container_id: HEX.into() })
    )]
    // systemd services (system and user managers); the Docker daemon is a service
    #[case("/system.slice/hbase-regionserver.service", Some(Shape::Systemd { unit: "hbase-regionserver.service".into() }))]
    #[case("/system.slice/docker.service", Some(Shape::Systemd { unit: "docker.service".into() }))]
    #[case(
        "/user.slice/user-1000.slice/user@1000.service/app.slice/ingest.service",
        Some(Shape::Systemd { unit: "ingest.service".into() })
    )]
    // nothing known
    #[case("/user.slice/user-1000.slice/session-3.scope", None)]
    #[case("/", None)]
    #[case("/docker/not-an-id", None)]
    #[case("/.service", None)]
    fn shapes(#[case] path: &str, #[case] expected: Option<Shape>) {
        assert_eq!(classify_path(path), expected);
    }

    #[test]
    fn labels() {
        let shape = classify_path(&format!("/kubepods/burstable/pod{POD}/{HEX}")).unwrap();
        assert_eq!(shape.label(), format!("pod {POD} container 3f4a5b6c7d8e"));
        let shape = classify_path(&format!("/docker/{HEX}")).unwrap();
        assert_eq!(shape.label(), "docker 3f4a5b6c7d8e");
    }
}
