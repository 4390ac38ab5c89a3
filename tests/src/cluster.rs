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

use planledger_bench::cluster::localize;
use tempfile::TempDir;

/// How long starting members may take to be healthy before the test gives up: generous, since
/// on a loaded machine electing the JetStream meta leader can take tens of seconds; the wait
/// ends as soon as the condition holds.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Member names, as `server_name` in the configurations.
pub const MEMBERS: [&str; 3] = ["n1", "n2", "n3"];

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
    /// healthy (the meta group of all three has a leader). Panics naming what was not ready,
    /// with the members' logs, otherwise.
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
        cluster.wait_healthy(&[0, 1, 2]);
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

    /// Every member's monitoring URL (`http://127.0.0.1:<port>`), for `cluster init --monitor`.
    pub fn monitor_urls(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.monitor_port))
            .collect()
    }

    /// `planledger cluster init --partitions <partitions>` on this cluster, run again for a while
    /// until it succeeds: a cluster that has just started may not have elected its JetStream
    /// leaders yet (no responders), and init is idempotent.
    pub fn init_planledger(&self, partitions: u32) {
        let mut last = String::new();
        for _ in 0..30 {
            let output = std::process::Command::new(crate::server::binary())
                .args([
                    "cluster",
                    "init",
                    "--partitions",
                    &partitions.to_string(),
                    "--nats",
                ])
                .arg(self.urls().join(","))
                .arg("--monitor")
                .arg(self.monitor_urls().join(","))
                .output()
                .expect("run planledger cluster init");
            if output.status.success() {
                return;
            }
            last = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            std::thread::sleep(Duration::from_secs(1));
        }
        panic!("cluster init kept failing: {last}");
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
        self.wait_healthy(&[index]);
    }

    /// Stops one member with SIGSTOP (a frozen VM, a long GC pause): it holds its sockets and
    /// answers nothing until [`NatsCluster::resume`].
    pub fn pause(&mut self, member: &str) {
        self.signal(member, libc::SIGSTOP);
    }

    /// Lets a paused member run again (SIGCONT).
    pub fn resume(&mut self, member: &str) {
        self.signal(member, libc::SIGCONT);
    }

    fn signal(&mut self, member: &str, signal: libc::c_int) {
        let index = self.index(member);
        if let Some(child) = self.members[index].child.as_ref() {
            // SAFETY: kill(2) on a child process this harness started and has not reaped.
            unsafe {
                libc::kill(child.id() as libc::pid_t, signal);
            }
        }
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

    /// Waits until each of `members` is healthy ([`NatsCluster::not_healthy`] says nothing),
    /// within one deadline for all of them. Panics naming each member that was not, with what it
    /// lacked, and the logs.
    fn wait_healthy(&mut self, members: &[usize]) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let mut waiting = Vec::new();
            for &index in members {
                if let Some(reason) = self.not_healthy(index) {
                    waiting.push(format!("{}: {reason}", self.members[index].name));
                }
            }
            if waiting.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "the NATS cluster was not healthy within {START_TIMEOUT:?}; not ready:\n  {}\nlogs:\n{}",
                    waiting.join("\n  "),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What member `index` still lacks to be healthy, or `None`: it runs, accepts clients, its
    /// monitoring `/healthz` answers 200 (JetStream up and current with a meta leader), and its
    /// `/jsz` names the meta leader of a meta group of all the cluster's members. Panics if the
    /// member exited.
    fn not_healthy(&mut self, index: usize) -> Option<String> {
        let cluster_size = self.members.len();
        let member = &mut self.members[index];
        let running = member
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
        let (name, port, monitor) = (member.name, member.client_port, member.monitor_port);
        if !running {
            panic!("nats member {name} exited; logs:\n{}", self.logs());
        }
        if TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
            .is_err()
        {
            return Some(format!("not accepting clients on 127.0.0.1:{port}"));
        }
        match monitor_get(monitor, "/healthz") {
            Err(error) => return Some(format!("monitoring port {monitor}: {error}")),
            Ok((status, body)) if status != 200 => {
                return Some(format!("/healthz answered {status}: {}", body.trim()));
            }
            Ok(_) => {}
        }
        let jsz = match monitor_get(monitor, "/jsz") {
            Err(error) => return Some(format!("monitoring port {monitor}: {error}")),
            Ok((status, body)) if status != 200 => {
                return Some(format!("/jsz answered {status}: {}", body.trim()));
            }
            Ok((_, body)) => body,
        };
        let meta: serde_json::Value = serde_json::from_str::<serde_json::Value>(&jsz)
            .map(|v| v["meta_cluster"].clone())
            .unwrap_or_default();
        let leader = meta["leader"].as_str().unwrap_or_default();
        let size = meta["cluster_size"].as_u64().unwrap_or(0);
        if leader.is_empty() || size != cluster_size as u64 {
            return Some(format!(
                "JetStream meta group not formed (leader {leader:?}, {size} of {cluster_size} members): {meta}"
            ));
        }
        None
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

/// `GET path` on a member's monitoring port: the status code and body (plain HTTP/1.0 over a
/// socket, so the harness needs no HTTP client of its own).
fn monitor_get(port: u16, path: &str) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    let mut stream =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
            .map_err(|e| format!("not answering ({e})"))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .map_err(|e| format!("GET {path}: {e}"))?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| format!("GET {path}: {e}"))?;
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("GET {path}: not an HTTP answer: {answer:?}"))?;
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    Ok((status, body.to_string()))
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("<no log: {e}>"))
}
