//! CoMagic Data API v2.0 client (JSON-RPC).
