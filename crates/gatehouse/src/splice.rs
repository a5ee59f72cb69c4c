//! Zero-copy relaying between two TCP sockets with splice(2): socket -> pipe -> socket, so the
//! bytes never enter user space (what HAProxy does in tcp mode). Used by tcp and tls
//! (passthrough) listeners when neither side is TLS we terminate.
//!
//! Readiness comes from tokio (`readable` / `writable` + `try_io`), so a pipe never blocks the
//! runtime. The pipe is always drained before the socket is read again, so EAGAIN from the
//! socket-to-pipe splice can only mean "no data": the readiness tokio clears is the socket's.

use std::io;
use std::net::Shutdown;
use std::os::fd::AsFd;

use nix::fcntl::{OFlag, SpliceFFlags, splice};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Bytes asked for per splice: one default pipe's worth.
const CHUNK: usize = 64 * 1024;

/// Moves bytes from `src` to `dst` until `src` ends, then half-closes `dst` (its FIN carries
/// the end on). `moved(up, n)` hears of every transfer (idle timers, byte counters).
async fn one_way(
    src: &TcpStream,
    dst: &TcpStream,
    up: bool,
    moved: &(dyn Fn(bool, u64) + Sync),
) -> io::Result<u64> {
    let (pipe_r, pipe_w) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    let mut total = 0u64;
    loop {
        src.readable().await?;
        let n = match src.try_io(Interest::READABLE, || {
            Ok(splice(
                src.as_fd(),
                None,
                pipe_w.as_fd(),
                None,
                CHUNK,
                flags,
            )?)
        }) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            // FIN from src: pass the half-close on; the other direction keeps flowing.
            let _ = socket2::SockRef::from(dst).shutdown(Shutdown::Write);
            return Ok(total);
        }
        let mut left = n;
        while left > 0 {
            dst.writable().await?;
            match dst.try_io(Interest::WRITABLE, || {
                Ok(splice(
                    pipe_r.as_fd(),
                    None,
                    dst.as_fd(),
                    None,
                    left,
                    flags,
                )?)
            }) {
                Ok(m) => left -= m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        total += n as u64;
        moved(up, n as u64);
    }
}

/// Relays both ways until both directions have ended (or one fails); returns the bytes moved
/// (client to origin, origin to client).
pub async fn relay(
    client: &TcpStream,
    origin: &TcpStream,
    moved: &(dyn Fn(bool, u64) + Sync),
) -> io::Result<(u64, u64)> {
    tokio::try_join!(
        one_way(client, origin, true, moved),
        one_way(origin, client, false, moved)
    )
}
