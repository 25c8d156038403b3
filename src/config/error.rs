//! Config errors: every problem found, each with the path of the field it is about.

use std::fmt;

/// One problem with one field. `path` is like `listeners[1].port`; empty for problems with
/// the text as a whole (syntax errors, a non-object root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl FieldError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// All problems found in a config. Never empty when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub errors: Vec<FieldError>,
}

impl ConfigError {
    pub fn new(errors: Vec<FieldError>) -> ConfigError {
        ConfigError { errors }
    }

    pub fn single(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            errors: vec![FieldError::new(path, message)],
        }
    }

    /// The error about `path`, if any (handy in tests and for status reporting).
    pub fn find(&self, path: &str) -> Option<&FieldError> {
        self.errors.iter().find(|e| e.path == path)
    }
}

impl fmt::Display for ConfigError {
    /// One error per line, `field.path: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Order errors like the document: the whole text, version, admin, auth, then listeners and
/// clusters by index. Decoding and validation find errors in separate passes; merging them
/// this way keeps one object's problems together. The sort is stable, so the order within
/// one field is kept.
pub(crate) fn sort_by_section(errors: &mut [FieldError]) {
    errors.sort_by_key(|e| section_key(&e.path));
}

fn section_key(path: &str) -> (u8, usize) {
    let head = path.split(['.', '[']).next().unwrap_or("");
    let rank = match head {
        "" => 0,
        "version" => 1,
        "admin" => 2,
        "auth" => 3,
        "listeners" => 4,
        "clusters" => 5,
        _ => 6,
    };
    let index = path
        .strip_prefix(head)
        .and_then(|rest| rest.strip_prefix('['))
        .and_then(|rest| rest.split(']').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    (rank, index)
}
