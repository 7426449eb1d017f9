//! Commands: slash-separated, lowercase paths such as `/membrane/doc/read`.
//!
//! A command covers itself and every command below it by whole segments: `/` covers
//! everything, `/membrane/doc` covers `/membrane/doc/read` but not `/membrane/document`.

use std::{fmt, str::FromStr};

/// Longest command accepted.
const MAX_COMMAND_LEN: usize = 1024;

/// Why a string is not a valid command.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum CommandError {
    /// Commands start with `/`.
    #[error("a command starts with `/`")]
    NoLeadingSlash,
    /// Only `/` itself may end with a slash.
    #[error("a command does not end with `/` (except `/` itself)")]
    TrailingSlash,
    /// `//` is not allowed.
    #[error("a command has no empty segments")]
    EmptySegment,
    /// Commands are lowercase.
    #[error("a command is lowercase")]
    NotLowercase,
    /// Unreasonably long.
    #[error("a command is at most {MAX_COMMAND_LEN} bytes")]
    TooLong,
}

/// A UCAN command.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Command(String);

impl Command {
    /// `/`: every command.
    pub fn top() -> Self {
        Self("/".to_owned())
    }

    /// The text form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a delegation for `self` authorizes `other`: equal, or a whole-segment prefix.
    pub fn covers(&self, other: &Command) -> bool {
        if self.0 == "/" || self.0 == other.0 {
            return true;
        }
        other
            .0
            .strip_prefix(&self.0)
            .is_some_and(|rest| rest.starts_with('/'))
    }

    /// The segments, without the leading slash (`/` has none).
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|segment| !segment.is_empty())
    }
}

impl FromStr for Command {
    type Err = CommandError;

    fn from_str(text: &str) -> Result<Self, CommandError> {
        if text.len() > MAX_COMMAND_LEN {
            return Err(CommandError::TooLong);
        }
        if !text.starts_with('/') {
            return Err(CommandError::NoLeadingSlash);
        }
        if text != "/" && text.ends_with('/') {
            return Err(CommandError::TrailingSlash);
        }
        if text.contains("//") {
            return Err(CommandError::EmptySegment);
        }
        if text.chars().any(char::is_uppercase) {
            return Err(CommandError::NotLowercase);
        }
        Ok(Self(text.to_owned()))
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Command({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(text: &str) -> Command {
        text.parse().unwrap()
    }

    #[test]
    fn coverage_is_by_whole_segments() {
        assert!(cmd("/").covers(&cmd("/membrane/doc/read")));
        assert!(cmd("/membrane/doc").covers(&cmd("/membrane/doc/read")));
        assert!(cmd("/membrane/doc").covers(&cmd("/membrane/doc")));
        assert!(!cmd("/membrane/doc").covers(&cmd("/membrane/document")));
        assert!(!cmd("/membrane/doc/read").covers(&cmd("/membrane/doc")));
        assert!(!cmd("/membrane/doc/read").covers(&cmd("/")));
    }

    #[test]
    fn malformed_commands_are_refused() {
        assert_eq!("doc".parse::<Command>(), Err(CommandError::NoLeadingSlash));
        assert_eq!("/doc/".parse::<Command>(), Err(CommandError::TrailingSlash));
        assert_eq!("/a//b".parse::<Command>(), Err(CommandError::EmptySegment));
        assert_eq!("/Doc".parse::<Command>(), Err(CommandError::NotLowercase));
        assert_eq!("".parse::<Command>(), Err(CommandError::NoLeadingSlash));
    }
}
