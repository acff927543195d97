//! The history store (`daemon --history`): the snapshot documents of past samples, kept on
//! disk across restarts, so `zkconn history --at TIME` can show what held the connections
//! at 03:10 after the container that held them is gone.
//!
//! The store is a directory of append-only segments, one per hour (or per daemon start),
//! named by the time of their first record. A segment starts with a header (magic and
//! schema version); each record is its length, a CRC-32 of its payload, and the payload:
//! the sample's time and its snapshot document, deflate-compressed JSON. A torn write
//! (a crash, a full disk) leaves a record whose length or checksum does not hold: readers
//! stop at it, so at most that sample is lost, never the store. Retention: segments past
//! `max_age` go; past `thin_after` a segment is rewritten keeping one sample a minute; then
//! the oldest go until the store is under `max_bytes`.
//!
//! Owns: the files, their format, retention, the lock that keeps a second writer out, and
//! finding the document at a time. Must not: build documents (it is handed snapshots) or
//! block the daemon's refresh for long (a sample costs one compressed append).

use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufReader, Read, Write},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, anyhow, bail};

/// The first bytes of every segment.
const MAGIC: &[u8; 8] = b"ZKCONNH\x01";
/// The record layout and document schema this build writes and reads.
pub const SCHEMA: u32 = 1;
/// A record longer than this is corrupt (a document is tens of kilobytes compressed).
const RECORD_MAX: u32 = 64 << 20;
/// A new segment at least this often.
const SEGMENT_SPAN: Duration = Duration::from_secs(3600);
/// A sample stands for the time after it at least this long (older samples are one a
/// minute).
pub const MIN_SLACK: Duration = Duration::from_secs(90);
/// And at most this long, whatever interval a segment's header claims.
pub const MAX_SLACK: Duration = Duration::from_secs(2 * 3600);
/// A document inflates to at most this (the largest a soak produced was 10 MiB).
const DOCUMENT_MAX: u64 = 256 << 20;
/// And holds at most this many values (commas and colons): a few hundred MiB parsed.
const VALUES_MAX: usize = 8 << 20;

/// How much the store keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub max_age: Duration,
    /// Older samples are thinned to one a minute.
    pub thin_after: Duration,
    pub max_bytes: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(7 * 86_400),
            thin_after: Duration::from_secs(86_400),
            max_bytes: 256 << 20,
        }
    }
}

/// One segment file, by the time (ms since the epoch) its first record has.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Segment {
    start_ms: i64,
    path: PathBuf,
}

fn segment_name(start_ms: i64) -> String {
    format!("{start_ms:015}.zkh")
}

/// The segments of `dir`, oldest first (other files are left alone).
fn segments(dir: &Path) -> io::Result<Vec<Segment>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".zkh")) else {
            continue;
        };
        if let Ok(start_ms) = stem.parse::<i64>() {
            out.push(Segment {
                start_ms,
                path: entry.path(),
            });
        }
    }
    // Only regular files (a FIFO would block the reader, a directory is no segment); one
    // gone since it was listed (retention) is skipped.
    out.retain(|s| fs::metadata(&s.path).is_ok_and(|m| m.is_file()));
    out.sort();
    Ok(out)
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The writer: holds the store's lock while the daemon runs.
pub struct Writer {
    dir: PathBuf,
    retention: Retention,
    /// How often a sample is taken (kept in each segment's header: readers allow twice
    /// this between samples).
    every: Duration,
    /// Keeps the lock (released when the file closes).
    _lock: File,
    current: Option<(File, Segment, u64)>,
    /// Why the last append failed (logged when it starts and when it ends).
    failing: Option<String>,
}

impl Writer {
    /// Opens (or makes) the store at `dir` for writing. Refused while another process
    /// writes to it, with a sentence that says so.
    pub fn open(dir: &Path, retention: Retention, every: Duration) -> anyhow::Result<Self> {
        fs::create_dir_all(dir)
            .with_context(|| format!("--history {}: cannot make the directory", dir.display()))?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("--history {}: cannot open its lock", dir.display()))?;
        // SAFETY: flock on a descriptor this function owns; released when `lock` closes.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            bail!(
                "--history {}: another zkconn daemon records to this store; give this one \
                 another directory, or stop the other",
                dir.display()
            );
        }
        // Every existing segment must be one this build reads: a newer one is not written
        // over. One without a header (a crash as it was made) is moved aside.
        for seg in segments(dir)? {
            if check_header(&seg.path)?.is_none() {
                let aside = seg.path.with_extension("zkh.corrupt");
                tracing::warn!(
                    "--history {}: {} has no header (cut short as it was made); moved aside \
                     to {}",
                    dir.display(),
                    seg.path.display(),
                    aside.display()
                );
                fs::rename(&seg.path, &aside)?;
            }
        }
        let mut w = Self {
            dir: dir.to_owned(),
            retention,
            every,
            _lock: lock,
            current: None,
            failing: None,
        };
        w.enforce(now_ms())
            .with_context(|| format!("--history {}: retention", dir.display()))?;
        Ok(w)
    }

    /// Appends `doc` (a snapshot document) as the sample at `at_ms`. Returns why it could
    /// not; a failure is logged when it starts and when it ends, and the daemon goes on.
    pub fn append(&mut self, at_ms: i64, json: &[u8]) -> Option<String> {
        match self.try_append(at_ms, json) {
            Ok(()) => {
                if self.failing.take().is_some() {
                    tracing::info!("--history {}: recording again", self.dir.display());
                }
                None
            }
            Err(e) => {
                let why = format!("cannot record to {}: {e:#}", self.dir.display());
                if self.failing.is_none() {
                    tracing::error!(
                        "--history {why}; the daemon goes on counting, and /healthz says so \
                         until it works again"
                    );
                }
                // A record half written stays torn at the end of its segment (readers stop
                // there); the next sample starts a new segment.
                self.current = None;
                self.failing = Some(why.clone());
                Some(why)
            }
        }
    }

    /// Why recording fails, while it does.
    pub fn failing_why(&self) -> Option<String> {
        self.failing.clone()
    }

    fn try_append(&mut self, at_ms: i64, json: &[u8]) -> anyhow::Result<()> {
        // A new segment each hour, or sooner when one grows past a sixteenth of the store's
        // size: retention removes whole segments, never the one being written.
        let roll = match &self.current {
            None => true,
            Some((_, seg, size)) => {
                // Also when the clock stepped back before the segment's start: a segment's
                // name stays the earliest time in it.
                !(0..SEGMENT_SPAN.as_millis() as i64).contains(&(at_ms - seg.start_ms))
                    || *size >= self.retention.max_bytes / 16
            }
        };
        if roll {
            self.current = None;
            self.enforce(at_ms)?;
            let seg = Segment {
                start_ms: at_ms,
                path: self.dir.join(segment_name(at_ms)),
            };
            let mut file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&seg.path)
                .with_context(|| format!("cannot make {}", seg.path.display()))?;
            let mut header = Vec::with_capacity(16);
            header.extend_from_slice(MAGIC);
            header.extend_from_slice(&SCHEMA.to_le_bytes());
            let every = u32::try_from(self.every.as_secs()).unwrap_or(u32::MAX);
            header.extend_from_slice(&every.to_le_bytes());
            file.write_all(&header)?;
            self.current = Some((file, seg, header.len() as u64));
        }
        let record = encode(at_ms, json)?;
        let Some((file, _, size)) = &mut self.current else {
            bail!("no segment open");
        };
        file.write_all(&record)?;
        *size += record.len() as u64;
        Ok(())
    }

    /// Retention at `now_ms`: segments past the age go, old ones are thinned, then the
    /// oldest go until the store fits. The segment being written is never touched.
    fn enforce(&mut self, now_ms: i64) -> anyhow::Result<()> {
        let current = self.current.as_ref().map(|(_, s, _)| s.path.clone());
        let all: Vec<Segment> = segments(&self.dir)?
            .into_iter()
            .filter(|s| Some(&s.path) != current.as_ref())
            .collect();
        let age_ms = |s: &Segment| now_ms - s.start_ms;
        let max_age = self.retention.max_age.as_millis() as i64;
        let thin_after = self.retention.thin_after.as_millis() as i64;
        let mut kept = Vec::new();
        for seg in all {
            // A segment's records end before the next begins: its end is within the span.
            if age_ms(&seg) - SEGMENT_SPAN.as_millis() as i64 > max_age {
                remove(&seg.path)?;
            } else {
                if age_ms(&seg) > thin_after {
                    thin(&seg.path)?;
                }
                kept.push(seg);
            }
        }
        let size = |p: &Path| fs::metadata(p).map_or(0, |m| m.len());
        let mut total: u64 =
            kept.iter().map(|s| size(&s.path)).sum::<u64>() + current.as_deref().map_or(0, size);
        for seg in &kept {
            if total <= self.retention.max_bytes {
                break;
            }
            total = total.saturating_sub(size(&seg.path));
            remove(&seg.path)?;
        }
        Ok(())
    }
}

fn remove(path: &Path) -> anyhow::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(anyhow!("cannot remove {}: {e}", path.display())),
    }
}

/// Keeps one record a minute of the segment at `path` (rewritten beside it, then renamed
/// over it: a crash leaves the old one whole).
fn thin(path: &Path) -> anyhow::Result<()> {
    let Some(read) = read_segment(path, true)? else {
        return Ok(());
    };
    let mut last_minute = None;
    let mut kept = Vec::new();
    let mut dropped = false;
    for rec in read.records {
        let (at_ms, raw) = (rec.at_ms, rec.raw.unwrap_or_default());
        let minute = at_ms.div_euclid(60_000);
        if last_minute == Some(minute) {
            dropped = true;
            continue;
        }
        last_minute = Some(minute);
        kept.push((at_ms, raw));
    }
    if !dropped {
        return Ok(());
    }
    let tmp = path.with_extension("zkh.tmp");
    {
        let mut out = File::create(&tmp)?;
        out.write_all(&read.header)?;
        for (at_ms, raw) in kept {
            out.write_all(&frame(at_ms, &raw))?;
        }
        out.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    Ok(())
}

/// A record: length, CRC-32 of the payload, payload (time, compressed document).
fn encode(at_ms: i64, json: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(json)?;
    Ok(frame(at_ms, &z.finish()?))
}

fn frame(at_ms: i64, compressed: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(8 + compressed.len());
    payload.extend_from_slice(&at_ms.to_le_bytes());
    payload.extend_from_slice(compressed);
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// What is wrong with a segment's header.
#[derive(Debug)]
enum BadHeader {
    /// Not a segment, or cut short (a crash as it was made): its samples are lost.
    Corrupt,
    /// A newer zkconn's: never read as ours nor written over.
    Newer(u32),
}

/// A segment's header, if it is one this build reads.
fn header_of(path: &Path) -> anyhow::Result<Result<Vec<u8>, BadHeader>> {
    let mut header = [0u8; 16];
    let Ok(mut f) = File::open(path) else {
        // Gone since it was listed, or unreadable: not a segment this read can use.
        return Ok(Err(BadHeader::Corrupt));
    };
    let n = read_full(&mut f, &mut header)?;
    if n < 16 || &header[..8] != MAGIC {
        return Ok(Err(BadHeader::Corrupt));
    }
    let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if version > SCHEMA {
        return Ok(Err(BadHeader::Newer(version)));
    }
    Ok(Ok(header.to_vec()))
}

/// The sentence for a segment of a newer zkconn.
fn newer(path: &Path, version: u32) -> anyhow::Error {
    anyhow!(
        "{} was written by a newer zkconn (history schema {version}; this one reads {SCHEMA}): \
         read the store with that version, or give this one another --history directory",
        path.display()
    )
}

/// A segment's header, or why it cannot be read: corrupt (`None`), or an error for a newer
/// one.
fn check_header(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    match header_of(path)? {
        Ok(h) => Ok(Some(h)),
        Err(BadHeader::Corrupt) => Ok(None),
        Err(BadHeader::Newer(v)) => Err(newer(path, v)),
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// One whole record of a segment.
struct Record {
    at_ms: i64,
    /// Where its compressed document starts in the segment, and its length.
    offset: u64,
    len: usize,
    /// The CRC-32 of its payload (time and document), checked again when it is loaded.
    crc: u32,
    /// The compressed document, when the read kept it.
    raw: Option<Vec<u8>>,
}

/// What reading one segment found.
struct SegmentRead {
    header: Vec<u8>,
    /// Every whole record, in order.
    records: Vec<Record>,
    /// Bytes after the last whole record that do not make one (a torn write).
    torn: bool,
}

impl SegmentRead {
    /// The interval its writer sampled at, as its header says.
    fn every(&self) -> Duration {
        let h = &self.header;
        Duration::from_secs(u64::from(u32::from_le_bytes([h[12], h[13], h[14], h[15]])))
    }
}

/// Reads a segment, keeping each record's document when `keep` (else only where it is);
/// `None` when it has no header (corrupt from its start).
fn read_segment(path: &Path, keep: bool) -> anyhow::Result<Option<SegmentRead>> {
    let Some(header) = check_header(path)? else {
        return Ok(None);
    };
    let Ok(file) = File::open(path) else {
        return Ok(None);
    };
    let mut r = BufReader::new(file);
    let mut skip = [0u8; 16];
    read_full(&mut r, &mut skip)?;
    let mut out = SegmentRead {
        header,
        records: Vec::new(),
        torn: false,
    };
    let mut at = 16u64;
    let mut payload = Vec::new();
    loop {
        let mut head = [0u8; 8];
        let n = read_full(&mut r, &mut head)?;
        if n == 0 {
            break;
        }
        if n < 8 {
            out.torn = true;
            break;
        }
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if !(8..=RECORD_MAX).contains(&len) {
            out.torn = true;
            break;
        }
        payload.resize(len as usize, 0);
        if read_full(&mut r, &mut payload)? < payload.len() || crc32fast::hash(&payload) != crc {
            out.torn = true;
            break;
        }
        let mut t = [0u8; 8];
        t.copy_from_slice(&payload[..8]);
        out.records.push(Record {
            at_ms: i64::from_le_bytes(t),
            offset: at + 16,
            len: len as usize - 8,
            crc,
            raw: keep.then(|| payload[8..].to_vec()),
        });
        at += 8 + u64::from(len);
    }
    Ok(Some(out))
}

/// The compressed document of `rec` in the segment at `path`, checked against its CRC (the
/// writer may have thinned the segment since it was indexed).
fn load(path: &Path, rec: &Record) -> anyhow::Result<Vec<u8>> {
    if let Some(raw) = &rec.raw {
        return Ok(raw.clone());
    }
    let mut f = File::open(path).context("it is gone")?;
    io::Seek::seek(&mut f, io::SeekFrom::Start(rec.offset - 8))?;
    let mut payload = vec![0u8; 8 + rec.len];
    if read_full(&mut f, &mut payload)? < payload.len() || crc32fast::hash(&payload) != rec.crc {
        bail!("its segment changed while it was read (retention thinned it); ask again");
    }
    Ok(payload.split_off(8))
}

fn decode(compressed: &[u8]) -> anyhow::Result<serde_json::Value> {
    let mut json = Vec::new();
    flate2::read::DeflateDecoder::new(compressed)
        .take(DOCUMENT_MAX + 1)
        .read_to_end(&mut json)
        .context("it does not decompress")?;
    if json.len() as u64 > DOCUMENT_MAX {
        bail!("it inflates past {} MiB", DOCUMENT_MAX >> 20);
    }
    // Parsed, each value costs tens of bytes whatever its text: a document of nothing but
    // `0,` would take gigabytes. A real one has a value per ten bytes or more.
    let values = json.iter().filter(|b| matches!(b, b',' | b':')).count();
    if values > VALUES_MAX {
        bail!("it holds more than {VALUES_MAX} values");
    }
    let doc: serde_json::Value =
        serde_json::from_slice(&json).context("it is not a JSON document")?;
    if !doc.is_object() || doc.get("schema").is_none() {
        bail!("it is not a snapshot document");
    }
    Ok(doc)
}

/// The samples a store holds: its first and last time, and what could not be read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
    pub samples: u64,
    /// Segments with a torn or corrupt tail (their records before it are read).
    pub torn: u64,
    /// Segments with no header, not read at all.
    pub corrupt: u64,
}

/// Reads the store at `dir` (no lock: the writer only appends).
pub struct Reader {
    dir: PathBuf,
}

impl Reader {
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        if let Err(e) = fs::read_dir(dir)
            && e.kind() == io::ErrorKind::PermissionDenied
        {
            bail!(
                "--history {}: cannot read the store ({e}); read it as root or as the user the \
                 daemon runs as",
                dir.display()
            );
        }
        if !dir.is_dir() {
            bail!(
                "--history {}: no history store there (a daemon writes one with --history)",
                dir.display()
            );
        }
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every whole record of the store, oldest first, with where it is; and the span.
    pub fn catalog(&self) -> anyhow::Result<Catalog> {
        let mut index = Catalog {
            dir: self.dir.clone(),
            ..Catalog::default()
        };
        for seg in segments(&self.dir)? {
            let Some(read) = read_segment(&seg.path, false)? else {
                index.span.corrupt += 1;
                continue;
            };
            let span = &mut index.span;
            span.torn += u64::from(read.torn);
            let slack = (read.every() * 2).clamp(MIN_SLACK, MAX_SLACK);
            for rec in read.records {
                let t = rec.at_ms;
                span.samples += 1;
                span.first_ms = Some(span.first_ms.map_or(t, |f: i64| f.min(t)));
                span.last_ms = Some(span.last_ms.map_or(t, |l: i64| l.max(t)));
                index.entries.push((slack, index.paths.len(), rec));
            }
            index.paths.push(seg.path);
        }
        // Segments are in time order unless the clock stepped: sort by the records' own.
        index.entries.sort_by_key(|(_, _, rec)| rec.at_ms);
        Ok(index)
    }

    /// The times the store holds.
    pub fn span(&self) -> anyhow::Result<Span> {
        Ok(self.catalog()?.span)
    }

    /// The sample at `at_ms`: the latest one at or before it, in any segment (a clock
    /// stepped back or forward leaves samples out of their segment's order), if `at_ms` is
    /// within twice that segment's interval (at least [`MIN_SLACK`], at most [`MAX_SLACK`])
    /// after it; else a sentence giving the range the store holds. A sample that does not
    /// decode is skipped for the one before it (and counted).
    pub fn at(&self, at_ms: i64) -> anyhow::Result<Sample> {
        let index = self.catalog()?;
        let mut undecodable = Vec::new();
        let upto = index
            .entries
            .partition_point(|(_, _, rec)| rec.at_ms <= at_ms);
        for (slack, seg, rec) in index.entries[..upto].iter().rev() {
            let within = at_ms
                .checked_sub(rec.at_ms)
                .is_some_and(|d| d <= slack.as_millis() as i64);
            if !within {
                break;
            }
            match index.decode(*seg, rec) {
                Ok(doc) => {
                    return Ok(Sample {
                        at_ms: rec.at_ms,
                        doc,
                        span: index.span,
                        undecodable,
                    });
                }
                Err(why) => undecodable.push(why),
            }
        }
        let mut why = format!(
            "nothing recorded at {}: {}",
            rfc3339(at_ms),
            holds(&self.dir, &index.span)
        );
        if !undecodable.is_empty() {
            why.push_str(&format!("; not readable: {}", undecodable.join("; ")));
        }
        bail!("{why}")
    }

    /// Every sample from `from_ms` to `to_ms` (both included), oldest first, handed to `each`
    /// one at a time (a day of samples is never all in memory). Samples that do not decode
    /// are skipped and named in the result. A range the store holds nothing of is refused
    /// with a sentence giving the range it does.
    pub fn each(
        &self,
        from_ms: i64,
        to_ms: i64,
        mut each: impl FnMut(i64, serde_json::Value) -> anyhow::Result<()>,
    ) -> anyhow::Result<Walked> {
        let index = self.catalog()?;
        let start = index
            .entries
            .partition_point(|(_, _, rec)| rec.at_ms < from_ms);
        let end = index
            .entries
            .partition_point(|(_, _, rec)| rec.at_ms <= to_ms);
        let mut walked = Walked {
            span: index.span,
            ..Walked::default()
        };
        for (_, seg, rec) in &index.entries[start..end.max(start)] {
            match index.decode(*seg, rec) {
                Ok(doc) => {
                    walked.samples += 1;
                    each(rec.at_ms, doc)?;
                }
                Err(why) => walked.undecodable.push(why),
            }
        }
        if walked.samples == 0 {
            let mut why = format!(
                "nothing recorded from {} to {}: {}",
                rfc3339(from_ms),
                rfc3339(to_ms),
                holds(&self.dir, &index.span)
            );
            if !walked.undecodable.is_empty() {
                why.push_str(&format!(
                    "; not readable: {}",
                    walked.undecodable.join("; ")
                ));
            }
            bail!("{why}");
        }
        Ok(walked)
    }
}

/// What the store at `dir` holds, in a sentence (for one that does not hold what was asked).
pub fn holds(dir: &Path, span: &Span) -> String {
    let mut holds = match (span.first_ms, span.last_ms) {
        (Some(f), Some(l)) => format!(
            "the store at {} holds {} to {} ({} sample{})",
            dir.display(),
            rfc3339(f),
            rfc3339(l),
            span.samples,
            if span.samples == 1 { "" } else { "s" }
        ),
        _ => format!("the store at {} holds no sample yet", dir.display()),
    };
    if span.torn + span.corrupt > 0 {
        holds.push_str(&format!(
            "; {} segment(s) end in a torn or corrupt record and {} could not be read at all",
            span.torn, span.corrupt
        ));
    }
    holds
}

/// Where every record of a store is, oldest first: what `top --history` steps through.
#[derive(Default)]
pub struct Catalog {
    dir: PathBuf,
    /// (the slack its segment allows, its segment in `paths`, the record).
    entries: Vec<(Duration, usize, Record)>,
    paths: Vec<PathBuf>,
    pub span: Span,
}

impl Catalog {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The time of the `i`th sample.
    pub fn time(&self, i: usize) -> Option<i64> {
        self.entries.get(i).map(|(_, _, rec)| rec.at_ms)
    }

    /// The sample standing for `at_ms`: the latest at or before it, if `at_ms` is within its
    /// segment's slack after it; else a sentence giving the range the store holds.
    pub fn find(&self, at_ms: i64) -> Result<usize, String> {
        let upto = self
            .entries
            .partition_point(|(_, _, rec)| rec.at_ms <= at_ms);
        match upto.checked_sub(1).map(|i| (i, &self.entries[i])) {
            Some((i, (slack, _, rec)))
                if at_ms
                    .checked_sub(rec.at_ms)
                    .is_some_and(|d| d <= slack.as_millis() as i64) =>
            {
                Ok(i)
            }
            _ => Err(format!(
                "nothing recorded at {}: {}",
                rfc3339(at_ms),
                holds(&self.dir, &self.span)
            )),
        }
    }

    /// The document of the `i`th sample, or a sentence naming it and why it cannot be read.
    pub fn doc(&self, i: usize) -> Result<serde_json::Value, String> {
        let Some((_, seg, rec)) = self.entries.get(i) else {
            return Err(format!("no sample {i}: the store holds {}", self.len()));
        };
        self.decode(*seg, rec)
    }

    /// The document of a record, or a sentence naming it and why it cannot be read.
    fn decode(&self, seg: usize, rec: &Record) -> Result<serde_json::Value, String> {
        let path = &self.paths[seg];
        load(path, rec).and_then(|raw| decode(&raw)).map_err(|e| {
            format!(
                "the sample of {} in {}: {e:#}",
                rfc3339(rec.at_ms),
                path.display()
            )
        })
    }
}

/// What [`Reader::each`] went through.
#[derive(Debug, Default)]
pub struct Walked {
    pub span: Span,
    /// Samples handed on.
    pub samples: u64,
    /// Samples in the range that did not decode, one sentence each.
    pub undecodable: Vec<String>,
}

/// What [`Reader::at`] found.
#[derive(Debug)]
pub struct Sample {
    pub at_ms: i64,
    pub doc: serde_json::Value,
    /// The whole store, as that read found it.
    pub span: Span,
    /// Later samples within reach that did not decode, one sentence each.
    pub undecodable: Vec<String>,
}

/// `ms` since the epoch as RFC 3339, UTC, to the second.
pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// TIME as `history --at` takes it: RFC 3339 (`2026-12-03T03:10:00Z`), `HH:MM[:SS]` (today,
/// local time), `-2h` (before `now_ms`), or `now`. In ms since the epoch.
pub fn parse_time(text: &str, now_ms: i64, local_offset_secs: i64) -> Result<i64, String> {
    parse_time_with(text, now_ms, &|h, m, sec, days_back| {
        let local_now = now_ms.div_euclid(1000) + local_offset_secs;
        let midnight = local_now - local_now.rem_euclid(86_400) - 86_400 * i64::from(days_back);
        Some(midnight + i64::from(h * 3600 + m * 60 + sec) - local_offset_secs)
    })
}

/// As [`parse_time`], `HH:MM[:SS]` placed by `local` (seconds since the epoch of that time
/// of day, `days_back` days before today, in local time): the C library's, which knows the
/// day's daylight-saving offset. A time of day later than now is yesterday's.
pub fn parse_time_with(
    text: &str,
    now_ms: i64,
    local: &dyn Fn(u32, u32, u32, u32) -> Option<i64>,
) -> Result<i64, String> {
    let t = text.trim();
    if t == "now" {
        return Ok(now_ms);
    }
    if let Some(ago) = t.strip_prefix('-') {
        let d = crate::cli::parse_duration(ago).map_err(|e| format!("{text:?}: {e}"))?;
        return Ok(now_ms.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)));
    }
    if let Ok(at) = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339) {
        return i64::try_from(at.unix_timestamp_nanos() / 1_000_000)
            .map_err(|_| format!("{text:?} is out of range"));
    }
    let parts: Vec<&str> = t.split(':').collect();
    if (2..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|p| (1..=2).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
        && let Some(nums) = parts
            .iter()
            .map(|p| p.parse::<u32>().ok())
            .collect::<Option<Vec<u32>>>()
        && nums[0] < 24
        && nums[1] < 60
        && nums.get(2).is_none_or(|s| *s < 60)
    {
        let (h, m, sec) = (nums[0], nums[1], nums.get(2).copied().unwrap_or(0));
        let secs = match local(h, m, sec, 0) {
            Some(today) if today * 1000 <= now_ms => Some(today),
            _ => local(h, m, sec, 1),
        };
        return secs
            .map(|s| s * 1000)
            .ok_or_else(|| format!("{text:?} cannot be placed in local time"));
    }
    Err(format!(
        "{text:?} is not a time; give RFC 3339 (2026-12-03T03:10:00Z), HH:MM (today, local \
         time), -2h (before now), or now"
    ))
}

/// Seconds since the epoch of `h:m:s` local time, `days_back` days before today (the C
/// library's time zone, with that day's daylight-saving rule).
pub fn local_clock(h: u32, m: u32, s: u32, days_back: u32) -> Option<i64> {
    // SAFETY: time(NULL) only returns the time.
    let now = unsafe { libc::time(std::ptr::null_mut()) };
    // SAFETY: an all-zero `tm` is a valid value of this plain C struct.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: localtime_r reads `now` and writes only into `tm`, both on this stack frame.
    if unsafe { libc::localtime_r(&now, &mut tm) }.is_null() {
        return None;
    }
    tm.tm_hour = i32::try_from(h).ok()?;
    tm.tm_min = i32::try_from(m).ok()?;
    tm.tm_sec = i32::try_from(s).ok()?;
    tm.tm_mday -= i32::try_from(days_back).ok()?;
    // Let mktime find whether daylight-saving time is in force on that day.
    tm.tm_isdst = -1;
    // SAFETY: mktime normalises and reads `tm`, a valid struct on this stack frame.
    let t = unsafe { libc::mktime(&mut tm) };
    (t != -1).then_some(t)
}

/// The daemon's recorder: a [`Writer`] and how often it takes a sample.
pub struct Recorder {
    writer: Writer,
    every: Duration,
    last: Option<std::time::Instant>,
}

impl Recorder {
    pub fn open(dir: &Path, every: Duration, retention: Retention) -> anyhow::Result<Self> {
        Ok(Self {
            writer: Writer::open(dir, retention, every)?,
            every,
            last: None,
        })
    }

    /// Records `json` (the snapshot document just published) when a sample is due. Returns
    /// why recording fails, while it does.
    pub fn offer(&mut self, json: &[u8]) -> Option<String> {
        // A tenth of the interval early still counts as due: refreshes paced at the same
        // interval arrive a hair before it.
        let early = (self.every / 10).max(Duration::from_millis(50));
        if self.last.is_some_and(|t| t.elapsed() + early < self.every) {
            return self.writer.failing_why();
        }
        self.last = Some(std::time::Instant::now());
        self.writer.append(now_ms(), json)
    }
}

/// `zkconn history`: the document the store holds at `--at`, as JSON or as tables.
pub fn show(out: &mut impl Write, dir: &Path, at: &str, json: bool) -> anyhow::Result<()> {
    let now = now_ms();
    let at_ms = parse_time_with(at, now, &local_clock).map_err(|e| anyhow!("--at {e}"))?;
    let reader = Reader::open(dir)?;
    let Sample {
        at_ms: sample_ms,
        mut doc,
        span,
        undecodable,
    } = reader.at(at_ms)?;
    if let Some(obj) = doc.as_object_mut() {
        obj.insert(
            "history".into(),
            serde_json::json!({
                "store": dir.display().to_string(),
                "asked": rfc3339(at_ms),
                "sample": rfc3339(sample_ms),
                "torn_segments": span.torn,
                "unreadable_segments": span.corrupt,
                "undecodable": undecodable,
            }),
        );
    }
    for why in &undecodable {
        tracing::warn!("skipped {why}");
    }
    if span.torn + span.corrupt > 0 {
        tracing::warn!(
            "{} segment(s) of the store end in a torn or corrupt record (the samples after it \
             are lost) and {} could not be read at all",
            span.torn,
            span.corrupt
        );
    }
    if json {
        serde_json::to_writer_pretty(&mut *out, &doc)?;
        writeln!(out)?;
    } else {
        crate::output::text_of_document(
            out,
            &doc,
            &format!(
                "from the history store {} (asked {}, the sample of {})",
                dir.display(),
                rfc3339(at_ms),
                rfc3339(sample_ms)
            ),
        )?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    const HOUR: i64 = 3_600_000;

    fn doc(n: u64) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"schema": "zkconn.snapshot/v1", "n": n})).unwrap()
    }

    fn n_of(v: &serde_json::Value) -> u64 {
        v["n"].as_u64().unwrap()
    }

    fn writer(dir: &Path) -> Writer {
        Writer::open(dir, Retention::default(), Duration::from_secs(10)).unwrap()
    }

    /// Samples come back by time, across segments and a reopening (a restart), and a time
    /// the store does not hold is refused with the range it does.
    #[test]
    fn a_sample_is_found_by_time_across_segments_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = now_ms() - 3 * HOUR;
        {
            let mut w = writer(dir.path());
            for i in 0..5 {
                assert_eq!(w.append(t0 + i * 10_000, &doc(i as u64)), None);
            }
            // An hour later: a segment of its own.
            assert_eq!(w.append(t0 + HOUR + 5_000, &doc(5)), None);
        }
        let mut again = writer(dir.path());
        assert_eq!(again.append(t0 + 2 * HOUR, &doc(6)), None);
        assert_eq!(segments(dir.path()).unwrap().len(), 3);
        let r = Reader::open(dir.path()).unwrap();
        assert_eq!(n_of(&r.at(t0 + 25_000).unwrap().doc), 2);
        assert_eq!(r.at(t0 + 40_000).unwrap().at_ms, t0 + 40_000);
        assert_eq!(n_of(&r.at(t0 + HOUR + 60_000).unwrap().doc), 5);
        let before = r.at(t0 - 1).unwrap_err().to_string();
        assert!(before.contains("holds"), "{before}");
        assert!(before.contains("7 samples"), "{before}");
        // Past the last sample by more than the slack: not "the same as then".
        let gap = r.at(t0 + 30 * 60_000).unwrap_err().to_string();
        assert!(gap.starts_with("nothing recorded at"), "{gap}");
    }

    /// A clock stepped back starts a new segment, and either way the reader takes the
    /// latest sample at or before the time asked, whatever segment it is in; a document
    /// that inflates past its bound, or is no snapshot document, is skipped for the sample
    /// before it; a FIFO named like a segment does not block the reader.
    #[test]
    fn clock_steps_bombs_and_non_documents_do_not_mislead_the_reader() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = now_ms() - HOUR;
        {
            let mut w = writer(dir.path());
            w.append(t0 + 10_000, &doc(1));
            w.append(t0 + 20_000, &doc(2));
            // The clock steps back 15 s.
            w.append(t0 + 5_000, &doc(3));
        }
        assert_eq!(segments(dir.path()).unwrap().len(), 2);
        let r = Reader::open(dir.path()).unwrap();
        assert_eq!(n_of(&r.at(t0 + 6_000).unwrap().doc), 3);
        assert_eq!(n_of(&r.at(t0 + 25_000).unwrap().doc), 2);
        // A later sample that is no snapshot document, and one that is a bomb.
        let junk = serde_json::to_vec(&serde_json::json!([1, 2])).unwrap();
        let bomb = vec![b' '; (DOCUMENT_MAX + 1) as usize];
        {
            let mut w = writer(dir.path());
            w.append(t0 + 30_000, &junk);
            w.append(t0 + 31_000, &bomb);
        }
        let s = r.at(t0 + 32_000).unwrap();
        assert_eq!(n_of(&s.doc), 2, "the one before them");
        assert_eq!(s.undecodable.len(), 2, "{:?}", s.undecodable);
        assert!(
            s.undecodable[0].contains("inflates past 256 MiB"),
            "{:?}",
            s.undecodable
        );
        assert!(
            s.undecodable[1].contains("not a snapshot document"),
            "{:?}",
            s.undecodable
        );
        let fifo =
            std::ffi::CString::new(dir.path().join(segment_name(t0 + 40_000)).to_str().unwrap())
                .unwrap();
        // SAFETY: mkfifo reads the path, a valid C string.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        fs::create_dir(dir.path().join(segment_name(t0 + 41_000))).unwrap();
        assert_eq!(n_of(&r.at(t0 + 45_000).unwrap().doc), 2);
    }

    /// A record cut short (a crash, a full disk) loses that sample only: the ones before
    /// it read, and the next writer starts a new segment rather than appending after it.
    #[test]
    fn a_torn_record_loses_that_sample_only() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = now_ms() - HOUR;
        {
            let mut w = writer(dir.path());
            for i in 0..3 {
                w.append(t0 + i * 1000, &doc(i as u64));
            }
        }
        let seg = segments(dir.path()).unwrap().remove(0).path;
        let len = fs::metadata(&seg).unwrap().len();
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(len - 3).unwrap();
        let r = Reader::open(dir.path()).unwrap();
        let span = r.span().unwrap();
        assert_eq!((span.samples, span.torn), (2, 1));
        assert_eq!(n_of(&r.at(t0 + 2500).unwrap().doc), 1);
        let mut w = writer(dir.path());
        assert_eq!(w.append(t0 + 5000, &doc(9)), None);
        assert_eq!(n_of(&r.at(t0 + 5000).unwrap().doc), 9);
        // Garbage in a checksum: the record is not read as a sample.
        let mut bytes = fs::read(&seg).unwrap();
        let last = bytes.len() - 1;
        bytes[20] ^= 0xff;
        bytes[last] ^= 0xff;
        fs::write(&seg, bytes).unwrap();
        assert_eq!(r.span().unwrap().samples, 1, "only the later segment's");
    }

    /// A segment of a newer zkconn is neither read nor written over; one without a header
    /// is moved aside by the writer and skipped by readers; a second writer is refused.
    #[test]
    fn a_newer_store_a_headerless_segment_and_a_second_writer() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = now_ms() - HOUR;
        let mut w = writer(dir.path());
        w.append(t0, &doc(1));
        let second = Writer::open(dir.path(), Retention::default(), Duration::from_secs(10));
        let e = second.err().unwrap().to_string();
        assert!(
            e.contains("another zkconn daemon records to this store"),
            "{e}"
        );
        drop(w);
        fs::write(dir.path().join(segment_name(t0 + 1)), b"").unwrap();
        let r = Reader::open(dir.path()).unwrap();
        assert_eq!(r.span().unwrap().corrupt, 1);
        drop(writer(dir.path()));
        assert!(
            dir.path()
                .join(format!("{}.corrupt", segment_name(t0 + 1)))
                .exists()
        );
        let mut newer = Vec::from(*MAGIC);
        newer.extend_from_slice(&99u32.to_le_bytes());
        newer.extend_from_slice(&10u32.to_le_bytes());
        fs::write(dir.path().join(segment_name(t0 + 2)), newer).unwrap();
        let e = Writer::open(dir.path(), Retention::default(), Duration::from_secs(10))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("written by a newer zkconn (history schema 99; this one reads 1)"),
            "{e}"
        );
        let e = r.at(t0 + 5).unwrap_err().to_string();
        assert!(e.contains("newer zkconn"), "{e}");
    }

    /// Past its age a segment goes; past `thin_after` it keeps one sample a minute; past the
    /// size the oldest go first.
    #[test]
    fn retention_by_age_thinning_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let now = now_ms();
        let retention = Retention {
            max_age: Duration::from_secs(3 * 3600),
            thin_after: Duration::from_secs(3600),
            max_bytes: u64::MAX,
        };
        {
            let mut w = Writer::open(dir.path(), retention, Duration::from_secs(10)).unwrap();
            // 10 h ago (goes), 2 h ago (thinned), now.
            for base in [now - 10 * HOUR, now - 2 * HOUR, now - 1000] {
                for i in 0..12 {
                    w.append(base + i * 10_000, &doc(i as u64));
                }
                w.current = None;
            }
        }
        drop(Writer::open(dir.path(), retention, Duration::from_secs(10)).unwrap());
        let r = Reader::open(dir.path()).unwrap();
        let span = r.span().unwrap();
        // 12 samples over 2 minutes thinned to one a minute (2 or 3), 12 recent.
        assert!((14..=15).contains(&span.samples), "{span:?}");
        assert!(span.first_ms.unwrap() >= now - 2 * HOUR, "{span:?}");
        let small = Retention {
            max_bytes: 1,
            ..retention
        };
        drop(Writer::open(dir.path(), small, Duration::from_secs(10)).unwrap());
        assert_eq!(
            segments(dir.path()).unwrap().len(),
            0,
            "every closed segment over the size"
        );
    }

    #[rstest]
    #[case("now", Ok(0))]
    #[case("-2h", Ok(-7_200_000))]
    #[case("-90s", Ok(-90_000))]
    #[case("2026-12-03T03:10:00Z", Ok(1_796_267_400_000 - 1_796_300_000_000))]
    #[case("03:10", Ok(3 * 3_600_000 + 600_000 - 1_796_300_000_000 + 1_796_256_000_000))]
    #[case("25:00", Err(()))]
    #[case("01:-05", Err(()))]
    // Later than now (12:13 UTC): yesterday's.
    #[case("23:50", Ok(1_796_256_000_000 - 86_400_000 + 85_800_000 - 1_796_300_000_000))]
    #[case("soon", Err(()))]
    fn times_as_history_takes_them(#[case] text: &str, #[case] expected: Result<i64, ()>) {
        // 2026-12-03T12:13:20Z, local time UTC.
        let now = 1_796_300_000_000;
        assert_eq!(
            parse_time(text, now, 0).map(|t| t - now).map_err(|_| ()),
            expected
        );
    }
}
