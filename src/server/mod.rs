//! The HTTP server: health, readiness, metrics and webhook receivers.
