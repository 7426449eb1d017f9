//! The CLI's side of the control socket.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
};

use anyhow::{Context as _, bail};
use membrane_node::{DataDir, IdentityError, control::socket_path};
use serde_json::{Value, json};

/// A connection to the running daemon.
pub(crate) struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
}

impl Client {
    /// Connects, or says in one line what to do when no daemon runs.
    pub(crate) fn connect(dir: &DataDir) -> anyhow::Result<Self> {
        let path = socket_path(dir);
        let stream = match UnixStream::connect(&path) {
            Ok(stream) => stream,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound && !dir.is_initialized() => {
                return Err(IdentityError::NotInitialized(dir.path().to_owned()).into());
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => bail!(
                "no membrane daemon is running on {}; start it with `membrane run --data-dir {}`",
                dir.path().display(),
                dir.path().display()
            ),
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => bail!(
                "no membrane daemon is running on {} (stale control socket {}); start it with `membrane run --data-dir {}`",
                dir.path().display(),
                path.display(),
                dir.path().display()
            ),
            Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => bail!(
                "permission denied on {}: run this command as the user the daemon runs as (for the systemd unit: `sudo -u membrane membrane --data-dir {} …`)",
                path.display(),
                dir.path().display()
            ),
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("cannot reach the daemon at {}", path.display()));
            }
        };
        let writer = stream.try_clone()?;
        Ok(Self {
            reader: BufReader::new(stream),
            writer,
            next_id: 1,
        })
    }

    fn send(&mut self, method: &str, params: Value) -> anyhow::Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({"id": id, "method": method, "params": params});
        writeln!(self.writer, "{request}")?;
        Ok(id)
    }

    /// Reads one reply line.
    pub(crate) fn read(&mut self) -> anyhow::Result<Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            bail!("the daemon closed the connection (is it stopping?)");
        }
        Ok(serde_json::from_str(&line)?)
    }

    /// Calls a method and returns its result, or the daemon's error as an error.
    pub(crate) fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.send(method, params)?;
        let reply = self.read()?;
        if let Some(error) = reply.get("error").and_then(Value::as_str) {
            bail!("{error}");
        }
        Ok(reply["ok"].clone())
    }

    /// Starts a streaming call; read its events with [`Client::read`].
    pub(crate) fn start(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.call(method, params)
    }
}
