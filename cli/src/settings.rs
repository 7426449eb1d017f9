//! The config file, `<data dir>/config.toml`, which `membrane run` reads when it starts.
//!
//! Precedence, highest first: `membrane run`'s flags (a flag given replaces the file's value;
//! for a list, the whole list), then the file, then the defaults of
//! [`membrane_node::Config::new`]. `RUST_LOG`, when set, replaces `log_level`.
//!
//! Every key is described once, in [`KEYS`]: loading the file, `membrane config set` and
//! `membrane config show` all go through it, so they accept and print the same things.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use membrane_node::{Config, DataDir, Multiaddr};
use serde_json::{Value as Json, json};

/// The file's name inside the data dir.
pub(crate) const FILE_NAME: &str = "config.toml";

/// Where the config file of a data dir is.
pub(crate) fn path(dir: &DataDir) -> PathBuf {
    dir.path().join(FILE_NAME)
}

/// The default log filter of `membrane run`.
const DEFAULT_LOG_LEVEL: &str = "warn";

/// What a key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A list of multiaddrs.
    Addresses,
    /// `true` or `false`.
    Bool,
    /// A `tracing` filter: a level, or `target=level` directives.
    LogFilter,
    /// A whole number, at least `min`, at most `max`.
    Count { min: u64, max: u64 },
    /// A duration such as `30s` or `2m` (or a number of seconds), at least `min` seconds.
    Seconds { min: u64 },
}

/// One key of the file.
#[derive(Debug)]
pub(crate) struct Key {
    /// Its name; `table.key` for a key in a table.
    pub(crate) name: &'static str,
    kind: Kind,
    /// What it does, for `--help`.
    pub(crate) about: &'static str,
}

/// Every key the file may hold.
pub(crate) const KEYS: &[Key] = &[
    Key {
        name: "listen",
        kind: Kind::Addresses,
        about: "addresses to listen on",
    },
    Key {
        name: "peers",
        kind: Kind::Addresses,
        about: "addresses to dial, and keep dialing while disconnected",
    },
    Key {
        name: "announce",
        kind: Kind::Addresses,
        about: "addresses to give others instead of the listen addresses ([] for none)",
    },
    Key {
        name: "mdns",
        kind: Kind::Bool,
        about: "find your devices on the local network",
    },
    Key {
        name: "log_level",
        kind: Kind::LogFilter,
        about: "log filter of `membrane run`: error, warn, info, debug, trace",
    },
    Key {
        name: "limits.max_connections",
        kind: Kind::Count {
            min: 1,
            max: u32::MAX as u64,
        },
        about: "most connections, in and out together",
    },
    Key {
        name: "limits.clock_skew",
        kind: Kind::Seconds { min: 0 },
        about: "clock difference tolerated when checking peers' tokens",
    },
    Key {
        name: "limits.redial_interval",
        kind: Kind::Seconds { min: 1 },
        about: "how often disconnected peers are dialed again",
    },
    Key {
        name: "limits.request_poll",
        kind: Kind::Seconds { min: 1 },
        about: "how often to ask after access requests you filed",
    },
    Key {
        name: "limits.compact_after_chunks",
        kind: Kind::Count {
            min: 1,
            max: i64::MAX as u64,
        },
        about: "compact a document once this many changes are stored apart",
    },
];

/// Finds a key by name.
pub(crate) fn key(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|key| key.name == name)
}

/// The names of every key, for messages.
pub(crate) fn key_names() -> String {
    KEYS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
}

/// A checked value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    /// Multiaddrs.
    Addresses(Vec<Multiaddr>),
    /// A switch.
    Bool(bool),
    /// A log filter.
    Text(String),
    /// A whole number.
    Count(u64),
    /// Seconds.
    Seconds(u64),
}

impl Value {
    /// As a TOML value for the file.
    pub(crate) fn to_toml(&self) -> toml_edit::Value {
        match self {
            Self::Addresses(addrs) => addrs
                .iter()
                .map(ToString::to_string)
                .collect::<toml_edit::Array>()
                .into(),
            Self::Bool(b) => (*b).into(),
            Self::Text(text) => text.as_str().into(),
            Self::Count(n) => i64::try_from(*n).unwrap_or(i64::MAX).into(),
            Self::Seconds(n) => format_seconds(*n).into(),
        }
    }

    fn to_json(&self) -> Json {
        match self {
            Self::Addresses(addrs) => {
                json!(addrs.iter().map(ToString::to_string).collect::<Vec<_>>())
            }
            Self::Bool(b) => json!(b),
            Self::Text(text) => json!(text),
            Self::Count(n) | Self::Seconds(n) => json!(n),
        }
    }
}

/// A duration in its largest exact unit: `90s`, `2m`, `1d`.
fn format_seconds(seconds: u64) -> String {
    for (unit, size) in [("w", 604_800), ("d", 86_400), ("h", 3_600), ("m", 60)] {
        if seconds >= size && seconds.is_multiple_of(size) {
            return format!("{}{unit}", seconds / size);
        }
    }
    format!("{seconds}s")
}

impl Key {
    /// What the key wants, for messages.
    fn expects(&self) -> String {
        match self.kind {
            Kind::Addresses => "a list of multiaddrs, e.g. [\"/ip4/0.0.0.0/tcp/4001\"]".into(),
            Kind::Bool => "true or false".into(),
            Kind::LogFilter => {
                "a log level (error, warn, info, debug, trace, off), or target=level directives separated by commas".into()
            }
            Kind::Count { min, .. } => format!("a whole number of at least {min}"),
            Kind::Seconds { min } => {
                format!("a duration such as 30s, 10m or 2h (at least {min}s)")
            }
        }
    }

    fn invalid(&self, found: &str) -> String {
        format!("`{}` must be {}; not {found}", self.name, self.expects())
    }

    /// Checks a value read from the file.
    fn check_toml(&self, value: &toml::Value) -> Result<Value, String> {
        match (self.kind, value) {
            (Kind::Addresses, toml::Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    toml::Value::String(text) => self.address(text),
                    other => Err(self.invalid(&describe(other))),
                })
                .collect::<Result<_, _>>()
                .map(Value::Addresses),
            (Kind::Addresses, toml::Value::String(text)) => {
                self.address(text).map(|a| Value::Addresses(vec![a]))
            }
            (Kind::Bool, toml::Value::Boolean(b)) => Ok(Value::Bool(*b)),
            (Kind::LogFilter, toml::Value::String(text)) => self.log_filter(text),
            (Kind::Count { .. }, toml::Value::Integer(n)) => match u64::try_from(*n) {
                Ok(n) => self.count(n, &n.to_string()),
                Err(_) => Err(self.invalid(&n.to_string())),
            },
            (Kind::Seconds { .. }, toml::Value::String(text)) => self.seconds(text),
            (Kind::Seconds { .. }, toml::Value::Integer(n)) => self.seconds(&format!("{n}s")),
            (_, other) => Err(self.invalid(&describe(other))),
        }
    }

    /// Checks values given on the command line (`membrane config set KEY VALUE…`). A value
    /// may also be written as TOML: `["/ip4/…", "/ip4/…"]`, `[]`, `"30s"`.
    pub(crate) fn check_args(&self, values: &[String]) -> Result<Value, String> {
        if let [one] = values
            && let Some(parsed) = as_toml_literal(one)
        {
            return self.check_toml(&parsed);
        }
        match self.kind {
            Kind::Addresses => values
                .iter()
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(|v| self.address(v))
                .collect::<Result<_, _>>()
                .map(Value::Addresses),
            _ => {
                let [one] = values else {
                    return Err(format!(
                        "`{}` takes one value ({}), not {}",
                        self.name,
                        self.expects(),
                        values.len()
                    ));
                };
                match self.kind {
                    Kind::Bool => match one.as_str() {
                        "true" | "on" | "yes" => Ok(Value::Bool(true)),
                        "false" | "off" | "no" => Ok(Value::Bool(false)),
                        _ => Err(self.invalid(&format!("{one:?}"))),
                    },
                    Kind::LogFilter => self.log_filter(one),
                    Kind::Count { .. } => match one.parse::<u64>() {
                        Ok(n) => self.count(n, one),
                        Err(_) => Err(self.invalid(&format!("{one:?}"))),
                    },
                    Kind::Seconds { .. } => self.seconds(one),
                    Kind::Addresses => unreachable!("handled above"),
                }
            }
        }
    }

    fn address(&self, text: &str) -> Result<Multiaddr, String> {
        text.parse()
            .map_err(|e| format!("`{}`: {text:?} is not a multiaddr ({e})", self.name))
    }

    fn log_filter(&self, text: &str) -> Result<Value, String> {
        const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
        let is_level = |level: &str| LEVELS.contains(&level.trim().to_ascii_lowercase().as_str());
        let directives_ok = !text.trim().is_empty()
            && text
                .split(',')
                .all(|directive| match directive.split_once('=') {
                    Some((target, level)) => !target.trim().is_empty() && is_level(level),
                    None => is_level(directive),
                });
        if directives_ok && tracing_subscriber::EnvFilter::try_new(text).is_ok() {
            Ok(Value::Text(text.trim().to_owned()))
        } else {
            Err(self.invalid(&format!("{text:?}")))
        }
    }

    fn count(&self, n: u64, text: &str) -> Result<Value, String> {
        match self.kind {
            Kind::Count { min, max } if (min..=max).contains(&n) => Ok(Value::Count(n)),
            _ => Err(self.invalid(text)),
        }
    }

    fn seconds(&self, text: &str) -> Result<Value, String> {
        let Kind::Seconds { min } = self.kind else {
            return Err(self.invalid(text));
        };
        match crate::duration::parse_seconds(text) {
            Ok(n) if n >= min => Ok(Value::Seconds(n)),
            Ok(_) => Err(self.invalid(&format!("{text:?}"))),
            Err(why) => Err(format!("`{}`: {why}", self.name)),
        }
    }
}

/// A TOML value, briefly, for messages.
fn describe(value: &toml::Value) -> String {
    match value {
        toml::Value::String(text) => format!("{text:?}"),
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Float(x) => x.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(_) => "a date".into(),
        toml::Value::Array(_) => "a list".into(),
        toml::Value::Table(_) => "a table".into(),
    }
}

/// `text` as a TOML value, if it is written like one (an array or a quoted string).
fn as_toml_literal(text: &str) -> Option<toml::Value> {
    let trimmed = text.trim_start();
    if !(trimmed.starts_with('[') || trimmed.starts_with('"') || trimmed.starts_with('\'')) {
        return None;
    }
    let mut table: toml::Table = format!("v = {text}").parse().ok()?;
    table.remove("v")
}

/// The settings `membrane run` starts with (before its flags): the defaults, with what the
/// file sets.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// `listen`.
    pub(crate) listen: Vec<Multiaddr>,
    /// `peers`.
    pub(crate) peers: Vec<Multiaddr>,
    /// `announce`; `None`: the listen addresses.
    pub(crate) announce: Option<Vec<Multiaddr>>,
    /// `mdns`.
    pub(crate) mdns: bool,
    /// `log_level`.
    pub(crate) log_level: String,
    /// `limits.max_connections`.
    pub(crate) max_connections: u32,
    /// `limits.clock_skew`, in seconds.
    pub(crate) clock_skew: u64,
    /// `limits.redial_interval`, in seconds.
    pub(crate) redial_interval: u64,
    /// `limits.request_poll`, in seconds.
    pub(crate) request_poll: u64,
    /// `limits.compact_after_chunks`.
    pub(crate) compact_after_chunks: u64,
    /// The keys the file sets.
    pub(crate) from_file: Vec<&'static str>,
    /// The file.
    pub(crate) path: PathBuf,
    /// Whether the file exists.
    pub(crate) file_exists: bool,
}

impl Settings {
    /// The defaults alone.
    fn defaults(dir: &DataDir) -> Self {
        let config = Config::new(dir.path());
        Self {
            listen: config.listen,
            peers: config.peers,
            announce: config.announce,
            mdns: config.mdns,
            log_level: DEFAULT_LOG_LEVEL.to_owned(),
            max_connections: config.max_connections,
            clock_skew: config.clock_skew_secs,
            redial_interval: config.redial_interval.as_secs(),
            request_poll: config.request_poll.as_secs(),
            compact_after_chunks: config.compact_after_chunks,
            from_file: Vec::new(),
            path: path(dir),
            file_exists: false,
        }
    }

    /// The defaults, with the file's settings if it exists. A file that does not parse, or
    /// holds an unknown key or a bad value, is an error naming the file and the key.
    pub(crate) fn load(dir: &DataDir) -> anyhow::Result<Self> {
        let mut settings = Self::defaults(dir);
        let text = match std::fs::read_to_string(&settings.path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(settings),
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("cannot read {}", settings.path.display()));
            }
        };
        settings.file_exists = true;
        let values = parse(&text).map_err(|why| {
            anyhow::anyhow!(
                "{}: {why}; fix it, or see `membrane config show`",
                settings.path.display()
            )
        })?;
        for (key, value) in values {
            settings.set(key, value);
            settings.from_file.push(key.name);
        }
        Ok(settings)
    }

    fn set(&mut self, key: &Key, value: Value) {
        match (key.name, value) {
            ("listen", Value::Addresses(a)) => self.listen = a,
            ("peers", Value::Addresses(a)) => self.peers = a,
            ("announce", Value::Addresses(a)) => self.announce = Some(a),
            ("mdns", Value::Bool(b)) => self.mdns = b,
            ("log_level", Value::Text(t)) => self.log_level = t,
            ("limits.max_connections", Value::Count(n)) => {
                self.max_connections = u32::try_from(n).unwrap_or(u32::MAX);
            }
            ("limits.clock_skew", Value::Seconds(n)) => self.clock_skew = n,
            ("limits.redial_interval", Value::Seconds(n)) => self.redial_interval = n,
            ("limits.request_poll", Value::Seconds(n)) => self.request_poll = n,
            ("limits.compact_after_chunks", Value::Count(n)) => self.compact_after_chunks = n,
            (name, value) => unreachable!("{name} checked as {value:?}"),
        }
    }

    /// A key's effective value; `None` for `announce` when unset.
    fn get(&self, key: &Key) -> Option<Value> {
        Some(match key.name {
            "listen" => Value::Addresses(self.listen.clone()),
            "peers" => Value::Addresses(self.peers.clone()),
            "announce" => Value::Addresses(self.announce.clone()?),
            "mdns" => Value::Bool(self.mdns),
            "log_level" => Value::Text(self.log_level.clone()),
            "limits.max_connections" => Value::Count(u64::from(self.max_connections)),
            "limits.clock_skew" => Value::Seconds(self.clock_skew),
            "limits.redial_interval" => Value::Seconds(self.redial_interval),
            "limits.request_poll" => Value::Seconds(self.request_poll),
            "limits.compact_after_chunks" => Value::Count(self.compact_after_chunks),
            name => unreachable!("unknown key {name}"),
        })
    }

    /// The node configuration these settings describe.
    pub(crate) fn node_config(&self, data_dir: &Path) -> Config {
        let mut config = Config::new(data_dir);
        config.listen = self.listen.clone();
        config.peers = self.peers.clone();
        config.announce = self.announce.clone();
        config.mdns = self.mdns;
        config.max_connections = self.max_connections;
        config.clock_skew_secs = self.clock_skew;
        config.redial_interval = std::time::Duration::from_secs(self.redial_interval);
        config.request_poll = std::time::Duration::from_secs(self.request_poll);
        config.compact_after_chunks = self.compact_after_chunks;
        config
    }

    /// `{"file": …, "file_exists": …, "settings": {…}, "from_file": […]}`.
    pub(crate) fn to_json(&self) -> Json {
        let mut settings = serde_json::Map::new();
        let mut limits = serde_json::Map::new();
        for key in KEYS {
            let value = self.get(key).map_or(Json::Null, |v| v.to_json());
            match key.name.strip_prefix("limits.") {
                Some(name) => limits.insert(name.to_owned(), value),
                None => settings.insert(key.name.to_owned(), value),
            };
        }
        settings.insert("limits".into(), Json::Object(limits));
        json!({
            "file": self.path,
            "file_exists": self.file_exists,
            "settings": settings,
            "from_file": self.from_file,
        })
    }

    /// The effective settings as TOML, each line saying where its value comes from.
    pub(crate) fn to_annotated_toml(&self) -> String {
        let mut lines: Vec<(String, &str)> = Vec::new();
        let mut in_limits = false;
        for key in KEYS {
            let source = if self.from_file.contains(&key.name) {
                "config.toml"
            } else {
                "default"
            };
            let name = match key.name.strip_prefix("limits.") {
                Some(name) => {
                    if !in_limits {
                        lines.push((String::new(), ""));
                        lines.push(("[limits]".into(), ""));
                        in_limits = true;
                    }
                    name
                }
                None => key.name,
            };
            let line = match self.get(key) {
                Some(value) => format!("{name} = {}", value.to_toml()),
                None => format!("# {name}: unset, so others get the listen addresses"),
            };
            lines.push((line, source));
        }
        let width = lines
            .iter()
            .map(|(l, _)| l.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for (line, source) in lines {
            if source.is_empty() {
                let _ = writeln!(out, "{line}");
            } else {
                let _ = writeln!(out, "{line:<width$}  # {source}");
            }
        }
        out
    }
}

/// Parses and checks the file's text: every key known, every value valid.
fn parse(text: &str) -> Result<Vec<(&'static Key, Value)>, String> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let line = e
            .span()
            .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
        let message = e.message().trim_end_matches('\n').replace('\n', " ");
        match line {
            Some(line) => format!("line {line}: {message}"),
            None => message,
        }
    })?;
    let mut values = Vec::new();
    for (name, value) in &table {
        if name == "limits" {
            let toml::Value::Table(limits) = value else {
                return Err("`limits` must be a table: [limits]".into());
            };
            for (name, value) in limits {
                values.push(check(&format!("limits.{name}"), value)?);
            }
        } else {
            values.push(check(name, value)?);
        }
    }
    Ok(values)
}

fn check(name: &str, value: &toml::Value) -> Result<(&'static Key, Value), String> {
    let key =
        key(name).ok_or_else(|| format!("unknown key `{name}` (known keys: {})", key_names()))?;
    Ok((key, key.check_toml(value)?))
}

/// Checks a whole file's text, as [`Settings::load`] would.
pub(crate) fn validate(text: &str) -> Result<(), String> {
    parse(text).map(drop)
}

/// The file `membrane init` writes: every key commented out, at its default.
pub(crate) const TEMPLATE: &str = r#"# Membrane's settings for this device, read by `membrane run` when it starts.
# Flags of `membrane run` override them; RUST_LOG overrides log_level.
# Change them here or with `membrane config set KEY VALUE`; see the effective
# settings with `membrane config show`. Restart `membrane run` to apply them.
# Every line below is commented out and shows the default.

# Addresses to listen on. Default: every interface, TCP and QUIC, on ports the
# system picks. A fixed port lets your other devices, or a router, find it:
# listen = ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"]

# Addresses to dial, and keep dialing while disconnected (your devices'
# addresses are remembered anyway once they have met):
# peers = ["/ip4/192.168.1.20/tcp/4001"]

# Addresses to give others (pairing invitations, grant codes) instead of the
# listen addresses: say, a port your router forwards. [] gives none.
# announce = ["/ip4/203.0.113.7/tcp/4001"]

# Find your devices on the local network (mDNS).
# mdns = true

# What `membrane run` logs to stderr: error, warn, info, debug or trace, or
# directives such as "info,libp2p_swarm=debug".
# log_level = "warn"

[limits]
# Most connections, in and out together.
# max_connections = 128

# Clock difference tolerated when checking peers' tokens.
# clock_skew = "1m"

# How often disconnected peers are dialed again.
# redial_interval = "3s"

# How often to ask after access requests you filed with others.
# request_poll = "30s"

# Compact a document once this many changes are stored apart from its snapshot.
# compact_after_chunks = 4096
"#;

/// Writes [`TEMPLATE`] unless a config file exists; returns whether it wrote one.
pub(crate) fn write_template(dir: &DataDir) -> anyhow::Result<bool> {
    let path = path(dir);
    match std::fs::File::options()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(mut file) => {
            std::io::Write::write_all(&mut file, TEMPLATE.as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(true)
        }
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(error) => Err(error).with_context(|| format!("cannot write {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_is_valid_and_sets_nothing() {
        assert!(parse(TEMPLATE).unwrap().is_empty());
        // Uncommented, each example is valid, and there is one for every key.
        let uncommented: Vec<&str> = TEMPLATE
            .lines()
            .filter_map(|line| match line.strip_prefix("# ") {
                Some(setting) if setting.contains(" = ") => Some(setting),
                _ if line.starts_with('#') => None,
                _ => Some(line),
            })
            .collect();
        let values = parse(&uncommented.join("\n")).unwrap();
        assert_eq!(values.len(), KEYS.len(), "{uncommented:?}");
    }

    #[test]
    fn values_are_checked() {
        let max = key("limits.max_connections").unwrap();
        assert_eq!(max.check_args(&["64".into()]), Ok(Value::Count(64)));
        assert!(max.check_args(&["0".into()]).is_err());
        assert!(max.check_args(&["many".into()]).is_err());
        let listen = key("listen").unwrap();
        assert_eq!(
            listen.check_args(&["[]".into()]),
            Ok(Value::Addresses(Vec::new()))
        );
        assert!(listen.check_args(&["not-an-address".into()]).is_err());
        let two = listen
            .check_args(&["/ip4/0.0.0.0/tcp/1,/ip4/0.0.0.0/udp/1/quic-v1".into()])
            .unwrap();
        assert!(matches!(two, Value::Addresses(a) if a.len() == 2));
        let level = key("log_level").unwrap();
        assert!(
            level
                .check_args(&["info,libp2p_swarm=debug".into()])
                .is_ok()
        );
        assert!(level.check_args(&["verbose".into()]).is_err());
        let poll = key("limits.request_poll").unwrap();
        assert_eq!(poll.check_args(&["2m".into()]), Ok(Value::Seconds(120)));
        assert_eq!(format_seconds(120), "2m");
        assert_eq!(format_seconds(90), "90s");
        assert!(
            parse("bogus = 1")
                .unwrap_err()
                .contains("unknown key `bogus`")
        );
        assert!(parse("[limits]\nmax_connections = -1").is_err());
        assert!(parse("mdns = ").unwrap_err().starts_with("line 1:"));
    }
}
