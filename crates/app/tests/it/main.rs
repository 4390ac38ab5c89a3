//! Black-box tests of the application layer over a real RocksDB log.

mod as_of;
