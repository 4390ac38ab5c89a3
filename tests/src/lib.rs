//! Harness for the black-box end-to-end suite.
//!
//! Everything here starts real processes: a `nats-server` with JetStream on a free port and its
//! own temporary store ([`nats::NatsServer`]), the 3-node cluster of `deploy/nats/cluster` on
//! loopback ([`cluster::NatsCluster`]), and the `planledger` binary ([`server::Planledger`]);
//! [`identity`] stands in for an OpenID Connect provider (its keys and a loopback JWKS server).
//! [`history`] scripts multi-tenant histories through the API and reads exports back.
//! Each is killed and its files removed when the handle is dropped.

pub mod auditor;
pub mod client;
pub mod cluster;
pub mod history;
pub mod identity;
pub mod load;
pub mod nats;
pub mod proxy;
pub mod server;

/// A free TCP port on 127.0.0.1 (bound, then released for the child to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("the loopback interface can hand out a free port")
}

/// The workspace root (this crate lives in `<root>/tests`), as cargo names it when it runs the
/// test, else as it was when the test was built.
///
/// Checkouts share one build directory (docs/decisions/0002), and cargo reuses a test binary
/// that another checkout built from the same sources, with that checkout's paths compiled in:
/// the compile-time path would make this checkout's tests use the other one's `deploy/` files,
/// scripts and `.tools/`, or fail once it is deleted.
pub fn workspace_root() -> std::path::PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Copies the directory `from` to `to`, recursively (a data directory taken while the service
/// is stopped, say).
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("create the copy's directory");
    for entry in std::fs::read_dir(from).expect("read the directory") {
        let entry = entry.expect("a directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("its type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy a file");
        }
    }
}
