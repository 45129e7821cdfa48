//! The relay's one error type.

use std::fmt;

/// Any error a sink returns, boxed: the relay only reports it and backs off.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong in a relay's round, or in setting one up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The sink failed on the event at index `confirmed` of a batch of `attempted`: the events
    /// before it were confirmed by the broker (and acknowledged to the store), that one and
    /// the rest are claimed again after a back-off.
    #[error("the sink confirmed {confirmed} of {attempted} events, then failed")]
    Sink {
        /// How many leading events of the batch the broker confirmed.
        confirmed: usize,
        /// How many events the batch held.
        attempted: usize,
        /// The sink's error.
        #[source]
        source: BoxError,
    },

    /// The store failed: claiming events, acknowledging them, reading the backlog or purging
    /// (or refused the claim options, as [`stockroom_core::Error::Validation`]).
    #[error("the store failed")]
    Store(#[from] stockroom_core::Error),

    /// A [`RelayOptions`](crate::RelayOptions) value is out of bounds.
    #[error("relay option `{field}`: expected {expected}")]
    Options {
        /// The option.
        field: &'static str,
        /// What it should be.
        expected: &'static str,
    },

    /// The relay's task panicked (see [`RelayHandle::stop`](crate::RelayHandle::stop)).
    #[error("the relay's task panicked")]
    Panicked,
}

impl Error {
    /// Whether the sink failed (rather than the store).
    pub fn is_sink(&self) -> bool {
        matches!(self, Error::Sink { .. })
    }

    /// The kind of error, as the relay's logs and metrics name it: `sink`, `store`,
    /// `options` or `panicked`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Sink { .. } => "sink",
            Error::Store(_) => "store",
            Error::Options { .. } => "options",
            Error::Panicked => "panicked",
        }
    }
}

/// An error and its sources on one line (`a: b: c`), for logs.
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            write!(f, ": {error}")?;
            source = error.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_shows_every_source() {
        let error = Error::Sink {
            confirmed: 2,
            attempted: 5,
            source: "broker gone".into(),
        };
        assert_eq!(
            Chain(&error).to_string(),
            "the sink confirmed 2 of 5 events, then failed: broker gone"
        );
        assert_eq!(error.kind(), "sink");
        assert!(error.is_sink());
    }
}
