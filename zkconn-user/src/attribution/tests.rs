//! Classification over fixture `/proc` trees: each case writes the files a real process
//! would have, reads them through [`Procfs`] as production does, and classifies.

use std::fs;

use rstest::rstest;

use super::*;
use crate::procfs::{ProcInfo, Procfs};

const HEX: &str = "3f4a5b6c7d8e9f00112233445566778899aabbccddeeff00112233445566778a";
const POD: &str = "0c7a3c9e-5d1f-4b7a-9d2e-3f4a5b6c7d8e";
const JAVA: &str = "/usr/lib/jvm/java-17-openjdk-amd64/bin/java";

/// A process as `/proc` shows it.
#[derive(Default)]
struct Fixture<'a> {
    comm: &'a str,
    /// Arguments separated by spaces (NUL-separated in the file).
    cmdline: &'a str,
    /// `/proc/PID/cgroup`, one `h:ctrl:path` line per hierarchy.
    cgroup: String,
    environ: &'a [&'a str],
    exe: &'a str,
    cwd: &'a str,
}

impl Fixture<'_> {
    fn read(&self) -> ProcInfo {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("4242");
        fs::create_dir_all(&p).unwrap();
        fs::write(
            p.join("stat"),
            format!(
                "4242 ({}) S 1 4242 4242 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 100 0 0",
                self.comm
            ),
        )
        .unwrap();
        fs::write(p.join("status"), "Uid:\t1001\t1001\t1001\t1001\n").unwrap();
        let mut cmdline: Vec<u8> = Vec::new();
        for arg in self.cmdline.split(' ').filter(|a| !a.is_empty()) {
            cmdline.extend_from_slice(arg.as_bytes());
            cmdline.push(0);
        }
        fs::write(p.join("cmdline"), cmdline).unwrap();
        let cgroup = if self.cgroup.is_empty() {
            "0::/user.slice/user-1001.slice/session-4.scope\n".to_owned()
        } else {
            self.cgroup.clone()
        };
        fs::write(p.join("cgroup"), cgroup).unwrap();
        let mut environ = b"PATH=/usr/bin\0HADOOP_TOKEN_FILE_LOCATION=/secret/t\0".to_vec();
        for kv in self.environ {
            environ.extend_from_slice(kv.as_bytes());
            environ.push(0);
        }
        fs::write(p.join("environ"), environ).unwrap();
        if !self.exe.is_empty() {
            std::os::unix::fs::symlink(self.exe, p.join("exe")).unwrap();
        }
        if !self.cwd.is_empty() {
            std::os::unix::fs::symlink(self.cwd, p.join("cwd")).unwrap();
        }
        Procfs::at(dir.path(), 100).process(4242).unwrap()
    }

    fn classify(&self, rules: &Rules) -> Attribution {
        classify(&self.read().clues(), rules)
    }
}

fn java(cmdline: &str, cgroup: String) -> Fixture<'_> {
    Fixture {
        comm: "java",
        cmdline,
        cgroup,
        exe: JAVA,
        ..Fixture::default()
    }
}

/// What a case expects; unset fields must be `None`.
#[derive(Default)]
struct Want<'a> {
    kind: Kind,
    service: &'a str,
    label: &'a str,
    hbase_role: Option<&'a str>,
    yarn_container: Option<&'a str>,
    yarn_source: Option<YarnSource>,
    unit: Option<&'a str>,
    pod_uid: Option<&'a str>,
    container_id: Option<&'a str>,
    runtime: Option<Runtime>,
}

fn check(got: &Attribution, want: &Want<'_>) {
    assert_eq!(got.kind, want.kind, "{got:#?}");
    assert_eq!(got.service, want.service, "{got:#?}");
    assert_eq!(got.label, want.label, "{got:#?}");
    assert_eq!(got.hbase_role, want.hbase_role, "{got:#?}");
    assert_eq!(
        got.yarn_container.as_deref(),
        want.yarn_container,
        "{got:#?}"
    );
    let app = want
        .yarn_container
        .map(|c| ContainerId::parse(c).unwrap().application().to_owned());
    assert_eq!(got.yarn_application, app, "{got:#?}");
    assert_eq!(got.yarn_source, want.yarn_source, "{got:#?}");
    assert_eq!(got.unit.as_deref(), want.unit, "{got:#?}");
    assert_eq!(got.pod_uid.as_deref(), want.pod_uid, "{got:#?}");
    assert_eq!(got.container_id.as_deref(), want.container_id, "{got:#?}");
    assert_eq!(got.container_runtime, want.runtime, "{got:#?}");
}

const RS: &str = "java -Dproc_regionserver -XX:+UseG1GC -cp /etc/hbase:/usr/lib/hbase/lib/x.jar \
                  -Dhbase.log.dir=/var/log/hbase org.apache.hadoop.hbase.regionserver.HRegionServer start";

fn hybrid(v1_path: &str, v2_path: &str) -> String {
    format!(
        "12:pids:/\n4:cpu,cpuacct:{v1_path}\n3:memory:{v1_path}\n1:name=systemd:{v2_path}\n0::{v2_path}\n"
    )
}

#[rstest]
#[case::regionserver_in_a_unit(
    java(RS, hybrid("/system.slice/hbase-regionserver.service", "/system.slice/hbase-regionserver.service")),
    Want { kind: Kind::Hbase, service: "HBase RegionServer", label: "HBase RegionServer",
           hbase_role: Some("RegionServer"), unit: Some("hbase-regionserver.service"), ..Want::default() }
)]
#[case::master_plain(
    java("java -Dproc_master -Xmx4g org.apache.hadoop.hbase.master.HMaster start", String::new()),
    Want { kind: Kind::Hbase, service: "HBase Master", label: "HBase Master",
           hbase_role: Some("Master"), ..Want::default() }
)]
#[case::thrift(
    java("java -Dproc_thrift org.apache.hadoop.hbase.thrift.ThriftServer start", String::new()),
    Want { kind: Kind::Hbase, service: "HBase Thrift", label: "HBase Thrift",
           hbase_role: Some("Thrift"), ..Want::default() }
)]
#[case::rest(
    java("java -Dproc_rest org.apache.hadoop.hbase.rest.RESTServer start", String::new()),
    Want { kind: Kind::Hbase, service: "HBase REST", label: "HBase REST",
           hbase_role: Some("REST"), ..Want::default() }
)]
#[case::spark_executor_in_a_v1_cpu_cgroup(
    java("java -server -Xmx2g org.apache.spark.executor.YarnCoarseGrainedExecutorBackend --driver-url x",
         hybrid("/hadoop-yarn/container_e17_1410901177871_0001_01_000005", "/system.slice/hadoop-yarn-nodemanager.service")),
    Want { kind: Kind::Yarn, service: "Spark executor",
           label: "Spark executor in container_e17_1410901177871_0001_01_000005",
           yarn_container: Some("container_e17_1410901177871_0001_01_000005"),
           yarn_source: Some(YarnSource::Cgroup), unit: Some("hadoop-yarn-nodemanager.service"),
           ..Want::default() }
)]
#[case::mapreduce_task_in_a_v2_cgroup(
    java("java org.apache.hadoop.mapred.YarnChild 10.0.0.1 40000 attempt_1 5",
         "0::/yarn/container_1410901177871_0002_01_000003\n".into()),
    Want { kind: Kind::Yarn, service: "MapReduce task",
           label: "MapReduce task in container_1410901177871_0002_01_000003",
           yarn_container: Some("container_1410901177871_0002_01_000003"),
           yarn_source: Some(YarnSource::Cgroup), ..Want::default() }
)]
#[case::default_container_executor_environ(
    Fixture { environ: &["CONTAINER_ID=container_e3_1410901177871_0003_02_000001"],
              ..java("java org.apache.hadoop.mapreduce.v2.app.MRAppMaster",
                     hybrid("/system.slice/hadoop-yarn-nodemanager.service", "/system.slice/hadoop-yarn-nodemanager.service")) },
    Want { kind: Kind::Yarn, service: "MapReduce AM",
           label: "MapReduce AM in container_e3_1410901177871_0003_02_000001",
           yarn_container: Some("container_e3_1410901177871_0003_02_000001"),
           yarn_source: Some(YarnSource::Environ), unit: Some("hadoop-yarn-nodemanager.service"),
           ..Want::default() }
)]
#[case::working_directory_only(
    Fixture { comm: "python3", cmdline: "python3 task.py", exe: "/usr/bin/python3.11",
              cwd: "/data/2/yarn/local/usercache/bob/appcache/application_1410901177871_0004/container_1410901177871_0004_01_000002",
              ..Fixture::default() },
    Want { kind: Kind::Yarn, service: "python3.11 task.py",
           label: "python3.11 task.py in container_1410901177871_0004_01_000002",
           yarn_container: Some("container_1410901177871_0004_01_000002"),
           yarn_source: Some(YarnSource::Cwd), ..Want::default() }
)]
// HBASE-16117: an HBase client in a container is the container's, even named like a daemon.
#[case::hbase_inside_yarn_is_yarn(
    java(RS, "0::/hadoop-yarn/container_1410901177871_0005_01_000002\n".into()),
    Want { kind: Kind::Yarn, service: "HBase RegionServer",
           label: "HBase RegionServer in container_1410901177871_0005_01_000002",
           hbase_role: Some("RegionServer"),
           yarn_container: Some("container_1410901177871_0005_01_000002"),
           yarn_source: Some(YarnSource::Cgroup), ..Want::default() }
)]
#[case::kubernetes_v1_cgroupfs(
    java("java -Xmx1G kafka.Kafka /etc/kafka/server.properties",
         hybrid(&format!("/kubepods/burstable/pod{POD}/{HEX}"), "/")),
    Want { kind: Kind::Kubernetes, service: "Kafka broker", label: "Kafka broker in pod 0c7a3c9e",
           pod_uid: Some(POD), container_id: Some(HEX), runtime: Some(Runtime::Unknown),
           ..Want::default() }
)]
#[case::kubernetes_v2_containerd(
    java("java kafka.Kafka x",
         format!("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{HEX}.scope\n", POD.replace('-', "_"))),
    Want { kind: Kind::Kubernetes, service: "Kafka broker", label: "Kafka broker in pod 0c7a3c9e",
           pod_uid: Some(POD), container_id: Some(HEX), runtime: Some(Runtime::Containerd),
           ..Want::default() }
)]
#[case::kubernetes_v2_crio(
    java("java kafka.Kafka x",
         format!("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/crio-{HEX}.scope\n", POD.replace('-', "_"))),
    Want { kind: Kind::Kubernetes, service: "Kafka broker", label: "Kafka broker in pod 0c7a3c9e",
           pod_uid: Some(POD), container_id: Some(HEX), runtime: Some(Runtime::Crio),
           ..Want::default() }
)]
#[case::kubernetes_v2_docker(
    java("java kafka.Kafka x",
         format!("0::/kubepods.slice/kubepods-pod{}.slice/docker-{HEX}.scope\n", POD.replace('-', "_"))),
    Want { kind: Kind::Kubernetes, service: "Kafka broker", label: "Kafka broker in pod 0c7a3c9e",
           pod_uid: Some(POD), container_id: Some(HEX), runtime: Some(Runtime::Docker),
           ..Want::default() }
)]
#[case::docker_v1(
    Fixture { comm: "zkagent", cmdline: "/opt/zkagent --zk zk1", exe: "/opt/zkagent",
              cgroup: hybrid(&format!("/docker/{HEX}"), "/"), ..Fixture::default() },
    Want { kind: Kind::Docker, service: "zkagent", label: "zkagent in docker 3f4a5b6c7d8e",
           container_id: Some(HEX), runtime: Some(Runtime::Docker), ..Want::default() }
)]
#[case::docker_systemd_driver(
    Fixture { comm: "zkagent", cmdline: "/opt/zkagent", exe: "/opt/zkagent",
              cgroup: format!("0::/system.slice/docker-{HEX}.scope\n"), ..Fixture::default() },
    Want { kind: Kind::Docker, service: "zkagent", label: "zkagent in docker 3f4a5b6c7d8e",
           container_id: Some(HEX), runtime: Some(Runtime::Docker), ..Want::default() }
)]
#[case::systemd_python_service(
    Fixture { comm: "python3", cmdline: "/usr/bin/python3 /opt/feed/feed.py --zk zk1:2181",
              exe: "/usr/bin/python3.11", cgroup: "0::/system.slice/zk-feeder.service\n".into(),
              ..Fixture::default() },
    Want { kind: Kind::Systemd, service: "python3.11 feed.py",
           label: "python3.11 feed.py (zk-feeder.service)", unit: Some("zk-feeder.service"),
           ..Want::default() }
)]
#[case::zkfc_unit(
    java("java -Dproc_zkfc org.apache.hadoop.hdfs.tools.DFSZKFailoverController",
         "0::/system.slice/hadoop-hdfs-zkfc.service\n".into()),
    Want { kind: Kind::Systemd, service: "HDFS ZKFC", label: "HDFS ZKFC (hadoop-hdfs-zkfc.service)",
           unit: Some("hadoop-hdfs-zkfc.service"), ..Want::default() }
)]
#[case::resourcemanager_unit(
    java("java -Dproc_resourcemanager org.apache.hadoop.yarn.server.resourcemanager.ResourceManager",
         "0::/system.slice/hadoop-yarn-resourcemanager.service\n".into()),
    Want { kind: Kind::Systemd, service: "YARN ResourceManager",
           label: "YARN ResourceManager (hadoop-yarn-resourcemanager.service)",
           unit: Some("hadoop-yarn-resourcemanager.service"), ..Want::default() }
)]
#[case::nodemanager_plain(
    java("java -Dproc_nodemanager org.apache.hadoop.yarn.server.nodemanager.NodeManager", String::new()),
    Want { kind: Kind::Process, service: "YARN NodeManager", label: "YARN NodeManager", ..Want::default() }
)]
#[case::hiveserver2_via_runjar(
    java("java -Dproc_jar -cp /etc/hive org.apache.hadoop.util.RunJar /usr/lib/hive/lib/hive-service.jar org.apache.hive.service.server.HiveServer2",
         String::new()),
    Want { kind: Kind::Process, service: "HiveServer2", label: "HiveServer2", ..Want::default() }
)]
#[case::unit_named_like_the_service(
    Fixture { comm: "zkagent", cmdline: "/opt/zkagent", exe: "/opt/zkagent",
              cgroup: "0::/system.slice/zkagent.service\n".into(), ..Fixture::default() },
    Want { kind: Kind::Systemd, service: "zkagent", label: "zkagent", unit: Some("zkagent.service"),
           ..Want::default() }
)]
#[case::plain_process(
    Fixture { comm: "zkCli", cmdline: "/usr/local/bin/zk-shell", exe: "/usr/local/bin/zk-shell",
              ..Fixture::default() },
    Want { kind: Kind::Process, service: "zk-shell", label: "zk-shell", ..Want::default() }
)]
#[case::kernel_facts_only(
    Fixture { comm: "leaky", ..Fixture::default() },
    Want { kind: Kind::Process, service: "leaky", label: "leaky", ..Want::default() }
)]
fn classification(#[case] fixture: Fixture<'_>, #[case] want: Want<'_>) {
    check(&fixture.classify(&Rules::default()), &want);
}

#[test]
fn secrets_never_reach_the_clues() {
    let f = Fixture {
        environ: &[
            "CONTAINER_ID=container_1_0001_01_000001",
            "DB_PASSWORD=hunter2",
        ],
        ..java(
            "java -Djavax.net.ssl.keyStorePassword=hunter2 -Dproc_master org.apache.hadoop.hbase.master.HMaster",
            String::new(),
        )
    };
    let info = f.read();
    let everything = format!("{info:?}");
    assert!(!everything.contains("hunter2"), "{everything}");
    assert!(!everything.contains("/secret/t"), "{everything}");
    assert!(info.cmdline.contains("keyStorePassword=<redacted>"));
    assert_eq!(f.classify(&Rules::default()).service, "HBase Master");
}

#[test]
fn site_rules_override_built_in_classification() {
    let rules = Rules::parse(
        r#"
[[rule]]
name = "tenant-a regionservers"
main_class = "org.apache.hadoop.hbase.regionserver.HRegionServer"
cgroup = 'tenant-a'
service = "HBase RegionServer (tenant A)"

[[rule]]
cmdline = 'feed\.py'
kind = "yarn"
service = "Feed"

[[rule]]
name = "any java"
exe = "java"
service = "Some JVM"
"#,
    )
    .unwrap();
    // First rule: only its service changes; the kind stays what zkconn found.
    let a = java(RS, "0::/system.slice/tenant-a-rs.service\n".into()).classify(&rules);
    assert_eq!(
        (a.kind, a.service.as_str(), a.rule.as_deref()),
        (
            Kind::Hbase,
            "HBase RegionServer (tenant A)",
            Some("tenant-a regionservers")
        )
    );
    assert_eq!(a.label, "HBase RegionServer (tenant A)");
    // Same process elsewhere: the first rule does not match, the third does.
    let a = java(RS, String::new()).classify(&rules);
    assert_eq!(
        (a.service.as_str(), a.rule.as_deref()),
        ("Some JVM", Some("any java"))
    );
    assert_eq!(a.hbase_role, Some("RegionServer"));
    // An unnamed rule is named by its position.
    let a = Fixture {
        comm: "python3",
        cmdline: "python3 /opt/feed.py",
        exe: "/usr/bin/python3",
        ..Fixture::default()
    }
    .classify(&rules);
    assert_eq!(
        (a.kind, a.service.as_str(), a.rule.as_deref()),
        (Kind::Yarn, "Feed", Some("#2"))
    );
    // No rule matches: built-in classification only.
    let a = Fixture {
        comm: "zk",
        cmdline: "/bin/zk",
        exe: "/bin/zk",
        ..Fixture::default()
    }
    .classify(&rules);
    assert_eq!((a.service.as_str(), a.rule), ("zk", None));
}

#[rstest]
#[case(
    Some("/hadoop-yarn/container_1410901177871_0001_01_000002"),
    Kind::Yarn,
    "container_1410901177871_0001_01_000002"
)]
#[case(Some("/system.slice/hbase.service"), Kind::Systemd, "hbase.service")]
#[case(Some(&*format!("/docker/{HEX}")), Kind::Docker, "docker 3f4a5b6c7d8e")]
#[case(Some("/user.slice"), Kind::Process, "/user.slice")]
#[case(None, Kind::Process, "(removed)")]
fn cgroup_rows(#[case] path: Option<&str>, #[case] kind: Kind, #[case] label: &str) {
    assert_eq!(classify_cgroup(path), (kind, label.to_owned()));
}
