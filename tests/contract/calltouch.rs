//! Contract: calltouch. Filled in below.
