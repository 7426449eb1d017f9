//! A hostile loopback link: a TCP proxy in front of one node, for one dialer, that delays
//! every chunk, caps bandwidth, resets connections at random and can be cut (a partition).
//!
//! TCP hides packet loss from the application: a lost segment is retransmitted after a
//! delay. So loss shows up here as what a peer actually experiences on a bad network:
//! late bytes (delay with jitter) and connections that die mid-stream (resets). A cut link
//! refuses new connections and closes open ones, like a partition the peers only notice
//! when their next write or dial fails.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
    task::JoinHandle,
    time::Instant,
};

use crate::rng::Rng;

/// What a link does to the bytes crossing it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faults {
    /// Added to every chunk, drawn uniformly from this range (milliseconds); order is kept.
    pub delay_ms: (u64, u64),
    /// The chance that a chunk kills its connection instead of crossing.
    pub reset_chance: f64,
    /// Bytes per second in each direction; `None` for no cap.
    pub bandwidth: Option<u64>,
}

impl Faults {
    /// A clean link.
    pub const NONE: Self = Self {
        delay_ms: (0, 0),
        reset_chance: 0.0,
        bandwidth: None,
    };
}

/// Counters of one link, in both directions together.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Bytes that crossed.
    pub bytes: AtomicU64,
    /// Connections accepted and forwarded.
    pub connections: AtomicU64,
    /// Connections killed by an injected reset.
    pub resets: AtomicU64,
    /// Connections refused or closed because the link was cut.
    pub cut: AtomicU64,
}

struct Shared {
    target: Mutex<Option<SocketAddr>>,
    faults: Mutex<Faults>,
    rng: Mutex<Rng>,
    up: watch::Sender<bool>,
    stats: LinkStats,
}

/// One proxy: dialers connect to [`Link::addr`], bytes go on to the target node.
pub struct Link {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.accept.abort();
        // Closes every connection through the link.
        self.shared.up.send_replace(false);
    }
}

impl Link {
    /// Opens a link on a free loopback port; it forwards nothing until it has a target.
    pub async fn open(seed: u64) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            target: Mutex::new(None),
            faults: Mutex::new(Faults::NONE),
            rng: Mutex::new(Rng::new(seed)),
            up: watch::channel(true).0,
            stats: LinkStats::default(),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Self {
            addr,
            shared,
            accept,
        })
    }

    /// Where dialers connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Points the link at a node (again after the node restarted on another port).
    pub fn set_target(&self, target: SocketAddr) {
        *self.shared.target.lock().expect("not poisoned") = Some(target);
    }

    /// Changes the faults for new chunks.
    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock().expect("not poisoned") = faults;
    }

    /// Cuts the link (`false`: open connections close, new ones are refused) or heals it.
    pub fn set_up(&self, up: bool) {
        self.shared.up.send_replace(up);
    }

    /// The link's counters.
    pub fn stats(&self) -> &LinkStats {
        &self.shared.stats
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            // Out of descriptors, say: back off rather than spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let target = *shared.target.lock().expect("not poisoned");
        let (true, Some(target)) = (*shared.up.borrow(), target) else {
            shared.stats.cut.fetch_add(1, Ordering::Relaxed);
            drop(inbound);
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(outbound) = TcpStream::connect(target).await else {
                return;
            };
            shared.stats.connections.fetch_add(1, Ordering::Relaxed);
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            forward(inbound, outbound, shared).await;
        });
    }
}

/// Why a connection through the link ended.
enum End {
    Closed,
    Reset,
    Cut,
}

async fn forward(a: TcpStream, b: TcpStream, shared: Arc<Shared>) {
    let (a_read, a_write) = a.into_split();
    let (b_read, b_write) = b.into_split();
    let mut up = shared.up.subscribe();
    let there = pipe(a_read, b_write, shared.clone());
    let back = pipe(b_read, a_write, shared.clone());
    let end = tokio::select! {
        end = there => end,
        end = back => end,
        _ = up.wait_for(|up| !*up) => End::Cut,
    };
    match end {
        End::Reset => shared.stats.resets.fetch_add(1, Ordering::Relaxed),
        End::Cut => shared.stats.cut.fetch_add(1, Ordering::Relaxed),
        End::Closed => 0,
    };
    // Dropping both halves of both sockets closes the connection on both sides.
}

/// One direction: a reader stamps each chunk with its delivery time, a writer waits for
/// it. The queue between them is bounded, so a slow link pushes back on the sender as a
/// real one does.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    shared: Arc<Shared>,
) -> End {
    let (chunks, mut queued) = mpsc::channel::<(Instant, Vec<u8>)>(64);
    let writer = async move {
        while let Some((at, chunk)) = queued.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return End::Closed;
            }
        }
        let _ = to.shutdown().await;
        End::Closed
    };
    let reader = async move {
        let mut last = Instant::now();
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buffer).await {
                Ok(0) | Err(_) => return End::Closed,
                Ok(n) => n,
            };
            let faults = *shared.faults.lock().expect("not poisoned");
            let (reset, delay) = {
                let mut rng = shared.rng.lock().expect("not poisoned");
                let reset = faults.reset_chance > 0.0 && rng.chance(faults.reset_chance);
                (reset, rng.between(faults.delay_ms.0, faults.delay_ms.1))
            };
            if reset {
                return End::Reset;
            }
            let transmit = faults.bandwidth.map_or(Duration::ZERO, |bps| {
                Duration::from_secs_f64(n as f64 / bps.max(1) as f64)
            });
            last = last.max(Instant::now() + Duration::from_millis(delay)) + transmit;
            shared.stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
            if chunks.send((last, buffer[..n].to_vec())).await.is_err() {
                return End::Closed;
            }
        }
    };
    tokio::pin!(writer);
    tokio::select! {
        // A clean end of input: deliver what is queued, then pass the close on.
        end = reader => match end {
            End::Closed => writer.await,
            other => other,
        },
        end = &mut writer => end,
    }
}
