//! The month's usage report over HTTP: a member's own, and the team's for owners and admins only.

mod common;

use axum::http::StatusCode;
use common::providers::{MockProvider, Wire};
use common::{Plan, World, client, test_options};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_see_their_usage_and_only_owners_and_admins_see_the_teams() {
    let world = World::new().await;
    let mock = MockProvider::start(Wire::OpenAi).await;
    let spec = world.provider_spec("openai", &mock, Wire::OpenAi, &["gpt-4o-mini", "gpt-4o"]);
    let plan = Plan { tokens_per_month: 5000, ..Plan::default() };
    let chat = world.start_chat(&[spec], &plan, "gpt-4o-mini", test_options()).await;
    let alice = world.auth.token("alice");
    let bob = world.auth.token("bob");
    for (token, model) in [(&alice, "gpt-4o-mini"), (&alice, "gpt-4o"), (&bob, "gpt-4o")] {
        let conversation = chat.create_conversation(token, json!({ "model": model })).await;
        let id = conversation["id"].as_str().expect("id");
        let response = client()
            .post(format!("{}/v1/conversations/{id}/messages", chat.url))
            .bearer_auth(token)
            .json(&json!({ "content": "Hi" }))
            .send()
            .await
            .expect("send");
        let _ = response.text().await;
    }
    chat.wait_for_usage(3).await;

    let get = |path: &'static str, token: String| {
        let url = format!("{}{path}", chat.url);
        async move {
            let response = client().get(url).bearer_auth(token).send().await.expect("get");
            (response.status(), response.json::<Value>().await.expect("json"))
        }
    };
    let (status, mine) = get("/v1/usage", alice.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(mine["plan"]["tokensPerMonth"], 5000);
    assert_eq!(mine["plan"]["name"], "pro");
    assert_eq!(mine["totals"]["requests"], 2);
    assert_eq!(mine["tenantTokens"], 3 * 18, "all three answers count against the plan");
    let models: Vec<&str> =
        mine["models"].as_array().expect("models").iter().filter_map(|m| m["key"].as_str()).collect();
    assert_eq!(models.len(), 2);
    assert!(mine["totals"]["costMicros"].as_i64().expect("priced") > 0);
    assert!(mine.get("members").is_none(), "a member's report names nobody else");

    let (status, refused) = get("/v1/usage/team", alice.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    let (status, team) = get("/v1/usage/team", world.auth.token_with_role("carol", "admin")).await;
    assert_eq!(status, StatusCode::OK);
    let members: Vec<(&str, i64)> = team["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| (m["key"].as_str().expect("user"), m["requests"].as_i64().expect("requests")))
        .collect();
    assert_eq!(members.len(), 2);
    assert!(members.contains(&("alice", 2)) && members.contains(&("bob", 1)));
    let (status, _) = get("/v1/usage/team", world.auth.token_with_role("olga", "owner")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = get("/v1/usage", String::new()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
