//! YARN container and application ids, and where a process's container id is written.
//!
//! Owns: the id grammar (`container_[e<epoch>_]<clusterTs>_<app>_<attempt>_<id>`) and finding
//! it in cgroup paths, the `CONTAINER_ID` variable and the NodeManager's working directories.
//! Must not: read anything (callers pass the strings in).

use std::fmt;

/// A YARN container id, kept with the digits as YARN printed them (zero padding included),
/// so the id and the application id derived from it match what YARN's own tools show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerId {
    /// The whole id as found.
    text: String,
    /// `application_<clusterTs>_<app>`.
    application: String,
}

impl ContainerId {
    /// Parses exactly one container id; both shapes, with and without `e<epoch>_`.
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix("container_")?;
        let mut parts: Vec<&str> = rest.split('_').collect();
        if parts.first().is_some_and(|p| {
            p.len() > 1 && p.starts_with('e') && p[1..].bytes().all(|b| b.is_ascii_digit())
        }) {
            parts.remove(0);
        }
        let [cluster_ts, app, attempt, id] = parts.as_slice() else {
            return None;
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !(digits(cluster_ts) && digits(app) && digits(attempt) && digits(id)) {
            return None;
        }
        Some(Self {
            text: text.to_owned(),
            application: format!("application_{cluster_ts}_{app}"),
        })
    }

    /// The first container id inside `text` (a cgroup path, a directory, a variable).
    pub fn find_in(text: &str) -> Option<Self> {
        let mut from = 0;
        while let Some(at) = text[from..].find("container_") {
            let start = from + at;
            // An id is a run of [A-Za-z0-9_]; a longer run is not an id (e.g. a suffix).
            let end = text[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(text.len(), |n| start + n);
            let preceded_ok = text[..start]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
            if preceded_ok && let Some(id) = Self::parse(&text[start..end]) {
                return Some(id);
            }
            from = start + "container_".len();
        }
        None
    }

    /// `application_<clusterTs>_<app>`.
    pub fn application(&self) -> &str {
        &self.application
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The container of a working directory under a NodeManager local dir:
/// `<local-dir>/usercache/<user>/appcache/<application>/<container>[/...]`. The container
/// must belong to the application named in the path.
pub fn container_from_cwd(cwd: &str) -> Option<ContainerId> {
    let (_, tail) = cwd.split_once("/usercache/")?;
    let mut parts = tail.split('/');
    let _user = parts.next().filter(|u| !u.is_empty())?;
    if parts.next()? != "appcache" {
        return None;
    }
    let application = parts.next()?;
    let container = ContainerId::parse(parts.next()?)?;
    (container.application() == application).then_some(container)
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    #[rstest]
    #[case(
        "container_e17_1410901177871_0001_01_000005",
        Some("application_1410901177871_0001")
    )]
    #[case(
        "container_1410901177871_0001_01_000005",
        Some("application_1410901177871_0001")
    )]
    #[case(
        "container_e0_1700000000000_12345_02_1000001",
        Some("application_1700000000000_12345")
    )]
    #[case("container_1410901177871_0001_01", None)]
    #[case("container_e17_1410901177871_0001_01_000005_x", None)]
    #[case("container_ex_1410901177871_0001_01_000005", None)]
    #[case("container_", None)]
    #[case("application_1410901177871_0001", None)]
    fn parse(#[case] text: &str, #[case] application: Option<&str>) {
        assert_eq!(
            ContainerId::parse(text).map(|c| c.application().to_owned()),
            application.map(str::to_owned)
        );
    }

    #[rstest]
    #[case(
        "/hadoop-yarn/container_e17_1410901177871_0001_01_000005",
        Some("container_e17_1410901177871_0001_01_000005")
    )]
    #[case(
        "/yarn/container_1410901177871_0001_01_000002/tasks",
        Some("container_1410901177871_0001_01_000002")
    )]
    #[case(
        "/system.slice/hadoop-yarn.slice/container_1410901177871_0001_01_000002.scope",
        Some("container_1410901177871_0001_01_000002")
    )]
    #[case("/hadoop-yarn/mycontainer_1410901177871_0001_01_000005", None)]
    #[case("/hadoop-yarn", None)]
    #[case(
        "/x/container_bad/container_1410901177871_0001_01_000002",
        Some("container_1410901177871_0001_01_000002")
    )]
    fn find(#[case] text: &str, #[case] id: Option<&str>) {
        assert_eq!(
            ContainerId::find_in(text).map(|c| c.to_string()),
            id.map(str::to_owned)
        );
    }

    #[rstest]
    #[case(
        "/data/1/yarn/local/usercache/alice/appcache/application_1410901177871_0001/container_e17_1410901177871_0001_01_000005",
        Some("container_e17_1410901177871_0001_01_000005")
    )]
    #[case(
        "/data/1/yarn/local/usercache/alice/appcache/application_1410901177871_0001/container_1410901177871_0001_01_000002/tmp",
        Some("container_1410901177871_0001_01_000002")
    )]
    // The container must belong to the application of the path.
    #[case(
        "/local/usercache/alice/appcache/application_1410901177871_0009/container_1410901177871_0001_01_000002",
        None
    )]
    #[case(
        "/local/usercache/alice/filecache/10/container_1410901177871_0001_01_000002",
        None
    )]
    #[case("/home/alice", None)]
    fn working_directory(#[case] cwd: &str, #[case] id: Option<&str>) {
        assert_eq!(
            container_from_cwd(cwd).map(|c| c.to_string()),
            id.map(str::to_owned)
        );
    }
}
