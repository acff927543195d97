//! Reading configuration files (zoo.cfg, rules, the web configuration) without surprises.
//!
//! Owns: refusing what is not a regular file or is too large, in words for the operator.
//! Must not: parse anything.

use std::{io::Read as _, path::Path};

/// The text of a configuration file (zoo.cfg, rules), read without surprises: a FIFO,
/// device or directory is refused rather than read (it could block or never end), and so is
/// a file over `max` bytes. The error says which, in words for the operator.
pub fn read_config(path: &Path, max: u64) -> std::io::Result<String> {
    String::from_utf8(read_config_bytes(path, max)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// [`read_config`] as bytes (zoo.cfg is Latin-1, as Java reads it).
pub fn read_config_bytes(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::{io, os::unix::fs::OpenOptionsExt as _};
    // Non-blocking: opening a FIFO nobody writes to returns at once instead of waiting.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file (a FIFO, device or directory is not read as configuration)",
        ));
    }
    let too_big = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "larger than {} KiB, more than any configuration needs",
                max / 1024
            ),
        )
    };
    if meta.len() > max {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    // A file growing while it is read stops at the limit too.
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(too_big());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::read_config;

    #[test]
    fn only_small_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("zoo.cfg");
        std::fs::write(&small, "clientPort=2181\n").unwrap();
        assert_eq!(read_config(&small, 1024).unwrap(), "clientPort=2181\n");
        let big = dir.path().join("big.cfg");
        std::fs::write(&big, vec![b'#'; 2048]).unwrap();
        assert!(
            read_config(&big, 1024)
                .unwrap_err()
                .to_string()
                .contains("larger than 1 KiB")
        );
        // Neither a device that never ends nor a FIFO nobody writes to is read.
        for path in [std::path::Path::new("/dev/zero"), dir.path()] {
            let e = read_config(path, 1024).unwrap_err().to_string();
            assert!(e.contains("not a regular file"), "{e}");
        }
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_config(&fifo, 1024).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }
}
