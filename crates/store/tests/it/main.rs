//! The store crate's black-box tests, built as one test binary (a module per area) so the crate
//! and its dependencies are linked once.

mod append;
mod commit;
mod crash;
mod faults;
mod merkle;
mod properties;
mod reader;
mod support;
