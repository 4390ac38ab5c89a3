//! The 3-node JetStream cluster of `deploy/nats/cluster/` on loopback, for tests.
//!
//! [`NatsCluster::start`] takes the checked-in `n1.conf`, `n2.conf` and `n3.conf` as they are,
//! except that every port is replaced by a free one and `store_dir` points into a temporary
//! directory, so the configuration that ships is the one under test. Members can be killed
//! (SIGKILL) and restarted on the same ports and store; all are killed and reaped on drop.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a starting member may take before the test gives up.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Member names, as `server_name` in the configurations.
pub const MEMBERS: [&str; 3] = ["n1", "n2", "n3"];

/// The ports the checked-in configurations use: client, route and monitoring, per member.
const SHIPPED_PORTS: [[u16; 3]; 3] = [[4222, 6222, 8222], [4223, 6223, 8223], [4224, 6224, 8224]];

#[derive(Debug)]
struct Member {
    name: &'static str,
    client_port: u16,
    monitor_port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A running 3-member cluster owned by a test.
#[derive(Debug)]
pub struct NatsCluster {
    binary: PathBuf,
    _dir: TempDir,
    members: Vec<Member>,
}

impl NatsCluster {
    /// Starts all three members and waits until each accepts clients and reports JetStream
    /// healthy (the meta group has a leader). Panics with the members' logs otherwise.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("planledger-nats-cluster-")
            .tempdir()
            .expect("a temporary directory can be created for the cluster");
        // Nine distinct free ports: all bound at once, released just before the members start.
        let listeners: Vec<std::net::TcpListener> = (0..9)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free loopback port"))
            .collect();
        let free: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().expect("a bound address").port())
            .collect();
        let ports: Vec<[u16; 3]> = free.chunks(3).map(|p| [p[0], p[1], p[2]]).collect();
        let shipped = crate::workspace_root().join("deploy/nats/cluster");
        let members = MEMBERS
            .iter()
            .enumerate()
            .map(|(index, name)| {
                let text = std::fs::read_to_string(shipped.join(format!("{name}.conf")))
                    .expect("deploy/nats/cluster/<member>.conf is readable");
                let store = dir.path().join(name);
                let config = dir.path().join(format!("{name}.conf"));
                std::fs::write(&config, localize(&text, &ports, &store))
                    .expect("the member config can be written");
                Member {
                    name,
                    client_port: ports[index][0],
                    monitor_port: ports[index][2],
                    config,
                    log: dir.path().join(format!("{name}.log")),
                    child: None,
                }
            })
            .collect();
        let mut cluster = Self {
            binary: crate::nats::nats_server_binary(),
            _dir: dir,
            members,
        };
        drop(listeners);
        for index in 0..cluster.members.len() {
            cluster.spawn(index);
        }
        for index in 0..cluster.members.len() {
            cluster.wait_healthy(index);
        }
        cluster
    }

    /// `nats://127.0.0.1:<port>` of one member (clients learn the others from it).
    pub fn url(&self, member: &str) -> String {
        format!("nats://127.0.0.1:{}", self.member(member).client_port)
    }

    /// Every member's client URL (a seed list for clients).
    pub fn urls(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("nats://127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// Every member's monitoring URL (`http://127.0.0.1:<port>`, serving `/varz`, `/jsz`, ...).
    pub fn monitor_urls(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.monitor_port))
            .collect()
    }

    /// Kills one member abruptly (SIGKILL), as a crash would, and reaps it.
    pub fn kill(&mut self, member: &str) {
        let index = self.index(member);
        if let Some(mut child) = self.members[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a killed member again on its ports and store, and waits until it is healthy.
    pub fn restart(&mut self, member: &str) {
        let index = self.index(member);
        self.kill(member);
        self.spawn(index);
        self.wait_healthy(index);
    }

    /// All members' logs, for failure messages.
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("--- {} ---\n{}", m.name, read_log(&m.log)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn member(&self, name: &str) -> &Member {
        &self.members[self.index(name)]
    }

    fn index(&self, name: &str) -> usize {
        self.members
            .iter()
            .position(|m| m.name == name)
            .unwrap_or_else(|| panic!("no cluster member named {name}"))
    }

    fn spawn(&mut self, index: usize) {
        let member = &mut self.members[index];
        assert!(
            member.child.is_none(),
            "spawn is only called on a stopped member"
        );
        let child = crate::nats::spawn_logged(
            &self.binary,
            &["-c".as_ref(), member.config.as_os_str()],
            &member.log,
        );
        member.child = Some(child);
    }

    /// Waits until the member accepts clients and its monitoring `/healthz` answers 200 (which
    /// needs JetStream up and a meta leader known).
    fn wait_healthy(&mut self, index: usize) {
        let deadline = Instant::now() + START_TIMEOUT;
        let monitor = self.members[index].monitor_port;
        loop {
            let name = self.members[index].name;
            let port = self.members[index].client_port;
            let running = self.members[index]
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
            if !running {
                panic!("nats member {name} exited; logs:\n{}", self.logs());
            }
            let accepting = TcpStream::connect_timeout(
                &([127, 0, 0, 1], port).into(),
                Duration::from_millis(200),
            )
            .is_ok();
            if accepting && healthz_ok(monitor) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "nats member {name} not healthy within {START_TIMEOUT:?}; logs:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(mut child) = member.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The shipped configuration with `ports[member] = [client, route, monitoring]` in place of the
/// shipped ports and `store` as the JetStream store directory.
fn localize(text: &str, ports: &[[u16; 3]], store: &Path) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') {
            continue;
        }
        if trimmed.starts_with("store_dir:") {
            out.push_str(&format!("  store_dir: {:?}\n", store.display().to_string()));
            continue;
        }
        let mut line = line.to_string();
        for (shipped, local) in SHIPPED_PORTS.iter().zip(ports) {
            for (from, to) in shipped.iter().zip(local) {
                line = line.replace(&format!(":{from}\""), &format!(":{to}\""));
                if trimmed.starts_with("port:") && trimmed.ends_with(&from.to_string()) {
                    line = format!("port: {to}");
                }
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Whether `GET /healthz` on the monitoring port answers 200 (plain HTTP/1.0 over a socket, so
/// the harness needs no HTTP client of its own).
fn healthz_ok(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("<no log: {e}>"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_ports_and_store_are_replaced() {
        let text = "# n1\nport: 4222\nhttp: \"127.0.0.1:8222\"\njetstream {\n  store_dir: \"./data/n1\"\n}\ncluster {\n  listen: \"127.0.0.1:6222\"\n  routes: [\n    \"nats-route://127.0.0.1:6222\"\n    \"nats-route://127.0.0.1:6223\"\n  ]\n}\n";
        let ports = [[1001, 2001, 3001], [1002, 2002, 3002], [1003, 2003, 3003]];
        let out = localize(text, &ports, Path::new("/tmp/x"));
        assert!(out.contains("port: 1001\n"), "{out}");
        assert!(out.contains("http: \"127.0.0.1:3001\""), "{out}");
        assert!(out.contains("listen: \"127.0.0.1:2001\""), "{out}");
        assert!(out.contains("nats-route://127.0.0.1:2002"), "{out}");
        assert!(out.contains("store_dir: \"/tmp/x\""), "{out}");
        for shipped in ["4222", "6222", "6223", "8222", "./data"] {
            assert!(!out.contains(shipped), "{shipped} left in {out}");
        }
    }
}
