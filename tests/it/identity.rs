//! Tokens from an OpenID Connect provider, end to end: the real binary verifies RS256 and EdDSA
//! tokens against a key set served by a loopback HTTP server (or a file) the test controls,
//! beside its own HS256 tokens, and refuses each bad token with a 401 saying why.

use std::time::{Duration, Instant};

use planledger_e2e::client::today_plus;
use planledger_e2e::identity::{self, AUDIENCE, ISSUER, JwksServer, ProviderKey, b64, claims};
use planledger_e2e::server::Planledger;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// `planledger serve` trusting the key set at `url` (issuer and audience set), plus `extra`.
fn serve_with_provider(url: &str, extra: &[&str]) -> Planledger {
    let mut args = vec![
        "--jwt-jwks-url",
        url,
        "--jwt-issuer",
        ISSUER,
        "--jwt-audience",
        AUDIENCE,
    ];
    args.extend_from_slice(extra);
    Planledger::start(&args)
}

/// A provider with an RSA key `rsa-1` and an Ed25519 key `ed-1`, a service trusting it, and
/// plan `p1` of tenant `acme`; the JWKS server lives as long as the returned handle.
async fn two_key_provider() -> (
    ProviderKey,
    ProviderKey,
    JwksServer,
    Planledger,
    reqwest::Client,
) {
    let rsa = ProviderKey::rsa("rsa-1");
    let ed = ProviderKey::ed25519("ed-1");
    let jwks = JwksServer::start(identity::jwks(&[&rsa, &ed]));
    let server = serve_with_provider(&jwks.url, &[]);
    let http = reqwest::Client::new();
    seed(&server, &http).await;
    (rsa, ed, jwks, server, http)
}

/// Creates plan `p1` in tenant `acme` with the service's own token.
async fn seed(server: &Planledger, http: &reqwest::Client) {
    let own = server.token("acme", "owner", "planner");
    let response = http
        .post(server.url("/v1/plans/p1/commands"))
        .bearer_auth(own)
        .json(&json!({"type": "CreatePlan", "data": {"title": "Q plan",
            "starts_on": today_plus(-1), "ends_on": today_plus(30), "checkin_cadence_days": 7}}))
        .send()
        .await
        .expect("the command is sent");
    assert_eq!(response.status(), StatusCode::OK);
}

/// `GET /v1/plans/p1` with `token`: the status and the body.
async fn read_plan(
    server: &Planledger,
    http: &reqwest::Client,
    token: &str,
) -> (StatusCode, Value) {
    let response = http
        .get(server.url("/v1/plans/p1"))
        .bearer_auth(token)
        .send()
        .await
        .expect("the request is sent");
    let status = response.status();
    if status == StatusCode::UNAUTHORIZED {
        let kind = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert_eq!(kind, "application/problem+json");
    }
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Asserts `token` is refused with a 401 `invalid_token` whose detail contains `reason`.
async fn assert_refused(server: &Planledger, http: &reqwest::Client, token: &str, reason: &str) {
    let (status, body) = read_plan(server, http, token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{reason}: {body}");
    assert_eq!(body["code"], "invalid_token", "{body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(reason), "expected {reason:?} in {detail:?}");
}

/// Polls `token` until it gets `wanted` (at most 60 s; the key set is refreshed every second).
async fn wait_for(
    server: &Planledger,
    http: &reqwest::Client,
    token: &str,
    wanted: StatusCode,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = read_plan(server, http, token).await;
        if status == wanted {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "still {status} after 60 s, wanted {wanted}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn provider_tokens_of_both_key_types_are_accepted_beside_the_services_own() {
    let (rsa, ed, _jwks, server, http) = two_key_provider().await;

    for key in [&rsa, &ed] {
        let token = key.sign(&claims("ana@idp", "acme", &["viewer"]));
        let (status, body) = read_plan(&server, &http, &token).await;
        assert_eq!(status, StatusCode::OK, "{:?}: {body}", key.alg);
        assert_eq!(body["plan_id"], "p1");
    }
    // The bearer's tenant comes from the provider's token: another tenant sees nothing.
    let elsewhere = rsa.sign(&claims("ana@idp", "globex", &["viewer"]));
    assert_eq!(
        read_plan(&server, &http, &elsewhere).await.0,
        StatusCode::NOT_FOUND
    );
    let own = server.token("acme", "bo", "viewer");
    assert_eq!(read_plan(&server, &http, &own).await.0, StatusCode::OK);
}

#[tokio::test]
async fn each_bad_provider_token_is_refused_with_its_own_detail() {
    let (rsa, ed, _jwks, server, http) = two_key_provider().await;
    let now = jiff::Timestamp::now().as_second();
    let with = |field: &str, value: Value| {
        let mut c = claims("ana@idp", "acme", &["viewer"]);
        c[field] = value;
        c
    };

    let wrong_issuer = rsa.sign(&with("iss", json!("https://evil.test")));
    assert_refused(&server, &http, &wrong_issuer, "issuer (iss) is not").await;
    let wrong_audience = ed.sign(&with("aud", json!("another-api")));
    assert_refused(
        &server,
        &http,
        &wrong_audience,
        "audience (aud) does not include",
    )
    .await;
    let expired = rsa.sign(&with("exp", json!(now - 3600)));
    assert_refused(&server, &http, &expired, "has expired").await;
    let not_yet = ed.sign(&with("nbf", json!(now + 3600)));
    assert_refused(&server, &http, &not_yet, "not valid yet").await;
    let unknown = rsa.sign_as(Some("rsa-9"), &claims("ana@idp", "acme", &["viewer"]));
    assert_refused(&server, &http, &unknown, "key id (kid) \"rsa-9\" is not in").await;

    // Unsigned: alg none, with and without a signature part.
    let body = b64(claims("ana@idp", "acme", &["admin"]).to_string().as_bytes());
    let none = b64(br#"{"alg":"none","typ":"JWT"}"#);
    assert_refused(&server, &http, &format!("{none}.{body}."), "alg \"none\"").await;
    let none_kid = b64(br#"{"alg":"none","kid":"rsa-1"}"#);
    assert_refused(
        &server,
        &http,
        &format!("{none_kid}.{body}.c2ln"),
        "alg \"none\"",
    )
    .await;

    // Algorithm confusion: HS256 keyed with the RSA public key, naming the RSA key, is refused
    // by the algorithm rule; without a kid it is checked against the service's own secret.
    let confused = |kid: Option<&str>| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = kid.map(str::to_string);
        jsonwebtoken::encode(
            &header,
            &claims("ana@idp", "acme", &["admin"]),
            &jsonwebtoken::EncodingKey::from_secret(&rsa.public_der),
        )
        .expect("signed")
    };
    assert_refused(
        &server,
        &http,
        &confused(Some("rsa-1")),
        "a key is never used with another algorithm",
    )
    .await;
    assert_refused(&server, &http, &confused(None), "signature does not verify").await;

    // An EdDSA signature relabelled RS256 naming the Ed25519 key, and a tampered signature.
    let eddsa = ed.sign(&claims("ana@idp", "acme", &["admin"]));
    let (_, rest) = eddsa.split_once('.').expect("three parts");
    let relabelled = format!("{}.{rest}", b64(br#"{"alg":"RS256","kid":"ed-1"}"#));
    assert_refused(&server, &http, &relabelled, "an Ed25519 key that verifies").await;
    let other = ProviderKey::rsa("rsa-1");
    let forged = other.sign(&claims("ana@idp", "acme", &["admin"]));
    assert_refused(
        &server,
        &http,
        &forged,
        "signature does not verify with the identity provider's key \"rsa-1\"",
    )
    .await;
}

#[tokio::test]
async fn two_keys_are_valid_during_a_rotation_and_a_dropped_key_is_refused_after_refresh() {
    let old = ProviderKey::rsa("2026-old");
    let new = ProviderKey::ed25519("2026-new");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("jwks.json");
    std::fs::write(&file, identity::jwks(&[&old, &new])).expect("write the key set");
    let path = file.display().to_string();
    let server = Planledger::start(&[
        "--jwt-jwks-file",
        &path,
        "--jwt-jwks-refresh",
        "1s",
        "--jwt-issuer",
        ISSUER,
        "--jwt-audience",
        AUDIENCE,
    ]);
    let http = reqwest::Client::new();
    seed(&server, &http).await;
    let by_old = old.sign(&claims("ana@idp", "acme", &["viewer"]));
    let by_new = new.sign(&claims("ana@idp", "acme", &["viewer"]));
    assert_eq!(read_plan(&server, &http, &by_old).await.0, StatusCode::OK);
    assert_eq!(read_plan(&server, &http, &by_new).await.0, StatusCode::OK);

    // The provider retires the old key: once the file is read again, its tokens are refused
    // (even though this one was verified and remembered before), the new key's still pass.
    std::fs::write(&file, identity::jwks(&[&new])).expect("rewrite the key set");
    let refused = wait_for(&server, &http, &by_old, StatusCode::UNAUTHORIZED).await;
    assert!(
        refused["detail"]
            .as_str()
            .is_some_and(|d| d.contains("\"2026-old\" is not in the identity provider's key set")),
        "{refused}"
    );
    assert_eq!(read_plan(&server, &http, &by_new).await.0, StatusCode::OK);

    // A key set that cannot be read at a refresh leaves the keys read before in use.
    std::fs::write(&file, "{ not json").expect("break the key set");
    let deadline = Instant::now() + Duration::from_secs(60);
    while server
        .metric("planledger_jwks_refreshes_total", "\"failed\"")
        .await
        .unwrap_or(0.0)
        < 1.0
    {
        assert!(
            Instant::now() < deadline,
            "no failed refresh counted within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fresh = new.sign(&claims("cy@idp", "acme", &["viewer"]));
    assert_eq!(read_plan(&server, &http, &fresh).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_key_published_after_start_is_fetched_at_its_first_use_and_refetches_are_rate_limited() {
    let first = ProviderKey::rsa("k1");
    let jwks = JwksServer::start(identity::jwks(&[&first]));
    // No periodic refresh during the test, and at most one refetch asked for by tokens.
    let server = serve_with_provider(
        &jwks.url,
        &["--jwt-jwks-refresh", "1h", "--jwt-jwks-min-refetch", "1h"],
    );
    let http = reqwest::Client::new();
    seed(&server, &http).await;
    assert_eq!(jwks.fetches(), 1, "read once at start");

    let second = ProviderKey::ed25519("k2");
    jwks.publish(identity::jwks(&[&first, &second]));
    let token = second.sign(&claims("ana@idp", "acme", &["viewer"]));
    let (status, body) = read_plan(&server, &http, &token).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the unknown kid made the service refetch: {body}"
    );
    assert_eq!(jwks.fetches(), 2);

    // Tokens naming kids nobody published cannot make the service fetch again and again.
    for n in 0..5 {
        let token = first.sign_as(
            Some(&format!("bogus-{n}")),
            &claims("x", "acme", &["viewer"]),
        );
        assert_refused(
            &server,
            &http,
            &token,
            "is not in the identity provider's key set",
        )
        .await;
    }
    assert_eq!(jwks.fetches(), 2);
}

#[test]
fn serve_refuses_to_start_when_the_key_set_cannot_be_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let unreachable = format!("http://127.0.0.1:{}/jwks.json", planledger_e2e::free_port());
    let missing = dir.path().join("missing.json").display().to_string();
    let not_jwks = dir.path().join("not-jwks.json");
    std::fs::write(&not_jwks, r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#).expect("write");
    let not_jwks = not_jwks.display().to_string();
    for (flag, source, reason) in [
        (
            "--jwt-jwks-url",
            unreachable.as_str(),
            "fetching the key set",
        ),
        (
            "--jwt-jwks-file",
            missing.as_str(),
            "reading the key set file",
        ),
        (
            "--jwt-jwks-file",
            not_jwks.as_str(),
            "no usable signature key",
        ),
    ] {
        let output = std::process::Command::new(planledger_e2e::server::binary())
            .args([
                "serve",
                "--no-nats",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(dir.path())
            .args([flag, source])
            .output()
            .expect("run planledger serve");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "{flag} {source} started: {stderr}"
        );
        assert!(
            stderr.contains("loading the identity provider's key set") && stderr.contains(reason),
            "{flag} {source}: {stderr}"
        );
    }
}

/// Cluster mode: a writer node passes the read-model routes to the read model's projector over
/// NATS with the caller's token, so the projector must accept the provider's tokens too. The
/// projector takes `serve`'s identity flags; with them a provider token writes through a node
/// and reads the progress model (answered by the projector) through it, and the projector's own
/// routes check the issuer and audience as the node does.
#[tokio::test]
async fn a_provider_token_reads_a_cluster_read_model_through_a_writer_node() {
    let key = ProviderKey::rsa("rsa-1");
    let jwks = JwksServer::start(identity::jwks(&[&key]));
    let trust = [
        "--jwt-jwks-url",
        jwks.url.as_str(),
        "--jwt-issuer",
        ISSUER,
        "--jwt-audience",
        AUDIENCE,
    ];
    let nats = planledger_e2e::cluster::NatsCluster::start();
    nats.init_planledger(2);
    let urls = nats.urls().join(",");
    let dir = tempfile::tempdir().expect("temp dir");
    let node_dir = dir.path().join("node");
    std::fs::create_dir_all(&node_dir).expect("dir");
    let mut node_args = vec![
        "--log-commit",
        "jetstream",
        "--nats",
        urls.as_str(),
        "--node-id",
        "n1",
        "--lease-ttl",
        "2s",
    ];
    node_args.extend_from_slice(&trust);
    let node = Planledger::start_in(&node_dir, &node_args);
    assert!(
        node.wait_ready().await,
        "the node never got ready: {}",
        node.log()
    );
    let mut projector_args = vec!["--nats", urls.as_str(), "--cluster"];
    projector_args.extend_from_slice(&trust);
    let projector_dir = dir.path().join("progress");
    std::fs::create_dir_all(&projector_dir).expect("dir");
    let projector = Planledger::start_projector(&projector_dir, "progress", &projector_args);

    let http = reqwest::Client::new();
    let planner = key.sign(&claims("ana@idp", "acme", &["planner"]));
    let mut bookmark = String::new();
    for body in [
        json!({"type": "CreatePlan", "data": {"title": "Q plan", "starts_on": today_plus(-1),
            "ends_on": today_plus(30), "checkin_cadence_days": 7}}),
        json!({"type": "DefineGoal", "data": {"goal_id": "g1", "title": "Signups",
            "due": today_plus(20), "kpi": {"unit": "users", "baseline": 0.0, "target": 10.0,
            "direction": "increase"}}}),
    ] {
        let response = http
            .post(node.url("/v1/plans/p1/commands"))
            .bearer_auth(&planner)
            .json(&body)
            .send()
            .await
            .expect("the command is sent");
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(
            status,
            StatusCode::OK,
            "a provider token's command: {answer}"
        );
        bookmark = answer["bookmark"].as_str().expect("a bookmark").to_string();
    }

    // Through the node: the projector answers (503 read_model_unavailable until it listens).
    let viewer = key.sign(&claims("bo@idp", "acme", &["viewer"]));
    let path = format!("/v1/plans/p1/progress?bookmark={bookmark}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let progress = loop {
        let response = http
            .get(node.url(&path))
            .bearer_auth(&viewer)
            .send()
            .await
            .expect("the read is sent");
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status == StatusCode::OK {
            break body;
        }
        assert_ne!(
            status,
            StatusCode::UNAUTHORIZED,
            "the projector refused the provider's token the node accepted: {body}\n{}",
            projector.log()
        );
        assert!(
            Instant::now() < deadline && body["code"] == "read_model_unavailable",
            "{status} {body}\n{}\n{}",
            node.log(),
            projector.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(progress["plan_id"], "p1", "{progress}");

    // The projector's own routes: the provider's token passes, one for another audience not.
    let direct = http
        .get(projector.url(&path))
        .bearer_auth(&viewer)
        .send()
        .await
        .expect("the read is sent");
    assert_eq!(direct.status(), StatusCode::OK);
    let mut elsewhere = claims("bo@idp", "acme", &["viewer"]);
    elsewhere["aud"] = json!("another-service");
    let refused = http
        .get(projector.url(&path))
        .bearer_auth(key.sign(&elsewhere))
        .send()
        .await
        .expect("the read is sent");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let body: Value = refused.json().await.unwrap_or(Value::Null);
    assert_eq!(body["code"], "invalid_token", "{body}");
    drop(projector);
    drop(node);
}
