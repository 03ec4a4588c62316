//! Shared bits of the runnable examples.
