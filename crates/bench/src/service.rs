//! `planledger-bench service`: the service as users run it, measured from outside.
//!
//! The real `planledger serve` binary runs on a scratch data directory with its embedded
//! progress, accountability and agility projectors (as it runs by default), once without NATS
//! and once with the relay publishing to a nats-server the bench starts; then once more with
//! the relay and the read models moved out (`serve --no-embedded-projectors` and one
//! `planledger projector --nats` process per read model, whose CPU is read as the server's is).
//! This process is the load generator: `--concurrency` clients, each on its own plan, send
//! `RecordCheckIn` with a fresh `Idempotency-Key` per command for `--seconds`; then the same
//! clients send `GET /healthz` to the same server, the cost of an answer with no work in it.
//! The server's CPU is read from `/proc/<pid>/stat` before and after.
//!
//! The peer is a PostgreSQL event table as Marten and cqrs-es keep one (one INSERT per event,
//! the next version of the stream read in the same statement, a unique index on (stream,
//! version), fsync on commit), driven by `pgbench` at the same concurrency in the same run:
//! PostgreSQL is started by the bench in a scratch directory with `initdb` and `pg_ctl` when it
//! is installed (under `runuser -u postgres` when the bench runs as root, which `initdb`
//! refuses), and skipped with the reason printed otherwise.
//!
//! Everything shares this machine's cores: the load generator's CPU is printed beside the rest.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::nodes::{
    Node, cpu_seconds, drive, free_port, planledger_binary, quantile, run_clients, seed,
    signing_key,
};
use crate::{ScratchDir, progress_bar};

/// Flags of `bench service`.
#[derive(clap::Args, Debug)]
pub struct ServiceArgs {
    /// Seconds of load per measurement.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Concurrent clients (each on its own plan, or its own stream in PostgreSQL).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Skip the runs with the NATS relay (read models embedded, and read models apart).
    #[arg(long)]
    pub no_nats: bool,
    /// Skip the PostgreSQL peer.
    #[arg(long)]
    pub no_postgres: bool,
    /// Parent of the scratch directories (default: the system temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// One measured load.
struct Figures {
    what: String,
    per_second: f64,
    p50: Duration,
    p99: Duration,
    /// Server CPU per request, µs (`None`: not measured).
    server_cpu_us: Option<f64>,
    /// Load generator's CPU, cores (`None`: not measured; pgbench's own).
    client_cpu: Option<f64>,
    /// Refused or failed requests.
    refused: u64,
    /// The other processes' CPU during the load, cores (nats-server for the relay run).
    other_cpu: f64,
    /// The projector processes' CPU per request, µs, each read once it had gone quiet (`None`:
    /// the read models ran inside the server).
    projectors_cpu_us: Option<Vec<(String, f64)>>,
}

/// Starts `planledger serve` on `dir` (rate limit off), its read models inside it unless
/// `embedded` is false (then `--no-embedded-projectors`: they run as their own processes).
fn start_serve(dir: &Path, key: &Path, nats: Option<&str>, embedded: bool) -> Result<Node> {
    std::fs::create_dir_all(dir)?;
    let port = free_port()?;
    let log = std::fs::File::create(dir.with_extension("log"))?;
    let mut command = Command::new(planledger_binary()?);
    command
        .arg("serve")
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--rate-limit-per-second", "0"])
        .arg("--jwt-secret-file")
        .arg(key);
    match nats {
        Some(url) => command.args(["--nats", url]),
        None => command.arg("--no-nats"),
    };
    if !embedded {
        command.arg("--no-embedded-projectors");
    }
    let child = command
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting planledger serve")?;
    Ok(Node { child, port })
}

/// The read models, each as its own `planledger projector --nats` process on its own data
/// directory under `dir`, consuming the stream the server's relay publishes.
struct Projectors {
    processes: Vec<(String, KillOnDrop, PathBuf)>,
}

impl Projectors {
    fn start(dir: &Path, nats: &str) -> Result<Self> {
        let mut processes = Vec::new();
        for name in planledger_projections::PROJECTION_NAMES {
            let data_dir = dir.join(name);
            std::fs::create_dir_all(&data_dir)?;
            let log_path = dir.join(format!("{name}.log"));
            let child = Command::new(planledger_binary()?)
                .args(["projector", "--name", name, "--nats", nats, "--data-dir"])
                .arg(&data_dir)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log_path)?)
                .spawn()
                .with_context(|| format!("starting planledger projector --name {name}"))?;
            processes.push((name.to_string(), KillOnDrop(Some(child)), log_path));
        }
        Ok(Self { processes })
    }

    fn pids(&self) -> Vec<u32> {
        self.processes
            .iter()
            .filter_map(|(_, child, _)| child.0.as_ref().map(Child::id))
            .collect()
    }

    /// Fails, with its log, if a projector has exited (its CPU would read as none).
    fn check_running(&mut self) -> Result<()> {
        for (name, child, log) in &mut self.processes {
            if let Some(child) = child.0.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "the {name} projector exited ({status}): {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
        }
        Ok(())
    }
}

async fn wait_ready(node: &Node) -> Result<()> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !http
        .get(node.url("/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        if Instant::now() > deadline {
            bail!("planledger serve did not get ready within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// RecordCheckIn through `serve`, then `GET /healthz` on the same server.
async fn measure_serve(
    what: &str,
    node: &Node,
    token: &str,
    args: &ServiceArgs,
    other_pids: &[u32],
    mut projectors: Option<&mut Projectors>,
) -> Result<(Figures, Figures)> {
    wait_ready(node).await?;
    let http = reqwest::Client::new();
    let plans: Vec<String> = (0..args.concurrency)
        .map(|i| format!("service-plan-{i}"))
        .collect();
    for plan in &plans {
        seed(&http, &node.url(""), token, plan).await?;
    }
    let pid = node.child.id();
    let server_before = cpu_seconds(pid);
    let projector_pids = projectors.as_ref().map(|p| p.pids()).unwrap_or_default();
    let projectors_before: Vec<f64> = projector_pids.iter().map(|p| cpu_seconds(*p)).collect();
    let run = drive(
        std::slice::from_ref(node),
        token,
        &plans,
        args.seconds,
        other_pids,
    )
    .await?;
    // Work the load left behind (the embedded projectors' and the relay's backlog) belongs to
    // the commands: the server's CPU is read once it has gone quiet.
    let server_seconds = settled_cpu(pid).await - server_before;
    let projectors_cpu_us = match projectors.as_mut() {
        None => None,
        Some(projectors) => {
            projectors.check_running()?;
            let mut figures = Vec::new();
            for ((name, _, _), (pid, before)) in projectors
                .processes
                .iter()
                .zip(projector_pids.iter().zip(&projectors_before))
            {
                let seconds = settled_cpu(*pid).await - before;
                figures.push((name.clone(), seconds * 1e6 / run.commands.max(1) as f64));
            }
            Some(figures)
        }
    };
    let commands = Figures {
        what: format!("RecordCheckIn via serve, {what}"),
        per_second: run.commands_per_second,
        p50: run.p50,
        p99: run.p99,
        server_cpu_us: (run.commands > 0).then(|| server_seconds * 1e6 / run.commands as f64),
        client_cpu: Some(run.client_cpu),
        refused: run.refused,
        other_cpu: run.nats_cpu,
        projectors_cpu_us,
    };
    let health = drive_get(node, "/healthz", args.concurrency, args.seconds).await?;
    Ok((
        commands,
        Figures {
            what: format!("GET /healthz, same serve ({what})"),
            ..health
        },
    ))
}

/// A process's CPU seconds once it has gone quiet (under 5 % of a core over 250 ms), or after
/// 30 s.
async fn settled_cpu(pid: u32) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = cpu_seconds(pid);
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = cpu_seconds(pid);
        if now - last < 0.0125 || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// `GET path` from `concurrency` clients for `seconds`.
async fn drive_get(node: &Node, path: &str, concurrency: usize, seconds: u64) -> Result<Figures> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(30))
        .build()?;
    let url: Arc<str> = node.url(path).into();
    let pid = node.child.id();
    let server_before = cpu_seconds(pid);
    let client_before = cpu_seconds(std::process::id());
    let load = run_clients(concurrency, seconds, path, move |_, _| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            http.get(&*url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await?;
    let elapsed = load.elapsed;
    let per_second = load.latencies.len() as f64 / elapsed;
    let server = (cpu_seconds(pid) - server_before) / elapsed;
    Ok(Figures {
        what: path.to_string(),
        per_second,
        p50: quantile(&load.latencies, 0.5),
        p99: quantile(&load.latencies, 0.99),
        server_cpu_us: (per_second > 0.0).then(|| server * 1e6 / per_second),
        client_cpu: Some((cpu_seconds(std::process::id()) - client_before) / elapsed),
        refused: load.refused,
        other_cpu: 0.0,
        projectors_cpu_us: None,
    })
}

/// A PostgreSQL server in a scratch directory, stopped when dropped.
struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    /// `runuser -u postgres --` when this process is root.
    as_user: Option<String>,
}

impl Postgres {
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match &self.as_user {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(path);
                command
            }
            None => Command::new(path),
        }
    }

    /// Its server processes' CPU seconds: the postmaster's own and its reaped backends', and
    /// its live children's.
    fn cpu_seconds(&self) -> f64 {
        let Some(postmaster) = std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse::<u32>().ok())
        else {
            return 0.0;
        };
        let mut total = proc_cpu(postmaster, true);
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<u32>().ok())
                else {
                    continue;
                };
                if parent_of(pid) == Some(postmaster) {
                    total += proc_cpu(pid, false);
                }
            }
        }
        total
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A child process killed if it is still running when dropped (an interrupted bench).
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Fields of `/proc/<pid>/stat` after the command name.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn parent_of(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// A process's CPU seconds (with its reaped children's when `children`).
fn proc_cpu(pid: u32, children: bool) -> f64 {
    let Some(fields) = stat_fields(pid) else {
        return 0.0;
    };
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime, stime, cutime, cstime: fields 14 to 17 of the line, 11 to 14 after the name.
    let own = ticks(11) + ticks(12);
    let reaped = if children { ticks(13) + ticks(14) } else { 0.0 };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (own + reaped) / hz.max(1.0)
}

/// PostgreSQL's binaries: `pg_config --bindir`, else the newest /usr/lib/postgresql/*/bin.
fn postgres_bin() -> Option<PathBuf> {
    let has_initdb = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output()
        && output.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if has_initdb(&dir) {
            return Some(dir);
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|dir| has_initdb(dir))
        .collect();
    found.sort();
    found.pop()
}

fn run_ok(mut command: Command, what: &str) -> Result<String> {
    let output = command
        .output()
        .with_context(|| format!("running {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Starts PostgreSQL in `dir`: `Ok(Err(why))` when it cannot run on this machine (not
/// installed, no user to run it as), an error when it is there and fails.
fn start_postgres(dir: &Path, concurrency: usize) -> Result<Result<Postgres, String>> {
    let Some(bin) = postgres_bin() else {
        return Ok(Err(
            "PostgreSQL's server is not installed (no initdb; on Debian: apt-get install postgresql)"
                .into(),
        ));
    };
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let as_user = if root {
        let output = Command::new("id")
            .args(["-u", "postgres"])
            .output()
            .context("looking up the postgres user")?;
        if !output.status.success() {
            return Ok(Err(
                "running as root, and there is no `postgres` user to run initdb as".into(),
            ));
        }
        let uid: u32 = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .context("the postgres user's uid does not parse")?;
        std::os::unix::fs::chown(dir, Some(uid), None)
            .with_context(|| format!("giving {} to the postgres user", dir.display()))?;
        Some("postgres".to_string())
    } else {
        None
    };
    let port = free_port()?;
    let postgres = Postgres {
        bin,
        data: dir.join("data"),
        socket_dir: dir.to_path_buf(),
        port,
        as_user,
    };
    let mut initdb = postgres.command("initdb");
    initdb
        .arg("-D")
        .arg(&postgres.data)
        .args(["-U", "bench", "-A", "trust", "-N", "-E", "UTF8"]);
    run_ok(initdb, "initdb")?;
    let mut start = postgres.command("pg_ctl");
    start
        .arg("-D")
        .arg(&postgres.data)
        .arg("-l")
        .arg(dir.join("postgres.log"))
        .arg("-o")
        .arg(format!(
            "-p {port} -k {} -c listen_addresses='' -c max_connections={} -c shared_buffers=256MB",
            dir.display(),
            concurrency + 20
        ))
        .args(["-w", "start"]);
    run_ok(start, "pg_ctl start")?;
    let mut create = postgres.command("psql");
    create
        .args(["-h"])
        .arg(&postgres.socket_dir)
        .args([
            "-p",
            &port.to_string(),
            "-U",
            "bench",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
        ])
        .arg(
            "CREATE TABLE events (position bigserial PRIMARY KEY, stream text NOT NULL, \
             version integer NOT NULL, event_id uuid NOT NULL DEFAULT gen_random_uuid(), \
             type text NOT NULL, data jsonb NOT NULL, recorded_at timestamptz NOT NULL \
             DEFAULT now(), UNIQUE (stream, version))",
        );
    run_ok(create, "creating the event table")?;
    Ok(Ok(postgres))
}

/// The event-table INSERT from `pgbench`, one stream per client.
async fn measure_postgres(postgres: &Postgres, dir: &Path, args: &ServiceArgs) -> Result<Figures> {
    let script = dir.join("append.sql");
    std::fs::write(
        &script,
        "INSERT INTO events (stream, version, type, data) \
         SELECT 'acme/plan-' || :client_id, coalesce(max(version), 0) + 1, 'CheckInRecorded', \
         '{\"goal_id\": \"g\", \"value\": 1.5, \"confidence\": 0.7}'::jsonb \
         FROM events WHERE stream = 'acme/plan-' || :client_id;\n",
    )?;
    let logs = dir.join("pgbench-logs");
    std::fs::create_dir_all(&logs)?;
    if let Some(user) = &postgres.as_user {
        // The per-transaction logs are written by pgbench, run as that user.
        let _ = Command::new("chown")
            .arg(user)
            .arg(&logs)
            .arg(&script)
            .status();
    }
    let server_before = postgres.cpu_seconds();

    let mut pgbench = postgres.command("pgbench");
    pgbench
        .args(["-n", "-c", &args.concurrency.to_string(), "-j", "2"])
        .args(["-T", &args.seconds.to_string(), "-l", "--log-prefix"])
        .arg(logs.join("tx"))
        .arg("-f")
        .arg(&script)
        .arg("-h")
        .arg(&postgres.socket_dir)
        .args(["-p", &postgres.port.to_string(), "-U", "bench", "postgres"]);
    let started = Instant::now();
    let child: Child = pgbench
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting pgbench")?;
    let bar = progress_bar(args.seconds, "PostgreSQL");
    // Polled on the runtime, so Ctrl-C stops the bench (pgbench is killed with the child).
    let mut child = KillOnDrop(Some(child));
    while child.0.as_mut().context("pgbench")?.try_wait()?.is_none() {
        tokio::time::sleep(Duration::from_millis(200)).await;
        bar.set_position(started.elapsed().as_secs().min(args.seconds));
    }
    bar.finish_and_clear();
    let output = child.0.take().context("pgbench")?.wait_with_output()?;
    let elapsed = started.elapsed().as_secs_f64();
    let printed = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "pgbench failed: {printed}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let server_seconds = postgres.cpu_seconds() - server_before;
    let tps = printed
        .lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix("tps = ")?
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
        })
        .with_context(|| format!("pgbench printed no tps: {printed}"))?;
    let processed = printed
        .lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix("number of transactions actually processed: ")?
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(tps * elapsed);
    let failed = printed
        .lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix("number of failed transactions: ")?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0);
    // Each line of a per-transaction log: client, transaction, latency in µs, script, epoch s, µs.
    let mut latencies = Vec::new();
    for entry in std::fs::read_dir(&logs)?.flatten() {
        let text = std::fs::read_to_string(entry.path())?;
        latencies.extend(text.lines().filter_map(|line| {
            line.split_whitespace()
                .nth(2)?
                .parse::<u64>()
                .ok()
                .map(Duration::from_micros)
        }));
    }
    latencies.sort();
    Ok(Figures {
        what: "PostgreSQL event-table INSERT (pgbench)".into(),
        per_second: tps,
        p50: quantile(&latencies, 0.5),
        p99: quantile(&latencies, 0.99),
        server_cpu_us: (processed > 0.0).then(|| server_seconds * 1e6 / processed),
        client_cpu: None,
        refused: failed,
        other_cpu: 0.0,
        projectors_cpu_us: None,
    })
}

fn print_row(f: &Figures) {
    println!(
        "{:<52} {:>10.0} {:>8.2} {:>8.2} {:>13} {:>10} {:>8}",
        f.what,
        f.per_second,
        f.p50.as_secs_f64() * 1e3,
        f.p99.as_secs_f64() * 1e3,
        f.server_cpu_us
            .map_or_else(|| "-".to_string(), |us| format!("{us:.1}")),
        f.client_cpu
            .map_or_else(|| "-".to_string(), |cores| format!("{cores:.2}")),
        f.refused
    );
}

pub async fn run(args: ServiceArgs) -> Result<()> {
    if args.concurrency == 0 || args.seconds == 0 {
        bail!("--concurrency and --seconds must be at least 1");
    }
    let scratch = ScratchDir::new(args.dir.as_deref())?;
    let (key, token) = signing_key(&scratch)?;
    println!(
        "bench service: {} clients, {} s per measurement, a fresh Idempotency-Key per command, \
         {} CPU cores shared by the server, the load generator and the peer",
        args.concurrency,
        args.seconds,
        crate::cores()
    );
    let mut rows = Vec::new();

    let embedded = {
        let node = start_serve(&scratch.join("embedded"), &key, None, true)?;
        let (commands, health) = measure_serve("embedded", &node, &token, &args, &[], None).await?;
        rows.push(health);
        commands
    };
    let mut nats_cpu = None;
    let nats = if args.no_nats {
        None
    } else {
        let (url, guard) = crate::start_private_nats()?;
        let node = start_serve(&scratch.join("nats"), &key, Some(&url), true)?;
        let pids = [guard.child.id()];
        let (commands, _) = measure_serve("NATS relay", &node, &token, &args, &pids, None).await?;
        nats_cpu = Some(commands.other_cpu);
        drop(node);
        drop(guard);
        Some(commands)
    };
    // The read models moved out: the relay on, each read model its own projector process
    // consuming the stream (on a fresh nats-server and data directory).
    let separate = if args.no_nats {
        None
    } else {
        let (url, guard) = crate::start_private_nats()?;
        let node = start_serve(&scratch.join("separate"), &key, Some(&url), false)?;
        wait_ready(&node).await?;
        let mut projectors = Projectors::start(&scratch.join("projectors"), &url)?;
        let pids = [guard.child.id()];
        let (commands, _) = measure_serve(
            "projectors apart",
            &node,
            &token,
            &args,
            &pids,
            Some(&mut projectors),
        )
        .await?;
        drop(projectors);
        drop(node);
        drop(guard);
        Some(commands)
    };
    let postgres = if args.no_postgres {
        println!("PostgreSQL: skipped (--no-postgres)");
        None
    } else {
        // Run as root, PostgreSQL runs as the postgres user, which must reach its directory:
        // the system temp dir then, not --dir (whose parents may be private).
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let pg_scratch = ScratchDir::new(if root { None } else { args.dir.as_deref() })?;
        let dir = pg_scratch.join("postgres");
        std::fs::create_dir_all(&dir)?;
        match start_postgres(&dir, args.concurrency)? {
            Ok(server) => Some(measure_postgres(&server, &dir, &args).await?),
            Err(why) => {
                println!("PostgreSQL: SKIPPED, {why}");
                None
            }
        }
    };

    println!(
        "{:<52} {:>10} {:>8} {:>8} {:>13} {:>10} {:>8}",
        "load", "per s", "p50 ms", "p99 ms", "server µs/req", "client CPU", "refused"
    );
    print_row(&embedded);
    if let Some(nats) = &nats {
        print_row(nats);
    }
    if let Some(separate) = &separate {
        print_row(separate);
    }
    if let Some(pg) = &postgres {
        print_row(pg);
    }
    for row in &rows {
        print_row(row);
    }
    if let Some(cores) = nats_cpu {
        println!("nats-server during the NATS relay run: {cores:.2} cores");
    }
    if let Some(separate) = &separate
        && let Some(projectors) = &separate.projectors_cpu_us
    {
        let total: f64 = projectors.iter().map(|(_, us)| us).sum();
        println!(
            "projector processes (projectors apart run): {total:.1} µs per command ({}); serve plus projectors {:.1} µs per command, nats-server {:.2} cores",
            projectors
                .iter()
                .map(|(name, us)| format!("{name} {us:.1}"))
                .collect::<Vec<_>>()
                .join(", "),
            separate.server_cpu_us.unwrap_or(0.0) + total,
            separate.other_cpu
        );
        if embedded.per_second > 0.0 {
            println!(
                "ratio serve (projectors apart) / serve (embedded): {:.2}",
                separate.per_second / embedded.per_second
            );
        }
    }
    if let Some(pg) = &postgres
        && pg.per_second > 0.0
    {
        println!(
            "ratio serve (embedded) / PostgreSQL: {:.2} (goal >= 2)",
            embedded.per_second / pg.per_second
        );
    }
    if let Some(nats) = &nats
        && embedded.per_second > 0.0
    {
        println!(
            "ratio serve (NATS relay) / serve (embedded): {:.2} (goal >= 0.85)",
            nats.per_second / embedded.per_second
        );
    }
    Ok(())
}
