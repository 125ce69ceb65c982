//! The billing service over HTTP against PostgreSQL, Redis and stripe-mock: webhook verification and the event
//! queue, the decisions taken from what Stripe returns, the API for owners and admins, emails through the outbox,
//! and usage reported to Stripe meters.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use common::{Billing, FIXTURE_CUSTOMER, NEW_SECRET, OLD_SECRET, Options, TENANT, event, now, signature};
use prometheus::IntCounterVec;
use reqwest::StatusCode;
use saaschat_billing::usage::reporter::Reporter;
use saaschat_billing::usage::window;
use saaschat_platform::Problem;
use saaschat_platform::email::{EmailContent, EmailRequest, STREAM};
use serde_json::{Value, json};

fn subscription_event(id: &str, kind: &str, status: &str) -> String {
    event(
        id,
        &format!("customer.subscription.{kind}"),
        json!({"id": "sub_1Pgc6xB7WZ01zgkW", "object": "subscription", "status": status}),
    )
}

async fn problem_type(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    let problem: Problem = response.json().await.expect("problem body");
    (status, problem.problem_type)
}

// --- Webhook verification ------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_delivery_is_queued_and_answered_at_once() {
    let billing = Billing::start().await;
    let body = event("evt_valid1", "charge.refunded", json!({"id": "ch_1", "object": "charge"}));
    let response = billing.deliver_signed(&body).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.expect("json"), json!({"received": true, "duplicate": false}));
    assert_eq!(billing.count("SELECT count(*) FROM stripe_events WHERE id = 'evt_valid1'").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_stale_unsigned_and_foreign_deliveries_are_refused_and_change_nothing() {
    let billing = Billing::start().await;
    let body = event("evt_attack", "invoice.paid", json!({"id": "in_1", "object": "invoice"}));
    let signed = signature(&body, now(), &[NEW_SECRET]);

    let tampered = body.replace("in_1", "in_2");
    let (status, kind) = problem_type(billing.deliver(&tampered, &signed).await).await;
    assert_eq!((status, kind.as_str()), (StatusCode::BAD_REQUEST, "https://saaschat.io/problems/invalid-signature"));

    let stale_time = now() - 301;
    let stale = billing.deliver(&body, &signature(&body, stale_time, &[NEW_SECRET])).await;
    let problem: Problem = stale.json().await.expect("problem");
    assert_eq!(problem.status, 400);
    assert!(problem.detail.unwrap_or_default().contains("outside the tolerance"));

    let from_the_future = billing.deliver(&body, &signature(&body, now() + 400, &[NEW_SECRET])).await;
    assert_eq!(from_the_future.status(), StatusCode::BAD_REQUEST);

    let unknown_secret = billing.deliver(&body, &signature(&body, now(), &["whsec_attacker"])).await;
    assert_eq!(unknown_secret.status(), StatusCode::BAD_REQUEST);

    let unsigned = billing
        .http
        .post(billing.url("/v1/billing/webhooks/stripe"))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .expect("post");
    let (status, kind) = problem_type(unsigned).await;
    assert_eq!((status, kind.as_str()), (StatusCode::BAD_REQUEST, "https://saaschat.io/problems/invalid-signature"));

    let not_an_event = r#"{"hello": "world"}"#;
    let (status, kind) =
        problem_type(billing.deliver(not_an_event, &signature(not_an_event, now(), &[NEW_SECRET])).await).await;
    assert_eq!((status, kind.as_str()), (StatusCode::BAD_REQUEST, "https://saaschat.io/problems/invalid-event"));

    assert_eq!(billing.count("SELECT count(*) FROM stripe_events").await, 0);
    assert!(billing.recorder.requests().is_empty(), "nothing reached Stripe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_secret_rotation_both_signatures_are_accepted() {
    let billing = Billing::start().await;
    let both = event("evt_rotation_both", "charge.refunded", json!({"id": "ch_1"}));
    let response = billing.deliver(&both, &signature(&both, now(), &[OLD_SECRET, NEW_SECRET])).await;
    assert_eq!(response.status(), StatusCode::OK);

    let old_only = event("evt_rotation_old", "charge.refunded", json!({"id": "ch_2"}));
    let response = billing.deliver(&old_only, &signature(&old_only, now(), &[OLD_SECRET])).await;
    assert_eq!(response.status(), StatusCode::OK, "the old secret is still configured");

    let unknown_and_new = event("evt_rotation_mixed", "charge.refunded", json!({"id": "ch_3"}));
    let response =
        billing.deliver(&unknown_and_new, &signature(&unknown_and_new, now(), &["whsec_gone", NEW_SECRET])).await;
    assert_eq!(response.status(), StatusCode::OK, "one matching v1 is enough");
    assert_eq!(billing.count("SELECT count(*) FROM stripe_events").await, 3);
}

// --- The queue and its decisions -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_twice_has_one_effect() {
    let billing = Billing::start().await;
    billing.set_customer(FIXTURE_CUSTOMER, Some("billing@acme.example")).await;
    let body = event("evt_twice", "invoice.payment_failed", json!({"id": "in_1Twice", "object": "invoice"}));
    let header = signature(&body, now(), &[NEW_SECRET]);
    let first = billing.deliver(&body, &header).await;
    assert_eq!(first.json::<Value>().await.expect("json")["duplicate"], false);
    billing.processed("evt_twice").await;

    // Stripe redelivers (a fresh signature), and an attacker replays the captured delivery byte for byte.
    let redelivered = billing.deliver_signed(&body).await;
    assert_eq!(redelivered.status(), StatusCode::OK);
    assert_eq!(redelivered.json::<Value>().await.expect("json")["duplicate"], true);
    let replayed = billing.deliver(&body, &header).await;
    assert_eq!(replayed.json::<Value>().await.expect("json")["duplicate"], true);

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(billing.count("SELECT count(*) FROM outbox").await, 1, "one email for one event");
    assert_eq!(billing.recorder.requests_to("GET", "/v1/invoices/").len(), 1, "fetched once");
    assert_eq!(billing.count("SELECT attempts::bigint FROM stripe_events WHERE id = 'evt_twice'").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updated_before_created_ends_in_the_state_stripe_returns() {
    let billing = Billing::start_with(Options { workers: 1, ..Options::default() }).await;
    billing.set_customer(FIXTURE_CUSTOMER, Some("billing@acme.example")).await;
    // The payloads claim states that are out of date; stripe-mock's subscription is `active`.
    let updated = subscription_event("evt_sub_updated", "updated", "past_due");
    let created = subscription_event("evt_sub_created", "created", "incomplete");
    assert_eq!(billing.deliver_signed(&updated).await.status(), StatusCode::OK);
    assert_eq!(billing.deliver_signed(&created).await.status(), StatusCode::OK);

    let outcome_updated = billing.processed("evt_sub_updated").await;
    let outcome_created = billing.processed("evt_sub_created").await;
    for outcome in [&outcome_updated, &outcome_created] {
        assert_eq!(outcome, "applied sub_1Pgc6xB7WZ01zgkW (active) as fetched from Stripe");
    }
    assert_eq!(billing.recorder.requests_to("GET", "/v1/subscriptions/sub_1Pgc6xB7WZ01zgkW").len(), 2);
    let (state, customer): (Option<String>, Option<String>) =
        sqlx::query_as("SELECT state, customer_id FROM account WHERE tenant = $1")
            .bind(TENANT)
            .fetch_one(&billing.pool)
            .await
            .expect("account");
    assert_eq!(state.as_deref(), Some("active"));
    assert_eq!(customer.as_deref(), Some(FIXTURE_CUSTOMER));

    let response = billing
        .http
        .get(billing.url("/v1/billing/subscription"))
        .bearer_auth(billing.key.token("owner"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), StatusCode::OK);
    let view: Value = response.json().await.expect("json");
    assert_eq!(view["state"], "active");
    assert_eq!(view["cancelAtPeriodEnd"], false, "as stripe-mock's fixture says");
    assert!(view["currentPeriodEnd"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_event_type_is_recorded_and_ignored() {
    let billing = Billing::start().await;
    let body = event("evt_unknown", "customer.tax_id.created", json!({"id": "txi_1", "object": "tax_id"}));
    assert_eq!(billing.deliver_signed(&body).await.status(), StatusCode::OK);
    assert_eq!(billing.processed("evt_unknown").await, "ignored: customer.tax_id.created is not handled");
    assert!(billing.recorder.requests().is_empty(), "nothing fetched for an event that is not acted on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_customers_subscription_does_not_touch_the_tenant() {
    let billing = Billing::start().await;
    billing.set_customer("cus_TheTenantsOwn", None).await;
    let body = subscription_event("evt_foreign", "updated", "canceled");
    billing.deliver_signed(&body).await;
    let outcome = billing.processed("evt_foreign").await;
    assert_eq!(
        outcome,
        format!("ignored: sub_1Pgc6xB7WZ01zgkW belongs to customer {FIXTURE_CUSTOMER}, not this tenant")
    );
    assert_eq!(billing.count("SELECT count(*) FROM account WHERE state IS NOT NULL").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_errors_are_retried_with_backoff_and_recorded() {
    let billing = Billing::start_with(Options { workers: 1, ..Options::default() }).await;
    billing.set_customer(FIXTURE_CUSTOMER, None).await;
    billing.recorder.fail(true);
    billing.deliver_signed(&subscription_event("evt_retry", "updated", "active")).await;
    let started = std::time::Instant::now();
    loop {
        let attempts = billing.count("SELECT attempts::bigint FROM stripe_events WHERE id = 'evt_retry'").await;
        if attempts >= 1 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no attempt was made");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (last_error, wait): (Option<String>, f64) = sqlx::query_as(
        "SELECT last_error, extract(epoch FROM next_attempt_at - now())::float8 FROM stripe_events WHERE id = 'evt_retry'",
    )
    .fetch_one(&billing.pool)
    .await
    .expect("row");
    assert!(last_error.unwrap_or_default().contains("Stripe answered 500"));
    assert!(wait > 0.5 && wait <= 2.0, "the first retry waits 2 s, not {wait}");
    assert_eq!(billing.count("SELECT count(*) FROM stripe_events WHERE processed_at IS NULL").await, 1);

    billing.recorder.fail(false);
    assert_eq!(billing.processed("evt_retry").await, "applied sub_1Pgc6xB7WZ01zgkW (active) as fetched from Stripe");
    assert_eq!(billing.count("SELECT attempts::bigint FROM stripe_events WHERE id = 'evt_retry'").await, 2);
}

// --- Emails --------------------------------------------------------------------------------------------------

async fn stream_entries(redis_url: &str) -> Vec<EmailRequest> {
    let client = redis::Client::open(redis_url).expect("client");
    let mut connection = client.get_multiplexed_async_connection().await.expect("connect");
    let started = std::time::Instant::now();
    loop {
        let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
            .arg(STREAM)
            .arg("-")
            .arg("+")
            .query_async::<redis::streams::StreamRangeReply>(&mut connection)
            .await
            .expect("xrange")
            .ids
            .into_iter()
            .map(|entry| {
                let fields = entry
                    .map
                    .into_iter()
                    .map(|(name, value)| (name, redis::from_redis_value::<String>(value).expect("text")))
                    .collect();
                (entry.id, fields)
            })
            .collect();
        if entries.len() >= 2 || started.elapsed() > Duration::from_secs(15) {
            return entries.iter().map(|(_, fields)| EmailRequest::from_fields(fields).expect("valid entry")).collect();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_and_payment_failures_reach_the_email_stream_through_the_outbox() {
    let billing = Billing::start().await;
    billing.set_customer(FIXTURE_CUSTOMER, Some("billing@acme.example")).await;
    billing.deliver_signed(&event("evt_paid", "invoice.paid", json!({"id": "in_Paid1", "object": "invoice"}))).await;
    assert!(billing.processed("evt_paid").await.starts_with("queued email receipt"));
    let failed = event("evt_failed", "invoice.payment_failed", json!({"id": "in_Failed1", "object": "invoice"}));
    billing.deliver_signed(&failed).await;
    assert!(billing.processed("evt_failed").await.starts_with("queued email payment-failed"));

    let mut emails = stream_entries(&billing.redis_url).await;
    emails.sort_by_key(|email| email.content.template());
    assert_eq!(emails.len(), 2);
    for email in &emails {
        assert!(email.id.starts_with("billing:"), "{}", email.id);
        assert_eq!(email.to, "billing@acme.example");
    }
    // stripe-mock's invoice fixture: 1000 due, 0 paid, usd, next attempt at 1234567890.
    assert_eq!(
        emails[0].content,
        EmailContent::PaymentFailed {
            tenant_name: "Acme".into(),
            amount_due: 1000,
            currency: "usd".into(),
            invoice_url: None,
            next_attempt_at: Some("2009-02-13T23:31:30Z".into()),
        }
    );
    assert!(matches!(&emails[1].content, EmailContent::Receipt { currency, .. } if currency == "usd"));
}

// --- The API -------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_and_strangers_are_refused() {
    let billing = Billing::start().await;
    let member = billing.key.token("member");
    for (method, path) in
        [("POST", "/v1/billing/checkout"), ("POST", "/v1/billing/portal"), ("GET", "/v1/billing/subscription")]
    {
        let request = billing.http.request(method.parse().expect("method"), billing.url(path));
        let response =
            request.bearer_auth(&member).json(&json!({"plan": "pro", "email": "a@b.co"})).send().await.expect("send");
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
        let request = billing.http.request(method.parse().expect("method"), billing.url(path));
        let response = request.json(&json!({"plan": "pro"})).send().await.expect("send");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    assert!(billing.recorder.requests().is_empty());
    assert_eq!(billing.count("SELECT count(*) FROM account").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_opens_a_checkout_then_the_portal() {
    let billing = Billing::start().await;
    let admin = billing.key.token("admin");
    let checkout =
        |body: Value| billing.http.post(billing.url("/v1/billing/checkout")).bearer_auth(&admin).json(&body).send();

    let (status, kind) =
        problem_type(checkout(json!({"plan": "gold", "email": "ada@acme.example"})).await.expect("send")).await;
    assert_eq!(
        (status, kind.as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "https://saaschat.io/problems/unknown-plan")
    );
    let (status, kind) = problem_type(checkout(json!({"plan": "pro"})).await.expect("send")).await;
    assert_eq!(
        (status, kind.as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "https://saaschat.io/problems/invalid-email")
    );
    let response =
        checkout(json!({"plan": "pro", "email": "ada@acme.example", "successUrl": "https://evil.example"})).await;
    assert_eq!(
        response.expect("send").status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "no redirect URL is taken from the caller"
    );
    let portal = billing.http.post(billing.url("/v1/billing/portal")).bearer_auth(&admin).send().await.expect("send");
    assert_eq!(problem_type(portal).await.1, "https://saaschat.io/problems/no-customer");
    assert!(billing.recorder.requests().is_empty(), "refused requests reach no Stripe");

    let response = checkout(json!({"plan": "pro", "email": "ada@acme.example"})).await.expect("send");
    assert_eq!(response.status(), StatusCode::CREATED);
    let session: Value = response.json().await.expect("json");
    assert!(session["url"].as_str().expect("url").starts_with("https://checkout.stripe.com/"));
    let session_id = session["id"].as_str().expect("id").to_string();

    let customers = billing.recorder.requests_to("POST", "/v1/customers");
    assert_eq!(customers.len(), 1);
    assert_eq!(customers[0].field("email"), Some("ada@acme.example"));
    assert_eq!(customers[0].field("metadata[tenant]"), Some(TENANT));
    assert!(customers[0].idempotency_key.is_some());
    let sessions = billing.recorder.requests_to("POST", "/v1/checkout/sessions");
    assert_eq!(sessions.len(), 1);
    let sent = &sessions[0];
    assert!(sent.idempotency_key.is_some());
    assert_eq!(sent.field("line_items[0][price]"), Some("price_pro"));
    assert_eq!(sent.field("success_url"), Some("https://chat.acme.example/billing?checkout=success"));
    assert_eq!(sent.field("subscription_data[metadata][tenant]"), Some(TENANT));
    let customer_id: String =
        sqlx::query_scalar("SELECT customer_id FROM account").fetch_one(&billing.pool).await.expect("customer");
    assert_eq!(sent.field("customer"), Some(customer_id.as_str()));
    assert_eq!(billing.count("SELECT count(*) FROM checkout_sessions").await, 1);

    // A second checkout reuses the customer.
    let response = checkout(json!({"plan": "enterprise"})).await.expect("send");
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(billing.recorder.requests_to("POST", "/v1/customers").len(), 1);

    let portal = billing.http.post(billing.url("/v1/billing/portal")).bearer_auth(&admin).send().await.expect("send");
    assert_eq!(portal.status(), StatusCode::CREATED);
    let portal_request = &billing.recorder.requests_to("POST", "/v1/billing_portal/sessions")[0];
    assert_eq!(portal_request.field("customer"), Some(customer_id.as_str()));
    assert_eq!(portal_request.field("return_url"), Some("https://chat.acme.example/billing"));
    assert!(portal_request.idempotency_key.is_some());

    // Completion is checked against the session as Stripe shows it now (stripe-mock's fixture is still open),
    // and only for sessions this tenant opened.
    billing
        .deliver_signed(&event(
            "evt_checkout",
            "checkout.session.completed",
            json!({"id": session_id, "status": "complete"}),
        ))
        .await;
    assert_eq!(
        billing.processed("evt_checkout").await,
        format!("waiting: the Checkout Session is not complete in Stripe ({session_id})")
    );
    billing
        .deliver_signed(&event("evt_other_checkout", "checkout.session.completed", json!({"id": "cs_test_NotOurs"})))
        .await;
    assert_eq!(billing.processed("evt_other_checkout").await, "ignored: cs_test_NotOurs was not opened by this tenant");
    assert_eq!(billing.recorder.requests_to("GET", "/v1/checkout/sessions/").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_checkout_makes_the_tenant_a_subscriber() {
    let billing = Billing::start_with(Options { workers: 1, ..Options::default() }).await;
    let owner = billing.key.token("owner");
    let response = billing
        .http
        .post(billing.url("/v1/billing/checkout"))
        .bearer_auth(&owner)
        .json(&json!({"plan": "pro", "email": "ada@acme.example"}))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::CREATED);
    let session: Value = response.json().await.expect("json");
    let session_id = session["id"].as_str().expect("id").to_string();
    let customer_id: String =
        sqlx::query_scalar("SELECT customer_id FROM account").fetch_one(&billing.pool).await.expect("customer");

    // The customer paid: Stripe now shows the session complete, with the subscription it created for the
    // tenant's customer.
    let subscription_id = "sub_1Pgc6xB7WZ01zgkW";
    billing.recorder.overlay(
        &format!("/v1/checkout/sessions/{session_id}"),
        json!({"status": "complete", "subscription": subscription_id, "customer": customer_id}),
    );
    billing.recorder.overlay(&format!("/v1/subscriptions/{subscription_id}"), json!({"customer": customer_id}));
    // The event's own payload is not trusted: it claims nothing the service uses.
    let completed = event("evt_checkout_done", "checkout.session.completed", json!({"id": session_id}));
    assert_eq!(billing.deliver_signed(&completed).await.status(), StatusCode::OK);
    assert_eq!(
        billing.processed("evt_checkout_done").await,
        format!("applied {subscription_id} (active) as fetched from Stripe")
    );
    assert_eq!(billing.recorder.requests_to("GET", &format!("/v1/checkout/sessions/{session_id}")).len(), 1);
    assert_eq!(billing.recorder.requests_to("GET", &format!("/v1/subscriptions/{subscription_id}")).len(), 1);

    let (state, customer, subscription): (Option<String>, Option<String>, Option<String>) =
        sqlx::query_as("SELECT state, customer_id, subscription_id FROM account WHERE tenant = $1")
            .bind(TENANT)
            .fetch_one(&billing.pool)
            .await
            .expect("account");
    assert_eq!(state.as_deref(), Some("active"));
    assert_eq!(customer, Some(customer_id));
    assert_eq!(subscription.as_deref(), Some(subscription_id));

    let response =
        billing.http.get(billing.url("/v1/billing/subscription")).bearer_auth(&owner).send().await.expect("get");
    assert_eq!(response.status(), StatusCode::OK);
    let view: Value = response.json().await.expect("json");
    assert_eq!(view["state"], "active");
    assert!(view["currentPeriodEnd"].is_string(), "the period comes from the subscription Stripe returned: {view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subscription_shows_this_periods_usage() {
    let billing = Billing::start().await;
    for (input, output, cost) in [(100, 50, 30), (1000, 2000, 900)] {
        sqlx::query(
            "INSERT INTO chat.usage_events (id, user_id, model, provider, input_tokens, output_tokens, cost_micros) \
             VALUES (gen_random_uuid(), 'u1', 'gpt-4o-mini', 'openai', $1, $2, $3)",
        )
        .bind(input as i64)
        .bind(output as i64)
        .bind(cost as i64)
        .execute(&billing.pool)
        .await
        .expect("usage");
    }
    let response = billing
        .http
        .get(billing.url("/v1/billing/subscription"))
        .bearer_auth(billing.key.token("admin"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), StatusCode::OK);
    let view: Value = response.json().await.expect("json");
    assert_eq!(view["plan"], "free");
    assert_eq!(view["state"], Value::Null);
    assert_eq!(view["hasCustomer"], false);
    assert_eq!(view["usage"]["inputTokens"], 1100);
    assert_eq!(view["usage"]["outputTokens"], 2050);
    assert_eq!(view["usage"]["tokens"], 3150);
    assert_eq!(view["usage"]["costMicros"], 930);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_stripe_configuration_billing_says_so() {
    let billing = Billing::start_with(Options { stripe: false, ..Options::default() }).await;
    let response = billing
        .http
        .post(billing.url("/v1/billing/checkout"))
        .bearer_auth(billing.key.token("owner"))
        .json(&json!({"plan": "pro", "email": "a@b.co"}))
        .send()
        .await
        .expect("send");
    let (status, kind) = problem_type(response).await;
    assert_eq!(
        (status, kind.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "https://saaschat.io/problems/billing-not-configured")
    );
    let body = event("evt_x", "invoice.paid", json!({"id": "in_1"}));
    assert_eq!(billing.deliver_signed(&body).await.status(), StatusCode::SERVICE_UNAVAILABLE);
    let response =
        billing.http.get(billing.url("/v1/billing/subscription")).bearer_auth(billing.key.token("owner")).send().await;
    assert_eq!(response.expect("get").status(), StatusCode::OK, "the subscription view works without Stripe");
}

// --- Usage reported to Stripe meters -------------------------------------------------------------------------

fn reporter(billing: &Billing, stripe_url: &str) -> Reporter {
    let mut billing_stripe = billing.stripe_client();
    if stripe_url != billing.stripe_url {
        billing_stripe = saaschat_billing::stripe::StripeClient::new(
            stripe_url.parse().expect("url"),
            &saaschat_platform::Secret::new("sk_test_123".into()),
            Duration::from_secs(5),
        )
        .expect("client");
    }
    Reporter {
        pool: billing.pool.clone(),
        stripe: billing_stripe,
        tenant: TENANT.into(),
        event_name: "saaschat_tokens".into(),
        window: Duration::from_secs(3600),
        settle: Duration::from_secs(120),
        reported: IntCounterVec::new(prometheus::Opts::new("windows", "windows"), &["outcome"]).expect("counter"),
    }
}

async fn record_usage(billing: &Billing, at: chrono::DateTime<Utc>, input: i64, output: i64) {
    sqlx::query(
        "INSERT INTO chat.usage_events (id, user_id, model, provider, input_tokens, output_tokens, cost_micros, recorded_at) \
         VALUES (gen_random_uuid(), 'u1', 'gpt-4o', 'openai', $1, $2, 0, $3)",
    )
    .bind(input)
    .bind(output)
    .bind(at)
    .execute(&billing.pool)
    .await
    .expect("usage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_reported_once_per_window_through_stripe_errors_and_restarts() {
    let billing = Billing::start_with(Options { usage_reporting: false, ..Options::default() }).await;
    billing.set_customer(FIXTURE_CUSTOMER, None).await;
    let now = Utc::now();
    let hour = |back: i64| window::window_start(now, Duration::from_secs(3600)) - TimeDelta::hours(back);
    record_usage(&billing, hour(4) + TimeDelta::minutes(5), 100, 20).await;
    record_usage(&billing, hour(4) + TimeDelta::minutes(59), 1, 2).await;
    record_usage(&billing, hour(2) + TimeDelta::minutes(30), 500, 500).await;
    record_usage(&billing, hour(0) + TimeDelta::seconds(1), 7, 7).await; // the open window: not yet
    let settled_at = hour(0) + TimeDelta::minutes(3);

    // Stripe fails: nothing is recorded, and the first window is the one tried.
    billing.recorder.fail(true);
    let failure = reporter(&billing, &billing.stripe_url).settle_due(settled_at).await;
    assert!(failure.expect_err("Stripe failed").to_string().contains(&window::identifier(TENANT, hour(4))));
    assert_eq!(billing.count("SELECT count(*) FROM usage_windows").await, 0);

    // Stripe cannot even be reached.
    let unreachable = format!("http://127.0.0.1:{}", saaschat_testkit::free_port());
    assert!(reporter(&billing, &unreachable).settle_due(settled_at).await.is_err());
    assert_eq!(billing.count("SELECT count(*) FROM usage_windows").await, 0);

    billing.recorder.fail(false);
    let settled = reporter(&billing, &billing.stripe_url).settle_due(settled_at).await.expect("settled");
    assert_eq!(settled, 4, "hours 4, 3, 2 and 1 back; the current one is still open");
    let windows: Vec<(String, i64, String)> =
        sqlx::query_as("SELECT identifier, tokens, outcome FROM usage_windows ORDER BY window_start")
            .fetch_all(&billing.pool)
            .await
            .expect("windows");
    assert_eq!(
        windows,
        [
            (window::identifier(TENANT, hour(4)), 123, "sent".to_string()),
            (window::identifier(TENANT, hour(3)), 0, "empty".to_string()),
            (window::identifier(TENANT, hour(2)), 1000, "sent".to_string()),
            (window::identifier(TENANT, hour(1)), 0, "empty".to_string()),
        ]
    );

    // After a restart (a new reporter) nothing is sent again.
    let again = reporter(&billing, &billing.stripe_url).settle_due(settled_at + TimeDelta::minutes(10)).await;
    assert_eq!(again.expect("nothing due"), 0);

    let meter_events = billing.recorder.requests_to("POST", "/v1/billing/meter_events");
    let sent: Vec<(Option<&str>, Option<&str>, Option<&str>)> = meter_events
        .iter()
        .map(|request| {
            (request.field("identifier"), request.field("payload[value]"), request.idempotency_key.as_deref())
        })
        .collect();
    let first = window::identifier(TENANT, hour(4));
    let third = window::identifier(TENANT, hour(2));
    assert_eq!(
        sent,
        [
            (Some(first.as_str()), Some("123"), Some(first.as_str())), // refused by the failing Stripe
            (Some(first.as_str()), Some("123"), Some(first.as_str())), // the same event, retried
            (Some(third.as_str()), Some("1000"), Some(third.as_str())),
        ]
    );
    assert_eq!(meter_events[1].field("payload[stripe_customer_id]"), Some(FIXTURE_CUSTOMER));
    assert_eq!(meter_events[1].field("event_name"), Some("saaschat_tokens"));
    let stamped = (hour(3) - TimeDelta::seconds(1)).timestamp().to_string();
    assert_eq!(meter_events[1].field("timestamp"), Some(stamped.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_reporting_at_once_send_each_window_once() {
    let billing = Billing::start_with(Options { usage_reporting: false, ..Options::default() }).await;
    billing.set_customer(FIXTURE_CUSTOMER, None).await;
    let now = Utc::now();
    let start = window::window_start(now, Duration::from_secs(3600));
    for back in 1..=6 {
        record_usage(&billing, start - TimeDelta::hours(back) + TimeDelta::minutes(1), back, 0).await;
    }
    let settled_at = start + TimeDelta::minutes(3);
    let (a, b) = (reporter(&billing, &billing.stripe_url), reporter(&billing, &billing.stripe_url));
    let (first, second) = tokio::join!(a.settle_due(settled_at), b.settle_due(settled_at));
    let total = first.expect("a") + second.expect("b");
    assert!(total <= 6, "{total}");
    let rest = reporter(&billing, &billing.stripe_url).settle_due(settled_at).await.expect("rest");
    assert_eq!(total + rest, 6);
    let mut identifiers: Vec<String> = billing
        .recorder
        .requests_to("POST", "/v1/billing/meter_events")
        .iter()
        .filter_map(|request| request.field("identifier").map(str::to_string))
        .collect();
    let sent = identifiers.len();
    identifiers.sort();
    identifiers.dedup();
    assert_eq!((sent, identifiers.len()), (6, 6));
}

// --- Subscription status in Kubernetes -----------------------------------------------------------------------

/// A stand-in for the Kubernetes API server that holds the one Subscription and records every request, so the
/// test sees exactly which verbs and paths the writer uses (the operator's Role allows `get` on the Subscription
/// and `patch` on its status, nothing else).
#[derive(Clone, Default)]
struct FakeApiServer {
    subscription: std::sync::Arc<std::sync::Mutex<Value>>,
    requests: std::sync::Arc<std::sync::Mutex<Vec<ApiRequest>>>,
}

#[derive(Clone)]
struct ApiRequest {
    method: String,
    target: String,
    content_type: Option<String>,
    body: Value,
}

const SUBSCRIPTION_PATH: &str = "/apis/saaschat.io/v1alpha1/namespaces/tenant-acme/subscriptions/default";

async fn fake_api(
    axum::extract::State(server): axum::extract::State<FakeApiServer>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> (axum::http::StatusCode, axum::Json<Value>) {
    let content_type = headers.get("content-type").and_then(|value| value.to_str().ok()).map(str::to_string);
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let target = uri.path_and_query().map(ToString::to_string).unwrap_or_default();
    server.requests.lock().expect("lock").push(ApiRequest {
        method: method.to_string(),
        target,
        content_type,
        body: parsed.clone(),
    });
    let mut subscription = server.subscription.lock().expect("lock");
    match (method.as_str(), uri.path()) {
        ("GET", SUBSCRIPTION_PATH) => (axum::http::StatusCode::OK, axum::Json(subscription.clone())),
        ("PATCH", path) if path == format!("{SUBSCRIPTION_PATH}/status") => {
            subscription["status"] = parsed["status"].clone();
            (axum::http::StatusCode::OK, axum::Json(subscription.clone()))
        }
        _ => (
            axum::http::StatusCode::FORBIDDEN,
            axum::Json(json!({"kind": "Status", "code": 403, "reason": "Forbidden"})),
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subscription_status_follows_stripe_with_one_status_patch() {
    use saaschat_billing::kubernetes::writer::StatusWriter;

    let billing = Billing::start().await;
    billing.set_customer(FIXTURE_CUSTOMER, None).await;
    billing.deliver_signed(&subscription_event("evt_status", "created", "active")).await;
    billing.processed("evt_status").await;
    record_usage(&billing, Utc::now() - TimeDelta::seconds(5), 40, 2).await;

    let server = FakeApiServer::default();
    *server.subscription.lock().expect("lock") = json!({
        "apiVersion": "saaschat.io/v1alpha1", "kind": "Subscription",
        "metadata": {"name": "default", "namespace": "tenant-acme", "generation": 4, "resourceVersion": "7"},
        "spec": {"plan": "pro", "gracePeriodDays": 7},
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let app = axum::Router::new().fallback(fake_api).with_state(server.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let config = kube::Config::new(format!("http://{address}").parse().expect("url"));
    let client = kube::Client::try_from(config).expect("client");
    let counter = IntCounterVec::new(prometheus::Opts::new("syncs", "syncs"), &["result"]).expect("counter");
    let writer = StatusWriter::new(billing.pool.clone(), client, "tenant-acme", TENANT, counter);

    assert!(writer.sync().await.expect("first sync"), "the status was written");
    assert!(!writer.sync().await.expect("second sync"), "an unchanged status is not written again");

    let requests = server.requests.lock().expect("lock").clone();
    let summary: Vec<(&str, &str)> =
        requests.iter().map(|request| (request.method.as_str(), request.target.as_str())).collect();
    let status_patch = format!("{SUBSCRIPTION_PATH}/status?&force=true&fieldManager=saaschat-billing");
    assert_eq!(summary, [("GET", SUBSCRIPTION_PATH), ("PATCH", status_patch.as_str()), ("GET", SUBSCRIPTION_PATH)]);
    let ApiRequest { content_type, body, .. } = &requests[1];
    assert_eq!(content_type.as_deref(), Some("application/apply-patch+yaml"));
    assert_eq!(body["kind"], "Subscription");
    assert_eq!(body["metadata"], json!({"name": "default"}));
    assert!(body.get("spec").is_none(), "only the status is applied");
    let status = &body["status"];
    assert_eq!(status["state"], "active");
    assert_eq!(status["observedGeneration"], 4);
    assert_eq!(status["tokensUsed"], 42);
    assert_eq!(status["conditions"][0]["type"], "Ready");
    assert_eq!(status["conditions"][0]["status"], "True");
    assert_eq!(status["conditions"][0]["reason"], "Active");
    assert!(status["currentPeriodEnd"].is_string());
}
