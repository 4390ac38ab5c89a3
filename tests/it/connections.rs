//! Connection limits end to end: idle and slow (slowloris) clients do not starve normal
//! requests, the header read timeout closes them, and connections over the cap are answered
//! 503 at once.

use std::time::{Duration, Instant};

use planledger_e2e::client::today_plus;
use planledger_e2e::server::Planledger;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Idle connections the first test holds.
const IDLE: usize = 300;
/// Slowloris connections it holds.
const SLOW: usize = 20;
/// The longest the test waits for the server to close a connection.
const CLOSE_DEADLINE: Duration = Duration::from_secs(60);

/// Makes sure this process (and the server it starts, which inherits the limit) may open
/// enough file descriptors for the connections the tests hold.
fn raise_fd_limit(wanted: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        if limit.rlim_cur < wanted {
            limit.rlim_cur = wanted.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// A header line that takes far longer than the test to send at one byte a second.
fn slow_request() -> Vec<u8> {
    let mut request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Padding: ".to_vec();
    request.extend(std::iter::repeat_n(b'a', 600));
    request.extend(b"\r\n\r\n");
    request
}

/// Sends `request` one byte a second until the server closes the connection; `Some(bytes
/// sent)` when it did, `None` when it had not within [`CLOSE_DEADLINE`] or the whole request
/// went out.
async fn trickle(mut stream: TcpStream, request: Vec<u8>) -> Option<usize> {
    let deadline = Instant::now() + CLOSE_DEADLINE;
    let mut buf = [0u8; 1024];
    for (sent, byte) in request.iter().enumerate() {
        if Instant::now() > deadline || stream.write_all(&[*byte]).await.is_err() {
            return (Instant::now() <= deadline).then_some(sent);
        }
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
            // Closed (or reset) by the server.
            Ok(Ok(0) | Err(_)) => return Some(sent + 1),
            // The server wrote something (an error status) before closing: keep reading.
            Ok(Ok(_)) => {}
            Err(_) => {}
        }
    }
    None
}

/// Waits until the server closes an idle `stream`; `true` if it did within the deadline.
async fn closed_by_server(mut stream: TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + CLOSE_DEADLINE;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

async fn create_plan(server: &Planledger, token: &str, plan: &str) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(server.url(&format!("/v1/plans/{plan}/commands")))
        .bearer_auth(token)
        .json(&json!({"type": "CreatePlan", "data": {"title": "Q plan",
            "starts_on": today_plus(-1), "ends_on": today_plus(30), "checkin_cadence_days": 7}}))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("the command is answered");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn idle_and_slowloris_connections_do_not_starve_a_command_and_are_closed_after_the_header_timeout()
 {
    raise_fd_limit(4096);
    let server = Planledger::start(&["--http-header-read-timeout", "3s"]);
    let token = server.token("acme", "pat", "planner");
    let addr = format!("127.0.0.1:{}", server.port);

    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(TcpStream::connect(&addr).await.expect("an idle connection"));
    }
    let mut slow = Vec::with_capacity(SLOW);
    for _ in 0..SLOW {
        let stream = TcpStream::connect(&addr).await.expect("a slow connection");
        slow.push(tokio::spawn(trickle(stream, slow_request())));
    }

    // With all of them open, a normal command is answered.
    let (status, body) = create_plan(&server, &token, "p1").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The server closes the slow ones long before their headers could be complete, and the
    // idle ones too.
    let request_len = slow_request().len();
    for task in slow {
        let closed_after = task.await.expect("the slow client ran");
        assert!(
            closed_after.is_some_and(|sent| sent < request_len),
            "a slowloris connection was not closed by the server: {closed_after:?}"
        );
    }
    let idle_closed = futures::future::join_all(idle.into_iter().map(closed_by_server)).await;
    assert!(
        idle_closed.iter().all(|closed| *closed),
        "an idle connection stayed open"
    );

    let timeouts = server
        .metric("planledger_http_header_timeouts_total", "")
        .await;
    assert!(timeouts >= Some((IDLE + SLOW) as f64), "{timeouts:?}");
    let open = server.metric("planledger_http_connections_open", "").await;
    assert!(open.is_some(), "the open connections gauge is exported");
    let (status, body) = create_plan(&server, &token, "p2").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_connection_over_the_cap_is_answered_503_and_the_service_recovers_when_they_close() {
    raise_fd_limit(4096);
    let server = Planledger::start(&[
        "--http-max-connections",
        "20",
        "--http-header-read-timeout",
        "60s",
    ]);
    let addr = format!("127.0.0.1:{}", server.port);
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(&addr).await.expect("a connection"));
    }
    // The accept loop takes the held connections in order; one more is over the cap. A probe
    // that is still answered (a connection of the harness's start-up check may have been open
    // when the held ones arrived, so one of those was refused) keeps its connection open in its
    // client's pool, so the probes fill the cap until one is refused.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut probes = Vec::new();
    let refused = loop {
        let client = reqwest::Client::new();
        let response = match client
            .get(server.url("/healthz"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
        {
            Ok(response) => response,
            // The service answers a connection over the cap as soon as it accepts it, before
            // reading the request; a client still writing its request may take that answer for
            // an unsolicited message. Probe again: another probe reads the answer whole.
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "the over-cap connection is never answered readably: {error}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(
                response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()),
                Some("1")
            );
            break response.json::<Value>().await.expect("a problem body");
        }
        assert!(
            Instant::now() < deadline,
            "never refused: {} after {} answered probes",
            response.status(),
            probes.len()
        );
        probes.push(client);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(refused["code"], "too_many_connections", "{refused}");
    assert!(
        refused["detail"]
            .as_str()
            .is_some_and(|d| d.contains("(20)")),
        "{refused}"
    );

    drop(held);
    drop(probes);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = reqwest::Client::new()
            .get(server.url("/metrics"))
            .send()
            .await
            .map(|r| r.status());
        if let Ok(StatusCode::OK) = status {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not answering after the connections closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rejected = server
        .metric("planledger_http_connections_rejected_total", "")
        .await;
    assert!(rejected >= Some(1.0), "{rejected:?}");
}
