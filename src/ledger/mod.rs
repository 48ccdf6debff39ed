//! The action ledger: intent, execution, outcome, reconciliation.
