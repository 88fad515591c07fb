//! macOS: a `PF_ROUTE` socket as the trigger, parsed by [`super::pf_route`]; the table comes
//! from `os`'s reader, the one discovery and `diagnose` use.

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

/// The table from `os`'s one reader (`netstat -rn -f inet`), the same rows discovery and
/// `diagnose` judge.
pub fn routes() -> Vec<Route> {
    use crate::os::Os as _;
    match crate::os::System::default().route_table() {
        Ok(rows) => rows.into_iter().map(Route::from).collect(),
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the routing table");
            Vec::new()
        }
    }
}
