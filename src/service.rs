//! Running under a service manager: systemd's readiness protocol (`sd_notify`) without
//! libsystemd.
//!
//! With `Type=notify` systemd passes `NOTIFY_SOCKET`, the path of a Unix datagram socket
//! (a leading `@` names one in the abstract namespace). A state change is one datagram of
//! newline-separated `KEY=VALUE` lines: `READY=1` once the RPC socket and the listeners of
//! the initial configuration are up, `STOPPING=1` when shutdown begins, `STATUS=...` for
//! `systemctl status`. Without `NOTIFY_SOCKET` every call does nothing.

use crate::reactor::AppHandle;
use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Where notifications go: `NOTIFY_SOCKET`'s value, if set and non-empty.
pub fn notify_socket() -> Option<String> {
    std::env::var("NOTIFY_SOCKET")
        .ok()
        .filter(|s| !s.is_empty())
}

fn address(path: &str) -> io::Result<SocketAddr> {
    if let Some(name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(name.as_bytes())
    } else if path.starts_with('/') {
        SocketAddr::from_pathname(path)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("NOTIFY_SOCKET {path:?} is neither a path nor an abstract name (@...)"),
        ))
    }
}

/// Sends `state` (newline-separated `KEY=VALUE` lines) to the socket at `path`.
pub fn notify_to(path: &str, state: &str) -> io::Result<()> {
    let addr = address(path)?;
    let sock = UnixDatagram::unbound()?;
    // Never wait on a receiver that does not read (this may run on the main reactor).
    sock.set_nonblocking(true)?;
    let sent = sock.send_to_addr(state.as_bytes(), &addr)?;
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "notification truncated",
        ));
    }
    Ok(())
}

/// Sends `state` to the service manager if there is one (`Ok(false)` when not).
pub fn notify(state: &str) -> io::Result<bool> {
    match notify_socket() {
        Some(path) => notify_to(&path, state).map(|()| true),
        None => Ok(false),
    }
}

/// Tells the service manager pollux is ready (`READY=1`, with its PID and a status line);
/// a failure is logged, not fatal.
pub fn notify_ready(status: &str) {
    let state = format!("READY=1\nMAINPID={}\nSTATUS={status}\n", std::process::id());
    report(notify(&state), "READY=1");
}

/// Tells the service manager pollux is stopping.
pub fn notify_stopping() {
    report(notify("STOPPING=1\nSTATUS=stopping\n"), "STOPPING=1");
}

/// Arranges for `STOPPING=1` to be sent when `app` begins to shut down (first of its
/// shutdown hooks), if there is a service manager.
pub fn notify_stopping_on_shutdown(app: &AppHandle) {
    if notify_socket().is_none() {
        return;
    }
    let _ = app.send_to(app.main_core(), || {
        crate::reactor::register_shutdown_hook("sd_notify", |done| {
            notify_stopping();
            done()
        })
    });
}

fn report(r: io::Result<bool>, what: &str) {
    match r {
        Ok(true) => tracing::debug!(target: "pollux::app", "sent {what} to the service manager"),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(target: "pollux::app", error = %e, "could not send {what} to NOTIFY_SOCKET")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_and_abstract_sockets_receive_the_datagram() {
        let dir = std::env::temp_dir().join(format!("pollux-notify-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        notify_to(path.to_str().unwrap(), "READY=1\n").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\n");
        let _ = std::fs::remove_dir_all(&dir);

        use std::os::linux::net::SocketAddrExt;
        let name = format!("pollux-notify-test-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
            .unwrap();
        notify_to(&format!("@{name}"), "STOPPING=1\n").unwrap();
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1\n");
    }

    #[test]
    fn a_relative_path_is_refused() {
        assert!(notify_to("relative.sock", "READY=1").is_err());
    }
}
