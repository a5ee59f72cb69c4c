//! Balancing: each algorithm's distribution, consistency of hashing, sticky cookies.

use std::collections::HashMap;
use std::time::Duration;

use crate::common::*;
use crate::config::{Config, Upstream};

fn cfg(u: Upstream) -> String {
    Config::web_to(u).toml()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_robin_is_even_across_threads_and_weighted() {
    let (a, b, c) = (named("a").await, named("b").await, named("c").await);
    let gh = proxy(&cfg(Upstream::servers([a.addr, b.addr, c.addr]))).await;
    let addr = web(&gh);
    let mut tasks = Vec::new();
    for _ in 0..10 {
        tasks.push(tokio::spawn(async move {
            for _ in 0..31 {
                assert_eq!(get(addr, "x", "/").await.status, 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let hits = [a.hits(), b.hits(), c.hits()];
    assert_eq!(hits.iter().sum::<usize>(), 310);
    let (min, max) = (hits.iter().min().unwrap(), hits.iter().max().unwrap());
    assert!(max - min <= 1, "uneven round robin: {hits:?}");

    let (w1, w3) = (named("w1").await, named("w3").await);
    let gh = proxy(&cfg(
        Upstream::servers([w1.addr]).server_with(w3.addr, "weight = 3")
    ))
    .await;
    let addr = web(&gh);
    for _ in 0..200 {
        get(addr, "x", "/").await;
    }
    assert_eq!((w1.hits(), w3.hits()), (50, 150));
}

/// An origin whose `/hold` requests wait until `release` is sent; anything else answers at once.
async fn holding(name: &'static str, release: tokio::sync::watch::Receiver<bool>) -> Origin {
    origin(move |req| {
        let mut release = release.clone();
        async move {
            if req.uri().path() == "/hold" {
                let _ = release.wait_for(|r| *r).await;
            }
            text(200, name)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_prefers_the_server_with_fewer_requests_in_flight() {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let a = holding("a", rx.clone()).await;
    let b = holding("b", rx).await;
    let gh = proxy(&cfg(
        Upstream::servers([a.addr, b.addr]).balance("least_conn")
    ))
    .await;
    let addr = web(&gh);
    let holds: Vec<_> = (0..3)
        .map(|_| tokio::spawn(async move { get(addr, "x", "/hold").await }))
        .collect();
    assert!(eventually(Duration::from_secs(5), async || a.hits() + b.hits() == 3).await);
    let (busy, idle) = if a.hits() > b.hits() {
        (&a, "b")
    } else {
        (&b, "a")
    };
    assert_eq!(busy.hits(), 2, "three requests in flight spread 2 / 1");
    for _ in 0..10 {
        assert_eq!(
            get(addr, "x", "/quick").await.text(),
            idle,
            "quick requests go to the less busy server"
        );
    }
    tx.send(true).unwrap();
    for h in holds {
        assert_eq!(h.await.unwrap().status, 200);
    }
}

#[tokio::test]
async fn random_two_spreads_load() {
    let (a, b, c) = (named("a").await, named("b").await, named("c").await);
    let gh = proxy(&cfg(
        Upstream::servers([a.addr, b.addr, c.addr]).balance("random_two")
    ))
    .await;
    let addr = web(&gh);
    for _ in 0..300 {
        get(addr, "x", "/").await;
    }
    for (n, h) in [("a", a.hits()), ("b", b.hits()), ("c", c.hits())] {
        assert!(h > 50, "{n} got only {h} of 300");
    }
}

#[tokio::test]
async fn hash_is_consistent_and_moves_few_keys_when_a_server_goes() {
    let origins = [
        named("a").await,
        named("b").await,
        named("c").await,
        named("d").await,
    ];
    let names = ["a", "b", "c", "d"];
    let hashed = |n: usize| {
        cfg(Upstream::servers(origins[..n].iter().map(|o| o.addr))
            .balance("hash")
            .raw(r#"hash_key = "header:x-user""#))
    };
    let gh = proxy(&hashed(4)).await;
    let addr = web(&gh);
    let mut before = HashMap::new();
    for k in 0..200 {
        let user = format!("user-{k}");
        let r1 = get_with(addr, "x", "/", &[("x-user", &user)]).await.text();
        let r2 = get_with(addr, "x", "/", &[("x-user", &user)]).await.text();
        assert_eq!(r1, r2, "same key, same server");
        before.insert(user, r1);
    }
    for n in names {
        let share = before.values().filter(|v| *v == n).count();
        assert!(share > 20, "server {n} got {share} of 200 keys");
    }
    gh.apply(gatehouse_config::parse(&hashed(3), "t").unwrap())
        .await
        .unwrap();
    let mut moved = 0;
    let mut kept_total = 0;
    for (user, was) in &before {
        if was == "d" {
            continue;
        }
        kept_total += 1;
        if get_with(addr, "x", "/", &[("x-user", user)]).await.text() != *was {
            moved += 1;
        }
    }
    assert!(
        moved * 20 <= kept_total,
        "{moved} of {kept_total} keys moved off surviving servers"
    );
}

#[tokio::test]
async fn sticky_cookie_pins_a_client_to_its_server_without_naming_it() {
    let (a, b, c) = (named("a").await, named("b").await, named("c").await);
    let gh = proxy(&cfg(
        Upstream::servers([a.addr, b.addr, c.addr]).raw(r#"sticky = { cookie = "GH_SRV" }"#)
    ))
    .await;
    let addr = web(&gh);
    let first = get(addr, "x", "/").await;
    let set = first
        .header("set-cookie")
        .expect("sticky cookie set")
        .to_string();
    assert!(set.starts_with("GH_SRV="), "{set}");
    let value = set.split(';').next().unwrap().to_string();
    for o in [&a, &b, &c] {
        assert!(
            !set.contains(&o.addr.port().to_string()),
            "cookie leaks an address: {set}"
        );
    }
    for _ in 0..12 {
        let r = get_with(addr, "x", "/", &[("cookie", &format!("other=1; {value}"))]).await;
        assert_eq!(r.text(), first.text());
        assert!(
            r.header("set-cookie").is_none(),
            "no new cookie while the pin holds"
        );
    }
}
