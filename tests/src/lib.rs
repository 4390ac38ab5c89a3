//! Harness for the black-box end-to-end suite.
//!
//! Everything here starts real processes: a `nats-server` with JetStream on a free port and its
//! own temporary store ([`nats::NatsServer`]), the 3-node cluster of `deploy/nats/cluster` on
//! loopback ([`cluster::NatsCluster`]), and the `planledger` binary ([`server::Planledger`]).
//! Each is killed and its files removed when the handle is dropped.

pub mod client;
pub mod cluster;
pub mod nats;
pub mod server;

/// A free TCP port on 127.0.0.1 (bound, then released for the child to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("the loopback interface can hand out a free port")
}

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}
