//! Errors reported by the host (spec §3.1) or found by the guest before calling it.

use std::fmt;

/// The result of every fallible call in this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Why a WASI-NN call failed.
///
/// Every variant but [`Error::InvalidTensor`] is an errno returned by the host, numbered as
/// in WasmEdge 0.13 and later.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Error {
    /// errno 1: a bad pointer, handle, index, shape or type, or a call the backend rejects.
    InvalidArgument,
    /// errno 2: an unknown or unsupported graph encoding, or unparsable backend metadata.
    InvalidEncoding,
    /// errno 3: the backend has no model for this graph.
    MissingMemory,
    /// errno 4: the backend could not create or run its interpreter.
    Busy,
    /// errno 5: the backend failed while loading or computing.
    RuntimeError,
    /// errno 6: the host does not support this operation.
    UnsupportedOperation,
    /// errno 7: the output buffer is smaller than the output.
    TooLarge,
    /// errno 8: no model was preloaded under the requested name.
    NotFound,
    /// errno 100: a streamed generation reached its end.
    EndOfSequence,
    /// errno 101: the model's context window is full.
    ContextFull,
    /// errno 102: the prompt does not fit in the model's context window.
    PromptTooLong,
    /// errno 103: the model file of a preloaded model does not exist.
    ModelNotFound,
    /// An errno this crate does not know.
    Unknown(i32),
    /// A tensor that the guest rejected before calling the host; the text says why.
    InvalidTensor(String),
}

impl Error {
    /// The error for a non-zero errno returned by the host.
    pub fn from_errno(errno: i32) -> Error {
        match errno {
            1 => Error::InvalidArgument,
            2 => Error::InvalidEncoding,
            3 => Error::MissingMemory,
            4 => Error::Busy,
            5 => Error::RuntimeError,
            6 => Error::UnsupportedOperation,
            7 => Error::TooLarge,
            8 => Error::NotFound,
            100 => Error::EndOfSequence,
            101 => Error::ContextFull,
            102 => Error::PromptTooLong,
            103 => Error::ModelNotFound,
            other => Error::Unknown(other),
        }
    }

    /// The errno of this error.
    ///
    /// [`Error::InvalidTensor`] reports 1 (`invalid_argument`), the code the host gives a
    /// malformed tensor.
    pub fn errno(&self) -> i32 {
        match self {
            Error::InvalidArgument | Error::InvalidTensor(_) => 1,
            Error::InvalidEncoding => 2,
            Error::MissingMemory => 3,
            Error::Busy => 4,
            Error::RuntimeError => 5,
            Error::UnsupportedOperation => 6,
            Error::TooLarge => 7,
            Error::NotFound => 8,
            Error::EndOfSequence => 100,
            Error::ContextFull => 101,
            Error::PromptTooLong => 102,
            Error::ModelNotFound => 103,
            Error::Unknown(errno) => *errno,
        }
    }

    /// The spec's name for this error, such as `invalid_argument`.
    fn name(&self) -> &'static str {
        match self {
            Error::InvalidArgument => "invalid_argument",
            Error::InvalidEncoding => "invalid_encoding",
            Error::MissingMemory => "missing_memory",
            Error::Busy => "busy",
            Error::RuntimeError => "runtime_error",
            Error::UnsupportedOperation => "unsupported_operation",
            Error::TooLarge => "too_large",
            Error::NotFound => "not_found",
            Error::EndOfSequence => "end_of_sequence",
            Error::ContextFull => "context_full",
            Error::PromptTooLong => "prompt_too_long",
            Error::ModelNotFound => "model_not_found",
            Error::Unknown(_) => "unknown error",
            Error::InvalidTensor(_) => "invalid tensor",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidTensor(reason) => write!(f, "{}: {}", self.name(), reason),
            _ => write!(f, "{} (errno {})", self.name(), self.errno()),
        }
    }
}

impl std::error::Error for Error {}

/// Turns a host errno into a `Result`.
pub(crate) fn check(errno: i32) -> Result<()> {
    match errno {
        0 => Ok(()),
        errno => Err(Error::from_errno(errno)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_errno_round_trips() {
        for errno in (1..=8).chain(100..=103) {
            let error = Error::from_errno(errno);
            assert_ne!(error, Error::Unknown(errno), "errno {errno} has a name");
            assert_eq!(error.errno(), errno);
        }
    }

    #[test]
    fn unknown_errno_keeps_its_value() {
        assert_eq!(Error::from_errno(42), Error::Unknown(42));
        assert_eq!(Error::Unknown(42).errno(), 42);
    }

    #[test]
    fn display_names_the_error_and_its_errno() {
        assert_eq!(
            Error::InvalidArgument.to_string(),
            "invalid_argument (errno 1)"
        );
        assert_eq!(
            Error::PromptTooLong.to_string(),
            "prompt_too_long (errno 102)"
        );
        assert_eq!(Error::Unknown(9).to_string(), "unknown error (errno 9)");
        assert_eq!(
            Error::InvalidTensor("no dimensions".into()).to_string(),
            "invalid tensor: no dimensions"
        );
    }

    #[test]
    fn check_maps_zero_to_ok() {
        assert_eq!(check(0), Ok(()));
        assert_eq!(check(7), Err(Error::TooLarge));
    }
}
