//! `membrane run`: the daemon, in the foreground.

use std::path::PathBuf;

use anyhow::Context as _;
use membrane_node::{Config, Multiaddr, Node};
use serde_json::json;

use crate::output::Output;

/// Run this device's node in the foreground until Ctrl-C or SIGTERM.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Listen on this address (repeat) [default: all interfaces, TCP and QUIC, any port].
    #[arg(long, value_name = "MULTIADDR")]
    listen: Vec<Multiaddr>,
    /// Dial this address and keep dialing it while disconnected (repeat).
    #[arg(long, value_name = "MULTIADDR")]
    peer: Vec<Multiaddr>,
    /// Do not look for your devices on the local network (mDNS).
    #[arg(long)]
    no_mdns: bool,
    /// How often to ask after access requests you filed with others, e.g. 30s.
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse_seconds, default_value = "30s")]
    request_poll: u64,
}

pub(crate) fn run(args: Args, data_dir: Option<PathBuf>, out: &mut Output) -> anyhow::Result<()> {
    let dir = super::resolve_data_dir(data_dir)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let mut config = Config::new(dir.path());
        if !args.listen.is_empty() {
            config.listen = args.listen;
        }
        config.peers = args.peer;
        config.mdns = !args.no_mdns;
        config.request_poll = std::time::Duration::from_secs(args.request_poll.max(1));
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
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("stopping");
        node.shutdown().await;
        out.result("stopped", &json!({}), |w| writeln!(w, "stopped"))
    })
}
