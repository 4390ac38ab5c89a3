//! Disk full: the service runs on a small tmpfs of its own while writers send commands, and a
//! filler file eats the space left. Commands are refused with 503 `storage_full` and a
//! `Retry-After`, reads keep working, `/readyz` says why; once the filler is deleted the
//! service takes commands again (by itself when the free-space reserve stopped the appends in
//! time, after a restart when a write hit the full disk), and every acknowledged command is in
//! the log once and `planledger verify` passes.
//!
//! Mounting needs root; elsewhere each test prints why it is skipped and passes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use planledger_e2e::client::{Client, readyz};
use planledger_e2e::load::{CommandLoad, LogContents};
use planledger_e2e::server::Planledger;
use reqwest::StatusCode;
use serde_json::{Value, json};

const DISK_BYTES: u64 = 64 * 1024 * 1024;
const RESERVE_BYTES: u64 = 16 * 1024 * 1024;
const WRITERS: usize = 8;

/// A tmpfs of `DISK_BYTES` mounted on a temporary directory; unmounted and removed on drop.
struct SmallDisk {
    mount_point: PathBuf,
    /// Holds the mount point (and the service's log, off the small disk).
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts the file system, or says why it cannot.
    fn mount() -> Result<Self, String> {
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("mounting a tmpfs needs root".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mount_point = dir.path().join("disk");
        std::fs::create_dir(&mount_point).map_err(|e| e.to_string())?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={DISK_BYTES}"))
            .arg("tmpfs")
            .arg(&mount_point)
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(Self {
            mount_point,
            _dir: dir,
        })
    }

    fn data_dir(&self) -> PathBuf {
        self.mount_point.join("data")
    }

    fn filler(&self) -> PathBuf {
        self.mount_point.join("filler")
    }

    /// Writes the filler until at most `leave` bytes are free (0: until the disk is full).
    fn fill(&self, leave: u64) {
        let mut file = std::fs::File::create(self.filler()).expect("create the filler");
        let chunk = vec![0xA5u8; 256 * 1024];
        loop {
            let free = free_bytes(&self.mount_point);
            if free <= leave {
                break;
            }
            let take = chunk.len().min((free - leave) as usize);
            match file.write_all(&chunk[..take]) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("writing the filler: {e}"),
            }
        }
        let _ = file.sync_all();
    }

    fn free(&self) {
        std::fs::remove_file(self.filler()).expect("delete the filler");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.filler());
        let unmounted = Command::new("umount")
            .arg(&self.mount_point)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Still busy (a process being reaped): detach it, it goes once unused.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.mount_point)
                .status();
        }
    }
}

/// Bytes free on the file system holding `path`.
fn free_bytes(path: &Path) -> u64 {
    let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("a path");
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is NUL-terminated and `stats` is the buffer statvfs(3) fills.
    let rc = unsafe { libc::statvfs(path.as_ptr(), stats.as_mut_ptr()) };
    assert_eq!(rc, 0, "statvfs of {}", path.to_string_lossy());
    // SAFETY: statvfs returned 0.
    let stats = unsafe { stats.assume_init() };
    // Both fields are 32 bits wide on some targets.
    #[allow(clippy::unnecessary_cast)]
    let free = stats.f_bavail as u64 * stats.f_frsize as u64;
    free
}

/// Mounts the small disk and starts the service on it, or prints why the test is skipped.
fn start_on_small_disk(reserve: u64) -> Option<(SmallDisk, Planledger)> {
    let disk = match SmallDisk::mount() {
        Ok(disk) => disk,
        Err(why) => {
            println!("skipped: {why}; this test needs its own small file system");
            return None;
        }
    };
    std::fs::create_dir(disk.data_dir()).expect("data dir");
    // The service's log stays off the small disk: writes to it would fail too.
    let server = Planledger::start_in_logging_to(
        &disk.data_dir(),
        &disk._dir.path().join("serve.log"),
        &[
            "--rate-limit-per-second",
            "0",
            "--log-min-free-bytes",
            &reserve.to_string(),
        ],
    );
    Some((disk, server))
}

/// Waits (at most 60 s) until `/readyz` answers as `wanted` says; the last body.
async fn wait_readyz(
    server: &Planledger,
    what: &str,
    wanted: impl Fn(StatusCode, &Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = readyz(server).await;
        if wanted(status, &body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz did not say {what} within 60 s: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the service is ready.
async fn wait_ready(server: &Planledger) -> Value {
    wait_readyz(server, "ready", |status, _| status == StatusCode::OK).await
}

/// What a full disk looks like from outside: a command is refused with 503 `storage_full` and
/// a `Retry-After`, reads answer, and `/readyz` names the reason. Returns the readiness body.
async fn check_refused_but_readable(server: &Planledger, token: &str) -> Value {
    let ready = wait_readyz(server, "storage_full", |_, body| {
        body["components"]["log"]["reason"] == json!("storage_full")
    })
    .await;
    let log = &ready["components"]["log"];
    assert_eq!(log["ready"], json!(false), "{ready}");
    assert_eq!(log["reason"], json!("storage_full"), "{ready}");
    assert!(log["detail"].as_str().is_some_and(|d| !d.is_empty()));

    let response = reqwest::Client::new()
        .post(server.url("/v1/plans/load-0/commands"))
        .bearer_auth(token)
        .header("Idempotency-Key", "while-full")
        .json(&json!({"type": "RecordCheckIn", "data": {
            "goal_id": "signups", "value": 1.0, "confidence": 0.5}}))
        .send()
        .await
        .expect("the command is answered");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    assert!(
        retry_after.is_some_and(|s| s > 0),
        "Retry-After: {retry_after:?}"
    );
    let problem: Value = response.json().await.expect("problem+json");
    assert_eq!(problem["code"], json!("storage_full"), "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("nothing was appended")),
        "{problem}"
    );

    let client = Client::new();
    let (status, plan) = client
        .get(&server.base_url, token, "/v1/plans/load-0")
        .await;
    assert_eq!(status, StatusCode::OK, "plan state reads: {plan}");
    let (status, events) = client
        .get(&server.base_url, token, "/v1/plans/load-1/events?limit=5")
        .await;
    assert_eq!(status, StatusCode::OK, "plan events read: {events}");
    let (status, page) = client
        .get(
            &server.base_url,
            token,
            "/v1/events?from_position=1&limit=5",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "the global log reads: {page}");
    ready
}

/// Runs the load until it has had commands acknowledged after the recovery, then checks the
/// log and the hash chain; returns the acknowledged count.
async fn check_recovered(server: &mut Planledger, token: &str, load: &mut CommandLoad) -> usize {
    let before = load.acked().len();
    load.start();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        load.stop().await;
        if load.acked().len() > before + WRITERS && load.pending() == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "commands are not taken again after space was freed ({} acknowledged before, {} now)",
            before,
            load.acked().len()
        );
        load.start();
    }
    let acked = load.acked();
    let log = LogContents::read(server, token).await;
    log.assert_holds(&acked, "after the recovery");
    server.terminate();
    let (verified, printed) = server.verify();
    assert!(verified, "planledger verify: {printed}");
    acked.len()
}

fn print_refusals(load: &CommandLoad) {
    for (refusal, count) in load.refusals() {
        println!(
            "  {count} x {} {} (Retry-After {:?})",
            refusal.status, refusal.code, refusal.retry_after
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn below_the_reserve_commands_are_refused_and_taken_again_without_a_restart() {
    let Some((disk, mut server)) = start_on_small_disk(RESERVE_BYTES) else {
        return;
    };
    let token = server.token("full", "filler", "admin");
    let mut load = CommandLoad::seed(&server, &token, WRITERS).await;
    load.start();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The filler leaves less than the reserve, but enough for RocksDB's own work.
    disk.fill(RESERVE_BYTES / 4);
    let ready = check_refused_but_readable(&server, &token).await;
    assert_eq!(
        ready["components"]["log"]["restart_required"],
        json!(false),
        "{ready}"
    );
    assert_eq!(ready["components"]["log"]["state"], json!("storage_full"));
    load.stop().await;
    let acked_while_filling = load.acked().len();
    assert!(
        load.refusals()
            .keys()
            .any(|r| r.code == "storage_full" && r.retry_after.is_some()),
        "the writers were refused with storage_full: {:?}",
        load.refusals()
    );

    let pid = server.pid();
    disk.free();
    wait_ready(&server).await;
    assert_eq!(server.pid(), pid, "the service recovered without a restart");
    println!(
        "disk below the reserve: {acked_while_filling} commands acknowledged before and while filling"
    );
    print_refusals(&load);
    let acked = check_recovered(&mut server, &token, &mut load).await;
    println!("  recovered without a restart; {acked} commands acknowledged in all, none lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_refuses_commands_keeps_reads_and_recovers_after_a_restart() {
    // No reserve: the filler takes every byte and a write of the log meets the full disk.
    let Some((disk, mut server)) = start_on_small_disk(0) else {
        return;
    };
    let token = server.token("full", "filler", "admin");
    let mut load = CommandLoad::seed(&server, &token, WRITERS).await;
    load.start();
    tokio::time::sleep(Duration::from_millis(300)).await;

    disk.fill(0);
    let ready = check_refused_but_readable(&server, &token).await;
    assert_eq!(
        ready["components"]["log"]["restart_required"],
        json!(true),
        "{ready}"
    );
    load.stop().await;
    // The writes in flight when the disk filled are of unknown outcome; later ones are refused.
    let refusals = load.refusals();
    assert!(
        !refusals.is_empty()
            && refusals.keys().all(|r| r.code == "log_outcome_unknown"
                || (r.code == "storage_full" && r.retry_after.is_some())),
        "the writers were answered log_outcome_unknown or storage_full: {refusals:?}"
    );

    // Freeing space is not enough: a write failed, and the log stays stopped until a restart.
    disk.free();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, after_free) = readyz(&server).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{after_free}");
    assert_eq!(
        after_free["components"]["log"]["reason"],
        json!("storage_full")
    );

    println!(
        "disk full: {} commands acknowledged before the disk filled",
        load.acked().len()
    );
    print_refusals(&load);
    server.terminate();
    let restart = Instant::now();
    tokio::task::block_in_place(|| server.restart());
    println!(
        "  restarted in {:.0} ms after the filler was deleted",
        restart.elapsed().as_secs_f64() * 1e3
    );
    wait_ready(&server).await;
    let acked = check_recovered(&mut server, &token, &mut load).await;
    println!("  recovered after the restart; {acked} commands acknowledged in all, none lost");
}
