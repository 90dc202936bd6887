//! Push wake-ups between the processes that share one `SPARKWING_HOME`: an
//! enqueue tells every listening sync daemon at once, instead of leaving it
//! to notice on its next poll of `outbox.db`'s data version.
//!
//! A listener is a Unix datagram socket at `SPARKWING_HOME/wake/<pid>.<n>.sock`
//! (the directory is private, 0700). [`notify`] sends one byte to each
//! socket there without blocking; a socket nobody listens on any more (its
//! daemon was killed) refuses the datagram and is removed. Everything here
//! is best effort: a lost wake-up costs one poll interval, never an entry,
//! because the listener's owner still polls as a fallback.

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The directory under `SPARKWING_HOME` that holds the listeners' sockets.
pub const DIR: &str = "wake";

/// A bound listener; its socket file is removed when it is dropped.
#[derive(Debug)]
pub struct WakeListener {
    sock: UnixDatagram,
    path: PathBuf,
}

impl WakeListener {
    /// Binds a new listener under `home`. Fails where Unix sockets cannot
    /// be made (a path longer than the kernel's 108 bytes, a file system
    /// without sockets): the caller then polls only.
    pub fn bind(home: &Path) -> io::Result<WakeListener> {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = home.join(DIR);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let path = dir.join(format!(
            "{}.{}.sock",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        // A file left by a killed process that had this pid.
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path)?;
        sock.set_nonblocking(true)?;
        Ok(WakeListener { sock, path })
    }

    /// The socket, for an async runtime to wait on (non-blocking already).
    pub fn socket(&self) -> io::Result<UnixDatagram> {
        self.sock.try_clone()
    }
}

impl Drop for WakeListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Wakes every listener under `home`, without blocking and without failing.
pub fn notify(home: &Path) {
    let Ok(entries) = std::fs::read_dir(home.join(DIR)) else {
        return;
    };
    let Ok(out) = UnixDatagram::unbound() else {
        return;
    };
    let _ = out.set_nonblocking(true);
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "sock") {
            continue;
        }
        match out.send_to(&[1], &path) {
            // Nobody is bound there any more: its process is gone.
            Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => {
                let _ = std::fs::remove_file(&path);
            }
            // A full queue already holds a wake-up; anything else: polling
            // covers it.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notify_reaches_every_listener_and_drops_dead_sockets() {
        let home = tempfile::tempdir().unwrap();
        let (a, b) = (
            WakeListener::bind(home.path()).unwrap(),
            WakeListener::bind(home.path()).unwrap(),
        );
        // A daemon killed with -9: its socket file stays, nobody listens.
        let dead = home.path().join(DIR).join("4000000.0.sock");
        drop(UnixDatagram::bind(&dead).unwrap());
        assert!(dead.exists());
        let mut buf = [0u8; 8];
        assert!(a.sock.recv(&mut buf).is_err(), "nothing yet");
        notify(home.path());
        assert_eq!(a.sock.recv(&mut buf).unwrap(), 1);
        assert_eq!(b.sock.recv(&mut buf).unwrap(), 1);
        assert!(!dead.exists(), "a dead listener's socket is removed");
        let path = a.path.clone();
        drop(a);
        assert!(!path.exists(), "a dropped listener removes its socket");
        notify(home.path());
        assert_eq!(b.sock.recv(&mut buf).unwrap(), 1);
    }

    #[test]
    fn notify_without_listeners_is_harmless() {
        let home = tempfile::tempdir().unwrap();
        notify(home.path());
        notify(&home.path().join("missing"));
    }
}
