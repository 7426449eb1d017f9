//! Reading the concurrent editing traces in `../shared/data/editing-traces/`.

use std::{io::Read as _, path::Path};

use serde::Deserialize;

/// A concurrent trace: transactions by several agents, each on top of its parents.
#[derive(Debug, Clone, Deserialize)]
pub struct ConcurrentTrace {
    /// The text after every transaction, merged.
    #[serde(rename = "endContent")]
    pub end_content: String,
    /// How many agents typed.
    #[serde(rename = "numAgents")]
    pub num_agents: usize,
    /// The transactions, parents before children.
    pub txns: Vec<Txn>,
}

/// One transaction.
#[derive(Debug, Clone, Deserialize)]
pub struct Txn {
    /// Indexes of the transactions it was made on top of (merged first).
    pub parents: Vec<usize>,
    /// Who typed it.
    pub agent: usize,
    /// `[position, deleted, inserted]`, positions in Unicode code points.
    pub patches: Vec<(usize, usize, String)>,
}

/// Reads a gzipped concurrent trace.
pub fn load(path: &Path) -> Result<ConcurrentTrace, String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}
