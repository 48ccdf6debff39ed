//! Calltouch calls-diary client.
