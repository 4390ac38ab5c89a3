//! A nats-server child process for tests.
//!
//! [`NatsServer::start`] runs `nats-server -js -a 127.0.0.1 -p <free port> -sd <temp dir>` and
//! waits until it accepts connections. The server can be stopped and restarted on the same
//! port and store directory (so JetStream streams survive, as after a broker crash), and is
//! killed and reaped when the handle is dropped.
//!
//! The binary is `$PLANLEDGER_NATS_SERVER`, else `<workspace>/.tools/bin/nats-server` (where
//! `just setup` installs it), else `nats-server` on `PATH`.

use std::ffi::OsStr;
use std::fs::File;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a starting server may take before the test gives up (generous for a loaded machine:
/// the wait ends as soon as the server is ready).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a graceful stop may take before the server is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running (or stopped) nats-server with JetStream, owned by a test.
#[derive(Debug)]
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    dir: TempDir,
    child: Option<Child>,
    starts: u32,
}

/// The nats-server binary the harness runs.
pub fn nats_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PLANLEDGER_NATS_SERVER").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let local = crate::workspace_root().join(".tools/bin/nats-server");
    if local.is_file() {
        return local;
    }
    PathBuf::from("nats-server")
}

impl NatsServer {
    /// Starts a JetStream-enabled server on a free loopback port with a fresh store directory.
    ///
    /// Panics (failing the test) with the server's log if it does not come up.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("planledger-nats-")
            .tempdir()
            .expect("a temporary directory can be created for the nats store");
        let mut server = Self {
            binary: nats_server_binary(),
            port: crate::free_port(),
            dir,
            child: None,
            starts: 0,
        };
        server.spawn();
        server
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store directory (kept across restarts).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("jetstream")
    }

    /// The server's log file (all starts append to it).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Stops the server gracefully (SIGTERM; SIGKILL if it lingers) and reaps it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                // SAFETY: plain kill(2) on our own child's pid, which has not been reaped yet.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
            let deadline = Instant::now() + STOP_TIMEOUT;
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => return,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    _ => break,
                }
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server abruptly (SIGKILL), as a crash would, and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store directory (stopping it first if it
    /// is running).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn spawn(&mut self) {
        assert!(
            self.child.is_none(),
            "spawn is only called on a stopped server"
        );
        self.starts += 1;
        // Acknowledged means on disk: without `sync_interval: always` JetStream acknowledges
        // before it flushes, and a SIGKILLed server can lose acknowledged messages while its
        // deduplication window still remembers their ids (so a re-publish is dropped too).
        let config = self.dir.path().join("nats.conf");
        std::fs::write(&config, "jetstream {\n  sync_interval: always\n}\n")
            .expect("the nats config can be written in the temp dir");
        let port = self.port.to_string();
        let store = self.store_dir();
        let args: [&OsStr; 9] = [
            "-c".as_ref(),
            config.as_ref(),
            "-js".as_ref(),
            "-a".as_ref(),
            "127.0.0.1".as_ref(),
            "-p".as_ref(),
            port.as_ref(),
            "-sd".as_ref(),
            store.as_ref(),
        ];
        let child = spawn_logged(&self.binary, &args, &self.log_path());
        self.child = Some(child);
        self.wait_ready();
    }

    /// Waits until the server accepts TCP connections and JetStream is up (its log says so).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let ready_marker = "Server is ready";
        loop {
            if !self.is_running() {
                panic!(
                    "nats-server exited during start; its log:\n{}",
                    read_log(&self.log_path())
                );
            }
            let accepting = TcpStream::connect_timeout(
                &([127, 0, 0, 1], self.port).into(),
                Duration::from_millis(200),
            )
            .is_ok();
            let ready_count = read_log(&self.log_path()).matches(ready_marker).count();
            if accepting && ready_count >= self.starts as usize {
                return;
            }
            if Instant::now() > deadline {
                let missing = if accepting {
                    format!("its log does not say {ready_marker:?} (JetStream not up)")
                } else {
                    format!("not accepting clients on 127.0.0.1:{}", self.port)
                };
                panic!(
                    "nats-server was not ready within {START_TIMEOUT:?}: {missing}; its log:\n{}",
                    read_log(&self.log_path())
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

/// Starts `binary` with `args`, its stdout and stderr appended to `log`. Panics with a hint to
/// `just setup` when the binary cannot be started.
pub(crate) fn spawn_logged(binary: &Path, args: &[&OsStr], log: &Path) -> Child {
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .expect("the nats log file can be created in the temp dir");
    let err = out.try_clone().expect("a log file handle can be cloned");
    Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .unwrap_or_else(|error| {
            panic!(
                "cannot start {}: {error}; run `just setup` or set PLANLEDGER_NATS_SERVER",
                binary.display()
            )
        })
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
