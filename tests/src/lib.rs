//! Shared helpers for Membrane's cross-crate integration tests.
#![deny(missing_docs, unreachable_pub)]

use std::path::PathBuf;

/// The project root (the workspace directory).
pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives inside the workspace")
        .to_path_buf()
}

/// A file under `../shared/data/` (relative to the project root), where the conformance
/// vectors and editing traces live. `MEMBRANE_SHARED_DATA` overrides the location.
pub fn shared_data(relative: &str) -> PathBuf {
    let base = std::env::var_os("MEMBRANE_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("../shared/data"));
    base.join(relative)
}

/// Reads and parses a JSON file under `../shared/data/`.
pub fn shared_json(relative: &str) -> serde_json::Value {
    let path = shared_data(relative);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("{} is not JSON: {error}", path.display()))
}
