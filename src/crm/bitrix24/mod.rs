//! Bitrix24 REST connector: inbound webhook or OAuth application.
