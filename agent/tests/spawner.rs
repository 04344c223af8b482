//! The parent-death signal is tied to the forking *thread*: modules are
//! forked on the agent's long-lived spawner thread, so they survive the
//! runtime's blocking threads coming and going, while a child forked the
//! naive way on a blocking-pool thread dies with that thread.

use std::time::{Duration, Instant};

use agent::spawner::{Spawner, set_parent_death_signal};

fn alive(child: &mut std::process::Child) -> bool {
    child.try_wait().expect("try_wait").is_none()
}

#[test]
fn modules_survive_blocking_thread_churn() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_keep_alive(Duration::from_millis(20))
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let spawner = Spawner::start(tokio::runtime::Handle::current()).expect("spawner");
        // The request itself comes from a short-lived blocking thread.
        let s = spawner.clone();
        let handle = tokio::runtime::Handle::current();
        let mut module = tokio::task::spawn_blocking(move || {
            handle.block_on(async {
                let mut cmd = tokio::process::Command::new("sleep");
                cmd.arg("1000");
                s.spawn(cmd, nix::sys::signal::Signal::SIGKILL).await
            })
        })
        .await
        .expect("join")
        .expect("spawn");

        // The naive way: forked on a blocking-pool thread.
        let mut naive = tokio::task::spawn_blocking(|| {
            let mut cmd = std::process::Command::new("sleep");
            cmd.arg("1000");
            set_parent_death_signal(&mut cmd, nix::sys::signal::Signal::SIGKILL);
            cmd.spawn()
        })
        .await
        .expect("join")
        .expect("spawn");

        // Churn: many blocking threads start and, idle past their
        // keep-alive, exit.
        for _ in 0..5 {
            let jobs: Vec<_> = (0..16)
                .map(|_| {
                    tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(5)))
                })
                .collect();
            for j in jobs {
                j.await.expect("join");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(&mut naive) {
            assert!(
                Instant::now() < deadline,
                "the naive child should die with its thread"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            module.try_wait().expect("try_wait").is_none(),
            "a module forked on the spawner thread survives the churn"
        );
        module.kill().await.expect("kill");
    });
}
