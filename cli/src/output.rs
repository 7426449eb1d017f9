//! Results on stdout: human text, or JSON Lines `{"type": …, "data": …}` with `--json`.

use std::io::{self, Write};

use serde_json::Value;

/// Where command results go.
pub(crate) struct Output {
    json: bool,
    stdout: io::Stdout,
}

impl Output {
    pub(crate) fn new(json: bool) -> Self {
        Self {
            json,
            stdout: io::stdout(),
        }
    }

    /// Whether results are JSON Lines.
    pub(crate) fn is_json(&self) -> bool {
        self.json
    }

    /// Writes one result: `data` as a JSON line, or `human` as text.
    pub(crate) fn result(
        &mut self,
        kind: &str,
        data: &Value,
        human: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> anyhow::Result<()> {
        let mut lock = self.stdout.lock();
        if self.json {
            let line = serde_json::json!({ "type": kind, "data": data });
            writeln!(lock, "{line}")?;
        } else {
            human(&mut lock)?;
        }
        lock.flush()?;
        Ok(())
    }
}

/// Whether an error is stdout closing under us (`membrane … | head`): a clean exit.
pub(crate) fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<io::Error>())
        .any(|io| io.kind() == io::ErrorKind::BrokenPipe)
}
