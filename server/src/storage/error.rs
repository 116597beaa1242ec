//! The store's error type, sorted by who is to blame.

use std::fmt;

use crate::domain::ValidationError;

/// Why a storage operation failed.
///
/// The first four variants are the caller's doing and map to 4xx responses; the rest are the
/// server's (5xx: log them, show the client nothing specific).
#[derive(Debug)]
#[non_exhaustive]
pub enum StorageError {
    /// The thing does not exist (404).
    NotFound {
        /// What was looked for, for example `client hospital-a of federation mnist`.
        what: String,
    },
    /// It exists already (409).
    Duplicate {
        /// What clashed.
        what: String,
    },
    /// The request contradicts the current state, for example a second round in flight (409).
    Conflict {
        /// What is in the way.
        reason: String,
    },
    /// The input is not acceptable (422).
    Invalid(ValidationError),
    /// Stored data failed validation on read (a corrupted row or blob).
    Corrupt {
        /// What was corrupt.
        what: String,
    },
    /// A file operation in the data dir failed.
    Io {
        /// What the store was doing.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The database failed (disk full, locked, ...).
    Database(Box<dyn std::error::Error + Send + Sync>),
}

impl StorageError {
    pub(crate) fn not_found(what: impl Into<String>) -> Self {
        Self::NotFound { what: what.into() }
    }
    pub(crate) fn conflict(reason: impl Into<String>) -> Self {
        Self::Conflict {
            reason: reason.into(),
        }
    }
    pub(crate) fn corrupt(what: impl Into<String>) -> Self {
        Self::Corrupt { what: what.into() }
    }
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// Whether the caller caused it (a 4xx), as opposed to the server (a 5xx).
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            Self::NotFound { .. }
                | Self::Duplicate { .. }
                | Self::Conflict { .. }
                | Self::Invalid(_)
        )
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound { what } => write!(f, "{what} not found"),
            Self::Duplicate { what } => write!(f, "{what} already exists"),
            Self::Conflict { reason } => write!(f, "conflict: {reason}"),
            Self::Invalid(e) => write!(f, "invalid input: {e}"),
            Self::Corrupt { what } => write!(f, "stored data is corrupt: {what}"),
            Self::Io { context, source } => write!(f, "{context}: {source}"),
            Self::Database(e) => write!(f, "database error: {e}"),
        }
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Invalid(e) => Some(e),
            Self::Io { source, .. } => Some(source),
            Self::Database(e) => Some(e.as_ref()),
            _ => None,
        }
    }
}

impl From<ValidationError> for StorageError {
    fn from(e: ValidationError) -> Self {
        Self::Invalid(e)
    }
}

impl From<rusqlite::Error> for StorageError {
    /// Constraint violations become typed errors; everything else is a database failure.
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ffi;
        if let rusqlite::Error::SqliteFailure(code, msg) = &e
            && code.code == rusqlite::ErrorCode::ConstraintViolation
        {
            let detail = msg
                .clone()
                .unwrap_or_else(|| "constraint violated".to_owned());
            return match code.extended_code {
                ffi::SQLITE_CONSTRAINT_PRIMARYKEY | ffi::SQLITE_CONSTRAINT_UNIQUE => {
                    Self::Duplicate { what: detail }
                }
                ffi::SQLITE_CONSTRAINT_FOREIGNKEY => Self::NotFound {
                    what: format!("a referenced row ({detail})"),
                },
                _ => Self::Invalid(ValidationError::new("input", detail)),
            };
        }
        Self::Database(Box::new(e))
    }
}
