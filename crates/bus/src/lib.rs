//! planledger-bus.
