//! Small pieces with no home of their own: run IDs, clocks, durations,
//! the host name and atomic file writes.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `SPARKWING_HOME`, else `~/.sparkwing`.
pub fn home_dir() -> anyhow::Result<std::path::PathBuf> {
    if let Some(h) = std::env::var_os("SPARKWING_HOME").filter(|v| !v.is_empty()) {
        return Ok(std::path::PathBuf::from(h));
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(h) => Ok(std::path::PathBuf::from(h).join(".sparkwing")),
        None => anyhow::bail!("neither SPARKWING_HOME nor HOME is set; set SPARKWING_HOME to a directory for sparkwing's state"),
    }
}

pub use sparkwing_outbox::host::{hostname, now_ms, pid_alive};

/// A byte count for people: `512 B`, `1.5 KiB`, `3.2 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The process's async runtime (one per process: the command builds it
/// once): two worker threads, IO and timers. Blocking SQLite work goes to
/// `spawn_blocking`, never onto these workers.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A new run ID: a ULID (48 bits of milliseconds, 80 random bits, Crockford
/// base32, 26 characters). IDs sort by creation time as plain strings.
pub fn new_run_id() -> String {
    ulid_from(now_ms() as u64, random_u128())
}

fn ulid_from(ms: u64, random: u128) -> String {
    let value: u128 = ((ms as u128 & 0xFFFF_FFFF_FFFF) << 80) | (random & ((1u128 << 80) - 1));
    (0..26)
        .rev()
        .map(|i| CROCKFORD[((value >> (i * 5)) & 31) as usize] as char)
        .collect()
}

fn random_u128() -> u128 {
    let mut buf = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_ok()
    {
        return u128::from_le_bytes(buf);
    }
    // No /dev/urandom: mix the clock, the pid and a counter.
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let c = COUNTER.fetch_add(1, Ordering::Relaxed) as u128;
    nanos ^ ((std::process::id() as u128) << 64) ^ (c << 96)
}

/// Parses `90s`, `10m`, `1h30m`, `7d`, `500ms` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    let hint = "use a number with a unit, e.g. 500ms, 90s, 10m, 1h30m or 7d";
    if s.is_empty() {
        return Err(format!("empty duration: {hint}"));
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return Err(format!("invalid duration `{text}`: {hint}"));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration `{text}`: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(86_400)),
            _ => return Err(format!("invalid duration `{text}`: {hint}")),
        };
        total = total.saturating_add(part);
    }
    Ok(total)
}

/// A short human form of a duration: `4ms`, `1.52s`, `3m07s`, `2h05m`.
pub fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.2}s", d.as_secs_f64())
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

/// UTC `YYYY-MM-DDTHH:MM:SS.mmmZ` for a Unix millisecond time.
pub fn rfc3339_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// An exclusive `flock` on `path` (created if missing) without waiting:
/// `None` while another process holds it. The kernel drops the lock when
/// the returned file is closed or its process dies.
pub fn try_flock(path: &Path) -> anyhow::Result<Option<std::fs::File>> {
    use anyhow::Context;
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: a valid open descriptor; LOCK_NB never blocks.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(Some(f));
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(None)
    } else {
        Err(err).with_context(|| format!("locking {}", path.display()))
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same
/// directory, fsynced, then renamed over the target.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}-{}", std::process::id(), now_ms()));
    let result = (|| {
        // Private to the user, like everything in SPARKWING_HOME.
        let mut f = std::os::unix::fs::OpenOptionsExt::mode(
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true),
            0o600,
        )
        .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Creates `dir` (and missing parents) readable by the user only (0700),
/// and a database file at `file` in it, empty and 0600, when missing: SQLite
/// gives its `-wal` and `-shm` files the database's mode.
pub fn private_db_file(dir: &Path, file: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(file)
        .map(drop)
}

/// Longest cell of a text table, in characters.
const MAX_CELL: usize = 200;

/// One value for a line of text output (a table cell, a `runs show`
/// field): control characters escaped, newlines included, and cut with `…`
/// past [`MAX_CELL`] characters. Values may come from a remote.
/// Text from elsewhere (a server's error, a remote's message) as one line:
/// secrets masked, every control character escaped (newlines too, so it
/// cannot forge a line of ours), cut at `max` characters.
pub fn one_line(s: &str, max: usize) -> String {
    escape_controls(&clip(&crate::profile::scrub(s), max), &[])
}

pub fn cell(s: &str) -> String {
    escape_controls(&clip(s, MAX_CELL), &[])
}

/// Left-aligned columns for text tables. A row of one cell is a note: it
/// is printed as it is and does not widen the columns. Cells may come from
/// a remote: control characters (escape sequences, newlines) are shown
/// escaped and long cells are cut with `…`.
pub fn table(rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| cell(c)).collect())
        .collect();
    let rows = &rows;
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter(|r| r.len() > 1)
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut s = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                if i + 1 == r.len() {
                    cell.clone()
                } else {
                    format!("{cell:<w$}", w = widths[i])
                }
            })
            .collect();
        s.push_str(line.join("  ").trim_end());
        s.push('\n');
    }
    s
}

/// At most `max` characters of `s` (on a character boundary), with `…`
/// when cut: for values from outside the process shown in a message.
pub use sparkwing_sync::doc::clip;

/// `s` with control characters (escape sequences, carriage returns) shown
/// as `\u{..}` escapes, so text from a remote cannot drive the terminal.
/// A line for the terminal: secrets masked ([`crate::profile::scrub`]) and
/// control characters escaped ([`sanitize`]).
pub fn clean(s: &str) -> String {
    sanitize(&crate::profile::scrub(s))
}

/// `eprintln!` through [`clean`]: every diagnostic sparkwing prints about a
/// run, the sync engine or the dashboard goes through it, so a URL's
/// credentials or a remote's escape sequences never reach the terminal.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        eprintln!("{}", $crate::util::clean(&format!($($arg)*)))
    };
}

pub fn sanitize(s: &str) -> String {
    escape_controls(s, &['\n', '\t'])
}

/// `s` with every control and bidirectional formatting character but those
/// in `keep` shown as a `\u{..}` escape.
fn escape_controls(s: &str, keep: &[char]) -> String {
    s.chars()
        .flat_map(|c| {
            if sparkwing_sync::doc::is_deceptive(c) && !keep.contains(&c) {
                c.escape_unicode().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

#[cfg(test)]
mod size_tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_their_units_or_say_what_is_wrong() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("10GiB"), Ok(10 << 30));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("1.5 KiB"), Ok(1536));
        assert_eq!(parse_size("2k"), Ok(2000));
        assert!(parse_size("ten").unwrap_err().contains("not a size"));
        assert!(parse_size("3 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_db_and_written_files_are_private_to_the_user() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        let store = crate::local::store::Store::open(&home).unwrap();
        drop(store);
        write_atomic(&home.join("dashboard.json"), b"{}").unwrap();
        let mode = |p: &str| {
            std::fs::metadata(home.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(""), 0o700);
        assert_eq!(mode("state.db"), 0o600);
        assert_eq!(mode("dashboard.json"), 0o600);
    }

    #[test]
    fn table_cells_from_a_remote_cannot_drive_the_terminal_or_panic() {
        let long = "p".repeat(70_000);
        let out = table(&[
            vec!["RUN".into(), "PIPELINE".into(), "STATUS".into()],
            vec![
                "R".into(),
                long,
                "\u{1b}]0;title\u{7}\u{1b}[2J\u{9b}x\nfake row".into(),
            ],
        ]);
        assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
        assert_eq!(out.lines().count(), 2, "{out}");
        assert!(out.contains(&format!("{}…", "p".repeat(MAX_CELL))));
    }

    #[test]
    fn durations_parse_and_reject() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(604_800));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("12").unwrap(), Duration::from_secs(12));
        for bad in ["", "7x", "h", "1.5h", "-3s", "10 m"] {
            assert!(parse_duration(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn run_ids_sort_by_time_and_are_unique() {
        let a = ulid_from(1_000, u128::MAX);
        let b = ulid_from(1_001, 0);
        assert!(a < b);
        assert_eq!(a.len(), 26);
        let ids: std::collections::HashSet<_> = (0..1000).map(|_| new_run_id()).collect();
        assert_eq!(ids.len(), 1000);
    }

    #[test]
    fn timestamps_format_as_utc() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_795_795_200_123), "2026-11-27T16:00:00.123Z");
    }
}

/// `10GiB`, `500MB`, `1.5 GiB`, `4096`: a size in bytes (K, M, G, T are
/// powers of 1000; Ki, Mi, Gi, Ti of 1024; the trailing `B` is optional).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a size (e.g. 10GiB, 500MB, 4096)"))?;
    let unit = unit.trim();
    let unit = unit.strip_suffix(['B', 'b']).unwrap_or(unit);
    let mult: u64 = match unit {
        "" => 1,
        "K" | "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => {
            return Err(format!(
                "`{text}`: unknown unit `{unit}` (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)"
            ))
        }
    };
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("`{text}` is out of range"));
    }
    Ok(bytes as u64)
}

/// Flushes the filesystem holding `path` to disk (`syncfs`): one call
/// instead of an fsync per file written there.
pub fn sync_filesystem(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let dir = std::fs::File::open(path)?;
    // SAFETY: a valid, open descriptor.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Makes the allocator give buffers of 1 MiB and more back to the system
/// when they are freed (glibc: a fixed mmap threshold; by default it rises
/// after the first large free, and freed pack and frame buffers then stay
/// in each thread's arena). The cache moves packs of 8 MiB through several
/// threads; without this the process keeps every thread's high-water mark.
pub fn return_large_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called before any thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}
