//! A progress line on stderr, for long operations, drawn only when stderr is a terminal.
//!
//! Log lines go through [`log_writer`]: while a progress line is shown, each log line first
//! clears it and then draws it again below, so the two never garble each other. When stderr
//! is not a terminal nothing is drawn, and the caller logs plain lines instead.

use std::{
    io::{self, IsTerminal as _, Write as _},
    sync::Mutex,
};

/// The progress line shown now, if any.
static LINE: Mutex<Option<String>> = Mutex::new(None);

/// Erase the current terminal line.
const CLEAR: &[u8] = b"\r\x1b[2K";

/// Whether progress lines are drawn: stderr is a terminal.
pub(crate) fn enabled() -> bool {
    io::stderr().is_terminal()
}

/// Shows `text` as the progress line, replacing the previous one (only on a terminal).
pub(crate) fn show(text: &str) {
    if !enabled() {
        return;
    }
    let mut line = LINE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut stderr = io::stderr().lock();
    let _ = stderr.write_all(CLEAR);
    let _ = stderr.write_all(text.as_bytes());
    let _ = stderr.flush();
    *line = Some(text.to_owned());
}

/// Removes the progress line, if one is shown.
pub(crate) fn clear() {
    let mut line = LINE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if line.take().is_some() {
        let mut stderr = io::stderr().lock();
        let _ = stderr.write_all(CLEAR);
        let _ = stderr.flush();
    }
}

/// Stderr for log lines, around the progress line (see the module docs).
pub(crate) struct LogWriter;

/// For `tracing_subscriber::fmt().with_writer(…)`.
pub(crate) fn log_writer() -> LogWriter {
    LogWriter
}

impl io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let line = LINE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut stderr = io::stderr().lock();
        match &*line {
            None => stderr.write_all(buf)?,
            Some(text) => {
                stderr.write_all(CLEAR)?;
                stderr.write_all(buf)?;
                if buf.ends_with(b"\n") {
                    stderr.write_all(text.as_bytes())?;
                }
            }
        }
        stderr.flush()?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}
