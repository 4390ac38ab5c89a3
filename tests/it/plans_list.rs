//! `GET /v1/plans` (the tenant's plans, paged), `GET /v1/plans/{id}/progress/history` (the
//! dashboard's chart series) and `/ui` (the dashboard's files), against the real binary.

use planledger_e2e::client::{Client, seed_plan};
use planledger_e2e::server::Planledger;
use reqwest::StatusCode;
use serde_json::Value;

fn ids(page: &Value) -> Vec<String> {
    page["plans"]
        .as_array()
        .unwrap_or_else(|| panic!("no plans in {page}"))
        .iter()
        .map(|p| p["plan_id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn plans_list_pages_through_the_callers_tenant_only() {
    let server = Planledger::start(&[]);
    let client = Client::new();
    let planner = server.token("acme", "pat", "planner");
    let mut position = 0;
    for plan in ["gamma", "alpha", "beta"] {
        position = seed_plan(&server, &client, &planner, plan, "ana").await;
    }
    let other = server.token("globex", "gil", "planner");
    let other_position = seed_plan(&server, &client, &other, "alpha", "gus").await;
    let viewer = server.token("acme", "vic", "viewer");
    let base = &server.base_url;

    let (status, first) = client
        .get(
            base,
            &viewer,
            &format!("/v1/plans?limit=2&min_position={other_position}"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(ids(&first), ["alpha", "beta"]);
    assert_eq!(first["next_after"], "beta");
    assert_eq!(first["projection"], "progress");
    assert!(first["position"].as_u64().unwrap_or(0) >= position);
    let alpha = &first["plans"][0];
    assert_eq!(alpha["title"], "Q plan");
    assert_eq!(alpha["goals"], 1);
    assert_eq!(alpha["version"], 5);

    let (status, second) = client
        .get(base, &viewer, "/v1/plans?limit=2&after=beta")
        .await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(ids(&second), ["gamma"]);
    assert_eq!(second["next_after"], Value::Null);

    let (_, everything) = client.get(base, &viewer, "/v1/plans").await;
    assert_eq!(ids(&everything), ["alpha", "beta", "gamma"]);
    let (_, theirs) = client.get(base, &other, "/v1/plans").await;
    assert_eq!(ids(&theirs), ["alpha"], "another tenant sees only its plan");

    let (status, bad) = client
        .get(base, &viewer, "/v1/plans?after=no%20spaces")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    assert_eq!(bad["code"], "invalid_id");
    let (status, _) = client.get(base, "not-a-token", "/v1/plans").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn plans_list_refuses_a_page_size_outside_1_to_500() {
    let server = Planledger::start(&[]);
    let client = Client::new();
    let viewer = server.token("acme", "vic", "viewer");
    let base = &server.base_url;
    for limit in [1, 500] {
        let (status, page) = client
            .get(base, &viewer, &format!("/v1/plans?limit={limit}"))
            .await;
        assert_eq!(status, StatusCode::OK, "limit {limit}: {page}");
    }
    for limit in [0, 501] {
        let (status, bad) = client
            .get(base, &viewer, &format!("/v1/plans?limit={limit}"))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "limit {limit}: {bad}");
        assert_eq!(bad["errors"][0]["field"], "limit", "{bad}");
        let detail = bad["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("1 to 500"), "{bad}");
    }
}

#[tokio::test]
async fn progress_history_marks_the_check_in_and_the_target_change() {
    let server = Planledger::start(&[]);
    let client = Client::new();
    let token = server.token("acme", "pat", "planner");
    seed_plan(&server, &client, &token, "launch", "ana").await;
    let position = client
        .command(
            &server,
            &token,
            "launch",
            serde_json::json!({"type": "AdjustGoal", "data": {
                "goal_id": "signups", "target": 180.0, "reason": "smaller market"}}),
        )
        .await;
    let (status, history) = client
        .get(
            &server.base_url,
            &token,
            &format!("/v1/plans/launch/progress/history?min_position={position}"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{history}");
    assert_eq!(history["baseline_label"], "v1");
    let goal = &history["goals"][0];
    assert_eq!(goal["goal_id"], "signups");
    assert_eq!(goal["target"], 180.0);
    assert_eq!(goal["baseline_target"], 200.0);
    let today = goal["points"]
        .as_array()
        .and_then(|points| points.last())
        .unwrap_or_else(|| panic!("no points in {history}"));
    assert_eq!(today["check_ins"].as_array().map(Vec::len), Some(1));
    assert_eq!(today["value"], 150.0);
    // (150 - 100) / (180 - 100) against the current target, (150 - 100) / (200 - 100) against
    // the baseline's.
    assert_eq!(today["progress"], 0.625);
    assert_eq!(today["progress_vs_baseline"], 0.5);
    assert_eq!(goal["adjustments"][0]["target"]["before"], 200.0);
    assert_eq!(goal["adjustments"][0]["reason"], "smaller market");
}

#[tokio::test]
async fn dashboard_files_are_served_without_a_token_under_a_same_origin_policy() {
    let server = Planledger::start(&[]);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let redirect = http.get(server.url("/ui")).send().await.expect("GET /ui");
    assert_eq!(redirect.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(redirect.headers()["location"], "/ui/");
    let page = http.get(server.url("/ui/")).send().await.expect("GET /ui/");
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/html")
    );
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap_or("")
        .to_owned();
    assert!(policy.contains("default-src 'none'"), "{policy}");
    assert!(policy.contains("connect-src 'self'"), "{policy}");
    let body = page.text().await.expect("page body");
    assert!(body.contains("app.js"), "{body}");
    let script = http
        .get(server.url("/ui/app.js"))
        .send()
        .await
        .expect("GET app.js");
    assert_eq!(script.status(), StatusCode::OK);
    assert!(
        script.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/javascript")
    );
    let missing = http
        .get(server.url("/ui/nope.js"))
        .send()
        .await
        .expect("GET nope.js");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let problem: Value = missing.json().await.expect("problem body");
    assert_eq!(problem["code"], "no_route");
}
