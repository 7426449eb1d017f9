//! `membrane config show|set|unset`: the settings in `<data dir>/config.toml`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::builder::PossibleValuesParser;
use serde_json::json;

use crate::{
    BadArgument,
    output::Output,
    settings::{self, KEYS, Settings},
};

/// Show or change the settings `membrane run` reads from `<data dir>/config.toml`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Print the effective settings: the defaults, with what config.toml sets. Flags of
    /// `membrane run` override both; RUST_LOG overrides log_level.
    ///
    /// Example: membrane config show --json
    Show,
    /// Set one key in config.toml (comments in the file are kept). Takes effect when
    /// `membrane run` next starts.
    ///
    /// Example: membrane config set listen /ip4/0.0.0.0/tcp/4001 /ip4/0.0.0.0/udp/4001/quic-v1
    #[command(after_help = keys_help())]
    Set {
        /// The key; a key in a table is written `table.key`.
        #[arg(value_parser = key_parser())]
        key: String,
        /// The value. A list takes several values (or one, comma-separated, or TOML such
        /// as '[]').
        #[arg(required = true, num_args = 1.., allow_hyphen_values = true)]
        value: Vec<String>,
    },
    /// Remove a key from config.toml, so that its default applies again.
    ///
    /// Example: membrane config unset limits.max_connections
    Unset {
        /// The key.
        #[arg(value_parser = key_parser())]
        key: String,
    },
}

fn key_parser() -> PossibleValuesParser {
    PossibleValuesParser::new(KEYS.iter().map(|key| key.name))
}

fn keys_help() -> String {
    let width = KEYS.iter().map(|k| k.name.len()).max().unwrap_or(0);
    let mut help = String::from("Keys:\n");
    for key in KEYS {
        help.push_str(&format!("  {:<width$}  {}\n", key.name, key.about));
    }
    help.push_str(
        "\nExamples:\n  membrane config set mdns false\n  membrane config set limits.request_poll 2m\n  membrane config set announce '[]'",
    );
    help
}

pub(crate) fn run(
    command: Command,
    data_dir: Option<PathBuf>,
    out: &mut Output,
) -> anyhow::Result<()> {
    let dir = super::resolve_data_dir(data_dir)?;
    match command {
        Command::Show => {
            let settings = Settings::load(&dir)?;
            out.result("config", &settings.to_json(), |w| {
                let file = if settings.file_exists {
                    settings.path.display().to_string()
                } else {
                    format!("{} (absent)", settings.path.display())
                };
                writeln!(w, "# the settings `membrane run` starts with; file: {file}")?;
                write!(w, "{}", settings.to_annotated_toml())
            })
        }
        Command::Set { key, value } => {
            let key = settings::key(&key).context("checked by clap")?;
            let checked = key
                .check_args(&value)
                .map_err(|why| BadArgument(format!("{why} (see `membrane config set --help`)")))?;
            let shown = checked.to_toml().to_string();
            let path = edit(dir.path(), |text, doc| {
                let (table, leaf) = locate(doc, key.name)?;
                let mut new = checked.to_toml();
                if let Some(old) = table.get_mut(leaf) {
                    // Replaced where it is, with its comments.
                    if let Some(value) = old.as_value() {
                        *new.decor_mut() = value.decor().clone();
                    }
                    *old = toml_edit::Item::Value(new);
                } else if let Some(placed) = below_example(text, key.name, shown.trim()) {
                    return Ok(placed);
                } else {
                    table.insert(leaf, toml_edit::Item::Value(new));
                }
                Ok(doc.to_string())
            })?;
            let data = json!({"key": key.name, "value": shown.trim(), "file": path});
            out.result("config_set", &data, |w| {
                writeln!(w, "{} = {} in {}", key.name, shown.trim(), path.display())?;
                writeln!(w, "restart `membrane run` to apply it")
            })
        }
        Command::Unset { key } => {
            let key = settings::key(&key).context("checked by clap")?;
            let mut removed = false;
            let path = edit(dir.path(), |text, doc| {
                if let Some(rest) = without_key(text, key.name) {
                    removed = true;
                    return Ok(rest);
                }
                let (table, leaf) = match key.name.split_once('.') {
                    Some((table, leaf)) => (
                        doc.get_mut(table)
                            .and_then(toml_edit::Item::as_table_like_mut),
                        leaf,
                    ),
                    None => (
                        Some(doc.as_table_mut() as &mut dyn toml_edit::TableLike),
                        key.name,
                    ),
                };
                removed = table.and_then(|t| t.remove(leaf)).is_some();
                Ok(doc.to_string())
            })?;
            let data = json!({"key": key.name, "removed": removed, "file": path});
            out.result("config_unset", &data, |w| {
                if removed {
                    writeln!(
                        w,
                        "{} is back to its default in {}",
                        key.name,
                        path.display()
                    )?;
                    writeln!(w, "restart `membrane run` to apply it")
                } else {
                    writeln!(w, "{} was not set in {}", key.name, path.display())
                }
            })
        }
    }
}

/// The table that holds `name` (created if missing) and the key's name in it.
fn locate<'d>(
    doc: &'d mut toml_edit::DocumentMut,
    name: &'static str,
) -> anyhow::Result<(&'d mut dyn toml_edit::TableLike, &'static str)> {
    match name.split_once('.') {
        None => Ok((doc.as_table_mut(), name)),
        Some((table, leaf)) => {
            let item = doc
                .as_table_mut()
                .entry(table)
                .or_insert_with(toml_edit::table);
            let table_like = item
                .as_table_like_mut()
                .with_context(|| format!("`{table}` in the config file is not a table"))?;
            Ok((table_like, leaf))
        }
    }
}

/// `text` without the lines that hold `name`'s setting, if the key is in it: the comments
/// around it stay (removing it from the parsed document would take the comments above it
/// along).
fn without_key(text: &str, name: &str) -> Option<String> {
    let doc = toml_edit::Document::parse(text).ok()?;
    let (table, leaf) = match name.split_once('.') {
        Some((table, leaf)) => (doc.get(table)?.as_table_like()?, leaf),
        None => (doc.as_table() as &dyn toml_edit::TableLike, name),
    };
    let (key, item) = table.get_key_value(leaf)?;
    let (start, end) = (key.span()?.start, item.span()?.end);
    let line_start = text[..start].rfind('\n').map_or(0, |at| at + 1);
    let line_end = text[end..].find('\n').map_or(text.len(), |at| end + at + 1);
    Some(format!("{}{}", &text[..line_start], &text[line_end..]))
}

/// `text` with `key = value` on a new line just below the commented-out example of the key
/// (`# key = …`, as `membrane init` writes them) in the key's table, if there is one.
fn below_example(text: &str, name: &str, value: &str) -> Option<String> {
    let (table, leaf) = match name.split_once('.') {
        Some((table, leaf)) => (Some(table), leaf),
        None => (None, name),
    };
    let mut section: Option<&str> = None;
    let mut lines: Vec<&str> = text.lines().collect();
    let at = lines.iter().position(|line| {
        let trimmed = line.trim();
        if let Some(header) = trimmed.strip_prefix('[') {
            section = Some(header.trim_end_matches(']').trim());
            return false;
        }
        section == table
            && trimmed
                .strip_prefix('#')
                .and_then(|rest| rest.trim_start().strip_prefix(leaf))
                .is_some_and(|rest| rest.trim_start().starts_with('='))
    })?;
    let setting = format!("{leaf} = {value}");
    lines.insert(at + 1, &setting);
    let mut out = lines.join("\n");
    out.push('\n');
    Some(out)
}

/// Reads config.toml (or the template, when there is none yet), lets `change` produce the
/// new text (from the text and its parsed form), checks that it loads, and replaces the
/// file atomically. Returns the file's path.
fn edit(
    data_dir: &Path,
    change: impl FnOnce(&str, &mut toml_edit::DocumentMut) -> anyhow::Result<String>,
) -> anyhow::Result<PathBuf> {
    anyhow::ensure!(
        data_dir.is_dir(),
        "no Membrane data dir at {}; create it with `membrane --data-dir {} init`",
        data_dir.display(),
        data_dir.display()
    );
    let path = data_dir.join(settings::FILE_NAME);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => settings::TEMPLATE.to_owned(),
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        anyhow::anyhow!(
            "{}: {}; fix the file first",
            path.display(),
            e.message().trim().replace('\n', " ")
        )
    })?;
    let updated = change(&text, &mut doc)?;
    settings::validate(&updated)
        .map_err(|why| anyhow::anyhow!("{}: {why}; fix the file first", path.display()))?;
    let temporary = path.with_extension("toml.tmp");
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&temporary)?;
        std::io::Write::write_all(&mut file, updated.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, &path)
    };
    write().with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}
