//! User names from uids, through the C library (so LDAP and SSSD users resolve as they do
//! for `ps`), cached: a name service is asked at most once per uid.
//!
//! Must not: be called per connection; the source asks once per new process.

use std::{collections::HashMap, ffi::CStr};

/// At most this many uids are remembered; beyond it the cache starts over. Hosts have far
/// fewer users than that; the bound only stops a uid-spraying process growing memory.
const MAX_CACHED: usize = 4096;

#[derive(Debug, Default)]
pub struct Users {
    names: HashMap<u32, Option<String>>,
}

impl Users {
    /// The name of `uid`, or `None` when no name service knows it.
    pub fn name(&mut self, uid: u32) -> Option<String> {
        if let Some(name) = self.names.get(&uid) {
            return name.clone();
        }
        if self.names.len() >= MAX_CACHED {
            self.names.clear();
        }
        let name = lookup(uid);
        self.names.insert(uid, name.clone());
        name
    }
}

fn lookup(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: `passwd` is plain data that getpwuid_r fills in; all-zero is a valid
        // value for it (null pointers, zero ids).
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call, `buf.len()` is the buffer's size, and
        // the strings `pwd` points to live in `buf`, which outlives their use below.
        let rc = unsafe {
            libc::getpwuid_r(
                uid,
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        // SAFETY: on success pw_name points to a NUL-terminated string inside `buf`.
        let name = unsafe { CStr::from_ptr(pwd.pw_name) };
        return Some(name.to_string_lossy().into_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_root_and_unknown_is_none() {
        let mut users = Users::default();
        assert_eq!(users.name(0).as_deref(), Some("root"));
        assert_eq!(users.name(0).as_deref(), Some("root"));
        assert_eq!(users.name(3_999_999_999), None);
    }
}
