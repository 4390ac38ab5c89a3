//! planledger-projections.
