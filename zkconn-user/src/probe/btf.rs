//! Struct member offsets from the running kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! The Rust BPF toolchain emits no CO-RE relocations, so a field read through a kernel
//! pointer must take its offset from the kernel it runs on, at load time, never from a
//! compile-time layout. This is a reader for just that: find a struct by name and the byte
//! offset of one of its members (looking through anonymous structs and unions).
//! Format: <https://docs.kernel.org/bpf/btf.html>.

use std::path::Path;

const MAGIC: u16 = 0xeb9f;

// BTF kinds (include/uapi/linux/btf.h).
const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;

/// Why an offset could not be had.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum BtfError {
    #[error("the kernel exposes no BTF at {0} (CONFIG_DEBUG_INFO_BTF is off)")]
    Missing(String),
    #[error("the kernel's BTF is malformed: {0}")]
    Malformed(&'static str),
    #[error("the kernel's BTF has no struct {0}")]
    NoStruct(String),
    #[error("struct {0} has no member {1} in this kernel")]
    NoMember(String, String),
    #[error("{0}.{1} is a bit field")]
    BitField(String, String),
}

struct Type {
    name_off: u32,
    kind: u32,
    /// The header's third word: a size in bytes (int, struct, union, enum) or the id of
    /// the type referred to (typedef, const, volatile, pointer ...).
    size_or_type: u32,
    /// Members of a struct or union: (name_off, type id, bit offset, bit-field size).
    members: Vec<(u32, u32, u32, u32)>,
}

/// A parsed BTF blob: its types (id 1 is index 0) and string section.
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, BtfError> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or(BtfError::Malformed("truncated"))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, BtfError> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(BtfError::Malformed("truncated"))
}

impl Btf {
    /// Reads the running kernel's BTF.
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        let path = Path::new("/sys/kernel/btf/vmlinux");
        let data =
            std::fs::read(path).map_err(|_| BtfError::Missing(path.display().to_string()))?;
        Self::parse(&data)
    }

    /// Parses a little-endian BTF blob (the only byte order of the kernels zkconn runs on).
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        if u16_at(data, 0)? != MAGIC {
            return Err(BtfError::Malformed("bad magic (or big-endian BTF)"));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let types_at = hdr_len + type_off;
        let type_bytes = data
            .get(types_at..types_at + type_len)
            .ok_or(BtfError::Malformed("type section out of bounds"))?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(BtfError::Malformed("string section out of bounds"))?
            .to_vec();
        let mut types = Vec::new();
        let mut at = 0;
        while at < type_bytes.len() {
            let name_off = u32_at(type_bytes, at)?;
            let info = u32_at(type_bytes, at + 4)?;
            let size_or_type = u32_at(type_bytes, at + 8)?;
            at += 12;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = at + i * 12;
                        let offset = u32_at(type_bytes, m + 8)?;
                        let (bits, size) = if kind_flag {
                            (offset & 0x00ff_ffff, offset >> 24)
                        } else {
                            (offset, 0)
                        };
                        members.push((
                            u32_at(type_bytes, m)?,
                            u32_at(type_bytes, m + 4)?,
                            bits,
                            size,
                        ));
                    }
                    vlen * 12
                }
                KIND_ENUM => {
                    // Enumerators as (name_off, value): kept for `enum_value`.
                    for i in 0..vlen {
                        let m = at + i * 8;
                        members.push((u32_at(type_bytes, m)?, u32_at(type_bytes, m + 4)?, 0, 0));
                    }
                    vlen * 8
                }
                KIND_FUNC_PROTO => vlen * 8,
                KIND_DATASEC | KIND_ENUM64 => vlen * 12,
                0..=19 => 0,
                _ => return Err(BtfError::Malformed("unknown type kind")),
            };
            at += extra;
            types.push(Type {
                name_off,
                kind,
                size_or_type,
                members,
            });
        }
        Ok(Self { types, strings })
    }

    fn name(&self, off: u32) -> &[u8] {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        &rest[..end]
    }

    fn get(&self, id: u32) -> Option<&Type> {
        self.types.get((id as usize).checked_sub(1)?)
    }

    /// The byte offset of `member` in `struct name`.
    pub fn member_offset(&self, name: &str, member: &str) -> Result<u32, BtfError> {
        let ty = self
            .types
            .iter()
            .find(|t| t.kind == KIND_STRUCT && self.name(t.name_off) == name.as_bytes())
            .ok_or_else(|| BtfError::NoStruct(name.into()))?;
        match self.find_member_typed(ty, member.as_bytes(), 0, 0) {
            Some((bits, 0, _)) if bits % 8 == 0 => Ok(bits / 8),
            Some(_) => Err(BtfError::BitField(name.into(), member.into())),
            None => Err(BtfError::NoMember(name.into(), member.into())),
        }
    }

    /// The value of enumerator `member` of `enum name` (32-bit enums, as the kernel's
    /// `cgroup_subsys_id` is).
    pub fn enum_value(&self, name: &str, member: &str) -> Result<u32, BtfError> {
        let ty = self
            .types
            .iter()
            .find(|t| t.kind == KIND_ENUM && self.name(t.name_off) == name.as_bytes())
            .ok_or_else(|| BtfError::NoStruct(format!("enum {name}")))?;
        ty.members
            .iter()
            .find(|m| self.name(m.0) == member.as_bytes())
            .map(|m| m.1)
            .ok_or_else(|| BtfError::NoMember(format!("enum {name}"), member.into()))
    }

    /// Where `member` of `struct name` sits, as bits: (offset, size). Works for bit fields
    /// and plain integer members alike (typedefs and qualifiers are looked through).
    pub fn member_bits(&self, name: &str, member: &str) -> Result<(u32, u32), BtfError> {
        let ty = self
            .types
            .iter()
            .find(|t| t.kind == KIND_STRUCT && self.name(t.name_off) == name.as_bytes())
            .ok_or_else(|| BtfError::NoStruct(name.into()))?;
        let (bits, size, type_id) = self
            .find_member_typed(ty, member.as_bytes(), 0, 0)
            .ok_or_else(|| BtfError::NoMember(name.into(), member.into()))?;
        if size != 0 {
            return Ok((bits, size));
        }
        let bytes = self
            .resolved_size(type_id)
            .ok_or(BtfError::Malformed("member of unsized type"))?;
        Ok((bits, bytes * 8))
    }

    /// The size in bytes of an integer, enum or pointer type, through typedefs and qualifiers.
    fn resolved_size(&self, mut id: u32) -> Option<u32> {
        for _ in 0..16 {
            let ty = self.get(id)?;
            match ty.kind {
                KIND_INT | KIND_ENUM | KIND_ENUM64 | KIND_STRUCT | KIND_UNION => {
                    return Some(ty.size_or_type);
                }
                KIND_PTR => return Some(8),
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = ty.size_or_type;
                }
                _ => return None,
            }
        }
        None
    }

    /// Depth-first through anonymous struct/union members; `depth` bounds the recursion.
    /// Returns (bit offset, bit-field size or 0, member type id).
    fn find_member_typed(
        &self,
        ty: &Type,
        member: &[u8],
        base: u32,
        depth: u32,
    ) -> Option<(u32, u32, u32)> {
        if depth > 8 {
            return None;
        }
        for &(name_off, type_id, bits, size) in &ty.members {
            if name_off != 0 {
                if self.name(name_off) == member {
                    return Some((base + bits, size, type_id));
                }
                continue;
            }
            let inner = self.get(type_id)?;
            if matches!(inner.kind, KIND_STRUCT | KIND_UNION)
                && let Some(found) = self.find_member_typed(inner, member, base + bits, depth + 1)
            {
                return Some(found);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob: `struct inner { u64 a; }`, and
    /// `struct tcp_sock { int x; union { u64 pad; struct inner in; }; u64 bytes_received; int bf:3; }`.
    fn blob() -> Vec<u8> {
        let mut strings =
            b"\0int\0u64\0x\0a\0inner\0in\0pad\0tcp_sock\0bytes_received\0bf\0".to_vec();
        let s = |name: &str, strings: &[u8]| -> u32 {
            let needle = [name.as_bytes(), b"\0"].concat();
            strings
                .windows(needle.len())
                .position(|w| w == needle.as_slice())
                .unwrap() as u32
        };
        let mut types = Vec::new();
        let mut ty = |name: u32, kind: u32, vlen: u32, flag: bool, size: u32, extra: &[u32]| {
            types.extend(name.to_le_bytes());
            types.extend(((kind << 24) | vlen | (u32::from(flag) << 31)).to_le_bytes());
            types.extend(size.to_le_bytes());
            for e in extra {
                types.extend(e.to_le_bytes());
            }
        };
        let st = &strings;
        // 1: int
        ty(s("int", st), KIND_INT, 0, false, 4, &[32]);
        // 2: u64
        ty(s("u64", st), KIND_INT, 0, false, 8, &[64]);
        // 3: struct inner { u64 a @0 }
        ty(
            s("inner", st),
            KIND_STRUCT,
            1,
            false,
            8,
            &[s("a", st), 2, 0],
        );
        // 4: anonymous union { u64 pad @0; struct inner in @0 }
        ty(
            0,
            KIND_UNION,
            2,
            false,
            8,
            &[s("pad", st), 2, 0, s("in", st), 3, 0],
        );
        // 5: struct tcp_sock, bit-field flag set: offsets carry sizes in the top byte
        ty(
            s("tcp_sock", st),
            KIND_STRUCT,
            4,
            true,
            32,
            &[
                s("x", st),
                1,
                0,
                0,
                4,
                64,
                s("bytes_received", st),
                2,
                128,
                s("bf", st),
                1,
                (3 << 24) | 192,
            ],
        );
        strings.push(0);
        let mut out = Vec::new();
        out.extend(MAGIC.to_le_bytes());
        out.push(1); // version
        out.push(0); // flags
        out.extend(24u32.to_le_bytes()); // hdr_len
        out.extend(0u32.to_le_bytes()); // type_off
        out.extend((types.len() as u32).to_le_bytes());
        out.extend((types.len() as u32).to_le_bytes()); // str_off
        out.extend((strings.len() as u32).to_le_bytes());
        out.extend(types);
        out.extend(strings);
        out
    }

    #[test]
    fn offsets_of_direct_and_nested_members() {
        let btf = Btf::parse(&blob()).unwrap();
        assert_eq!(btf.member_offset("tcp_sock", "bytes_received"), Ok(16));
        assert_eq!(btf.member_offset("tcp_sock", "x"), Ok(0));
        // Through the anonymous union and into... only anonymous members are looked through.
        assert_eq!(btf.member_offset("tcp_sock", "pad"), Ok(8));
        assert_eq!(
            btf.member_offset("tcp_sock", "a"),
            Err(BtfError::NoMember("tcp_sock".into(), "a".into()))
        );
        assert_eq!(
            btf.member_offset("tcp_sock", "bf"),
            Err(BtfError::BitField("tcp_sock".into(), "bf".into()))
        );
        assert_eq!(
            btf.member_offset("udp_sock", "x"),
            Err(BtfError::NoStruct("udp_sock".into()))
        );
    }

    #[test]
    fn bits_of_plain_and_bit_field_members() {
        let btf = Btf::parse(&blob()).unwrap();
        assert_eq!(btf.member_bits("tcp_sock", "bytes_received"), Ok((128, 64)));
        assert_eq!(btf.member_bits("tcp_sock", "x"), Ok((0, 32)));
        assert_eq!(btf.member_bits("tcp_sock", "bf"), Ok((192, 3)));
        assert_eq!(btf.member_bits("tcp_sock", "pad"), Ok((64, 64)));
    }

    #[test]
    fn garbage_is_refused_not_a_panic() {
        assert!(Btf::parse(b"").is_err());
        assert!(Btf::parse(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]).is_err());
        let mut truncated = blob();
        truncated.truncate(60);
        assert!(Btf::parse(&truncated).is_err());
    }

    #[test]
    fn this_kernel_has_the_sock_fields_of_the_btf_hook() {
        // Ground truth from the kernel's own headers (include/net/sock.h): struct sock
        // starts with struct sock_common, whose first member is the address pair and whose
        // port pair follows it; sk_protocol is 16 bits since 5.6, 8 before.
        if let Ok(btf) = Btf::from_sys_fs() {
            assert_eq!(btf.member_offset("sock", "__sk_common"), Ok(0));
            assert_eq!(btf.member_offset("sock_common", "skc_daddr"), Ok(0));
            assert_eq!(btf.member_offset("sock_common", "skc_rcv_saddr"), Ok(4));
            assert_eq!(btf.member_offset("sock_common", "skc_dport"), Ok(12));
            assert_eq!(btf.member_offset("sock_common", "skc_num"), Ok(14));
            let (_, bits) = btf.member_bits("sock", "sk_protocol").unwrap();
            assert!(bits == 16 || bits == 8, "{bits}");
        }
    }

    #[test]
    fn this_kernels_enums_are_read() {
        // include/linux/cgroup_subsys.h lists cpuset first, then cpu (both built in on
        // every distribution kernel zkconn runs on).
        if let Ok(btf) = Btf::from_sys_fs() {
            assert_eq!(btf.enum_value("cgroup_subsys_id", "cpuset_cgrp_id"), Ok(0));
            assert_eq!(btf.enum_value("cgroup_subsys_id", "cpu_cgrp_id"), Ok(1));
            assert!(btf.enum_value("cgroup_subsys_id", "no_such_id").is_err());
            assert!(
                btf.member_offset("inet_sock", "inet_sport")
                    .is_ok_and(|o| o > 0)
            );
        }
    }

    #[test]
    fn this_kernel_has_tcp_sock_bytes_received() {
        // Every kernel zkconn supports with BTF has the field (since 4.1); the offset is
        // whatever this kernel says, and never 0 (the struct starts with struct sock).
        if let Ok(btf) = Btf::from_sys_fs() {
            let off = btf.member_offset("tcp_sock", "bytes_received").unwrap();
            assert!(off > 0);
        }
    }
}
