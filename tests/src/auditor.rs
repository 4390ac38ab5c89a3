//! An auditor of a running service: takes signed checkpoints, events as stored and their
//! inclusion proofs, and consistency proofs, over the audit API; and the bundle the
//! independent Python verifier (`tests/python/verify_proofs.py`) checks.

use std::process::Command;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::server::Planledger;
use crate::workspace_root;

/// A client of the audit endpoints with an auditor's (or admin's) token.
#[derive(Clone, Debug)]
pub struct Auditor {
    http: reqwest::Client,
    base_url: String,
    token: String,
}

/// An event kept with its inclusion proof in a checkpoint's tree.
#[derive(Clone, Debug)]
pub struct KeptEvent {
    /// Index of the checkpoint in [`Bundle::checkpoints`].
    pub checkpoint: usize,
    /// The envelope JSON exactly as stored.
    pub event: String,
    /// The inclusion proof JSON as served.
    pub proof: Value,
}

/// Checkpoints, events with proofs, and consistency proofs between pairs of checkpoints.
#[derive(Clone, Debug, Default)]
pub struct Bundle {
    /// Signed checkpoints (text).
    pub checkpoints: Vec<String>,
    /// Events and their inclusion proofs.
    pub inclusion: Vec<KeptEvent>,
    /// `(older index, newer index, proof)`; no proof between equal sizes.
    pub consistency: Vec<(usize, usize, Option<Value>)>,
}

/// The tree size line of a checkpoint.
pub fn tree_size(checkpoint: &str) -> u64 {
    checkpoint
        .lines()
        .nth(1)
        .and_then(|line| line.parse().ok())
        .expect("a tree size on the second line of a checkpoint")
}

impl Auditor {
    /// An auditor of `server` with `token`.
    pub fn new(server: &Planledger, token: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base_url: server.base_url.clone(),
            token: token.to_string(),
        }
    }

    async fn get(&self, path: &str) -> String {
        let response = self
            .http
            .get(format!("{}{path}", self.base_url))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status();
        let body = response.text().await.expect("a body");
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    /// The log's checkpoint public key (hex).
    pub async fn log_key(&self) -> String {
        let keys: Value = serde_json::from_str(&self.get("/v1/audit/keys").await).expect("json");
        keys["keys"][0]["public_key"]
            .as_str()
            .expect("a key")
            .to_string()
    }

    /// The newest signed checkpoint.
    pub async fn checkpoint(&self) -> String {
        self.get("/v1/audit/checkpoint").await
    }

    /// The stored bytes of the event at `position` (as `GET /v1/events` serves them).
    pub async fn event(&self, position: u64) -> String {
        type Raw = Box<serde_json::value::RawValue>;
        let body = self
            .get(&format!("/v1/events?from_position={position}&limit=1"))
            .await;
        let page: std::collections::HashMap<String, Raw> =
            serde_json::from_str(&body).expect("a page");
        let events: Vec<Raw> = serde_json::from_str(page["events"].get()).expect("events");
        let event = events.first().expect("the event").get().to_string();
        let value: Value = serde_json::from_str(&event).expect("json");
        assert_eq!(value["position"], position, "{event}");
        event
    }

    /// The inclusion proof of `position` in the tree of `tree_size`.
    pub async fn inclusion(&self, position: u64, tree_size: u64) -> Value {
        let body = self
            .get(&format!(
                "/v1/audit/proof/inclusion?position={position}&tree_size={tree_size}"
            ))
            .await;
        serde_json::from_str(&body).expect("json")
    }

    /// The consistency proof from `from` to `to`.
    pub async fn consistency(&self, from: u64, to: u64) -> Value {
        let body = self
            .get(&format!("/v1/audit/proof/consistency?from={from}&to={to}"))
            .await;
        serde_json::from_str(&body).expect("json")
    }

    /// Keeps the event at `position` with its proof in `bundle`'s checkpoint `checkpoint`.
    pub async fn keep_event(&self, bundle: &mut Bundle, checkpoint: usize, position: u64) {
        let size = tree_size(&bundle.checkpoints[checkpoint]);
        let event = self.event(position).await;
        let proof = self.inclusion(position, size).await;
        bundle.inclusion.push(KeptEvent {
            checkpoint,
            event,
            proof,
        });
    }

    /// Keeps the consistency proof between `bundle`'s checkpoints `old` and `new`.
    pub async fn keep_consistency(&self, bundle: &mut Bundle, old: usize, new: usize) {
        let (from, to) = (
            tree_size(&bundle.checkpoints[old]),
            tree_size(&bundle.checkpoints[new]),
        );
        let proof = if from == to || from == 0 {
            None
        } else {
            Some(self.consistency(from, to).await)
        };
        bundle.consistency.push((old, new, proof));
    }
}

impl Bundle {
    /// The JSON document `verify_proofs.py` reads.
    pub fn to_json(&self, public_key: &str) -> Value {
        json!({
            "public_key": public_key,
            "checkpoints": self.checkpoints,
            "inclusion": self.inclusion.iter().map(|kept| json!({
                "checkpoint": kept.checkpoint, "event": kept.event, "proof": kept.proof,
            })).collect::<Vec<_>>(),
            "consistency": self.consistency.iter().map(|(old, new, proof)| json!({
                "old": old, "new": new, "proof": proof,
            })).collect::<Vec<_>>(),
        })
    }
}

/// Runs `tests/python/verify_proofs.py` on a bundle: whether it passed, and its summary
/// (`{checkpoints, inclusion, consistency, failures}`).
pub fn python_verify(bundle: &Value) -> (bool, Value) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("bundle.json");
    std::fs::write(&file, bundle.to_string()).expect("write the bundle");
    let root = workspace_root();
    let python = root.join(".tools/bin/python");
    let output = Command::new(&python)
        .arg(root.join("tests/python/verify_proofs.py"))
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; run `just setup`", python.display()));
    let summary = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "verify_proofs.py printed no summary:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.success(), summary)
}
