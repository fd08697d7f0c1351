//! Safe wrapper over libzfs: one handle, serialised calls, typed errors
