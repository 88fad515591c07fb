//! macOS: a `PF_ROUTE` socket as the trigger, sysctl `NET_RT_DUMP` as the table. Both are
//! parsed by [`super::pf_route`]; this file holds only the system calls.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::Route;
use super::pf_route;

/// xnu's default is 8 KiB (RAWRCVQ) and a full buffer drops messages without telling.
const RCVBUF: libc::c_int = 256 * 1024;

pub struct EventSocket {
    fd: AsyncFd<OwnedFd>,
    buf: Vec<u8>,
}

impl EventSocket {
    pub fn open() -> io::Result<EventSocket> {
        // SAFETY: plain system calls on a descriptor this function owns from the start.
        let fd = unsafe {
            let raw = libc::socket(libc::PF_ROUTE, libc::SOCK_RAW, libc::AF_UNSPEC);
            if raw < 0 {
                return Err(io::Error::last_os_error());
            }
            OwnedFd::from_raw_fd(raw)
        };
        let raw = fd.as_raw_fd();
        // SAFETY: `raw` is open; the option value outlives the call.
        unsafe {
            let flags = libc::fcntl(raw, libc::F_GETFL);
            if flags < 0 || libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
                return Err(io::Error::last_os_error());
            }
            libc::fcntl(raw, libc::F_SETFD, libc::FD_CLOEXEC);
            // Best effort: a smaller buffer still works, the periodic re-read covers losses.
            libc::setsockopt(
                raw,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&RCVBUF as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        Ok(EventSocket {
            // SAFETY: the descriptor is owned by the value moved in and stays open until the
            // AsyncFd drops it.
            fd: unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?,
            // One message per read (PR_ATOMIC); a short buffer would truncate it.
            buf: vec![0; 4096],
        })
    }

    /// Waits for messages and drains them; `true` when one of them may matter. A message that
    /// does not parse counts as relevant: a re-read is cheap, a missed change is not.
    pub async fn wait(&mut self) -> io::Result<bool> {
        loop {
            let mut guard = self.fd.readable().await?;
            let mut relevant = false;
            loop {
                let raw = guard.get_inner().as_raw_fd();
                // SAFETY: `buf` is valid for its length.
                let n = unsafe { libc::recv(raw, self.buf.as_mut_ptr().cast(), self.buf.len(), 0) };
                if n < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::WouldBlock {
                        break;
                    }
                    return Err(e);
                }
                relevant |= match pf_route::parse(&self.buf[..n as usize]) {
                    Ok((msg, _)) => msg.is_relevant(),
                    Err(_) => true,
                };
            }
            guard.clear_ready();
            if relevant {
                return Ok(true);
            }
        }
    }
}

pub fn routes() -> Vec<Route> {
    match dump() {
        Ok(buf) => pf_route::parse_dump(&buf),
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the routing table (sysctl NET_RT_DUMP)");
            Vec::new()
        }
    }
}

/// The IPv4 table as `RTM_GET` messages; sized first, retried if it grew in between.
fn dump() -> io::Result<Vec<u8>> {
    let mut mib = [
        libc::CTL_NET,
        libc::PF_ROUTE,
        0,
        libc::AF_INET,
        libc::NET_RT_DUMP,
        0,
    ];
    for _ in 0..4 {
        let mut len: libc::size_t = 0;
        // SAFETY: a size query: no output buffer.
        let rc = unsafe {
            libc::sysctl(
                mib.as_mut_ptr(),
                6,
                std::ptr::null_mut(),
                &mut len,
                std::ptr::null_mut(),
                0,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        len += len / 2 + 1024;
        let mut buf = vec![0u8; len];
        // SAFETY: `buf` has `len` bytes; the kernel writes at most that and updates `len`.
        let rc = unsafe {
            libc::sysctl(
                mib.as_mut_ptr(),
                6,
                buf.as_mut_ptr().cast(),
                &mut len,
                std::ptr::null_mut(),
                0,
            )
        };
        if rc == 0 {
            buf.truncate(len);
            return Ok(buf);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENOMEM) {
            return Err(e);
        }
    }
    Err(io::Error::other(
        "the routing table kept growing while read",
    ))
}
