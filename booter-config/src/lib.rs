//! Booter configuration for Linux CNs.
