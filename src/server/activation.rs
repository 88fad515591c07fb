//! A listening socket handed over by the service manager: launchd's `Sockets` (taken with
//! `launch_activate_socket`) on macOS, systemd's socket activation (`LISTEN_FDS`) on Linux.
//! The manager binds the port once and keeps it across the agent's restarts and upgrades, so
//! no other user can take it in between; without one the agent binds `http.listen` itself.
//!
//! systemd's protocol is read here rather than with the `listenfd` crate: that crate takes the
//! descriptors when `LISTEN_PID` is missing (sd_listen_fds(3) requires it to name this
//! process), and clears the variables with `env::remove_var`, unsound once the runtime's
//! threads run. The variables are left as they are: a child sees another pid in `LISTEN_PID`
//! and the socket is close-on-exec.

use std::net::TcpListener;
use std::os::fd::{FromRawFd, RawFd};

use socket2::{Socket, Type};

/// The name of the socket in the launchd job's `Sockets` (what Homebrew's `service do
/// sockets "tcp://…"` calls it too).
pub const LAUNCHD_SOCKET: &str = "listeners";

/// systemd passes its first socket at this descriptor.
const SD_LISTEN_FDS_START: RawFd = 3;

/// Who passed the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Manager {
    Launchd,
    Systemd,
}

impl std::fmt::Display for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Manager::Launchd => "launchd (Sockets)",
            Manager::Systemd => "systemd (LISTEN_FDS)",
        })
    }
}

/// The socket the service manager passed to this process, if it passed one; an error when it
/// passed something the agent cannot serve on (the unit or plist needs fixing).
pub fn take() -> Result<Option<(TcpListener, Manager)>, String> {
    #[cfg(target_os = "macos")]
    if let Some(fd) = launchd::activate(LAUNCHD_SOCKET)? {
        return adopt(fd)
            .map(|l| Some((l, Manager::Launchd)))
            .map_err(|e| format!("the socket launchd passed ({LAUNCHD_SOCKET}): {e}"));
    }
    let var = |k: &str| std::env::var(k).ok();
    let Some(fd) = systemd_fd(
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDS").as_deref(),
        std::process::id(),
    )?
    else {
        return Ok(None);
    };
    adopt(fd)
        .map(|l| Some((l, Manager::Systemd)))
        .map_err(|e| format!("the socket systemd passed (LISTEN_FDS, fd {fd}): {e}"))
}

/// The descriptor systemd passed to process `pid`, as sd_listen_fds(3) reads the variables.
pub fn systemd_fd(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    pid: u32,
) -> Result<Option<RawFd>, String> {
    let (Some(for_pid), Some(count)) = (listen_pid, listen_fds) else {
        return Ok(None);
    };
    // Set for another process (this one's parent, inherited): not ours.
    if for_pid.trim().parse::<u32>().ok() != Some(pid) {
        return Ok(None);
    }
    match count.trim().parse::<u32>() {
        Ok(0) => Ok(None),
        Ok(1) => Ok(Some(SD_LISTEN_FDS_START)),
        Ok(n) => Err(format!(
            "systemd passed {n} sockets (LISTEN_FDS); the agent serves one: give the .socket unit one ListenStream="
        )),
        Err(_) => Err(format!("LISTEN_FDS={count:?} is not a number")),
    }
}

/// Takes `fd` as the agent's listener: it must be a listening TCP socket (IPv4 or IPv6). It
/// is made close-on-exec (the tools the agent runs must not hold the port) and non-blocking.
/// `fd` is this process's from now on, refused or not.
pub fn adopt(fd: RawFd) -> std::io::Result<TcpListener> {
    use std::io::{Error, ErrorKind};
    // SAFETY: fstat only reads the descriptor's metadata.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(Error::last_os_error());
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(Error::new(ErrorKind::InvalidInput, "not a socket"));
    }
    // SAFETY: the manager handed this descriptor to this process, and nothing else owns it.
    let socket = unsafe { Socket::from_raw_fd(fd) };
    if socket.r#type()? != Type::STREAM || !is_listening(fd)? {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "not a listening stream socket",
        ));
    }
    if socket.local_addr()?.as_socket().is_none() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "not an IPv4 or IPv6 socket",
        ));
    }
    socket.set_cloexec(true)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

fn is_listening(fd: RawFd) -> std::io::Result<bool> {
    let mut on: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `on` and `len` are valid for the size given.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&raw mut on).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(on != 0)
}

#[cfg(target_os = "macos")]
mod launchd {
    use std::ffi::CString;
    use std::os::fd::RawFd;

    // <launch.h>, libSystem, macOS 10.10 and later; the libc crate does not declare it.
    unsafe extern "C" {
        fn launch_activate_socket(
            name: *const libc::c_char,
            fds: *mut *mut libc::c_int,
            cnt: *mut libc::size_t,
        ) -> libc::c_int;
    }

    /// The first descriptor of the job's socket `name`; `None` when this process is not a
    /// launchd job (ESRCH) or its plist has no such socket (ENOENT). More than one (a
    /// `SockNodeName` that names several addresses) keeps the first and closes the others.
    pub fn activate(name: &str) -> Result<Option<RawFd>, String> {
        let c_name = CString::new(name).map_err(|e| e.to_string())?;
        let mut fds: *mut libc::c_int = std::ptr::null_mut();
        let mut cnt: libc::size_t = 0;
        // SAFETY: the out-pointers are valid; on success `fds` is malloc'd, `cnt` long.
        let r = unsafe { launch_activate_socket(c_name.as_ptr(), &mut fds, &mut cnt) };
        match r {
            0 => {}
            libc::ESRCH | libc::ENOENT => return Ok(None),
            e => {
                return Err(format!(
                    "launch_activate_socket({name}): {}",
                    std::io::Error::from_raw_os_error(e)
                ));
            }
        }
        if fds.is_null() {
            return Ok(None);
        }
        // SAFETY: launchd returned `cnt` descriptors at `fds`; the array is ours to free.
        let all = unsafe { std::slice::from_raw_parts(fds, cnt) }.to_vec();
        unsafe { libc::free(fds.cast()) };
        if all.len() > 1 {
            tracing::warn!(
                socket = name,
                count = all.len(),
                "launchd passed several sockets; serving the first: give SockNodeName one address"
            );
            for &fd in &all[1..] {
                // SAFETY: passed to this process, not used elsewhere.
                unsafe { libc::close(fd) };
            }
        }
        Ok(all.first().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::IntoRawFd;

    #[test]
    fn systemd_variables_as_sd_listen_fds_reads_them() {
        assert_eq!(systemd_fd(Some("42"), Some("1"), 42), Ok(Some(3)));
        // Not for this process: another pid, no pid, or nothing passed.
        assert_eq!(systemd_fd(Some("41"), Some("1"), 42), Ok(None));
        assert_eq!(systemd_fd(None, Some("1"), 42), Ok(None));
        assert_eq!(systemd_fd(Some("x"), Some("1"), 42), Ok(None));
        assert_eq!(systemd_fd(Some("42"), None, 42), Ok(None));
        assert_eq!(systemd_fd(Some("42"), Some("0"), 42), Ok(None));
        let e = systemd_fd(Some("42"), Some("2"), 42).unwrap_err();
        assert!(e.contains("2 sockets") && e.contains("ListenStream"), "{e}");
        let e = systemd_fd(Some("42"), Some("one"), 42).unwrap_err();
        assert!(e.contains("not a number"), "{e}");
    }

    #[test]
    fn adopts_a_listening_tcp_socket_only() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let adopted = adopt(l.into_raw_fd()).unwrap();
        assert_eq!(adopted.local_addr().unwrap(), addr);
        let fd = std::os::fd::AsRawFd::as_raw_fd(&adopted);
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        assert_ne!(flags & libc::FD_CLOEXEC, 0, "close-on-exec");
        std::net::TcpStream::connect(addr).unwrap();

        let refused = |fd: RawFd| adopt(fd).unwrap_err().to_string();
        let bound = Socket::new(socket2::Domain::IPV4, Type::STREAM, None).unwrap();
        bound
            .bind(
                &"127.0.0.1:0"
                    .parse::<std::net::SocketAddr>()
                    .unwrap()
                    .into(),
            )
            .unwrap();
        assert!(refused(bound.into_raw_fd()).contains("listening"));
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(refused(udp.into_raw_fd()).contains("listening"));
        let (unix, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(refused(unix.into_raw_fd()).contains("listening"));
        let file = tempfile::tempfile().unwrap();
        assert!(refused(file.into_raw_fd()).contains("not a socket"));
    }
}
