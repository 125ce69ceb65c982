//! The official `openai` Python package, pointed at the service, works unchanged: models, a whole completion,
//! a stream with `include_usage`, and its typed errors. The venv comes from `scripts/tools/python-venv`.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::providers::{MockProvider, Wire};
use common::{API_KEY, Plan, World, test_options};

fn venv_python() -> PathBuf {
    let cache = std::env::var_os("SAASCHAT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/saaschat"));
    let python = cache.join("venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/tools/python-venv", python.display());
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_python_client_works_unchanged() {
    let python = venv_python();
    let world = World::new().await;
    let mock = MockProvider::start(Wire::OpenAi).await;
    let specs = [world.provider_spec("openai", &mock, Wire::OpenAi, &["gpt-4o-mini", "gpt-4o"])];
    let plan = Plan { allowed_models: vec!["gpt-4o-mini".into()], ..Plan::default() };
    let chat = world.start_chat(&specs, &plan, "gpt-4o-mini", test_options()).await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/openai_client.py");
    let base_url = format!("{}/v1", chat.url);
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .env("OPENAI_BASE_URL", base_url)
            .env("OPENAI_API_KEY", API_KEY)
            .env_remove("OPENAI_ORG_ID")
            .env_remove("OPENAI_PROJECT_ID")
            .output()
            .expect("run python")
    })
    .await
    .expect("task");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the openai client failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("openai client ok"), "{stdout}");
    assert_eq!(chat.wait_for_usage(2).await.len(), 2);
}
