//! Where the programs find what they read: field offsets from the kernel's BTF and the
//! tracepoint format files.
//!
//! Owns: turning BTF and tracefs into the layouts the programs are given. Must not: load.

use std::collections::HashMap as StdHashMap;

use anyhow::{anyhow, bail};
use zkconn_common::{ResetTpLayout, SockLayout, StateTpLayout, TaskLayout};

use super::{btf, tracefs};

/// Offsets of `sock:inet_sock_set_state`'s fields, from its tracefs format file.
pub(super) fn state_tp_layout(root: &std::path::Path) -> anyhow::Result<StateTpLayout> {
    let state = tracefs::tracepoint_fields(root, "sock", "inet_sock_set_state")?;
    layout_of_state_tp(&state)
}

/// The offsets and sizes of `sock:inet_sock_set_state`'s fields, from its format file.
pub(super) fn layout_of_state_tp(
    state: &StdHashMap<String, tracefs::Field>,
) -> anyhow::Result<StateTpLayout> {
    let get = |name: &str| {
        state.get(name).ok_or_else(|| {
            anyhow!(
                "this kernel's sock:inet_sock_set_state has no field {name:?}; zkconn needs \
                 kernel 4.16 or newer"
            )
        })
    };
    let field = |name: &str| get(name).map(|f| f.offset);
    // A scalar zkconn reads whole: 1, 2, 4 or 8 bytes, the same for each field of a pair.
    let size = |names: &[&str]| -> anyhow::Result<u16> {
        let sizes = names
            .iter()
            .map(|n| get(n).map(|f| f.size))
            .collect::<anyhow::Result<Vec<u16>>>()?;
        match sizes.as_slice() {
            [first, rest @ ..]
                if [1, 2, 4, 8].contains(first) && rest.iter().all(|s| s == first) =>
            {
                Ok(*first)
            }
            _ => bail!(
                "this kernel's sock:inet_sock_set_state gives {} the sizes {sizes:?}, which \
                 zkconn cannot read; use --hook btf",
                names.join(" and ")
            ),
        }
    };
    Ok(StateTpLayout {
        skaddr: field("skaddr")?,
        oldstate: field("oldstate")?,
        newstate: field("newstate")?,
        sport: field("sport")?,
        dport: field("dport")?,
        family: field("family")?,
        protocol: field("protocol")?,
        saddr: field("saddr")?,
        daddr: field("daddr")?,
        saddr_v6: field("saddr_v6")?,
        daddr_v6: field("daddr_v6")?,
        valid: 1,
        skaddr_size: size(&["skaddr"])?,
        state_size: size(&["oldstate", "newstate"])?,
        port_size: size(&["sport", "dport"])?,
        family_size: size(&["family"])?,
        protocol_size: size(&["protocol"])?,
    })
}

/// Offsets of `tcp:tcp_receive_reset`'s fields, from its format file: the socket, and its
/// destination port where the record has one of a size the program reads.
pub(super) fn layout_of_reset_tp(fields: &StdHashMap<String, tracefs::Field>) -> ResetTpLayout {
    let Some(skaddr) = fields.get("skaddr") else {
        return ResetTpLayout::default();
    };
    let dport = fields
        .get("dport")
        .filter(|f| [1, 2, 4, 8].contains(&f.size));
    ResetTpLayout {
        skaddr: skaddr.offset,
        dport: dport.map_or(0, |f| f.offset),
        port_size: dport.map_or(0, |f| f.size),
        valid: 1,
    }
}

/// Where a task's cgroup names are in this kernel (see [`TaskLayout`]). The cpu controller's
/// entry is optional: a kernel without it still names the v2 cgroup.
pub fn task_layout(b: &btf::Btf) -> Result<TaskLayout, btf::BtfError> {
    let cpu = b
        .enum_value("cgroup_subsys_id", "cpu_cgrp_id")
        .and_then(|id| Ok(b.member_offset("css_set", "subsys")? + 8 * id));
    Ok(TaskLayout {
        task_cgroups: b.member_offset("task_struct", "cgroups")?,
        css_set_dfl_cgrp: b.member_offset("css_set", "dfl_cgrp")?,
        css_set_cpu: cpu.as_ref().map_or(0, |&o| o),
        css_cgroup: b.member_offset("cgroup_subsys_state", "cgroup")?,
        cgroup_kn: b.member_offset("cgroup", "kn")?,
        kn_name: b.member_offset("kernfs_node", "name")?,
        // Renamed `__parent` in 6.15 (kernfs: RCU-protected parent).
        kn_parent: b
            .member_offset("kernfs_node", "__parent")
            .or_else(|_| b.member_offset("kernfs_node", "parent"))?,
        has_cpu: u32::from(cpu.is_ok()),
        valid: 1,
        _pad: 0,
    })
}

/// Where the BTF hook finds its fields in this kernel's `struct sock`.
pub fn sock_layout(b: &btf::Btf) -> Result<SockLayout, btf::BtfError> {
    let common = b.member_offset("sock", "__sk_common")?;
    let at = |member: &str| b.member_offset("sock_common", member).map(|o| common + o);
    let (proto_bits, proto_size) = b.member_bits("sock", "sk_protocol")?;
    if proto_size > 16 || proto_bits % 32 + proto_size > 32 {
        return Err(btf::BtfError::Malformed(
            "sock.sk_protocol is not a small integer",
        ));
    }
    let v6 = at("skc_v6_daddr").and_then(|d| Ok((d, at("skc_v6_rcv_saddr")?)));
    // `SOCK_INODE(socket)`: the inode allocated right after the socket in `socket_alloc`.
    let ino = (|| {
        let sk_socket = b.member_offset("sock", "sk_socket")?;
        let socket = b.member_offset("socket_alloc", "socket")?;
        let inode = b.member_offset("socket_alloc", "vfs_inode")?;
        let i_ino = b.member_offset("inode", "i_ino")?;
        let delta = (inode + i_ino)
            .checked_sub(socket)
            .ok_or(btf::BtfError::Malformed("socket_alloc has its inode first"))?;
        Ok::<_, btf::BtfError>((sk_socket, delta))
    })();
    Ok(SockLayout {
        dport: at("skc_dport")?,
        sport: b.member_offset("inet_sock", "inet_sport")?,
        num: at("skc_num")?,
        family: at("skc_family")?,
        state: at("skc_state")?,
        daddr: at("skc_daddr")?,
        saddr: at("skc_rcv_saddr")?,
        daddr_v6: v6.as_ref().map_or(0, |v| v.0),
        saddr_v6: v6.as_ref().map_or(0, |v| v.1),
        protocol_word: proto_bits / 32 * 4,
        protocol_shift: proto_bits % 32,
        protocol_mask: (1u32 << proto_size) - 1,
        has_v6: u32::from(v6.is_ok()),
        sk_socket: ino.as_ref().map_or(0, |i| i.0),
        socket_ino: ino.as_ref().map_or(0, |i| i.1),
        has_ino: u32::from(ino.is_ok()),
        err: b.member_offset("sock", "sk_err")?,
        valid: 1,
    })
}
