//! Client connections on the edge (contract §4, "Hostile clients"): how
//! many one address and all addresses may hold open, how long a request
//! head may take to arrive, and how long a connection may sit idle.
//!
//! hyper has one timer for the server side of HTTP/1, the header read
//! timeout, and (since 1.6) runs it from the moment a connection waits for
//! a request head, idle or not. [`ConnTimer`] gives that timer two
//! meanings by watching the connection's bytes ([`Watched`]): a request
//! head in progress (bytes read since the last response) must be complete
//! within `header_read_timeout` of its first byte; a connection that
//! answered and has been silent since may stay `idle_timeout`; a new
//! connection that has sent nothing must send its head within
//! `header_read_timeout`.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The client's address, put in the extensions of `/api` requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// When a request's body must have arrived (`server.body_read_timeout_ms`
/// from its head), put in the extensions of `/api` requests (the proxy
/// times its own body read).
#[derive(Debug, Clone, Copy)]
pub struct BodyDeadline(pub Instant);

/// Collects a body by its deadline (when the request has one): `None` if
/// the deadline passed first.
pub async fn by_deadline<F: Future>(extensions: &http::Extensions, read: F) -> Option<F::Output> {
    match extensions.get::<BodyDeadline>() {
        Some(BodyDeadline(deadline)) => {
            tokio::time::timeout_at((*deadline).into(), read).await.ok()
        }
        None => Some(read.await),
    }
}

/// Open connections, in all and per client address.
pub struct ConnLimits {
    open: Mutex<Open>,
    max_total: usize,
    max_per_ip: usize,
}

#[derive(Default)]
struct Open {
    per_ip: HashMap<IpAddr, usize>,
    total: usize,
}

/// One admitted connection; frees its place when dropped.
pub struct ConnSlot {
    limits: Arc<ConnLimits>,
    ip: IpAddr,
}

impl ConnLimits {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<ConnLimits> {
        Arc::new(ConnLimits {
            open: Mutex::new(Open::default()),
            max_total: max_total.max(1),
            max_per_ip: max_per_ip.max(1),
        })
    }

    /// A place for a new connection from `ip`, or `None` when that address
    /// or the whole server is at its limit (the caller closes it at once:
    /// the accept loop never waits).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnSlot> {
        let mut open = self.open.lock().ok()?;
        let from_ip = open.per_ip.get(&ip).copied().unwrap_or(0);
        if open.total >= self.max_total || from_ip >= self.max_per_ip {
            return None;
        }
        open.per_ip.insert(ip, from_ip + 1);
        open.total += 1;
        Some(ConnSlot {
            limits: self.clone(),
            ip,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().map_or(0, |open| open.total)
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.limits.open.lock() {
            open.total = open.total.saturating_sub(1);
            if let Some(from_ip) = open.per_ip.get_mut(&self.ip) {
                *from_ip -= 1;
                if *from_ip == 0 {
                    open.per_ip.remove(&self.ip);
                }
            }
        }
    }
}

const NEVER: u64 = u64::MAX;

/// What a connection's bytes say about it, in milliseconds since it opened.
#[derive(Debug)]
pub struct Activity {
    opened: Instant,
    /// The last write of a response (NEVER: none yet).
    last_write: AtomicU64,
    /// The first byte read since that write (NEVER: none).
    first_read: AtomicU64,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            opened: Instant::now(),
            last_write: AtomicU64::new(NEVER),
            first_read: AtomicU64::new(NEVER),
        })
    }

    fn now_ms(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.opened + Duration::from_millis(ms)
    }
}

/// A connection's IO, watched for [`Activity`].
pub struct Watched<T> {
    io: T,
    activity: Arc<Activity>,
}

impl<T> Watched<T> {
    pub fn new(io: T) -> (Watched<T>, Arc<Activity>) {
        let activity = Activity::new();
        (
            Watched {
                io,
                activity: activity.clone(),
            },
            activity,
        )
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before && self.activity.first_read.load(Ordering::Relaxed) == NEVER
        {
            let now = self.activity.now_ms();
            self.activity.first_read.store(now, Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> Watched<T> {
    fn wrote(&self, n: usize) {
        if n > 0 {
            self.activity
                .last_write
                .store(self.activity.now_ms(), Ordering::Relaxed);
            self.activity.first_read.store(NEVER, Ordering::Relaxed);
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled {
            self.wrote(*n);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &polled {
            self.wrote(*n);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// hyper's timer for one connection (see the module's note).
#[derive(Clone)]
pub struct ConnTimer {
    activity: Arc<Activity>,
    header: Duration,
    idle: Duration,
}

impl ConnTimer {
    pub fn new(activity: Arc<Activity>, header: Duration, idle: Duration) -> ConnTimer {
        ConnTimer {
            activity,
            header,
            idle,
        }
    }

    /// When the wait for a request head must end, as the bytes say now;
    /// `asked`: hyper's own deadline.
    fn deadline(&self, asked: Instant) -> Instant {
        let activity = &self.activity;
        let first_read = activity.first_read.load(Ordering::Relaxed);
        let last_write = activity.last_write.load(Ordering::Relaxed);
        if first_read != NEVER {
            // A head in progress: `header` from its first byte.
            activity.at(first_read) + self.header
        } else if last_write != NEVER {
            // Answered, silent since: idle.
            activity.at(last_write) + self.idle
        } else {
            // New and silent: hyper's deadline (`header` from the start).
            asked
        }
    }
}

impl hyper::rt::Timer for ConnTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(HeadSleep {
            timer: self.clone(),
            asked: deadline,
            booked: None,
            sleep: None,
        })
    }
}

/// A sleep that, when it ends, looks at the connection again and sleeps on
/// if the deadline moved later. On a serving core it is booked with the
/// core's sweep (`cores::book`, checked every 0.1 s: no runtime timer, so
/// no wake-up of the core's driver per request); elsewhere a runtime timer.
struct HeadSleep {
    timer: ConnTimer,
    asked: Instant,
    booked: Option<crate::cores::Booked>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Future for HeadSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let deadline = self.timer.deadline(self.asked);
            if deadline <= Instant::now() {
                crate::cores::unbook(&mut self.booked);
                return Poll::Ready(());
            }
            if self.sleep.is_none() && crate::cores::book(&mut self.booked, deadline, cx.waker()) {
                return Poll::Pending;
            }
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // It ended at an earlier deadline: sleep on to the current one.
            sleep.as_mut().reset(deadline.into());
        }
    }
}

impl Drop for HeadSleep {
    fn drop(&mut self) {
        crate::cores::unbook(&mut self.booked);
    }
}

impl hyper::rt::Sleep for HeadSleep {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_count_per_address_and_in_all() {
        let limits = ConnLimits::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = limits.admit(a).unwrap();
        let _a2 = limits.admit(a).unwrap();
        assert!(limits.admit(a).is_none(), "per address");
        let _b1 = limits.admit(b).unwrap();
        assert!(limits.admit(b).is_none(), "in all");
        drop(a1);
        let b2 = limits.admit(b);
        assert!(b2.is_some());
        assert_eq!(limits.open(), 3);
        drop(b2);
        assert_eq!(limits.open(), 2);
    }
}
