//! Contract: comagic. Filled in below.
