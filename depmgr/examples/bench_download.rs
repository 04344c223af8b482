//! Download benchmark for the dependency manager (not a test).
//!
//! Builds a package around an incompressible payload (100 MiB by default),
//! pushes it to a real `depmgr` process, restarts that process (so its peak
//! memory reflects serving only), then in the same run and alternating
//! rounds measures:
//!
//! - `cat <archive file> > /dev/null`: the raw read speed of the very file
//!   depmgr serves (warm page cache, like the downloads);
//! - `curl -o /dev/null` of `GET /v1/packages/{name}/{version}/archive`
//!   (if curl is installed);
//! - an in-process reqwest download that discards the bytes;
//! - then 4 concurrent curl downloads;
//!
//! and reads depmgr's peak resident memory (`VmHWM` in
//! `/proc/<pid>/status`) before and after the downloads.
//!
//! Run: `depmgr/scripts/bench-download.sh [--size-mib N] [--rounds N]`
//! (it builds the release binaries and runs this example).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use testkit::depmgr_proc::DepmgrProc;

struct Args {
    size_mib: usize,
    rounds: usize,
    /// Also measure with the file evicted from the page cache before each
    /// read (GNU dd iflag=nocache).
    cold: bool,
    depmgr: PathBuf,
}

fn parse_args() -> Result<Args> {
    let exe = std::env::current_exe()?;
    // target/release/examples/bench_download -> target/release/depmgr
    let default_bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("depmgr"))
        .context("cannot locate the depmgr binary")?;
    let mut args = Args {
        size_mib: 100,
        rounds: 5,
        cold: false,
        depmgr: default_bin,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--size-mib" => args.size_mib = value()?.parse()?,
            "--rounds" => args.rounds = value()?.parse()?,
            "--depmgr" => args.depmgr = value()?.into(),
            "--cold" => args.cold = true,
            other => {
                bail!("unknown argument {other} (--size-mib N, --rounds N, --cold, --depmgr PATH)")
            }
        }
    }
    Ok(args)
}

/// depmgr's peak (`VmHWM:`) or current (`VmRSS:`) memory in KiB.
fn status_kib(server: &DepmgrProc, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid()))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/<pid>/status"))
}

fn mb_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The loopback ceiling: the same file sent over a plain TCP connection by
/// `std::io::copy` (sendfile on Linux, no HTTP, no copies in user space),
/// read by a client that discards it.
fn raw_tcp(file: &Path, size: u64) -> Result<f64> {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let path = file.to_path_buf();
    let sender = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut sock, _) = listener.accept()?;
        let mut f = std::fs::File::open(path)?;
        std::io::copy(&mut f, &mut sock)
    });
    let t = Instant::now();
    let mut sock = std::net::TcpStream::connect(addr)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0u64;
    loop {
        let n = sock.read(&mut buf)?;
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    let d = t.elapsed();
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender panicked"))??;
    if got != size {
        bail!("raw TCP moved {got} of {size} bytes");
    }
    Ok(mb_s(size, d))
}

/// Drops `file` from the page cache (posix_fadvise DONTNEED via GNU dd), so
/// the next read comes from the disk (or whatever caches below the VM).
fn evict(file: &Path) -> Result<()> {
    let status = Command::new("dd")
        .arg(format!("if={}", file.display()))
        .args(["iflag=nocache", "count=0", "status=none"])
        .status()?;
    if !status.success() {
        bail!("dd iflag=nocache failed");
    }
    Ok(())
}

fn timed(cmd: &mut Command) -> Result<Duration> {
    let t = Instant::now();
    let status = cmd.stdout(Stdio::null()).status()?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(t.elapsed())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let tmp = tempfile::tempdir()?;
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src)?;
    std::fs::write(
        src.join("manifest.toml"),
        "name = \"bench\"\nversion = \"1.0.0\"\ncommand = \"payload\"\n",
    )?;
    {
        use rand::{RngCore, SeedableRng};
        let mut payload = vec![0u8; args.size_mib << 20];
        rand::rngs::StdRng::seed_from_u64(1).fill_bytes(&mut payload);
        std::fs::write(src.join("payload"), payload)?;
    }
    let archive = depmgr::archive::pack_dir(&src)?;
    let size = archive.len() as u64;
    let data = tmp.path().join("data");

    let server = DepmgrProc::start_program(&args.depmgr, &data, &[], "warn").await?;
    let client = depmgr::client::Client::new(&server.addr)?;
    let t = Instant::now();
    let (answer, _) = client.push("bench", "1.0.0", archive).await?;
    let push_time = t.elapsed();
    let upload_hwm = status_kib(&server, "VmHWM:")?;
    server.terminate().await?;

    let server = DepmgrProc::start_program(&args.depmgr, &data, &[], "warn").await?;
    let rss_start = status_kib(&server, "VmHWM:")?;
    let file = data.join("archives").join(&answer.digest);
    let url = format!("http://{}/v1/packages/bench/1.0.0/archive", server.addr);
    let have_curl = Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok();
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .read_timeout(Duration::from_secs(30))
        .build()?;

    // Warm the page cache once, then alternate.
    timed(Command::new("cat").arg(&file))?;
    let (mut cat, mut curl, mut reqw, mut raw) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut cold_cat, mut cold_curl) = (Vec::new(), Vec::new());
    for _ in 0..args.rounds {
        cat.push(mb_s(size, timed(Command::new("cat").arg(&file))?));
        raw.push(raw_tcp(&file, size)?);
        if have_curl {
            let d = timed(Command::new("curl").args(["-sf", "-o", "/dev/null", &url]))?;
            curl.push(mb_s(size, d));
        }
        let t = Instant::now();
        let mut resp = http.get(&url).send().await?.error_for_status()?;
        let mut got = 0u64;
        while let Some(chunk) = resp.chunk().await? {
            got += chunk.len() as u64;
        }
        if got != size {
            bail!("downloaded {got} of {size} bytes");
        }
        reqw.push(mb_s(size, t.elapsed()));
        if args.cold {
            evict(&file)?;
            cold_cat.push(mb_s(size, timed(Command::new("cat").arg(&file))?));
            if have_curl {
                evict(&file)?;
                let d = timed(Command::new("curl").args(["-sf", "-o", "/dev/null", &url]))?;
                cold_curl.push(mb_s(size, d));
            }
        }
    }
    let hwm_sequential = status_kib(&server, "VmHWM:")?;
    let mut parallel_rate = None;
    if have_curl {
        let t = Instant::now();
        let kids: Vec<Child> = (0..4)
            .map(|_| {
                Command::new("curl")
                    .args(["-sf", "-o", "/dev/null", &url])
                    .spawn()
            })
            .collect::<Result<_, _>>()?;
        for mut k in kids {
            if !k.wait()?.success() {
                bail!("parallel curl failed");
            }
        }
        parallel_rate = Some(mb_s(4 * size, t.elapsed()));
    }
    let hwm_after = status_kib(&server, "VmHWM:")?;
    server.terminate().await?;

    let cat_m = median(cat);
    let raw_m = median(raw);
    println!(
        "archive: {size} bytes ({:.1} MiB), rounds: {}",
        size as f64 / 1048576.0,
        args.rounds
    );
    println!(
        "push (upload + inspect + commit): {:.0} MB/s",
        mb_s(size, push_time)
    );
    println!("cat  archive file > /dev/null:      median {cat_m:.0} MB/s (page cache)");
    println!(
        "raw TCP loopback (sendfile, no HTTP): median {raw_m:.0} MB/s ({:.2}x slower than cat)",
        cat_m / raw_m
    );
    if !curl.is_empty() {
        let m = median(curl);
        println!(
            "curl download -o /dev/null:         median {m:.0} MB/s ({:.2}x slower than cat)",
            cat_m / m
        );
    }
    let m = median(reqw);
    println!(
        "reqwest download (in-process):      median {m:.0} MB/s ({:.2}x slower than cat)",
        cat_m / m
    );
    if !cold_cat.is_empty() {
        let c = median(cold_cat);
        println!("cold cat (file evicted first):      median {c:.0} MB/s");
        if !cold_curl.is_empty() {
            let d = median(cold_curl);
            println!(
                "cold curl download (evicted first): median {d:.0} MB/s ({:.2}x slower than cold cat)",
                c / d
            );
        }
    }
    if let Some(p) = parallel_rate {
        println!("4 concurrent curl downloads:        {p:.0} MB/s aggregate");
    }
    println!(
        "depmgr VmHWM after start:           {:.1} MiB",
        rss_start as f64 / 1024.0
    );
    println!(
        "depmgr VmHWM after sequential:      {:.1} MiB",
        hwm_sequential as f64 / 1024.0
    );
    println!(
        "depmgr VmHWM after 4 concurrent:    {:.1} MiB",
        hwm_after as f64 / 1024.0
    );
    println!(
        "depmgr VmHWM of the uploading run:  {:.1} MiB",
        upload_hwm as f64 / 1024.0
    );
    Ok(())
}
