//! Cairn's container runtime.
