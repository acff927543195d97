//! What a process is: the service label from a JVM's main class or `-Dproc_*`, or the
//! executable.
//!
//! Owns: reading a `java` command line (options, `-jar`, `-m`, Hadoop's `RunJar`) and the
//! table of known Hadoop-ecosystem daemons and tasks. Must not: read anything.

use std::path::Path;

/// What a `java` command line launches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JvmLaunch {
    pub main_class: Option<String>,
    pub jar: Option<String>,
    /// The value of `-Dproc_<name>` (Hadoop and HBase launch scripts set it).
    pub proc_name: Option<String>,
    /// Names of the `-D` system properties.
    pub properties: Vec<String>,
}

/// Launcher options whose value is the next argument (also read by the listener's parse of
/// a ZooKeeper server's command line).
pub const OPTIONS_WITH_VALUE: [&str; 13] = [
    "-cp",
    "-classpath",
    "--class-path",
    "-p",
    "--module-path",
    "--upgrade-module-path",
    "--add-modules",
    "--add-reads",
    "--add-exports",
    "--add-opens",
    "--limit-modules",
    "--patch-module",
    "--enable-native-access",
];

fn basename(path: &str) -> &str {
    Path::new(path)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(path)
}

/// Reads `argv` as a `java` launcher command line; `None` when argv[0] is not `java`.
pub fn parse_java(argv: &[String]) -> Option<JvmLaunch> {
    let (first, args) = argv.split_first()?;
    if basename(first) != "java" {
        return None;
    }
    let mut launch = JvmLaunch::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if let Some(prop) = arg.strip_prefix("-D") {
            let name = prop.split_once('=').map_or(prop, |(k, _)| k);
            if let Some(proc_name) = name.strip_prefix("proc_") {
                launch.proc_name = Some(proc_name.to_owned());
            }
            launch.properties.push(name.to_owned());
        } else if arg == "-jar" {
            launch.jar = it.next().map(|j| basename(j).to_owned());
            break;
        } else if arg == "-m" || arg == "--module" {
            launch.main_class = it.next().and_then(|m| module_class(m));
            break;
        } else if let Some(m) = arg.strip_prefix("--module=") {
            launch.main_class = module_class(m);
            break;
        } else if OPTIONS_WITH_VALUE.contains(&arg.as_str()) {
            it.next();
        } else if !arg.starts_with('-') {
            launch.main_class = Some(arg.clone());
            // `hadoop jar x.jar com.example.Main` runs through RunJar: the real main class
            // is the argument after the jar, when it is given.
            if arg == "org.apache.hadoop.util.RunJar" {
                let _jar = it.next();
                if let Some(class) = it.next().filter(|c| looks_like_class(c)) {
                    launch.main_class = Some(class.clone());
                }
            }
            break;
        }
    }
    Some(launch)
}

fn module_class(spec: &str) -> Option<String> {
    spec.split_once('/').map(|(_, c)| c.to_owned())
}

fn looks_like_class(s: &str) -> bool {
    !s.starts_with('-')
        && s.contains('.')
        && s.split('.').all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '$')
        })
}

/// A recognised service: its label and, for HBase daemons, the role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Known {
    pub service: &'static str,
    pub hbase_role: Option<&'static str>,
}

const fn svc(service: &'static str) -> Known {
    Known {
        service,
        hbase_role: None,
    }
}

const fn hbase(service: &'static str, role: &'static str) -> Known {
    Known {
        service,
        hbase_role: Some(role),
    }
}

/// Main classes of the daemons and tasks that talk to ZooKeeper on Hadoop hosts.
const MAIN_CLASSES: &[(&str, Known)] = &[
    (
        "org.apache.hadoop.hbase.regionserver.HRegionServer",
        hbase("HBase RegionServer", "RegionServer"),
    ),
    (
        "org.apache.hadoop.hbase.master.HMaster",
        hbase("HBase Master", "Master"),
    ),
    (
        "org.apache.hadoop.hbase.thrift.ThriftServer",
        hbase("HBase Thrift", "Thrift"),
    ),
    (
        "org.apache.hadoop.hbase.thrift2.ThriftServer",
        hbase("HBase Thrift", "Thrift2"),
    ),
    (
        "org.apache.hadoop.hbase.rest.RESTServer",
        hbase("HBase REST", "REST"),
    ),
    (
        "org.apache.hadoop.hbase.zookeeper.HQuorumPeer",
        hbase("HBase ZooKeeper", "ZooKeeper"),
    ),
    (
        "org.apache.hadoop.hdfs.tools.DFSZKFailoverController",
        svc("HDFS ZKFC"),
    ),
    (
        "org.apache.hadoop.hdfs.server.namenode.NameNode",
        svc("HDFS NameNode"),
    ),
    (
        "org.apache.hadoop.hdfs.server.datanode.DataNode",
        svc("HDFS DataNode"),
    ),
    (
        "org.apache.hadoop.hdfs.qjournal.server.JournalNode",
        svc("HDFS JournalNode"),
    ),
    (
        "org.apache.hadoop.hdfs.server.federation.router.DFSRouter",
        svc("HDFS Router"),
    ),
    (
        "org.apache.hadoop.yarn.server.resourcemanager.ResourceManager",
        svc("YARN ResourceManager"),
    ),
    (
        "org.apache.hadoop.yarn.server.nodemanager.NodeManager",
        svc("YARN NodeManager"),
    ),
    (
        "org.apache.hadoop.yarn.server.applicationhistoryservice.ApplicationHistoryServer",
        svc("YARN Timeline Server"),
    ),
    (
        "org.apache.hadoop.yarn.server.router.Router",
        svc("YARN Router"),
    ),
    (
        "org.apache.hadoop.mapreduce.v2.hs.JobHistoryServer",
        svc("MapReduce JobHistory"),
    ),
    ("org.apache.hadoop.mapred.YarnChild", svc("MapReduce task")),
    (
        "org.apache.hadoop.mapreduce.v2.app.MRAppMaster",
        svc("MapReduce AM"),
    ),
    ("kafka.Kafka", svc("Kafka broker")),
    (
        "org.apache.hive.service.server.HiveServer2",
        svc("HiveServer2"),
    ),
    (
        "org.apache.hadoop.hive.metastore.HiveMetaStore",
        svc("Hive Metastore"),
    ),
    (
        "org.apache.spark.executor.YarnCoarseGrainedExecutorBackend",
        svc("Spark executor"),
    ),
    (
        "org.apache.spark.executor.CoarseGrainedExecutorBackend",
        svc("Spark executor"),
    ),
    (
        "org.apache.spark.deploy.yarn.ApplicationMaster",
        svc("Spark AM"),
    ),
    (
        "org.apache.spark.deploy.yarn.ExecutorLauncher",
        svc("Spark AM"),
    ),
    ("org.apache.spark.deploy.SparkSubmit", svc("Spark driver")),
    (
        "org.apache.spark.deploy.history.HistoryServer",
        svc("Spark History Server"),
    ),
    ("org.apache.storm.daemon.worker.Worker", svc("Storm worker")),
    ("backtype.storm.daemon.worker", svc("Storm worker")),
    ("org.apache.storm.daemon.nimbus.Nimbus", svc("Storm Nimbus")),
    (
        "org.apache.storm.daemon.supervisor.Supervisor",
        svc("Storm supervisor"),
    ),
    ("org.apache.tez.runtime.task.TezChild", svc("Tez task")),
    ("org.apache.tez.dag.app.DAGAppMaster", svc("Tez AM")),
    (
        "org.apache.flink.yarn.YarnTaskExecutorRunner",
        svc("Flink TaskManager"),
    ),
    (
        "org.apache.flink.yarn.entrypoint.YarnJobClusterEntrypoint",
        svc("Flink JobManager"),
    ),
    (
        "org.apache.flink.yarn.entrypoint.YarnSessionClusterEntrypoint",
        svc("Flink JobManager"),
    ),
    (
        "org.apache.flink.yarn.entrypoint.YarnApplicationClusterEntryPoint",
        svc("Flink JobManager"),
    ),
    (
        "org.apache.phoenix.queryserver.server.QueryServer",
        svc("Phoenix Query Server"),
    ),
    (
        "org.apache.zookeeper.server.quorum.QuorumPeerMain",
        svc("ZooKeeper server"),
    ),
    (
        "org.apache.zookeeper.server.ZooKeeperServerMain",
        svc("ZooKeeper server"),
    ),
    ("org.apache.zookeeper.ZooKeeperMain", svc("ZooKeeper CLI")),
    (
        "org.apache.oozie.server.EmbeddedOozieServer",
        svc("Oozie server"),
    ),
    ("org.apache.nifi.NiFi", svc("NiFi")),
    ("org.apache.drill.exec.server.Drillbit", svc("Drillbit")),
    ("org.apache.accumulo.start.Main", svc("Accumulo")),
    ("org.apache.druid.cli.Main", svc("Druid")),
];

/// `-Dproc_<name>` of the Hadoop and HBase launch scripts, for main classes not in the table.
const PROC_NAMES: &[(&str, Known)] = &[
    ("regionserver", hbase("HBase RegionServer", "RegionServer")),
    ("master", hbase("HBase Master", "Master")),
    ("thrift", hbase("HBase Thrift", "Thrift")),
    ("thrift2", hbase("HBase Thrift", "Thrift2")),
    ("rest", hbase("HBase REST", "REST")),
    ("zookeeper", hbase("HBase ZooKeeper", "ZooKeeper")),
    ("shell", svc("HBase shell")),
    ("zkfc", svc("HDFS ZKFC")),
    ("namenode", svc("HDFS NameNode")),
    ("datanode", svc("HDFS DataNode")),
    ("journalnode", svc("HDFS JournalNode")),
    ("resourcemanager", svc("YARN ResourceManager")),
    ("nodemanager", svc("YARN NodeManager")),
    ("timelineserver", svc("YARN Timeline Server")),
    ("historyserver", svc("MapReduce JobHistory")),
];

/// The known service a JVM runs: by main class first (the most specific), then by
/// `-Dproc_*`, then Solr by its `-DzkHost`/`-Dsolr.*` properties.
pub fn known_jvm(launch: &JvmLaunch) -> Option<Known> {
    if let Some(class) = &launch.main_class {
        if let Some((_, k)) = MAIN_CLASSES.iter().find(|(c, _)| c == class) {
            return Some(*k);
        }
        if class.starts_with("org.apache.storm.daemon.") {
            return Some(svc("Storm daemon"));
        }
    }
    if let Some(name) = &launch.proc_name
        && let Some((_, k)) = PROC_NAMES.iter().find(|(n, _)| n == name)
    {
        return Some(*k);
    }
    let solr = launch
        .properties
        .iter()
        .any(|p| p == "zkHost" || p.starts_with("solr."));
    solr.then_some(svc("Solr"))
}

/// Interpreters whose script says more than the interpreter's name.
fn is_interpreter(exe: &str) -> bool {
    ["python", "perl", "ruby", "node", "bash", "sh", "php"]
        .iter()
        .any(|i| exe == *i || exe.strip_prefix(i).is_some_and(is_version))
}

fn is_version(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_digit() || c == '.')
}

/// The label of a process no table knows: the JVM's main class or jar, an interpreter with
/// its script, or the executable's name (falling back to argv[0], then the comm).
pub fn fallback(exe: Option<&str>, argv: &[String], comm: &str, jvm: Option<&JvmLaunch>) -> String {
    if let Some(j) = jvm {
        if let Some(class) = &j.main_class {
            return class.clone();
        }
        if let Some(jar) = &j.jar {
            return format!("java -jar {jar}");
        }
    }
    let name = exe
        .map(basename)
        .or_else(|| argv.first().map(|a| basename(a)))
        .filter(|n| !n.is_empty())
        .unwrap_or(comm);
    if is_interpreter(name)
        && let Some(what) = interpreted(&argv[1.min(argv.len())..])
    {
        return format!("{name} {what}");
    }
    name.to_owned()
}

/// `-m MODULE` when the module is a dotted identifier, else only `-m` (no free text).
fn module_label(module: &str) -> String {
    let identifier = !module.is_empty()
        && module
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '.');
    if identifier {
        format!("-m {module}")
    } else {
        "-m".to_owned()
    }
}

/// What an interpreter runs, for a label: its script's file name, `-m MODULE`, or for code
/// given on the command line (`-c`, `-e`) only the option, never the code (free text that
/// may hold anything, a secret included, and would become a metrics label).
fn interpreted(args: &[String]) -> Option<String> {
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-c" | "-e" | "-E" | "--eval" | "-p" | "--print" => return Some(arg.clone()),
            "-m" => return Some(module_label(it.next()?)),
            // Python's options that take the next argument.
            "-W" | "-X" | "--check-hash-based-pycs" => {
                it.next();
            }
            // Combined short flags (`-uc`, `-Bc`, bash's `-xc`, perl's `-ne`): code given
            // inline is never shown, a module is.
            a if a.starts_with('-') && !a.starts_with("--") => {
                let flags = &a[1..];
                if flags.contains(['c', 'e', 'p']) {
                    return Some(format!("-{}", flags.chars().last().unwrap_or('c')));
                }
                if flags.ends_with('m') {
                    return Some(module_label(it.next()?));
                }
            }
            a if a.starts_with('-') => {}
            script => return Some(basename(script).to_owned()),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[rstest]
    #[case(
        "/usr/lib/jvm/java-17/bin/java -Dproc_regionserver -XX:OnOutOfMemoryError=kill -cp /a:/b -Dhbase.log.dir=/var/log org.apache.hadoop.hbase.regionserver.HRegionServer start",
        Some("org.apache.hadoop.hbase.regionserver.HRegionServer"),
        Some("regionserver")
    )]
    #[case("java -Xmx1g -jar /opt/solr/start.jar --module=http", None, None)]
    #[case(
        "java --module-path /m -m com.example/com.example.Main arg",
        Some("com.example.Main"),
        None
    )]
    #[case(
        "java --module=com.example/com.example.Main",
        Some("com.example.Main"),
        None
    )]
    #[case(
        "java -Dproc_jar -cp /etc/hadoop org.apache.hadoop.util.RunJar /opt/hive/lib/hive-service.jar org.apache.hive.service.server.HiveServer2 --hiveconf x=y",
        Some("org.apache.hive.service.server.HiveServer2"),
        Some("jar")
    )]
    #[case(
        "java -cp x org.apache.hadoop.util.RunJar job.jar -libjars a.jar",
        Some("org.apache.hadoop.util.RunJar"),
        None
    )]
    #[case("java -version", None, None)]
    fn java_command_lines(
        #[case] cmd: &str,
        #[case] main: Option<&str>,
        #[case] proc_name: Option<&str>,
    ) {
        let l = parse_java(&argv(cmd)).unwrap();
        assert_eq!(l.main_class.as_deref(), main);
        assert_eq!(l.proc_name.as_deref(), proc_name);
    }

    #[test]
    fn not_java() {
        assert_eq!(parse_java(&argv("python3 -m kazoo")), None);
        assert_eq!(parse_java(&[]), None);
        // A wrapper that only mentions java is not a JVM.
        assert_eq!(parse_java(&argv("/bin/bash -c java -cp x Main")), None);
    }

    #[rstest]
    #[case(
        "java -Dproc_regionserver org.apache.hadoop.hbase.regionserver.HRegionServer start",
        "HBase RegionServer",
        Some("RegionServer")
    )]
    #[case(
        "java -Dproc_master org.apache.hadoop.hbase.master.HMaster start",
        "HBase Master",
        Some("Master")
    )]
    #[case(
        "java -Dproc_thrift org.apache.hadoop.hbase.thrift.ThriftServer start",
        "HBase Thrift",
        Some("Thrift")
    )]
    #[case(
        "java -Dproc_thrift2 org.apache.hadoop.hbase.thrift2.ThriftServer start",
        "HBase Thrift",
        Some("Thrift2")
    )]
    #[case(
        "java -Dproc_rest org.apache.hadoop.hbase.rest.RESTServer start",
        "HBase REST",
        Some("REST")
    )]
    #[case(
        "java -Dproc_zookeeper org.apache.hadoop.hbase.zookeeper.HQuorumPeer start",
        "HBase ZooKeeper",
        Some("ZooKeeper")
    )]
    // A renamed or wrapped main class still carries the launch script's -Dproc_.
    #[case(
        "java -Dproc_regionserver com.vendor.WrappedRegionServer",
        "HBase RegionServer",
        Some("RegionServer")
    )]
    #[case("java -Dproc_shell org.jruby.Main hirb.rb", "HBase shell", None)]
    #[case(
        "java -Dproc_zkfc org.apache.hadoop.hdfs.tools.DFSZKFailoverController",
        "HDFS ZKFC",
        None
    )]
    #[case(
        "java -Dproc_resourcemanager org.apache.hadoop.yarn.server.resourcemanager.ResourceManager",
        "YARN ResourceManager",
        None
    )]
    #[case(
        "java -Dproc_nodemanager org.apache.hadoop.yarn.server.nodemanager.NodeManager",
        "YARN NodeManager",
        None
    )]
    #[case(
        "java -Xmx1G kafka.Kafka config/server.properties",
        "Kafka broker",
        None
    )]
    #[case(
        "java -cp x org.apache.hadoop.util.RunJar /h/hive-service.jar org.apache.hive.service.server.HiveServer2",
        "HiveServer2",
        None
    )]
    #[case(
        "java -server org.apache.spark.executor.YarnCoarseGrainedExecutorBackend --driver-url x",
        "Spark executor",
        None
    )]
    #[case(
        "java -Dlog4j.configuration=c org.apache.hadoop.mapred.YarnChild 10.0.0.1 4000",
        "MapReduce task",
        None
    )]
    #[case(
        "java org.apache.hadoop.mapreduce.v2.app.MRAppMaster",
        "MapReduce AM",
        None
    )]
    #[case(
        "java -server org.apache.storm.daemon.worker.Worker topo",
        "Storm worker",
        None
    )]
    #[case(
        "java org.apache.storm.daemon.logviewer.LogviewerServer",
        "Storm daemon",
        None
    )]
    #[case("java -DzkHost=zk1:2181/solr -jar start.jar", "Solr", None)]
    #[case(
        "java org.apache.phoenix.queryserver.server.QueryServer",
        "Phoenix Query Server",
        None
    )]
    #[case("java org.apache.tez.runtime.task.TezChild", "Tez task", None)]
    #[case(
        "java org.apache.flink.yarn.YarnTaskExecutorRunner",
        "Flink TaskManager",
        None
    )]
    fn known_services(#[case] cmd: &str, #[case] service: &str, #[case] role: Option<&str>) {
        let k = known_jvm(&parse_java(&argv(cmd)).unwrap()).unwrap();
        assert_eq!(k.service, service);
        assert_eq!(k.hbase_role, role);
    }

    #[rstest]
    #[case(
        Some("/usr/bin/python3.11"),
        "python3 /opt/ingest/feed.py --zk x",
        "python3.11 feed.py"
    )]
    #[case(Some("/usr/local/bin/zk-agent"), "zk-agent --foreground", "zk-agent")]
    #[case(None, "/opt/bin/agent -x", "agent")]
    #[case(None, "", "comm")]
    #[case(
        Some("/usr/lib/jvm/bin/java"),
        "java -cp x com.example.Ingest",
        "com.example.Ingest"
    )]
    #[case(
        Some("/usr/lib/jvm/bin/java"),
        "java -jar /opt/app/tool.jar",
        "java -jar tool.jar"
    )]
    #[case(Some("/usr/bin/bash"), "bash", "bash")]
    // Code on the command line never becomes a label, only the option does.
    #[case(
        Some("/usr/bin/python3.11"),
        "python3 -u -c import_kazoo;api_token='hunter21'",
        "python3.11 -c"
    )]
    #[case(Some("/usr/bin/perl"), "perl -e print($ENV{PASS})", "perl -e")]
    #[case(
        Some("/usr/bin/python3.11"),
        "python3 -uc k='S3CRET';go()",
        "python3.11 -c"
    )]
    #[case(
        Some("/usr/bin/python3.11"),
        "python3 -X dev -Bc go()",
        "python3.11 -c"
    )]
    #[case(Some("/usr/bin/bash"), "bash -xc /opt/x;TOKEN=y", "bash -c")]
    #[case(
        Some("/usr/bin/python3.11"),
        "python3 -um kazoo.tool",
        "python3.11 -m kazoo.tool"
    )]
    #[case(
        Some("/usr/bin/python3.11"),
        "python3 -m kazoo.tool --x",
        "python3.11 -m kazoo.tool"
    )]
    #[case(Some("/usr/bin/python3.11"), "python3 -m a/b;c", "python3.11 -m")]
    #[case(
        Some("/usr/bin/python3.11"),
        "python3 -W ignore /opt/feed.py",
        "python3.11 feed.py"
    )]
    fn fallbacks(#[case] exe: Option<&str>, #[case] cmd: &str, #[case] expected: &str) {
        let args = argv(cmd);
        let jvm = parse_java(&args);
        assert_eq!(fallback(exe, &args, "comm", jvm.as_ref()), expected);
    }
}
