//! The email worker against a real Redis and a real SMTP server (mailpit), read back over mailpit's HTTP API.

mod support;

use std::time::Duration;

use redis::AsyncCommands;
use saaschat_email_worker::message::{EMAIL_ID_HEADER, message_id};
use saaschat_email_worker::render::render;
use saaschat_email_worker::settings::{ENV_CLAIM_MIN_IDLE_MS, ENV_RETRY_BASE_MS, ENV_RETRY_MAX_MS};
use saaschat_email_worker::stream::{EmailStream, REPLAY_SCRIPT};
use saaschat_platform::email::{DEAD_LETTER_STREAM, EmailContent, EmailRequest, STREAM};
use saaschat_testkit::Redis;
use support::*;

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

fn every_template() -> Vec<EmailRequest> {
    let contents = [
        EmailContent::VerifyEmail {
            tenant_name: "Acme".into(),
            verify_url: "https://chat.acme.example/verify?token=v1&next=/".into(),
            expires_at: "2026-11-27T10:00:00Z".into(),
        },
        EmailContent::ResetPassword {
            tenant_name: "Acme".into(),
            reset_url: "https://chat.acme.example/reset?token=r1".into(),
            expires_at: "2026-11-27T11:00:00Z".into(),
        },
        EmailContent::Invitation {
            tenant_name: "Acme <Labs>".into(),
            invited_by: "ada@acme.example".into(),
            role: "admin".into(),
            accept_url: "https://chat.acme.example/accept?i=7".into(),
            expires_at: "2026-12-01T00:00:00Z".into(),
        },
        EmailContent::PaymentFailed {
            tenant_name: "Acme".into(),
            amount_due: 4900,
            currency: "usd".into(),
            invoice_url: Some("https://invoice.stripe.com/i/acct_1/inv_1".into()),
            next_attempt_at: Some("2026-11-30T09:00:00Z".into()),
        },
        EmailContent::Receipt {
            tenant_name: "Zoë’s Acme".into(),
            amount_paid: 1999,
            currency: "eur".into(),
            invoice_url: None,
            period_end: Some("2026-12-26T00:00:00Z".into()),
        },
    ];
    contents
        .into_iter()
        .enumerate()
        .map(|(index, content)| EmailRequest {
            id: format!("billing:template-{index}"),
            to: format!("person{index}@example.com"),
            content,
            created_at: "2026-11-26T10:00:00Z".into(),
        })
        .collect()
}

fn normalized(text: &str) -> String {
    text.replace("\r\n", "\n").trim_end().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_template_is_delivered_as_text_and_html_then_acknowledged_and_trimmed() {
    let redis_server = Redis::start();
    let sink = Sink::start();
    let dir = tempfile::tempdir().expect("dir");
    let tenant = tenant_file(dir.path(), sink.mailpit.smtp_port);
    let mut redis = redis(&redis_server.url()).await;
    let requests = every_template();
    for request in &requests {
        push(&mut redis, request).await;
    }
    let worker = InProcess::start(config(&redis_server.url(), &tenant), quick_settings()).await;

    let messages = sink.wait_for(requests.len(), DELIVERY_TIMEOUT).await;
    assert_eq!(messages.len(), requests.len());
    for request in &requests {
        let rendered = render(&request.content).expect("renders");
        let delivered = messages.iter().find(|m| m.to[0].address == request.to).expect("delivered to the recipient");
        assert_eq!(delivered.subject, rendered.subject);
        assert_eq!(delivered.message_id, message_id(&request.id, "acme.example").trim_matches(['<', '>']));
        let detail = sink.detail(&delivered.id).await;
        assert_eq!(normalized(&detail.text), normalized(&rendered.text), "{}", request.content.template());
        assert_eq!(normalized(&detail.html), normalized(&rendered.html), "{}", request.content.template());
        let headers = sink.headers(&delivered.id).await;
        assert_eq!(headers[EMAIL_ID_HEADER], std::slice::from_ref(&request.id));
        assert_eq!(headers["From"], ["\"Acme Chat\" <no-reply@acme.example>"]);
    }
    let escaped = messages.iter().find(|m| m.to[0].address == "person2@example.com").expect("invitation");
    assert!(sink.detail(&escaped.id).await.html.contains("Acme &lt;Labs&gt;"));

    wait_until("every entry acknowledged", DELIVERY_TIMEOUT, async || pending(&mut redis).await == 0).await;
    let client = http_client();
    let ready = client.get(format!("http://{}/readyz", worker.address)).send().await.expect("readyz");
    assert_eq!(ready.status(), 200);
    let metrics = worker.metrics().await;
    assert_eq!(metric(&metrics, "email_worker_sent_total"), 5.0);
    assert_eq!(metric(&metrics, "email_worker_dead_lettered_total{kind=\"invalid\"}"), 0.0);
    assert!(metric(&metrics, "email_worker_send_duration_seconds_count") >= 5.0);
    worker.stop().await;

    let stream = EmailStream::new(redis.clone(), redis.clone(), "maintenance".into());
    let (trimmed, _) = stream.maintain(Duration::from_secs(3600)).await.expect("maintain");
    assert_eq!(trimmed, 5);
    let length: usize = redis.xlen(STREAM).await.expect("XLEN");
    assert_eq!(length, 0, "acknowledged entries are trimmed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_email_id_is_mailed_once() {
    let redis_server = Redis::start();
    let sink = Sink::start();
    let dir = tempfile::tempdir().expect("dir");
    let tenant = tenant_file(dir.path(), sink.mailpit.smtp_port);
    let mut redis = redis(&redis_server.url()).await;
    let request = verify_email(1);
    // The outbox relay published the same row twice, before the worker ran ...
    push(&mut redis, &request).await;
    push(&mut redis, &request).await;
    let worker = InProcess::start(config(&redis_server.url(), &tenant), quick_settings()).await;
    sink.wait_for(1, DELIVERY_TIMEOUT).await;
    wait_until("both entries acknowledged", DELIVERY_TIMEOUT, async || pending(&mut redis).await == 0).await;
    // ... and once more after it was sent.
    push(&mut redis, &request).await;
    wait_until("the late duplicate acknowledged", DELIVERY_TIMEOUT, async || {
        metric(&worker.metrics().await, "email_worker_duplicates_total") == 2.0
    })
    .await;
    assert_eq!(pending(&mut redis).await, 0);
    let messages = sink.messages().await;
    assert_eq!(messages.len(), 1, "one email for three entries with the same id");
    assert_eq!(metric(&worker.metrics().await, "email_worker_sent_total"), 1.0);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_entries_and_header_injection_go_to_the_dead_letter_stream_unsent() {
    let redis_server = Redis::start();
    let sink = Sink::start();
    let dir = tempfile::tempdir().expect("dir");
    let tenant = tenant_file(dir.path(), sink.mailpit.smtp_port);
    let mut redis = redis(&redis_server.url()).await;

    let missing_data = [("v", "1"), ("id", "auth:no-data"), ("to", "ada@example.com"), ("template", "verify-email")];
    push_fields(&mut redis, &missing_data).await;
    let injected_recipient = EmailRequest { to: "ada@example.com\r\nBcc: eve@example.com".into(), ..verify_email(2) };
    push(&mut redis, &injected_recipient).await;
    let injected_subject = EmailRequest {
        content: EmailContent::ResetPassword {
            tenant_name: "Acme\nBcc: eve@example.com".into(),
            reset_url: "https://chat.acme.example/reset".into(),
            expires_at: "2026-11-27T10:00:00Z".into(),
        },
        ..verify_email(3)
    };
    push(&mut redis, &injected_subject).await;
    let script_link = EmailRequest {
        content: EmailContent::VerifyEmail {
            tenant_name: "Acme".into(),
            verify_url: "javascript:alert(1)".into(),
            expires_at: "2026-11-27T10:00:00Z".into(),
        },
        ..verify_email(4)
    };
    push(&mut redis, &script_link).await;
    push(&mut redis, &verify_email(5)).await;

    let worker = InProcess::start(config(&redis_server.url(), &tenant), quick_settings()).await;
    sink.wait_for(1, DELIVERY_TIMEOUT).await;
    wait_until("four dead letters", DELIVERY_TIMEOUT, async || dead_letters(&mut redis).await.len() == 4).await;
    wait_until("everything acknowledged", DELIVERY_TIMEOUT, async || pending(&mut redis).await == 0).await;

    let letters = dead_letters(&mut redis).await;
    let by_id = |id: &str| letters.iter().map(|(_, fields)| fields).find(|fields| fields["id"] == id).expect(id);
    let missing = by_id("auth:no-data");
    assert_eq!(missing["dead_kind"], "malformed");
    assert_eq!(missing["dead_reason"], "the entry has no \"data\" field");
    assert_eq!(missing["to"], "ada@example.com", "the original fields are kept for a replay");
    let recipient = by_id("test:00002");
    assert_eq!(recipient["dead_kind"], "invalid");
    assert_eq!(recipient["dead_reason"], "the To header contains a line break (CR or LF)");
    assert_eq!(recipient["dead_attempts"], "0");
    let subject = by_id("test:00003");
    assert_eq!(subject["dead_reason"], "the Subject header contains a line break (CR or LF)");
    let link = by_id("test:00004");
    assert_eq!(link["dead_reason"], "verifyUrl must be an http or https URL, not javascript:");
    assert!(
        letters.iter().all(|(_, fields)| fields.contains_key("dead_source_entry") && fields.contains_key("dead_at"))
    );

    let messages = sink.messages().await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].to[0].address, "user5@example.com");
    let metrics = worker.metrics().await;
    assert_eq!(metric(&metrics, "email_worker_dead_lettered_total{kind=\"malformed\"}"), 1.0);
    assert_eq!(metric(&metrics, "email_worker_dead_lettered_total{kind=\"invalid\"}"), 3.0);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_server_dead_letters_after_the_retries_and_a_replay_delivers() {
    let redis_server = Redis::start();
    let sink = Sink::start();
    let dir = tempfile::tempdir().expect("dir");
    let tenant = tenant_file(dir.path(), sink.mailpit.smtp_port);
    let mut redis = redis(&redis_server.url()).await;
    let worker = InProcess::start(config(&redis_server.url(), &tenant), quick_settings()).await;

    sink.refuse_recipients(451).await;
    push(&mut redis, &verify_email(1)).await;
    wait_until("a dead letter", DELIVERY_TIMEOUT, async || dead_letters(&mut redis).await.len() == 1).await;
    let (_, temporary) = &dead_letters(&mut redis).await[0];
    assert_eq!(temporary["dead_kind"], "exhausted");
    assert_eq!(temporary["dead_attempts"], "3", "every attempt of quick_settings was made");
    assert!(temporary["dead_reason"].starts_with("gave up after 3 attempts; the last failed with SMTP 451"));
    assert_eq!(metric(&worker.metrics().await, "email_worker_retries_total"), 2.0);

    sink.refuse_recipients(554).await;
    push(&mut redis, &verify_email(2)).await;
    wait_until("a second dead letter", DELIVERY_TIMEOUT, async || dead_letters(&mut redis).await.len() == 2).await;
    let (_, permanent) = &dead_letters(&mut redis).await[1];
    assert_eq!(permanent["dead_kind"], "rejected");
    assert_eq!(permanent["dead_attempts"], "3", "a permanent refusal is retried like any other");
    assert!(permanent["dead_reason"].starts_with("gave up after 3 attempts; the last failed with SMTP 554"));
    assert_eq!(metric(&worker.metrics().await, "email_worker_retries_total"), 4.0);
    assert_eq!(pending(&mut redis).await, 0);
    assert_eq!(sink.count().await, 0);

    // The documented replay, once the server accepts mail again.
    sink.refuse_recipients(0).await;
    let replay = redis::Script::new(REPLAY_SCRIPT);
    for (entry_id, _) in dead_letters(&mut redis).await {
        let _: String =
            replay.key(DEAD_LETTER_STREAM).key(STREAM).arg(&entry_id).invoke_async(&mut redis).await.expect("replay");
    }
    let messages = sink.wait_for(2, DELIVERY_TIMEOUT).await;
    assert_no_duplicates(&messages);
    assert!(dead_letters(&mut redis).await.is_empty());
    wait_until("replays acknowledged", DELIVERY_TIMEOUT, async || pending(&mut redis).await == 0).await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_mid_run_loses_nothing_and_sends_nothing_twice() {
    let mut redis_server = Redis::start_persistent();
    let sink = Sink::start();
    let dir = tempfile::tempdir().expect("dir");
    let tenant = tenant_file(dir.path(), sink.mailpit.smtp_port);
    let total = 80;
    {
        let mut redis = redis(&redis_server.url()).await;
        for number in 0..total {
            push(&mut redis, &verify_email(number)).await;
        }
    }
    let worker = InProcess::start(config(&redis_server.url(), &tenant), quick_settings()).await;
    sink.wait_for(10, DELIVERY_TIMEOUT).await;
    redis_server.restart();

    let messages = sink.wait_for(total, DELIVERY_TIMEOUT).await;
    let mut redis = redis(&redis_server.url()).await;
    wait_until("every entry acknowledged", DELIVERY_TIMEOUT, async || pending(&mut redis).await == 0).await;
    // Give a takeover (one second in quick_settings) the chance to send anything a second time.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let messages_after = sink.messages().await;
    assert_eq!(messages_after.len(), total, "exactly one email per entry");
    assert_no_duplicates(&messages_after);
    assert_eq!(messages.len(), total);
    assert!(dead_letters(&mut redis).await.is_empty());
    assert!(metric(&worker.metrics().await, "email_worker_redis_errors_total") >= 1.0, "the restart was noticed");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_batch_loses_nothing_and_a_second_one_sends_nothing_twice() {
    let redis_server = Redis::start();
    let sink = Sink::start();
    let proxy = Proxy::start(sink.mailpit.smtp_port).await;
    let dir = tempfile::tempdir().expect("dir");
    let through_proxy = tenant_file(&dir.path().join("first"), proxy.port);
    let direct = tenant_file(&dir.path().join("second"), sink.mailpit.smtp_port);
    let total = 120;
    let mut redis = redis(&redis_server.url()).await;
    for number in 0..total {
        push(&mut redis, &verify_email(number)).await;
    }

    let mut first = Binary::start(&redis_server.url(), &through_proxy);
    sink.wait_for(20, DELIVERY_TIMEOUT).await;
    // Hold the sends in progress before the server sees their end, let accepted ones be recorded, then kill.
    proxy.hold(true);
    tokio::time::sleep(Duration::from_millis(500)).await;
    first.kill();
    let delivered_by_first = sink.count().await;
    let held = pending(&mut redis).await;
    assert!(held >= 1, "the first worker died holding entries");
    assert!(delivered_by_first < total, "killed mid-batch");

    let mut second = Binary::start(&redis_server.url(), &direct);
    sink.wait_for(total, DELIVERY_TIMEOUT).await;
    wait_until("every entry acknowledged", DELIVERY_TIMEOUT, async || pending(&mut redis).await == 0).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let messages = sink.messages().await;
    assert_eq!(messages.len(), total, "every email exactly once ({delivered_by_first} before the kill)");
    assert_no_duplicates(&messages);
    let mut recipients: Vec<String> = messages.iter().map(|m| m.to[0].address.clone()).collect();
    recipients.sort();
    let mut expected: Vec<String> = (0..total).map(|number| verify_email(number).to).collect();
    expected.sort();
    assert_eq!(recipients, expected);

    let metrics = second.metrics().await;
    assert!(metric(&metrics, "email_worker_taken_over_total") >= held as f64, "{metrics}");
    assert!(second.terminate(Duration::from_secs(20)).success(), "SIGTERM ends the worker cleanly");
    assert!(dead_letters(&mut redis).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_retry_wait_exits_at_once_and_acknowledges_nothing_unsent() {
    let redis_server = Redis::start();
    let sink = Sink::start();
    let dir = tempfile::tempdir().expect("dir");
    let tenant = tenant_file(dir.path(), sink.mailpit.smtp_port);
    let mut redis = redis(&redis_server.url()).await;
    sink.refuse_recipients(451).await;
    push(&mut redis, &verify_email(1)).await;
    let slow_retries = [(ENV_RETRY_BASE_MS, "60000"), (ENV_RETRY_MAX_MS, "60000")];
    let mut first = Binary::start_with(&redis_server.url(), &tenant, &slow_retries);
    wait_until("a failed attempt", DELIVERY_TIMEOUT, async || {
        first.metrics().await.lines().any(|line| line == "email_worker_retries_total 1")
    })
    .await;

    let asked = std::time::Instant::now();
    assert!(first.terminate(Duration::from_secs(20)).success(), "a clean exit");
    assert!(asked.elapsed() < Duration::from_secs(5), "the retry wait does not hold the shutdown up");
    assert_eq!(pending(&mut redis).await, 1, "the unsent entry is not acknowledged");
    assert!(dead_letters(&mut redis).await.is_empty());
    assert_eq!(sink.count().await, 0);

    // Handed back: a worker whose claim timeout is a minute takes it over at once.
    sink.refuse_recipients(0).await;
    let _second = Binary::start_with(&redis_server.url(), &tenant, &[(ENV_CLAIM_MIN_IDLE_MS, "60000")]);
    sink.wait_for(1, Duration::from_secs(20)).await;
    wait_until("acknowledged", DELIVERY_TIMEOUT, async || pending(&mut redis).await == 0).await;
    assert_eq!(sink.messages().await.len(), 1);
}
