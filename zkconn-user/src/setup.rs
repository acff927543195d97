//! Turning the command line into what the source and engine need: targets resolved, limits,
//! rules and thresholds validated, all before anything touches the kernel.

use anyhow::Context as _;

use crate::{
    alarm::Thresholds,
    attribution::Rules,
    cli::{AttributionArgs, TargetArgs, WatchArgs},
    limits::Limits,
    targets::{self, Targets, ZooCfg},
};

/// How trends and limits are judged.
#[derive(Clone, Copy, Debug)]
pub struct Judgement {
    pub limits_window: std::time::Duration,
    pub thresholds: Thresholds,
}

/// Everything a mode needs to start watching, validated before anything touches the
/// kernel.
pub struct Setup {
    pub targets: Targets,
    pub limits: Limits,
    pub rules: Rules,
    pub judgement: Judgement,
}

impl Setup {
    pub fn new(watch: &WatchArgs) -> anyhow::Result<Self> {
        let WatchArgs {
            targets,
            limits,
            attribution,
            ..
        } = watch;
        let (targets, zoo_limit) = resolve_targets(targets)?;
        let thresholds = Thresholds::new(limits.warn, limits.crit)?;
        // Servers named by address are asked for their limit when nobody gave one.
        let known = Limits::new(limits.max_client_cnxns, zoo_limit, &limits.limit)?.to_ask(
            targets.endpoints.iter().copied(),
            (limits.admin_port != 0).then_some(limits.admin_port),
        );
        Ok(Self {
            targets,
            limits: known,
            rules: load_rules(attribution)?,
            judgement: Judgement {
                limits_window: limits.window,
                thresholds,
            },
        })
    }
}

/// Builds the target set from `--zk`, `--port` and `--zoo-cfg`; also returns the zoo.cfg's
/// `maxClientCnxns` when one is given (ZooKeeper's default when the file has none).
pub fn resolve_targets(args: &TargetArgs) -> anyhow::Result<(Targets, Option<u32>)> {
    let mut endpoints = Vec::new();
    let mut ports = Vec::new();
    let mut max_client_cnxns = None;
    for zk in &args.zk {
        endpoints.extend(targets::parse_connect_string(zk).context("--zk")?);
    }
    for list in &args.port {
        ports.extend(targets::parse_port_list(list).context("--port")?);
    }
    if let Some(path) = &args.zoo_cfg {
        let cfg = ZooCfg::read(path).context("--zoo-cfg")?;
        for warning in &cfg.warnings {
            tracing::warn!("--zoo-cfg: {warning}");
        }
        max_client_cnxns = Some(
            cfg.max_client_cnxns
                .unwrap_or(crate::limits::ZOOKEEPER_DEFAULT),
        );
        let (e, p) = cfg.targets();
        if e.is_empty() && p.is_empty() {
            anyhow::bail!(
                "--zoo-cfg {}: the file names no clientPort, secureClientPort or server.N client port",
                path.display()
            );
        }
        endpoints.extend(e);
        ports.extend(p);
    }
    Ok((Targets::resolve(&endpoints, &ports)?, max_client_cnxns))
}

/// Reads `--rules`, or no rules.
pub fn load_rules(args: &AttributionArgs) -> anyhow::Result<Rules> {
    match &args.rules {
        Some(path) => Rules::read(path).context("--rules"),
        None => Ok(Rules::default()),
    }
}
