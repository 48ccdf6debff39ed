//! Contract: telegram. Filled in below.
