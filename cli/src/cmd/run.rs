//! `membrane run`: the daemon, in the foreground.

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use membrane_node::{Multiaddr, Node, NodeHandle};
use serde_json::json;

use crate::{output::Output, progress, settings::Settings};

/// Run this device's node in the foreground until Ctrl-C or SIGTERM.
///
/// Settings come from `<data dir>/config.toml` (see `membrane config show`); a flag given
/// here replaces the file's value (for a list, the whole list).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Listen on this address (repeat) [default: all interfaces, TCP and QUIC, any port].
    #[arg(long, value_name = "MULTIADDR")]
    listen: Vec<Multiaddr>,
    /// Dial this address and keep dialing it while disconnected (repeat).
    #[arg(long, value_name = "MULTIADDR")]
    peer: Vec<Multiaddr>,
    /// Give others this address instead of the listen addresses (repeat).
    #[arg(long, value_name = "MULTIADDR")]
    announce: Vec<Multiaddr>,
    /// Look for your devices on the local network (mDNS) [default: on].
    #[arg(long, overrides_with = "no_mdns")]
    mdns: bool,
    /// Do not look for your devices on the local network (mDNS).
    #[arg(long, overrides_with = "mdns")]
    no_mdns: bool,
    /// How often to ask after access requests you filed with others, e.g. 30s [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse_seconds)]
    request_poll: Option<u64>,
}

pub(crate) fn run(args: Args, data_dir: Option<PathBuf>, out: &mut Output) -> anyhow::Result<()> {
    let dir = super::resolve_data_dir(data_dir)?;
    let settings = Settings::load(&dir)?;
    let mut config = settings.node_config(dir.path());
    if !args.listen.is_empty() {
        config.listen = args.listen;
    }
    if !args.peer.is_empty() {
        config.peers = args.peer;
    }
    if !args.announce.is_empty() {
        config.announce = Some(args.announce);
    }
    if args.no_mdns {
        config.mdns = false;
    } else if args.mdns {
        config.mdns = true;
    }
    if let Some(poll) = args.request_poll {
        config.request_poll = Duration::from_secs(poll.max(1));
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        // Handlers first: a SIGTERM right after the `running` line must stop the node
        // cleanly, not kill it.
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let expected = config.listen.len();
        let node = Node::start(config).await?;
        let addrs = node.listen_addrs(expected).await;
        let data = json!({
            "device": node.device().to_string(),
            "root": node.root().to_string(),
            "listen": addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
        });
        out.result("running", &data, |w| {
            writeln!(w, "membrane running as {}", node.device())?;
            for addr in &addrs {
                writeln!(w, "listening on {addr}")?;
            }
            Ok(())
        })?;
        let reporter = (progress::enabled() || tracing::enabled!(tracing::Level::INFO))
            .then(|| tokio::spawn(report_sync(node.clone())));
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        if let Some(reporter) = reporter {
            reporter.abort();
        }
        progress::clear();
        tracing::info!("stopping");
        node.shutdown().await;
        out.result("stopped", &json!({}), |w| writeln!(w, "stopped"))
    })
}

/// An arrival that lasts longer than this is reported.
const SHOW_AFTER: Duration = Duration::from_secs(1);
/// Without a terminal, how often a running arrival is logged.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Reports the long operation of a sync: documents this node lacks arriving from a peer (a
/// new device's first sync). Once two nodes have compared their documents, the number that
/// will arrive is known; each counts once it is stored. On a terminal this is a progress
/// line on stderr, redrawn four times a second; otherwise `info` log lines when it starts,
/// every ten seconds, and when it ends. The count moves in steps: the node applies a peer's
/// documents a frame (up to 8 MiB) at a time, and stores them after applying the frame.
async fn report_sync(node: NodeHandle) {
    let tty = progress::enabled();
    let mut ticker = tokio::time::interval(Duration::from_millis(if tty { 250 } else { 1000 }));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut since: Option<(tokio::time::Instant, u64)> = None;
    let mut shown = false;
    let mut logged_at: Option<tokio::time::Instant> = None;
    loop {
        ticker.tick().await;
        let (stored, expected) = node.incoming().snapshot();
        if expected == 0 {
            if let Some((started, total)) = since.take()
                && shown
            {
                progress::clear();
                tracing::info!(
                    "no more new documents arriving ({total} announced); took {:.1}s",
                    started.elapsed().as_secs_f64()
                );
            }
            shown = false;
            logged_at = None;
            continue;
        }
        let (started, total) = since.get_or_insert((tokio::time::Instant::now(), expected));
        *total = (*total).max(expected);
        if started.elapsed() < SHOW_AFTER {
            continue;
        }
        shown = true;
        let text = format!(
            "receiving new documents: {stored} of {expected} stored ({}%)",
            stored * 100 / expected
        );
        if tty {
            progress::show(&text);
        } else if logged_at.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
            tracing::info!("{text}");
            logged_at = Some(tokio::time::Instant::now());
        }
    }
}
