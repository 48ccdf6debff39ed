//! Contract: bitrix24. Filled in below.
