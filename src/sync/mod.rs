//! Incremental sync of sources into the mirror.
