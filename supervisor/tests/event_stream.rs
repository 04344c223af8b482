//! The event stream (`GET /v1/events/stream`) and the filters of
//! `GET /v1/events`, on three real supervisor replicas: a stream resumed
//! on another replica after its own was killed (a leader change) loses
//! nothing and repeats nothing; a follower serves the stream from its own
//! state; the filters work on both.

mod common;

use std::time::Duration;

use admin_api::{AdminClient, EventFilter, EventStream, EventView, StatusCode, StreamItem};
use common::spec;
use testkit::eventually;
use testkit::fake_agent::FakeAgent;
use testkit::fake_depmgr::FakeDepmgr;
use testkit::supervisors::Supervisors;

const T: Duration = Duration::from_secs(30);

/// The next event of `stream` (a gap is a failure here: nothing was
/// dropped), within `T`.
async fn next_event(stream: &mut EventStream) -> EventView {
    match tokio::time::timeout(T, stream.next()).await {
        Ok(Ok(StreamItem::Event(e))) => e,
        Ok(Ok(StreamItem::Gap(g))) => panic!("a gap: {g:?}"),
        Ok(Err(e)) => panic!("stream: {e}"),
        Err(_) => panic!("no event within {T:?} (position {})", stream.position()),
    }
}

/// Reads `stream` until every module of `names` has had its
/// `module_deployed`; appends what it read to `seen`.
async fn read_until_deployed(
    stream: &mut EventStream,
    names: &[String],
    seen: &mut Vec<EventView>,
) {
    let mut missing: Vec<&String> = names.iter().collect();
    while !missing.is_empty() {
        let e = next_event(stream).await;
        if e.kind == "module_deployed" {
            missing.retain(|m| e.module.as_deref() != Some(m.as_str()));
        }
        seen.push(e);
    }
}

fn names(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("m{i}")).collect()
}

async fn deploy_all(c: &AdminClient, names: &[String]) {
    for n in names {
        eventually(&format!("deploy {n}"), T, || async {
            match c.deploy(&spec(n, Some("a"), 3)).await {
                Ok(_) => Some(()),
                // Committed by a leader that then went away: done.
                Err(e) if e.status() == Some(StatusCode::CONFLICT) => Some(()),
                Err(_) => None,
            }
        })
        .await;
    }
}

/// A client of the replicas `order` (indices), tried in that order.
fn client_in_order(cluster: &Supervisors, order: &[usize]) -> AdminClient {
    AdminClient::new(
        order.iter().map(|i| cluster.addrs[*i].clone()).collect(),
        cluster.token(),
    )
    .with_timeout(Duration::from_secs(5))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_resumes_across_a_leader_change_losing_and_repeating_nothing() {
    let depmgr = FakeDepmgr::any_package().await;
    let mut cluster = Supervisors::start(3, &depmgr.url).await;
    let _agent = FakeAgent::start("a", cluster.addrs.clone());
    let c = cluster.client();
    let leader = cluster.wait_leader(T).await;
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();

    // A stream from the first event, on the leader first; one on a
    // follower alone, filtered by kind; one by module.
    let mut order = vec![leader];
    order.extend(&followers);
    let mut all = client_in_order(&cluster, &order).follow_events(0, EventFilter::default());
    let deployed_only = EventFilter {
        kind: Some("module_deployed".into()),
        ..EventFilter::default()
    };
    let mut on_follower = cluster
        .client_of(followers[1])
        .follow_events(0, deployed_only.clone());
    let m3_only = EventFilter {
        module: Some("m3".into()),
        ..EventFilter::default()
    };
    let mut m3 = cluster.client_of(followers[1]).follow_events(0, m3_only);

    let first = names(0..5);
    deploy_all(&c, &first).await;
    let mut seen = Vec::new();
    read_until_deployed(&mut all, &first, &mut seen).await;
    assert_eq!(
        all.connected_to(),
        Some(cluster.addrs[leader].as_str()),
        "read from the leader so far"
    );
    let before_change = seen.last().map_or(0, |e| e.index);

    // The leader (the stream's replica) dies; a new one is elected and
    // more modules are deployed through it.
    cluster.kill(leader);
    let new_leader = cluster.wait_leader(T).await;
    assert_ne!(new_leader, leader);
    let second = names(5..10);
    deploy_all(&c, &second).await;
    read_until_deployed(&mut all, &second, &mut seen).await;
    assert!(
        !all.reconnects.is_empty(),
        "the stream moved to another replica"
    );
    assert_ne!(all.connected_to(), Some(cluster.addrs[leader].as_str()));

    // Every event once, in order, with no index missing; the same events
    // the new leader lists.
    let indices: Vec<u64> = seen.iter().map(|e| e.index).collect();
    let expected: Vec<u64> = (1..=indices.len() as u64).collect();
    assert_eq!(indices, expected, "consecutive from 1, each once");
    let listed = c.events(0).await.expect("events");
    assert!(listed.len() >= seen.len());
    assert_eq!(&listed[..seen.len()], &seen[..]);
    for m in first.iter().chain(&second) {
        let deploys = seen
            .iter()
            .filter(|e| e.kind == "module_deployed" && e.module.as_deref() == Some(m))
            .count();
        assert_eq!(deploys, 1, "{m} deployed once in the stream");
    }

    // The follower's filtered stream: exactly the ten deploys.
    let mut deploys = Vec::new();
    for _ in 0..10 {
        deploys.push(next_event(&mut on_follower).await);
    }
    assert!(deploys.iter().all(|e| e.kind == "module_deployed"));
    let mut modules: Vec<String> = deploys.iter().filter_map(|e| e.module.clone()).collect();
    modules.sort();
    let mut want: Vec<String> = first.iter().chain(&second).cloned().collect();
    want.sort();
    assert_eq!(modules, want);
    assert!(deploys.windows(2).all(|w| w[0].index < w[1].index));

    // By module: only m3's events, its deploy first.
    let e = next_event(&mut m3).await;
    assert_eq!(
        (e.kind.as_str(), e.module.as_deref()),
        ("module_deployed", Some("m3"))
    );
    let later = listed
        .iter()
        .filter(|x| x.module.as_deref() == Some("m3") && x.index > e.index)
        .count();
    for _ in 0..later {
        assert_eq!(next_event(&mut m3).await.module.as_deref(), Some("m3"));
    }

    // Resuming from an index before the change, on the other survivor:
    // exactly the events after it.
    let survivor = (0..3)
        .find(|i| *i != leader && *i != new_leader)
        .expect("survivor");
    let mut resumed = cluster
        .client_of(survivor)
        .follow_events(before_change, EventFilter::default());
    for want in seen.iter().filter(|e| e.index > before_change) {
        assert_eq!(&next_event(&mut resumed).await, want);
    }

    // A bad filter is a 400 naming the kind.
    let bad = EventFilter {
        kind: Some("nope".into()),
        ..EventFilter::default()
    };
    let err = cluster
        .client_of(survivor)
        .follow_events(0, bad.clone())
        .next()
        .await
        .expect_err("an unknown kind");
    assert_eq!(err.status(), Some(StatusCode::BAD_REQUEST), "{err}");
    assert!(err.to_string().contains("nope"), "{err}");
    let err = c.events_where(None, None, &bad).await.expect_err("kind");
    assert_eq!(err.status(), Some(StatusCode::BAD_REQUEST), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_list_filters_and_newest_without_after() {
    let depmgr = FakeDepmgr::any_package().await;
    let cluster = Supervisors::start(3, &depmgr.url).await;
    let _agent = FakeAgent::start("a", cluster.addrs.clone());
    let c = cluster.client();
    let ms = names(0..4);
    deploy_all(&c, &ms).await;
    let none = EventFilter::default();
    let all = eventually("every module placed on a", T, || async {
        let all = c.events_where(Some(0), None, &none).await.ok()?;
        let placed = all.iter().filter(|e| e.kind == "placed").count();
        (placed >= ms.len()).then_some(all)
    })
    .await;

    // Without `after`: the newest `limit`, oldest first.
    let newest = c.events_where(None, Some(2), &none).await.expect("newest");
    assert_eq!(newest.len(), 2);
    assert!(newest[0].index < newest[1].index);
    assert!(newest[0].index >= all[all.len() - 2].index);
    // With `after`: the oldest after it.
    let oldest = c
        .events_where(Some(0), Some(2), &none)
        .await
        .expect("oldest");
    assert_eq!(&oldest[..], &all[..2]);

    let by = |module: Option<&str>, node: Option<&str>, kind: Option<&str>| EventFilter {
        module: module.map(str::to_string),
        node: node.map(str::to_string),
        kind: kind.map(str::to_string),
    };
    let m2 = c
        .events_where(Some(0), None, &by(Some("m2"), None, None))
        .await
        .expect("m2");
    assert!(!m2.is_empty() && m2.iter().all(|e| e.module.as_deref() == Some("m2")));
    let on_a = c
        .events_where(
            Some(0),
            None,
            &by(None, Some("a"), Some("placed,node_registered")),
        )
        .await
        .expect("on a");
    assert!(on_a.iter().any(|e| e.kind == "node_registered"));
    assert_eq!(on_a.iter().filter(|e| e.kind == "placed").count(), ms.len());
    assert!(on_a.iter().all(|e| e.node.as_deref() == Some("a")));
    let nowhere = c
        .events_where(Some(0), None, &by(None, Some("zz"), None))
        .await
        .expect("none");
    assert!(nowhere.is_empty());
    // The newest matching, not the newest of all.
    let last_deploy = c
        .events_where(None, Some(1), &by(None, None, Some("module_deployed")))
        .await
        .expect("last deploy");
    assert_eq!(last_deploy.len(), 1);
    assert_eq!(last_deploy[0].module.as_deref(), Some("m3"));
}
