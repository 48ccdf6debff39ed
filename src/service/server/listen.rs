//! Accepting connections so that no client, or crowd of clients, can make the server
//! unreachable.
//!
//! `axum::serve` waits for a client's first bytes without a deadline and accepts every
//! connection: a thousand idle sockets use up a default 1024-descriptor limit and /healthz and
//! every webhook receiver stop answering. Here, instead:
//!
//! - connections speak HTTP/1.1 only (the receivers and probes need nothing else), with a
//!   deadline of [`HEADER_READ_TIMEOUT`] for a request's headers, which is also the time an idle
//!   keep-alive connection is kept: hyper starts the header clock as soon as it waits for the
//!   next request;
//! - at most `server.max_connections` are served at once. At the cap a new connection pushes
//!   out the connection idle the longest (no request in flight; closing it is what HTTP allows a
//!   server to do with an idle connection), so a prober or Telegram still gets in while a crowd
//!   sits idle; when every connection is busy the new one is closed at once;
//! - the soft limit on open files is raised to the hard limit at start ([`raise_nofile_limit`]),
//!   and the systemd unit sets both to 65536.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Time a client has to send a request's headers, and an idle connection is kept open.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time the connections still busy at shutdown get to finish their request.
const DRAIN: Duration = Duration::from_secs(5);
/// Pause after a failed accept (out of descriptors, say), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// One connection being served.
struct Slot {
    /// Requests in flight.
    busy: AtomicUsize,
    /// When the last request finished (or the connection opened).
    idle_since: Mutex<Instant>,
    /// Wakes the connection's task to close it.
    evict: Notify,
}

impl Slot {
    fn idle_since(&self) -> Instant {
        *self.idle_since.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The connections being served, bounded by `max`.
pub(crate) struct Connections {
    max: usize,
    live: Mutex<HashMap<u64, Arc<Slot>>>,
    next_id: AtomicUsize,
    /// Connections pushed out or refused at the cap, for the logs and tests.
    pub(crate) evicted: AtomicUsize,
    pub(crate) refused: AtomicUsize,
}

impl Connections {
    pub(crate) fn new(max: usize) -> Self {
        Connections {
            max: max.max(1),
            live: Mutex::new(HashMap::new()),
            next_id: AtomicUsize::new(0),
            evicted: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
        }
    }

    /// Connections being served now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// A slot for a new connection: free, or taken from the connection idle the longest;
    /// `None` when every connection has a request in flight.
    fn admit(&self) -> Option<(u64, Arc<Slot>)> {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if live.len() >= self.max {
            let oldest = live
                .iter()
                .filter(|(_, s)| s.busy.load(Ordering::Acquire) == 0)
                .min_by_key(|(_, s)| s.idle_since())
                .map(|(id, _)| *id);
            let Some(id) = oldest else {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return None;
            };
            if let Some(s) = live.remove(&id) {
                s.evict.notify_one();
            }
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) as u64;
        let slot = Arc::new(Slot {
            busy: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            evict: Notify::new(),
        });
        live.insert(id, slot.clone());
        Some((id, slot))
    }

    fn release(&self, id: u64) {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
}

/// Serves `app` on `listener` until `stop` is cancelled, then lets the requests in flight finish
/// (for at most a few seconds).
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    conns: Arc<Connections>,
    stop: CancellationToken,
) {
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.cancelled() => break,
        };
        // Reap finished connection tasks so the set does not grow.
        while tasks.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Some((id, slot)) = conns.admit() else {
            tracing::debug!("every connection is busy: new connection closed");
            drop(stream);
            continue;
        };
        let conns = conns.clone();
        let app = app.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            connection(stream, app, &slot, stop).await;
            conns.release(id);
        });
    }
    drop(listener);
    let drained =
        tokio::time::timeout(DRAIN, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            left = tasks.len(),
            "connections still busy at shutdown were closed"
        );
        tasks.abort_all();
    }
}

/// Serves one connection until the client closes it, it idles past the header deadline, it is
/// pushed out, or the server stops.
async fn connection(stream: TcpStream, app: Router, slot: &Arc<Slot>, stop: CancellationToken) {
    let tracked = slot.clone();
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let app = app.clone();
        let slot = tracked.clone();
        async move {
            slot.busy.fetch_add(1, Ordering::AcqRel);
            let resp = tower::ServiceExt::oneshot(app, req.map(axum::body::Body::new)).await;
            *slot.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
            slot.busy.fetch_sub(1, Ordering::AcqRel);
            resp.map_err(|e: Infallible| match e {})
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended");
            }
            return;
        }
        _ = slot.evict.notified() => {}
        _ = stop.cancelled() => {}
    }
    // Closes at once when idle; finishes the request in flight otherwise.
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(DRAIN, conn).await;
}

/// Raises the soft limit on open files to the hard limit, so that the connection cap, not the
/// descriptor limit, is what bounds the server. Returns the limit now in force; `None` when it
/// cannot be read. A refusal (a sandbox forbidding setrlimit) is logged and the soft limit kept.
pub(crate) fn raise_nofile_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; RLIMIT_NOFILE is a valid resource.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    if lim.rlim_cur >= lim.rlim_max {
        return Some(lim.rlim_cur);
    }
    let raised = libc::rlimit {
        rlim_cur: lim.rlim_max,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: setrlimit reads the struct we own; raising the soft limit up to the hard limit
    // needs no privilege.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        tracing::warn!(
            soft = lim.rlim_cur,
            hard = lim.rlim_max,
            error = %std::io::Error::last_os_error(),
            "cannot raise the open-file limit; set LimitNOFILE in the service unit"
        );
        return Some(lim.rlim_cur);
    }
    Some(raised.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_the_longest_idle_goes_and_busy_ones_stay() {
        let c = Connections::new(2);
        let (a, sa) = c.admit().unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let (_b, sb) = c.admit().unwrap();
        sb.busy.store(1, Ordering::Release);
        let (_c, _) = c.admit().expect("the idle one is pushed out");
        assert_eq!(c.len(), 2);
        assert!(!c.live.lock().unwrap().contains_key(&a));
        assert_eq!(c.evicted.load(Ordering::Relaxed), 1);
        drop(sa);
        // One busy, one idle left: the idle one goes next.
        assert!(c.admit().is_some());
        assert_eq!(c.evicted.load(Ordering::Relaxed), 2);
        // With every connection busy, a new one is refused.
        for s in c.live.lock().unwrap().values() {
            s.busy.store(1, Ordering::Release);
        }
        assert!(c.admit().is_none());
        assert_eq!(c.refused.load(Ordering::Relaxed), 1);
    }
}
