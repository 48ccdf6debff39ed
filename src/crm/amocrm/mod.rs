//! amoCRM API v4 connector: OAuth2 with single-use refresh tokens, or a long-lived token.
