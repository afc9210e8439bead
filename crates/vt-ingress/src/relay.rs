//! The byte relay of a routed connection: both directions until end of file,
//! half-closes propagated, bytes counted as they pass.
//!
//! Each direction starts by reading into a buffer (small messages cost one
//! read and one write). Once a read fills the buffer the direction is a bulk
//! transfer and, on Linux, switches to splice(2): socket → pipe → socket, the
//! bytes never entering user space. The pipe comes from a small pool of the
//! worker thread and goes back to it empty. Without a pipe (file descriptor
//! limit) or elsewhere than Linux, the buffer is used to the end.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;

/// Relay `client` ⇄ `backend` until both directions have ended, then close
/// both. The first error ends both. A clean end of file on one side is
/// propagated as a write shutdown (half close) to the other. `buf_size` is
/// the buffer of each direction, and the read size from which it switches to
/// splice(2).
pub(crate) async fn relay(
    client: TcpStream,
    backend: TcpStream,
    bytes_in: &AtomicU64,
    bytes_out: &AtomicU64,
    buf_size: usize,
) -> io::Result<()> {
    relay_with(client, backend, bytes_in, bytes_out, buf_size, cfg!(target_os = "linux")).await
}

async fn relay_with(
    mut client: TcpStream,
    mut backend: TcpStream,
    bytes_in: &AtomicU64,
    bytes_out: &AtomicU64,
    buf_size: usize,
    splice: bool,
) -> io::Result<()> {
    let one_ended = AtomicBool::new(false);
    let (mut client_r, mut client_w) = client.split();
    let (mut backend_r, mut backend_w) = backend.split();
    let buf_size = buf_size.max(1024);
    let up = one_way(&mut client_r, &mut backend_w, bytes_in, buf_size, splice, &one_ended);
    let down = one_way(&mut backend_r, &mut client_w, bytes_out, buf_size, splice, &one_ended);
    tokio::try_join!(up, down).map(|_| ())
    // Both sockets are closed here, which `end` relies on.
}

/// Move `from` → `to` until end of file on `from`, then shut `to` down for
/// writing, counting bytes once written.
async fn one_way(
    from: &mut ReadHalf<'_>,
    to: &mut WriteHalf<'_>,
    counter: &AtomicU64,
    buf_size: usize,
    splice: bool,
    one_ended: &AtomicBool,
) -> io::Result<()> {
    // Reads go into the spare capacity: no zeroing of the buffer per
    // connection, which shows in connections per second.
    let mut buf = Vec::with_capacity(buf_size);
    loop {
        buf.clear();
        let n = from.read_buf(&mut buf).await?;
        if n == 0 {
            return end(to, one_ended).await;
        }
        to.write_all(&buf).await?;
        counter.fetch_add(n as u64, Relaxed);
        #[cfg(target_os = "linux")]
        if splice && n == buf.capacity() {
            if let Some(pipe) = splice::Pipe::take() {
                drop(buf);
                splice::one_way(from.as_ref(), to.as_ref(), pipe, counter).await?;
                return end(to, one_ended).await;
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = splice;
    }
}

/// `from` reached end of file: shut `to` down for writing, unless the other
/// direction has ended too. Then the relay returns and closes both sockets,
/// which sends the same FIN (neither has unread bytes: both
/// read sides saw end of file), one system call fewer per connection.
async fn end(to: &mut WriteHalf<'_>, one_ended: &AtomicBool) -> io::Result<()> {
    if one_ended.swap(true, Relaxed) {
        return Ok(());
    }
    to.shutdown().await
}

#[cfg(target_os = "linux")]
pub(crate) mod splice {
    use std::cell::RefCell;
    use std::io;
    use std::os::fd::OwnedFd;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

    use rustix::pipe::{pipe_with, PipeFlags, SpliceFlags};
    use tokio::io::Interest;
    use tokio::net::TcpStream;

    /// At most this many bytes per splice call (a default pipe holds 64 KiB).
    const CHUNK: usize = 1 << 20;
    /// Idle pipes a worker thread keeps for its next bulk transfers.
    const POOL_MAX: usize = 64;

    thread_local! {
        static POOL: RefCell<Vec<(OwnedFd, OwnedFd)>> = const { RefCell::new(Vec::new()) };
    }

    /// A pipe and how many bytes it holds. Dropped, it goes back to the pool
    /// of the current thread if empty, else it is closed (a direction ended
    /// by an error may leave bytes in it).
    pub(crate) struct Pipe {
        ends: Option<(OwnedFd, OwnedFd)>,
        held: usize,
    }

    impl Pipe {
        /// A pipe from the pool, or a new one; `None` when none can be made.
        pub(crate) fn take() -> Option<Pipe> {
            let pooled = POOL.try_with(|p| p.borrow_mut().pop()).ok().flatten();
            let ends = match pooled {
                Some(ends) => ends,
                None => pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK).ok()?,
            };
            Some(Pipe { ends: Some(ends), held: 0 })
        }
    }

    impl Drop for Pipe {
        fn drop(&mut self) {
            if let (Some(ends), 0) = (self.ends.take(), self.held) {
                let _ = POOL.try_with(|pool| {
                    let mut pool = pool.borrow_mut();
                    if pool.len() < POOL_MAX {
                        pool.push(ends);
                    }
                });
            }
        }
    }

    /// Move `from` → pipe → `to` until end of file on `from`. The pipe is
    /// empty on entry and on a clean return.
    pub(crate) async fn one_way(
        from: &TcpStream,
        to: &TcpStream,
        mut pipe: Pipe,
        counter: &AtomicU64,
    ) -> io::Result<()> {
        let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
        let Pipe { ends: Some((pipe_r, pipe_w)), held } = &mut pipe else {
            return Err(io::Error::other("pipe without ends"));
        };
        loop {
            // The pipe is empty, so "would block" can only mean `from` has
            // nothing to read: readiness is cleared for the right socket.
            let n = loop {
                from.readable().await?;
                match from
                    .try_io(Interest::READABLE, || Ok(rustix::pipe::splice(from, None, &*pipe_w, None, CHUNK, flags)?))
                {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            };
            if n == 0 {
                return Ok(());
            }
            *held = n;
            // The pipe holds bytes, so "would block" can only mean `to` is full.
            while *held > 0 {
                to.writable().await?;
                match to
                    .try_io(Interest::WRITABLE, || Ok(rustix::pipe::splice(&*pipe_r, None, to, None, *held, flags)?))
                {
                    Ok(m) => {
                        *held -= m;
                        counter.fetch_add(m as u64, Relaxed);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// Idle pipes in the current thread's pool (tests).
    #[cfg(test)]
    pub(crate) fn pooled() -> usize {
        POOL.with(|p| p.borrow().len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// Two connected loopback socket pairs: (client peer, client side) and
    /// (backend side, backend peer).
    async fn socket_pairs() -> ((TcpStream, TcpStream), (TcpStream, TcpStream)) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let mut pairs = Vec::new();
        for _ in 0..2 {
            let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
            pairs.push((c.unwrap(), s.unwrap().0));
        }
        let b = pairs.pop().unwrap();
        let a = pairs.pop().unwrap();
        (a, b)
    }

    fn pattern(len: usize, seed: u32) -> Vec<u8> {
        (0..len as u32).map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8).collect()
    }

    /// Sends `up` from the client peer and `down` from the backend peer, each
    /// side half-closing after its bytes; the relay must move exactly those
    /// bytes both ways, end cleanly, and count them.
    async fn relay_moves_exact_bytes(use_copy: bool, up_len: usize, down_len: usize) {
        let ((mut client_peer, client), (backend, mut backend_peer)) = socket_pairs().await;
        let (up, down) = (pattern(up_len, 1), pattern(down_len, 7));
        let (bytes_in, bytes_out) = (AtomicU64::new(0), AtomicU64::new(0));
        let (up2, down2) = (up.clone(), down.clone());
        let client_side = tokio::spawn(async move {
            let (mut r, mut w) = client_peer.split();
            let send = async {
                w.write_all(&up2).await.unwrap();
                w.shutdown().await.unwrap();
            };
            let mut got = Vec::new();
            let recv = r.read_to_end(&mut got);
            let ((), n) = tokio::join!(send, recv);
            n.unwrap();
            got
        });
        let backend_side = tokio::spawn(async move {
            let (mut r, mut w) = backend_peer.split();
            let mut got = Vec::new();
            // The backend answers only once the client's half close arrived.
            r.read_to_end(&mut got).await.unwrap();
            w.write_all(&down2).await.unwrap();
            w.shutdown().await.unwrap();
            got
        });
        let result = if use_copy {
            relay_with(client, backend, &bytes_in, &bytes_out, 4096, false).await
        } else {
            relay(client, backend, &bytes_in, &bytes_out, 4096).await
        };
        result.unwrap();
        assert!(backend_side.await.unwrap() == up, "client → backend bytes differ");
        assert!(client_side.await.unwrap() == down, "backend → client bytes differ");
        assert_eq!(bytes_in.load(Relaxed), up_len as u64);
        assert_eq!(bytes_out.load(Relaxed), down_len as u64);
    }

    #[tokio::test]
    async fn relay_moves_exact_bytes_both_ways_with_half_close() {
        for (up, down) in [(0, 0), (1, 0), (0, 1), (1000, 3), (100_000, 70_000)] {
            relay_moves_exact_bytes(false, up, down).await;
            relay_moves_exact_bytes(true, up, down).await;
        }
    }

    #[tokio::test]
    async fn relay_moves_large_transfers() {
        relay_moves_exact_bytes(false, 24 << 20, 9 << 20).await;
        // Bulk went through splice(2), and the pipe came back empty (one pipe
        // served both directions in turn: the backend answers after the end
        // of the client's bytes).
        #[cfg(target_os = "linux")]
        assert_eq!(splice::pooled(), 1);
        relay_moves_exact_bytes(true, 3 << 20, 5 << 20).await;
    }

    /// Both directions at once, full duplex: each peer writes while reading.
    #[tokio::test]
    async fn relay_full_duplex_echo() {
        let ((mut client_peer, client), (backend, mut backend_peer)) = socket_pairs().await;
        let (bytes_in, bytes_out) = (AtomicU64::new(0), AtomicU64::new(0));
        let data = pattern(8 << 20, 3);
        let echo = tokio::spawn(async move {
            let (mut r, mut w) = backend_peer.split();
            tokio::io::copy(&mut r, &mut w).await.unwrap();
            w.shutdown().await.unwrap();
        });
        let sent = data.clone();
        let client_task = tokio::spawn(async move {
            let (mut r, mut w) = client_peer.split();
            let send = async {
                w.write_all(&sent).await.unwrap();
                w.shutdown().await.unwrap();
            };
            let mut got = Vec::new();
            let (_, n) = tokio::join!(send, r.read_to_end(&mut got));
            n.unwrap();
            got
        });
        relay(client, backend, &bytes_in, &bytes_out, 4096).await.unwrap();
        echo.await.unwrap();
        assert!(client_task.await.unwrap() == data);
        assert_eq!(bytes_in.load(Relaxed), data.len() as u64);
        assert_eq!(bytes_out.load(Relaxed), data.len() as u64);
    }

    /// A reset in the middle of a bulk transfer ends both directions with an
    /// error, whatever the relay was doing.
    #[tokio::test]
    async fn relay_error_ends_both_directions() {
        let ((client_peer, client), (backend, mut backend_peer)) = socket_pairs().await;
        let (bytes_in, bytes_out) = (AtomicU64::new(0), AtomicU64::new(0));
        // The backend streams without end; the client reads some, then resets.
        let backend_side = tokio::spawn(async move {
            let chunk = vec![7u8; 64 * 1024];
            while backend_peer.write_all(&chunk).await.is_ok() {}
        });
        let client_side = tokio::spawn(async move {
            let mut client_peer = client_peer;
            let mut buf = vec![0u8; 64 * 1024];
            let mut got = 0;
            while got < 1 << 20 {
                got += client_peer.read(&mut buf).await.unwrap();
            }
            // SO_LINGER 0, then close: a reset.
            socket2::SockRef::from(&client_peer).set_linger(Some(std::time::Duration::ZERO)).unwrap();
        });
        let r = relay(client, backend, &bytes_in, &bytes_out, 4096).await;
        assert!(r.is_err(), "{r:?}");
        client_side.await.unwrap();
        backend_side.await.unwrap();
        assert!(bytes_out.load(Relaxed) >= 1 << 20);
    }
}
