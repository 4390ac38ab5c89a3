//! The black-box end-to-end suite, built as one test binary: each module is one area, and all of
//! them share this process (its tests run as threads, in parallel). Every test starts its own
//! `nats-server`, binary and data directories (the harness in `tests/src`), so none of them may
//! rely on having the process to itself: no process-wide tracing subscriber a test depends on,
//! no `std::env::set_var`, no fixed ports.
//!
//! One binary links the service once; a file per area under `tests/tests/` was a binary each,
//! and linking them was most of the suite's build time (docs/performance.md).

mod api;
mod api_spans;
mod audit;
mod backup;
mod bench_smoke;
mod checkpoints;
mod cluster_commit;
mod cluster_dashboard;
mod cluster_feed;
mod cluster_loopback;
mod cluster_nodes;
mod cluster_projections;
mod command_doors;
mod connections;
mod crash_loop;
mod dashboard_assets;
mod dashboard_browser;
mod disk_full;
mod export_proofs;
mod history_export;
mod history_replay;
mod identity;
mod merkle_crash;
mod merkle_python;
mod merkle_tamper;
mod nats_command_ingress;
mod nats_harness;
mod partition_log;
mod plans_list;
mod poison_events;
mod projections_http;
mod projector_nats;
mod relay_bench;
mod relay_exactly_once;
mod relay_outage;
mod relay_python_consumer;
mod relay_reset;
mod relay_stream_faults;
mod relay_support;
mod schemathesis;
mod serve_nats;
mod witness;
