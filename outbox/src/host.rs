//! This host and its processes, as leases and run rows name them: the
//! time, the host name and whether a process is alive. The one copy, used by
//! the outbox's leases and re-exported by the main crate's `util`.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// This machine's host name (asked once per process: status checks call it
/// for every row listed).
pub fn hostname() -> String {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(read_hostname).clone()
}

fn read_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // on success when the name fits, and we stop at the first NUL either way.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Whether a process with this pid exists on this host and has not exited.
/// A zombie (exited, not yet reaped: common when PID 1 does not reap) is
/// not alive, so its leases and runs are taken over at once.
pub fn pid_alive(pid: i64) -> bool {
    if pid <= 0 || pid > i32::MAX as i64 {
        return false;
    }
    // SAFETY: signal 0 performs only the existence and permission check.
    let rc = unsafe { libc::kill(pid as i32, 0) };
    let exists = rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    // The state is the field after the `(comm)` of /proc/PID/stat.
    exists
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 12: the outbox's copy lacked the zombie check, so a zombie's
    /// lease counted as live for its whole term.
    #[test]
    fn a_zombie_is_not_alive() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i64;
        // Exited but not reaped: a zombie until `wait`.
        let start = std::time::Instant::now();
        while !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        }) {
            assert!(start.elapsed().as_secs() < 30, "the child never exited");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!pid_alive(pid), "a zombie is not alive");
        child.wait().unwrap();
        assert!(pid_alive(std::process::id() as i64));
        assert!(!pid_alive(0) && !pid_alive(-1) && !pid_alive(i64::MAX));
    }
}
