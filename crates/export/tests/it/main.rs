//! The export crate's black-box tests, built as one test binary (a module per area) like every
//! crate's.

mod export;
