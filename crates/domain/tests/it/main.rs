//! The domain crate's black-box tests, built as one test binary (a module per area).

mod commands;
mod events;
mod metrics_edge_cases;
mod metrics_examples;
mod properties;
mod rules;
mod support;
