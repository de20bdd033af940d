//! The Space delivering over real HTTP to real subscriber servers on loopback.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use common::{Reply, eventually, start};
use handler::HttpDeliverer;
use space::{
    HandlerKind, MessageError, MessageState, NewMessage, SettingsPatch, Space, SpaceConfig,
    SubscriberSpec,
};
use storage::io::FsBackend;

fn open(dir: &tempfile::TempDir) -> Space {
    let config = SpaceConfig::new(storage::Config {
        segment_bytes: 1024 * 1024,
        ..storage::Config::default()
    });
    Space::open(
        Arc::new(FsBackend::open(dir.path()).unwrap()),
        config,
        Arc::new(HttpDeliverer::new()),
    )
    .unwrap()
    .0
}

fn patch(json: serde_json::Value) -> SettingsPatch {
    serde_json::from_value(json).unwrap()
}

fn spec(endpoint: String, handler: HandlerKind, secret: Option<&str>) -> SubscriberSpec {
    SubscriberSpec {
        endpoint,
        handler,
        secret: secret.map(str::to_owned),
        max_in_flight: 8,
        ..Default::default()
    }
}

fn msg(body: &'static str, parent: Option<space::MessageId>) -> NewMessage {
    NewMessage {
        body: Bytes::from_static(body.as_bytes()),
        content_type: Some("application/json".into()),
        parents: parent.into_iter().collect(),
        idempotency_key: None,
        ..Default::default()
    }
}

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[tokio::test]
async fn a_webhook_gets_the_raw_body_with_signed_headers_in_parent_order() {
    let sink = start(|_, _| Reply::Status(204, "")).await;
    let dir = tempfile::tempdir().unwrap();
    let space = open(&dir);
    space
        .put_queue("orders", &SettingsPatch::default())
        .await
        .unwrap();
    space
        .add_subscriber(
            "orders",
            spec(sink.url(), HandlerKind::Webhook, Some(SECRET)),
        )
        .await
        .unwrap();
    let first = space
        .publish("orders", msg(r#"{"n":1}"#, None))
        .await
        .unwrap();
    let second = space
        .publish("orders", msg(r#"{"n":2}"#, Some(first.id)))
        .await
        .unwrap();
    eventually("both arrived", || sink.count() == 2).await;
    let got = sink.received();
    assert_eq!(got[0].body, r#"{"n":1}"#);
    assert_eq!(got[1].body, r#"{"n":2}"#);
    let h = &got[1].headers;
    assert_eq!(h["webhook-id"], second.id.to_string().as_str());
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(h["ce-id"], second.id.to_string().as_str());
    assert_eq!(h["ce-source"], "/queues/orders");
    assert_eq!(h["syncbrok-parent"], first.id.to_string().as_str());
    assert_eq!(h["syncbrok-attempt"], "1");
    // Check the signature as a subscriber would, from the headers and the raw body.
    let ts: u64 = h["webhook-timestamp"].to_str().unwrap().parse().unwrap();
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let expected = handler::sign(&key, &second.id.to_string(), ts, &got[1].body);
    assert_eq!(h["webhook-signature"], expected.as_str());
    space.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_legacy_subscriber_acks_only_with_true() {
    let sink = start(|n, _| {
        if n == 0 {
            Reply::Status(200, "false")
        } else {
            Reply::Status(200, " true\n")
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let space = open(&dir);
    space
        .put_queue(
            "simple",
            &patch(serde_json::json!({"retry": {"initial_backoff": "1ms", "max_backoff": "10ms"}})),
        )
        .await
        .unwrap();
    space
        .add_subscriber("simple", spec(sink.url(), HandlerKind::Legacy, None))
        .await
        .unwrap();
    let m = space.publish("simple", msg("hello", None)).await.unwrap();
    eventually("acked on the second try", || {
        matches!(
            space.message("simple", m.id),
            Err(MessageError::MessageNotFound(_))
        )
    })
    .await;
    let got = sink.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].headers["content-type"], "application/json");
    let v: serde_json::Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(v["id"], m.id.to_string());
    assert_eq!(v["content"], "aGVsbG8=");
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let sink = start(|n, _| {
        if n == 0 {
            Reply::StatusWith(503, "busy", "retry-after", "1")
        } else {
            Reply::Status(200, "")
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let space = open(&dir);
    space
        .put_queue(
            "q",
            &patch(serde_json::json!({"retry": {"initial_backoff": "1ms", "max_backoff": "3s"}})),
        )
        .await
        .unwrap();
    space
        .add_subscriber("q", spec(sink.url(), HandlerKind::Webhook, None))
        .await
        .unwrap();
    space.publish("q", msg("x", None)).await.unwrap();
    eventually("retried", || sink.count() == 2).await;
    let got = sink.received();
    let gap = got[1].at - got[0].at;
    assert!(gap >= Duration::from_millis(900), "retried after {gap:?}");
    assert_eq!(got[1].headers["syncbrok-attempt"], "2");
}

#[tokio::test]
async fn a_hanging_subscriber_times_out_and_is_retried() {
    let sink = start(|n, _| {
        if n == 0 {
            Reply::Slow(Duration::from_secs(30), 200)
        } else {
            Reply::Status(200, "")
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let space = open(&dir);
    space
        .put_queue(
            "q",
            &patch(serde_json::json!({
                "delivery_timeout": "200ms",
                "retry": {"initial_backoff": "1ms", "max_backoff": "10ms"},
                "retention": {"delivered": "1h"}
            })),
        )
        .await
        .unwrap();
    space
        .add_subscriber("q", spec(sink.url(), HandlerKind::Webhook, None))
        .await
        .unwrap();
    let m = space.publish("q", msg("x", None)).await.unwrap();
    eventually("delivered", || {
        space.message("q", m.id).map(|i| i.state).ok() == Some(MessageState::Delivered)
    })
    .await;
    let info = space.message("q", m.id).unwrap();
    assert_eq!(
        info.deliveries[0].attempts, 2,
        "one timed out, then the acknowledged one"
    );
    assert_eq!(
        info.deliveries[0].last_error.as_deref(),
        Some("timed out after 200ms")
    );
    assert!(info.deliveries[0].acked_at_ms.is_some());
}

#[tokio::test]
async fn a_subscriber_that_is_down_does_not_hold_up_the_others() {
    let up = start(|_, _| Reply::Status(200, "")).await;
    // A port with nothing listening: bind, note it, close.
    let down = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("http://{}/hook", l.local_addr().unwrap())
    };
    let dir = tempfile::tempdir().unwrap();
    let space = open(&dir);
    space
        .put_queue(
            "q",
            &patch(serde_json::json!({"retry": {"max_attempts": 0, "initial_backoff": "10ms", "max_backoff": "50ms"}})),
        )
        .await
        .unwrap();
    space
        .add_subscriber("q", spec(down.clone(), HandlerKind::Webhook, None))
        .await
        .unwrap();
    space
        .add_subscriber("q", spec(up.url(), HandlerKind::Webhook, None))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..200 {
        ids.push(space.publish("q", msg("x", None)).await.unwrap().id);
    }
    eventually("the live one has all", || up.count() == 200).await;
    let info = space.message("q", ids[0]).unwrap();
    let to_down = info.deliveries.iter().find(|d| d.endpoint == down).unwrap();
    let error = to_down.last_error.clone().unwrap_or_default();
    assert!(error.contains("onnect"), "{error}");
    space.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn max_in_flight_bounds_concurrent_requests() {
    let sink = start(|_, _| Reply::Slow(Duration::from_millis(50), 200)).await;
    let dir = tempfile::tempdir().unwrap();
    let space = open(&dir);
    space
        .put_queue("q", &SettingsPatch::default())
        .await
        .unwrap();
    space
        .add_subscriber(
            "q",
            SubscriberSpec {
                max_in_flight: 3,
                batch: Default::default(),
                headers: Vec::new(),
                ..spec(sink.url(), HandlerKind::Webhook, None)
            },
        )
        .await
        .unwrap();
    for _ in 0..30 {
        space.publish("q", msg("x", None)).await.unwrap();
    }
    eventually("all delivered", || sink.count() == 30).await;
    let max = sink
        .concurrent_max
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(max <= 3, "{max} requests at once");
    assert!(max >= 2, "deliveries were not concurrent ({max})");
}

#[tokio::test]
async fn a_randomly_failing_subscriber_gets_everything_in_the_end() {
    // Fails about a third of requests, with a mix of statuses.
    let sink = start(|n, _| match (n * 7919) % 9 {
        0 => Reply::Status(500, "boom"),
        1 => Reply::StatusWith(429, "slow down", "retry-after", "0"),
        2 => Reply::Status(404, ""),
        _ => Reply::Status(200, ""),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let space = open(&dir);
    space
        .put_queue(
            "q",
            &patch(serde_json::json!({"retry": {"max_attempts": 0, "initial_backoff": "1ms", "max_backoff": "20ms"}})),
        )
        .await
        .unwrap();
    space
        .add_subscriber("q", spec(sink.url(), HandlerKind::Webhook, None))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..300 {
        ids.push(space.publish("q", msg("x", None)).await.unwrap().id);
    }
    eventually("all acknowledged", || {
        ids.iter().all(|id| {
            matches!(
                space.message("q", *id),
                Err(MessageError::MessageNotFound(_))
            )
        })
    })
    .await;
    assert!(sink.count() > 300, "some attempts failed and were retried");
    space.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn https_endpoints_are_delivered_over_tls() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // A self-signed certificate for localhost, trusted by this deliverer only.
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_der = cert.cert.der().clone();
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(
        rustls::pki_types::PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()),
    );
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key_der)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |_req| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async {
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(Bytes::new()),
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });

    let dir = tempfile::tempdir().unwrap();
    let space = Space::open(
        Arc::new(FsBackend::open(dir.path()).unwrap()),
        SpaceConfig::new(storage::Config {
            segment_bytes: 1024 * 1024,
            ..storage::Config::default()
        }),
        Arc::new(
            HttpDeliverer::with_config(handler::HttpConfig {
                extra_roots: vec![cert_der],
                ..Default::default()
            })
            .unwrap(),
        ),
    )
    .unwrap()
    .0;
    space
        .put_queue("q", &SettingsPatch::default())
        .await
        .unwrap();
    let endpoint = format!("https://localhost:{port}/hook");
    space
        .add_subscriber("q", spec(endpoint.clone(), HandlerKind::Webhook, None))
        .await
        .unwrap();
    let m = space.publish("q", msg("secret stuff", None)).await.unwrap();
    eventually("delivered over TLS", || {
        received.load(Ordering::SeqCst) == 1
    })
    .await;
    eventually("acknowledged", || {
        matches!(
            space.message("q", m.id),
            Err(MessageError::MessageNotFound(_))
        )
    })
    .await;

    // A deliverer that does not trust the certificate refuses the endpoint.
    let dir2 = tempfile::tempdir().unwrap();
    let strict = Space::open(
        Arc::new(FsBackend::open(dir2.path()).unwrap()),
        SpaceConfig::new(storage::Config::default()),
        Arc::new(HttpDeliverer::new()),
    )
    .unwrap()
    .0;
    strict
        .put_queue(
            "q",
            &patch(serde_json::json!({"retry": {"max_attempts": 1}})),
        )
        .await
        .unwrap();
    strict
        .add_subscriber("q", spec(endpoint, HandlerKind::Webhook, None))
        .await
        .unwrap();
    let m = strict.publish("q", msg("x", None)).await.unwrap();
    eventually("refused", || {
        strict.message("q", m.id).map(|i| i.state).ok() == Some(MessageState::Dead)
    })
    .await;
    let error = strict.message("q", m.id).unwrap().deliveries[0]
        .last_error
        .clone()
        .unwrap();
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    assert_eq!(received.load(Ordering::SeqCst), 1);
}

/// A subscriber's own headers (e.g. for a receiver behind auth) go with every request, of
/// either handler, next to the broker's own.
#[tokio::test]
async fn a_subscribers_own_headers_go_with_every_request() {
    let sink = start(|_, _| Reply::Status(200, "true")).await;
    let dir = tempfile::tempdir().unwrap();
    let space = open(&dir);
    space
        .put_queue("auth", &SettingsPatch::default())
        .await
        .unwrap();
    let own = vec![
        (
            "authorization".to_owned(),
            "Bearer receiver-token".to_owned(),
        ),
        ("x-tenant".to_owned(), "acme".to_owned()),
    ];
    for (path, handler) in [
        ("/webhook", HandlerKind::Webhook),
        ("/legacy", HandlerKind::Legacy),
    ] {
        let spec = SubscriberSpec {
            headers: own.clone(),
            ..spec(format!("{}{path}", sink.url()), handler, Some(SECRET))
        };
        let spec = SubscriberSpec {
            secret: (handler == HandlerKind::Webhook).then(|| SECRET.to_owned()),
            ..spec
        };
        space.add_subscriber("auth", spec).await.unwrap();
    }
    space
        .publish("auth", msg(r#"{"n":1}"#, None))
        .await
        .unwrap();
    eventually("both received", || sink.count() == 2).await;
    for r in sink.received() {
        assert_eq!(r.headers["authorization"], "Bearer receiver-token");
        assert_eq!(r.headers["x-tenant"], "acme");
    }
    space.shutdown(Duration::from_secs(1)).await;
}
