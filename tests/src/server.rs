//! The planledger binary as a child process for tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// Path of the `planledger` binary under test: `$PLANLEDGER_BIN`, else next to the test's
/// own target directory (`just test` builds it first).
pub fn binary() -> PathBuf {
    if let Ok(path) = std::env::var("PLANLEDGER_BIN") {
        return PathBuf::from(path);
    }
    built_binary("planledger")
}

/// Path of the `planledger-bench` binary (the benchmarks): `$PLANLEDGER_BENCH_BIN`, else next
/// to the test's own target directory (`just test` builds it first). It starts `planledger`
/// itself for `cluster` from next to it, or from `$PLANLEDGER_BIN`.
pub fn bench_binary() -> PathBuf {
    if let Ok(path) = std::env::var("PLANLEDGER_BENCH_BIN") {
        return PathBuf::from(path);
    }
    built_binary("planledger-bench")
}

/// The binary `name` of this workspace in the test's own target directory.
fn built_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // <target>/<profile>/deps/<test> -> <target>/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in <target>/<profile>/deps");
    let candidate = profile_dir.join(name);
    assert!(
        candidate.exists(),
        "{} is missing: build it first with `cargo build --release --workspace --bins` (just \
         test does)",
        candidate.display()
    );
    candidate
}

/// A running `planledger serve` (or `planledger projector`) with its own data directory and
/// port; killed on drop.
pub struct Planledger {
    child: Option<Child>,
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub base_url: String,
    /// The listen port.
    pub port: u16,
    /// The data directory (kept while this handle lives).
    pub data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    args: Vec<String>,
    log_file: PathBuf,
}

/// The file in a data directory that holds the service's JWT signing key.
pub const JWT_KEY_FILE: &str = "jwt-signing.key";

/// Gives `data_dir` (created if missing) the JWT signing key of the data directory `keys`, so
/// that one token works on every node or projector started in either.
pub fn share_jwt_key(keys: &Path, data_dir: &Path) {
    std::fs::create_dir_all(data_dir).expect("create the data directory");
    std::fs::copy(keys.join(JWT_KEY_FILE), data_dir.join(JWT_KEY_FILE))
        .expect("copy the JWT signing key");
}

impl Planledger {
    /// Starts `planledger serve --no-nats` on a free port in a fresh data directory.
    pub fn start(extra: &[&str]) -> Self {
        let temp = tempfile::tempdir().expect("temp data dir");
        let data_dir = temp.path().to_path_buf();
        let mut server = Self::start_in(&data_dir, extra);
        server._temp = Some(temp);
        server
    }

    /// Starts `planledger serve` in the given data directory with extra flags (add `--nats URL`
    /// for NATS; `--no-nats` is used when none is given).
    pub fn start_in(data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_in_logging_to(data_dir, &data_dir.join("serve.log"), extra)
    }

    /// As [`Planledger::start_in`], with the log written to `log_file` (outside the data
    /// directory, e.g. when that is on a file system a test fills up).
    pub fn start_in_logging_to(data_dir: &Path, log_file: &Path, extra: &[&str]) -> Self {
        let port = free_port();
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
        ];
        if !extra.contains(&"--nats") {
            args.push("--no-nats".into());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::spawn_with(data_dir, port, args, log_file)
    }

    /// Starts `planledger demo --no-nats` (the demo plan seeded) on a free port in a fresh data
    /// directory; what it prints goes to `<data dir>/demo.out` ([`Self::output`]).
    pub fn start_demo() -> Self {
        let temp = tempfile::tempdir().expect("temp data dir");
        let data_dir = temp.path().to_path_buf();
        let port = free_port();
        let args = vec![
            "demo".into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--no-nats".into(),
        ];
        let mut server = Self::spawn_with(&data_dir, port, args, &data_dir.join("demo.log"));
        server._temp = Some(temp);
        server
    }

    /// What the process printed to its standard output (kept only for [`Self::start_demo`]).
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("demo.out")).unwrap_or_default()
    }

    /// Starts `planledger projector --name NAME --data-dir DIR --http 127.0.0.1:PORT` plus
    /// `extra` (e.g. `--nats URL`) and waits until it listens; logs go to
    /// `<DIR>/projector-<NAME>.log`.
    pub fn start_projector(data_dir: &Path, name: &str, extra: &[&str]) -> Self {
        let port = free_port();
        let mut args: Vec<String> = vec![
            "projector".into(),
            "--name".into(),
            name.into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--http".into(),
            format!("127.0.0.1:{port}"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::spawn_with(
            data_dir,
            port,
            args,
            &data_dir.join(format!("projector-{name}.log")),
        )
    }

    fn spawn_with(data_dir: &Path, port: u16, args: Vec<String>, log_file: &Path) -> Self {
        let mut process = Self {
            child: None,
            base_url: format!("http://127.0.0.1:{port}"),
            port,
            data_dir: data_dir.to_path_buf(),
            _temp: None,
            args,
            log_file: log_file.to_path_buf(),
        };
        process.spawn();
        process
    }

    fn spawn(&mut self) {
        // Appended, so a restarted process's log follows the one before it.
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&self.log_file)
            .expect("log file");
        let stdout = if self.args.first().is_some_and(|a| a == "demo") {
            std::fs::File::create(self.data_dir.join("demo.out"))
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null())
        } else {
            Stdio::null()
        };
        let child = Command::new(binary())
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdout(stdout)
            .stderr(log)
            .spawn()
            .expect("spawn planledger");
        self.child = Some(child);
        self.wait_healthy();
    }

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = format!("127.0.0.1:{}", self.port);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "planledger exited with {status} before it was healthy; log:\n{}",
                    self.log()
                );
            }
            if std::net::TcpStream::connect(&addr).is_ok() {
                return;
            }
            // Fine-grained, so that restart times measured around it are close to the truth.
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!(
            "planledger did not listen on {addr} within 60 s; log:\n{}",
            self.log()
        );
    }

    /// The service's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    /// URL of a path on the service.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// The value of the first `/metrics` sample whose line starts with `name` and contains
    /// `label` (`""` for any), if the service exports one.
    pub async fn metric(&self, name: &str, label: &str) -> Option<f64> {
        let text = reqwest::get(self.url("/metrics"))
            .await
            .expect("the metrics request is sent")
            .text()
            .await
            .expect("the metrics text");
        text.lines()
            .find(|line| line.starts_with(name) && line.contains(label))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
    }

    /// Mints a token with `planledger token issue` against this data directory.
    pub fn token(&self, tenant: &str, sub: &str, roles: &str) -> String {
        let output = Command::new(binary())
            .args(["token", "issue", "--data-dir"])
            .arg(&self.data_dir)
            .args([
                "--tenant", tenant, "--sub", sub, "--roles", roles, "--ttl", "1h",
            ])
            .output()
            .expect("run planledger token issue");
        assert!(
            output.status.success(),
            "token issue failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout)
            .expect("utf-8 token")
            .trim()
            .to_string()
    }

    /// Runs `planledger verify` on the data directory (the service must be stopped): whether
    /// the hash chain verified, and what the command printed.
    pub fn verify(&self) -> (bool, String) {
        let output = Command::new(binary())
            .args(["verify", "--data-dir"])
            .arg(&self.data_dir)
            .output()
            .expect("run planledger verify");
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), printed)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the process with SIGKILL (a crash) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Asks the process to stop with SIGTERM and waits for it to exit.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: kill(2) with a pid we own; no memory is touched.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().ok()
    }

    /// Waits up to 30 s for `/readyz` to answer 200; whether it did.
    pub async fn wait_ready(&self) -> bool {
        for _ in 0..600 {
            if let Ok(response) = reqwest::get(self.url("/readyz")).await
                && response.status().is_success()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Stops the process with SIGSTOP (a long pause: it keeps its sockets and does nothing).
    pub fn pause(&self) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) with a pid we own; no memory is touched.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGSTOP);
            }
        }
    }

    /// Lets a paused process run again (SIGCONT).
    pub fn resume(&self) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) with a pid we own; no memory is touched.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGCONT);
            }
        }
    }

    /// Starts the process again with the same data directory, port and flags.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Planledger {
    fn drop(&mut self) {
        self.kill();
    }
}
