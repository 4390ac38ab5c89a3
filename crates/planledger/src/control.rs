//! The serving process's control socket, `<data_dir>/control.sock`: how `planledger backup`
//! asks a running service (one node, or a cluster node) for RocksDB checkpoints of the logs it
//! holds open, which another process cannot take (a secondary instance may not pin the files a
//! checkpoint links). The socket is created mode 0600 in the data directory: whoever may use it
//! may read the data directory anyway.
//!
//! Protocol: one JSON request line, [`Request`]; one JSON answer line per log asked for,
//! [`Answer`]; then the service closes the connection.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use planledger_store::EventStore;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

/// The socket's file name in the data directory.
pub const SOCKET: &str = "control.sock";

/// The logs a service holds open now, by their path relative to the data directory
/// (`log`, or `partitions/<p>/log`).
pub type OpenLogs = Arc<dyn Fn() -> Vec<(String, EventStore)> + Send + Sync>;

/// Asks for checkpoints of `logs` (relative paths) into `<to>/<log>`.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub struct Request {
    /// Absolute target directory.
    pub to: PathBuf,
    /// The logs, as paths relative to the data directory.
    pub logs: Vec<String>,
}

/// What became of one log of a request.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Answer {
    /// The checkpoint was written to `<to>/<log>`.
    Copied {
        /// The log.
        log: String,
    },
    /// The service does not hold that log open (the caller may open it itself).
    NotOpen {
        /// The log.
        log: String,
    },
    /// The checkpoint failed.
    Failed {
        /// The log.
        log: String,
        /// Why.
        error: String,
    },
}

/// Serves the control socket of `data_dir` until `shutdown`, then removes it. Call it once the
/// data directory is locked by this process (a stale socket file is replaced).
pub async fn serve(data_dir: PathBuf, logs: OpenLogs, shutdown: CancellationToken) {
    let path = data_dir.join(SOCKET);
    let _ = std::fs::remove_file(&path);
    let listener = match UnixListener::bind(&path) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "no control socket: `planledger backup` cannot copy this running service's logs");
            return;
        }
    };
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(answer(stream, logs.clone()));
                }
                Err(error) => tracing::warn!(%error, "control socket accept failed"),
            },
        }
    }
    let _ = std::fs::remove_file(&path);
}

async fn answer(stream: UnixStream, logs: OpenLogs) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    if BufReader::new(read).read_line(&mut line).await.is_err() {
        return;
    }
    let answers = match serde_json::from_str::<Request>(&line) {
        Ok(request) if request.to.is_absolute() => checkpoints(request, logs()).await,
        Ok(_) => vec![Answer::Failed {
            log: String::new(),
            error: "the target directory must be an absolute path".into(),
        }],
        Err(error) => vec![Answer::Failed {
            log: String::new(),
            error: format!("the request does not parse: {error}"),
        }],
    };
    for answer in answers {
        let mut text = serde_json::to_string(&answer).expect("an answer serializes");
        text.push('\n');
        if write.write_all(text.as_bytes()).await.is_err() {
            return;
        }
    }
    let _ = write.shutdown().await;
}

async fn checkpoints(request: Request, open: Vec<(String, EventStore)>) -> Vec<Answer> {
    let mut answers = Vec::with_capacity(request.logs.len());
    for log in request.logs {
        let Some((_, store)) = open.iter().find(|(name, _)| *name == log) else {
            answers.push(Answer::NotOpen { log });
            continue;
        };
        let store = store.clone();
        let to = request.to.join(&log);
        let done = tokio::task::spawn_blocking(move || store.checkpoint_to(&to)).await;
        answers.push(match done {
            Ok(Ok(())) => {
                tracing::info!(log = %log, to = %request.to.display(), "checkpoint written for a backup");
                Answer::Copied { log }
            }
            Ok(Err(error)) => Answer::Failed {
                log,
                error: error.to_string(),
            },
            Err(error) => Answer::Failed {
                log,
                error: error.to_string(),
            },
        });
    }
    answers
}

/// Asks the service running on `data_dir` for checkpoints; `Ok(None)` when no service answers
/// on its socket (none runs).
pub async fn request(data_dir: &Path, request: &Request) -> Result<Option<Vec<Answer>>> {
    let path = data_dir.join(SOCKET);
    let Ok(stream) = UnixStream::connect(&path).await else {
        return Ok(None);
    };
    let (read, mut write) = stream.into_split();
    let mut text = serde_json::to_string(request)?;
    text.push('\n');
    write
        .write_all(text.as_bytes())
        .await
        .with_context(|| format!("sending the backup request on {}", path.display()))?;
    let mut lines = BufReader::new(read).lines();
    let mut answers = Vec::new();
    while let Some(line) = lines
        .next_line()
        .await
        .with_context(|| format!("reading the service's answer on {}", path.display()))?
    {
        answers.push(
            serde_json::from_str(&line)
                .with_context(|| format!("the service answered {line:?}"))?,
        );
    }
    Ok(Some(answers))
}
