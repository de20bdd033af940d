//! The endpoint policy on the address actually connected to, against a real subscriber server
//! on loopback: what a host name resolves to and what an address literal says are both
//! checked on every new connection, and a refusal is a failed attempt that says why.

mod common;

use common::{Reply, start};
use handler::HttpDeliverer;
use space::endpoints::{AllowList, EndpointPolicy};
use space::{Deliverer, Outcome};

fn policy(rules: &[&str]) -> EndpointPolicy {
    let rules: Vec<String> = rules.iter().map(|r| r.to_string()).collect();
    EndpointPolicy::new(Some(AllowList::parse(&rules).unwrap()))
}

async fn outcome(d: &HttpDeliverer, endpoint: &str) -> Outcome {
    d.deliver(common::attempt(endpoint, 1)).await
}

fn refused(o: &Outcome) -> bool {
    matches!(o, Outcome::Failed { error, .. } if error.contains("endpoints.allow"))
}

#[tokio::test]
async fn unset_refuses_link_local_and_unspecified_addresses_only() {
    let sink = start(|_, _| Reply::Status(204, "")).await;
    let port = sink.addr.port();
    let d = HttpDeliverer::new();
    assert_eq!(outcome(&d, &sink.url()).await, Outcome::Acked);
    // 0.0.0.0 reaches this machine's own servers: refused unless listed.
    for endpoint in [
        format!("http://0.0.0.0:{port}/"),
        "http://169.254.169.254:80/latest/meta-data/".to_owned(),
        "http://[::ffff:169.254.169.254]:80/".to_owned(),
        "http://[fe80::1]:80/".to_owned(),
    ] {
        let o = outcome(&d, &endpoint).await;
        assert!(refused(&o), "{endpoint}: {o:?}");
    }
    assert_eq!(sink.count(), 1, "nothing reached the server past the first");
}

#[tokio::test]
async fn a_host_name_is_checked_by_what_it_resolves_to() {
    let sink = start(|_, _| Reply::Status(204, "")).await;
    let port = sink.addr.port();
    let by_name = format!("http://localhost:{port}/hook");
    // localhost resolves to loopback: a loopback network lets it through…
    let loopback = HttpDeliverer::with_policy(policy(&["127.0.0.0/8", "::1"]));
    assert_eq!(outcome(&loopback, &by_name).await, Outcome::Acked);
    // …another network does not, however the subscriber was added.
    let elsewhere = HttpDeliverer::with_policy(policy(&["10.0.0.0/8"]));
    let o = outcome(&elsewhere, &by_name).await;
    assert!(refused(&o), "{o:?}");
    let o = outcome(&elsewhere, &sink.url()).await;
    assert!(refused(&o), "an address literal outside the list: {o:?}");
    // A listed name goes wherever it resolves.
    let named = HttpDeliverer::with_policy(policy(&["LOCALHOST"]));
    assert_eq!(outcome(&named, &by_name).await, Outcome::Acked);
    assert_eq!(sink.count(), 2);
}

/// The cap on open connections holds over every subscriber: past it, a new connection waits
/// for one to close instead of opening.
#[tokio::test]
async fn open_connections_stay_under_the_cap() {
    use std::time::Duration;
    let slow = start(|_, _| Reply::Slow(Duration::from_millis(300), 204)).await;
    let d = HttpDeliverer::with_config(handler::HttpConfig {
        max_connections: 2,
        ..Default::default()
    })
    .unwrap();
    let attempts: Vec<_> = (0..6)
        .map(|_| {
            let d = d.clone();
            let url = slow.url();
            tokio::spawn(async move { outcome(&d, &url).await })
        })
        .collect();
    for a in attempts {
        assert_eq!(a.await.unwrap(), Outcome::Acked);
    }
    assert_eq!(slow.count(), 6);
    assert_eq!(
        slow.concurrent_max
            .load(std::sync::atomic::Ordering::SeqCst),
        2,
        "at most two requests on the wire, one per connection"
    );
}
