//! The byte relay of a routed connection: both directions until end of file,
//! half-closes propagated, bytes counted as they pass.
//!
//! Each direction reads into a small buffer (`IngressConfig::copy_buf_size`):
//! a small message costs one read and one write. A read that fills it starts a
//! burst: the direction borrows a large buffer ([`BULK`]) from a pool of the
//! worker thread, so a bulk transfer moves in large reads and writes (fewer
//! system calls, larger segments), and gives it back at the first read that
//! does not fill it (the socket was drained). Memory beyond the small buffers
//! is held only while a burst is in flight.
//!
//! splice(2) through a pipe was tried for bursts and measured slower than the
//! large buffer on loopback (docs/ingress.md), so bytes do pass through user
//! space, once each way.

use std::cell::RefCell;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;

/// The buffer of a direction during a burst.
pub(crate) const BULK: usize = 256 * 1024;
/// Idle burst buffers a worker thread keeps.
const POOL_MAX: usize = 16;

thread_local! {
    static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A burst buffer lent by the current thread's pool (or new), given back on drop.
struct BulkBuf(Vec<u8>);

impl BulkBuf {
    fn take() -> BulkBuf {
        let pooled = POOL.try_with(|p| p.borrow_mut().pop()).ok().flatten();
        BulkBuf(pooled.unwrap_or_else(|| Vec::with_capacity(BULK)))
    }
}

impl Drop for BulkBuf {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.0);
        buf.clear();
        let _ = POOL.try_with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() < POOL_MAX {
                pool.push(buf);
            }
        });
    }
}

/// Relay `client` ⇄ `backend` until both directions have ended, then close
/// both. The first error ends both. A clean end of file on one side is
/// propagated as a write shutdown (half close) to the other. `buf_size` is
/// the small buffer of each direction.
pub(crate) async fn relay(
    mut client: TcpStream,
    mut backend: TcpStream,
    bytes_in: &AtomicU64,
    bytes_out: &AtomicU64,
    buf_size: usize,
) -> io::Result<()> {
    let one_ended = AtomicBool::new(false);
    let (mut client_r, mut client_w) = client.split();
    let (mut backend_r, mut backend_w) = backend.split();
    let buf_size = buf_size.max(1024);
    let up = one_way(&mut client_r, &mut backend_w, bytes_in, buf_size, &one_ended);
    let down = one_way(&mut backend_r, &mut client_w, bytes_out, buf_size, &one_ended);
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
    one_ended: &AtomicBool,
) -> io::Result<()> {
    // Reads go into the spare capacity: no zeroing of buffers per
    // connection, which shows in connections per second.
    let mut small = Vec::with_capacity(buf_size);
    let mut bulk: Option<BulkBuf> = None;
    loop {
        let buf = match &mut bulk {
            Some(b) => &mut b.0,
            None => &mut small,
        };
        buf.clear();
        let n = from.read_buf(buf).await?;
        if n == 0 {
            return end(to, one_ended).await;
        }
        to.write_all(buf).await?;
        counter.fetch_add(n as u64, Relaxed);
        let filled = n == buf.capacity();
        match (&bulk, filled) {
            (None, true) => bulk = Some(BulkBuf::take()),
            (Some(_), false) => bulk = None,
            _ => {}
        }
    }
}

/// `from` reached end of file: shut `to` down for writing, unless the other
/// direction has ended too. Then the relay returns and closes both sockets,
/// which sends the same FIN (neither has unread bytes: both read sides saw
/// end of file), one system call fewer per connection.
async fn end(to: &mut WriteHalf<'_>, one_ended: &AtomicBool) -> io::Result<()> {
    if one_ended.swap(true, Relaxed) {
        return Ok(());
    }
    to.shutdown().await
}

/// Idle burst buffers in the current thread's pool (tests).
#[cfg(test)]
fn pooled() -> usize {
    POOL.with(|p| p.borrow().len())
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
    async fn relay_moves_exact_bytes(buf_size: usize, up_len: usize, down_len: usize) {
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
        relay(client, backend, &bytes_in, &bytes_out, buf_size).await.unwrap();
        assert!(backend_side.await.unwrap() == up, "client → backend bytes differ");
        assert!(client_side.await.unwrap() == down, "backend → client bytes differ");
        assert_eq!(bytes_in.load(Relaxed), up_len as u64);
        assert_eq!(bytes_out.load(Relaxed), down_len as u64);
    }

    #[tokio::test]
    async fn relay_moves_exact_bytes_both_ways_with_half_close() {
        for (up, down) in [(0, 0), (1, 0), (0, 1), (1000, 3), (100_000, 70_000)] {
            relay_moves_exact_bytes(1024, up, down).await;
            relay_moves_exact_bytes(16 * 1024, up, down).await;
        }
    }

    #[tokio::test]
    async fn relay_moves_large_transfers() {
        relay_moves_exact_bytes(4096, 24 << 20, 9 << 20).await;
        // Bursts borrowed a large buffer, and gave it back (one buffer served
        // both directions in turn: the backend answers after the end of the
        // client's bytes).
        assert_eq!(pooled(), 1);
        relay_moves_exact_bytes(64 * 1024, 3 << 20, 5 << 20).await;
        assert_eq!(pooled(), 1);
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
