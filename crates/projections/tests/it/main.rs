//! The projections crate's black-box tests, built as one test binary (a module per area) so
//! the crate and its dependencies are linked once.

mod crash;
mod poison;
mod rebuild;
mod redelivery;
mod scripted;
mod shared_tail;
mod snapshots;
mod support;
