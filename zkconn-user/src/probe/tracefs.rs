//! tracefs: where it is (mounting it when absent) and the field layout of a tracepoint.

use std::{
    collections::HashMap,
    ffi::CString,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, anyhow, bail};

/// One field of a tracepoint's `format` file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub offset: u16,
    pub size: u16,
}

/// Parses the `field:` lines of `events/<category>/<name>/format` into name → field.
pub fn parse_format(text: &str) -> HashMap<String, Field> {
    let mut fields = HashMap::new();
    for line in text.lines() {
        let mut decl = None;
        let mut offset = None;
        let mut size = None;
        for part in line.trim().split(';') {
            let part = part.trim();
            if let Some(d) = part.strip_prefix("field:") {
                decl = Some(d);
            } else if let Some(o) = part.strip_prefix("offset:") {
                offset = o.parse().ok();
            } else if let Some(s) = part.strip_prefix("size:") {
                size = s.parse().ok();
            }
        }
        let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) else {
            continue;
        };
        // `__u8 saddr[4]` → `saddr`; `const void * skaddr` → `skaddr`.
        let Some(name) = decl.split_whitespace().last() else {
            continue;
        };
        let name = name
            .split('[')
            .next()
            .unwrap_or(name)
            .trim_start_matches('*');
        fields.insert(name.to_owned(), Field { offset, size });
    }
    fields
}

/// The tracefs directory that holds `events/`, mounting tracefs at `/sys/kernel/tracing`
/// when no mount is found.
pub fn events_root() -> anyhow::Result<PathBuf> {
    for candidate in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if Path::new(candidate).join("events").is_dir() {
            return Ok(PathBuf::from(candidate));
        }
    }
    let target = "/sys/kernel/tracing";
    let c = |s: &str| CString::new(s).map_err(|e| anyhow!("{e}"));
    let (source, dir, fstype) = (c("tracefs")?, c(target)?, c("tracefs")?);
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call; no data
    // argument is passed.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            dir.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        bail!(
            "tracefs is not mounted and mounting it at {target} failed ({err}); mount it with \
             `mount -t tracefs tracefs {target}` (the kernel needs CONFIG_FTRACE)"
        );
    }
    if !Path::new(target).join("events").is_dir() {
        bail!(
            "tracefs mounted at {target} has no events/ directory: the kernel lacks CONFIG_EVENT_TRACING"
        );
    }
    Ok(PathBuf::from(target))
}

/// Reads the layout of `category/name`.
pub fn tracepoint_fields(
    root: &Path,
    category: &str,
    name: &str,
) -> anyhow::Result<HashMap<String, Field>> {
    let path = root.join("events").join(category).join(name).join("format");
    let text = fs::read_to_string(&path).with_context(|| {
        format!(
            "the kernel has no tracepoint {category}:{name} ({} is unreadable)",
            path.display()
        )
    })?;
    Ok(parse_format(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inet_sock_set_state_format() {
        let text = "name: inet_sock_set_state\nID: 1\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;\n\
\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;\n\
\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;\n\
\tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;\n\nprint fmt: \"x\"\n";
        let f = parse_format(text);
        assert_eq!(f["skaddr"], Field { offset: 8, size: 8 });
        assert_eq!(
            f["oldstate"],
            Field {
                offset: 16,
                size: 4
            }
        );
        assert_eq!(
            f["saddr_v6"],
            Field {
                offset: 40,
                size: 16
            }
        );
        assert_eq!(
            f["group_dead"],
            Field {
                offset: 32,
                size: 1
            }
        );
        assert_eq!(f["common_type"], Field { offset: 0, size: 2 });
        assert_eq!(f.len(), 5);
    }
}
