//! The node's OCI image store.
