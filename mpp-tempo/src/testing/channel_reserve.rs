//! The v2 channel reserve stand-in (in progress).
