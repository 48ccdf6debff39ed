//! Contract: amocrm. Filled in below.
