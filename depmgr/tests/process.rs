//! The `depmgr` process: restarts, kill -9 in the middle of an upload,
//! clean shutdown, and refusing bad flags or an unusable data dir.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::*;
use testkit::depmgr_proc::{DEADLINE, DepmgrProc};
use testkit::package::sample;
use testkit::process::output_within;

#[tokio::test]
async fn restart_keeps_everything() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    let server = DepmgrProc::start(&data, &[]).await?;
    let client = server.client();
    let mut pushed = Vec::new();
    for (name, version, deps) in [
        ("base", "1.0.0", vec![]),
        ("base", "1.2.0", vec![]),
        ("web", "2.0.0", vec![("base", "^1")]),
    ] {
        let bytes = sample(name, version, &deps, version.as_bytes());
        client.push(name, version, bytes.clone()).await?;
        pushed.push((name, version, bytes));
    }
    let list_before = client.list().await?;
    let closure_before = client.closure("web", "2.0.0").await?;

    // Clean stop on SIGTERM: exit status 0.
    let status = server.terminate().await?;
    assert!(status.success(), "{status:?}");

    let server = DepmgrProc::start(&data, &[]).await?;
    let client = server.client();
    assert_eq!(client.list().await?, list_before);
    assert_eq!(client.closure("web", "2.0.0").await?, closure_before);
    for (name, version, bytes) in &pushed {
        let info = client.show(name, version).await?;
        assert_eq!(info.digest, sha256(bytes));
        let dest = tmp.path().join(format!("{name}-{version}.tgz"));
        client.download(name, version, &dest).await?;
        assert_eq!(&std::fs::read(&dest)?, bytes);
    }
    // Still immutable after the restart.
    let other = sample("base", "1.0.0", &[], b"other bytes");
    let err = client
        .push("base", "1.0.0", other)
        .await
        .expect_err("conflict");
    assert!(
        matches!(err, depmgr::Error::Http { status: 409, .. }),
        "{err}"
    );

    // kill -9 after acknowledged uploads loses nothing either.
    let bytes = sample("late", "0.1.0", &[], b"late");
    client.push("late", "0.1.0", bytes.clone()).await?;
    server.kill9()?;
    let server = DepmgrProc::start(&data, &[]).await?;
    assert_eq!(
        server.client().show("late", "0.1.0").await?.digest,
        sha256(&bytes)
    );
    Ok(())
}

#[tokio::test]
async fn kill_9_during_a_large_upload_leaves_no_partial_version() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    let server = DepmgrProc::start(&data, &[]).await?;
    // A valid 48 MiB package of incompressible data.
    let payload = random_bytes(48 << 20, 7);
    let big = sample("big", "1.0.0", &[], &payload);
    drop(payload);
    assert!(big.len() > 40 << 20);

    // Stream the first half, then stop feeding (the body stays open).
    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(2);
    let url = server.url("/v1/packages/big/1.0.0");
    let upload = tokio::spawn(async move {
        http()
            .put(url)
            .body(reqwest::Body::wrap_stream(rx))
            .send()
            .await
    });
    let half = big.len() / 2;
    {
        use futures::SinkExt;
        for chunk in big[..half].chunks(1 << 20) {
            tx.send(Ok(chunk.to_vec())).await?;
        }
    }
    // Wait until the server has written most of that half to its temp file.
    let tmp_dir = data.join("tmp");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let written: u64 = std::fs::read_dir(&tmp_dir)?
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum();
        if written >= (half as u64) - (4 << 20) {
            break;
        }
        if Instant::now() > deadline {
            bail!("the server wrote only {written} of {half} bytes");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill9()?;
    drop(tx);
    let sent = upload.await?;
    assert!(sent.is_err() || !sent?.status().is_success());

    // After a restart: no trace of the version, nothing half-written kept.
    let server = DepmgrProc::start(&data, &[]).await?;
    let client = server.client();
    assert!(client.list().await?.is_empty());
    let err = client.show("big", "1.0.0").await.expect_err("absent");
    assert!(
        matches!(err, depmgr::Error::Http { status: 404, .. }),
        "{err}"
    );
    assert!(
        files_in(&data.join("tmp")).is_empty(),
        "temp upload removed at start"
    );
    assert!(files_in(&data.join("archives")).is_empty());

    // The full upload now succeeds and round-trips.
    let (answer, created) = client.push("big", "1.0.0", big.clone()).await?;
    assert!(created);
    assert_eq!(answer.digest, sha256(&big));
    let dest = tmp.path().join("big.tgz");
    assert_eq!(client.download("big", "1.0.0", &dest).await?, sha256(&big));
    Ok(())
}

/// Runs depmgr with `args`, expecting exit status 2 and one stderr line.
fn refused(args: &[&str]) -> Result<String> {
    let out = output_within(Command::new(testkit::bin("depmgr")).args(args), DEADLINE)?;
    let status = out.status;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
    let stderr = stderr.trim_end().to_string();
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr:?}");
    Ok(stderr)
}

#[tokio::test]
async fn bad_flags_and_unusable_data_dirs_exit_2_with_one_line() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("d");
    let dir_s = dir.to_str().context("utf-8")?;

    let e = refused(&["--data-dir", dir_s, "--bogus"])?;
    assert!(e.contains("--bogus"), "{e}");
    let e = refused(&["--listen", "127.0.0.1:0"])?;
    assert!(e.contains("--data-dir"), "{e}");
    let e = refused(&["--data-dir", dir_s, "--max-archive-bytes", "lots"])?;
    assert!(e.contains("lots"), "{e}");
    let e = refused(&["--data-dir", dir_s, "--max-archive-bytes", "0"])?;
    assert!(e.contains("--max-archive-bytes"), "{e}");
    let e = refused(&["--data-dir", dir_s, "--listen", "nonsense"])?;
    assert!(e.contains("--listen"), "{e}");
    assert!(!dir.exists(), "nothing created for bad flags");

    // A regular file as data dir: refused, file untouched.
    let file = tmp.path().join("file");
    std::fs::write(&file, b"not a dir")?;
    let e = refused(&[
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        file.to_str().context("utf-8")?,
    ])?;
    assert!(e.contains("not a directory"), "{e}");
    assert_eq!(std::fs::read(&file)?, b"not a dir");

    // A data dir below a file cannot be created.
    let below = file.join("sub");
    let e = refused(&[
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        below.to_str().context("utf-8")?,
    ])?;
    assert!(e.contains("unusable"), "{e}");

    // A data dir in use by another depmgr: refused, the first one unharmed.
    let first = DepmgrProc::start(&dir, &[]).await?;
    let bytes = sample("web", "1.0.0", &[], b"x");
    first.client().push("web", "1.0.0", bytes).await?;
    let e = refused(&["--listen", "127.0.0.1:0", "--data-dir", dir_s])?;
    assert!(e.contains("unusable") && e.contains("lock"), "{e}");
    assert_eq!(first.client().list().await?.len(), 1);

    // A port in use.
    let e = refused(&[
        "--listen",
        &first.addr,
        "--data-dir",
        tmp.path().join("other").to_str().context("utf-8")?,
    ])?;
    assert!(e.contains("cannot listen"), "{e}");
    assert!(!tmp.path().join("other").exists());

    // --help is not an error.
    let out = Command::new(testkit::bin("depmgr"))
        .arg("--help")
        .output()?;
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--data-dir"));
    Ok(())
}

#[tokio::test]
async fn sigint_also_stops_cleanly() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let server = DepmgrProc::start(&tmp.path().join("data"), &[]).await?;
    let pid = nix::unistd::Pid::from_raw(server.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT)?;
    // terminate() sends SIGTERM too, harmlessly; what matters is the status.
    let status = server.terminate().await?;
    assert!(status.success(), "{status:?}");
    Ok(())
}
