//! Speaking to systemd when it runs zkconn: readiness over `$NOTIFY_SOCKET` (sd_notify(3),
//! for `Type=notify` units) and log lines for the journal when stderr is its stream
//! (`$JOURNAL_STREAM`, systemd.exec(5)): no timestamp of their own (the journal adds one)
//! and the syslog priority as a `<N>` prefix, which the journal reads as the line's
//! priority (sd-daemon(3)).
//!
//! Owns: the two environment variables' protocols. Must not: fail zkconn. A notification
//! that cannot be sent is logged once; without the variables nothing is done.

use std::io;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::{
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    registry::LookupSpan,
};

/// Sends `state` (`READY=1`, `RELOADING=1`, `STOPPING=1`, `STATUS=...`, newline-separated)
/// to systemd, when it asked for notifications. `Ok(false)`: nobody asked.
pub fn notify(state: &str) -> io::Result<bool> {
    notify_to(std::env::var_os("NOTIFY_SOCKET").as_deref(), state)
}

/// [`notify`] to the socket `$NOTIFY_SOCKET` would name.
fn notify_to(path: Option<&std::ffi::OsStr>, state: &str) -> io::Result<bool> {
    use std::os::{linux::net::SocketAddrExt as _, unix::net::UnixDatagram};
    let Some(path) = path else {
        return Ok(false);
    };
    let socket = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    // A name starting with '@' is in the abstract namespace.
    match bytes.strip_prefix(b"@") {
        Some(name) => {
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &addr)?;
        }
        None => {
            socket.send_to(state.as_bytes(), path)?;
        }
    }
    Ok(true)
}

/// [`notify`], logging a failure instead of returning it.
pub fn tell(state: &str) {
    if let Err(e) = notify(state) {
        tracing::warn!(
            "cannot tell systemd {:?} through $NOTIFY_SOCKET: {e}",
            state.lines().next().unwrap_or_default()
        );
    }
}

/// Whether stderr is the journal's stream: `$JOURNAL_STREAM` names its device and inode.
pub fn stderr_is_journal() -> bool {
    use std::os::{fd::AsFd as _, unix::fs::MetadataExt as _};
    let Some(want) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(fd).metadata() else {
        return false;
    };
    want.to_str() == Some(&format!("{}:{}", meta.dev(), meta.ino()))
}

/// Log lines for the journal: `<priority>target: message fields`.
pub struct JournalFormat;

impl<S, N> FormatEvent<S, N> for JournalFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        write!(writer, "<{}>{}: ", priority(*meta.level()), meta.target())?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// syslog(3) priorities: err, warning, info, debug.
fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixDatagram;

    use super::*;

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(
            [
                Level::ERROR,
                Level::WARN,
                Level::INFO,
                Level::DEBUG,
                Level::TRACE
            ]
            .map(priority),
            [3, 4, 6, 7, 7]
        );
    }

    /// Nothing without the variable; the state at a path, then in the abstract namespace.
    #[test]
    fn notifications_reach_the_socket_systemd_names() {
        assert!(!notify_to(None, "READY=1").unwrap());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        assert!(notify_to(Some(path.as_os_str()), "READY=1\nSTATUS=serving").unwrap());
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving");
        let name = format!("zkconn-test-{}", std::process::id());
        use std::os::linux::net::SocketAddrExt as _;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        let at = format!("@{name}");
        assert!(notify_to(Some(at.as_ref()), "STOPPING=1").unwrap());
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }
}
