//! `demo-module`: a small real program to supervise (used by `supctl dev`).
//!
//! It serves HTTP on `--port` (default 8080, or `DEMO_PORT`):
//! - `GET /` greets with the module's name, epoch and node (from the
//!   `MODULE_*` environment the node manager sets);
//! - `GET /health` answers `ok` (the package's health probe);
//! - `GET /crash` answers, then exits with status 1, so the cluster has
//!   something to restore.
//!
//! Plain `std` networking, one request at a time: it is a demo.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| "?".to_string())
}

fn port() -> Result<u16, String> {
    let mut args = std::env::args().skip(1);
    let mut port = std::env::var("DEMO_PORT").ok();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => port = args.next(),
            "-h" | "--help" => {
                println!("demo-module [--port N]: serves /, /health and /crash");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    port.unwrap_or_else(|| "8080".into())
        .parse()
        .map_err(|_| "--port is not a port number".to_string())
}

fn answer(stream: &mut TcpStream, status: &str, body: &str) {
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.flush();
}

fn main() {
    let port = match port() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("demo-module: {e}");
            std::process::exit(2);
        }
    };
    let listener = match TcpListener::bind(("127.0.0.1", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("demo-module: cannot listen on 127.0.0.1:{port}: {e}");
            std::process::exit(1);
        }
    };
    let started = Instant::now();
    let (name, epoch, node) = (env("MODULE_NAME"), env("MODULE_EPOCH"), env("MODULE_NODE"));
    println!("demo-module {name} (epoch {epoch}) on node {node}: listening on 127.0.0.1:{port}");
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut line = String::new();
        if BufReader::new(&stream).read_line(&mut line).is_err() {
            continue;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/");
        match path {
            "/health" => answer(&mut stream, "200 OK", "ok\n"),
            "/crash" => {
                answer(
                    &mut stream,
                    "200 OK",
                    "crashing now; watch `supctl events --follow`\n",
                );
                eprintln!("demo-module: crashing on request");
                std::process::exit(1);
            }
            "/" => {
                let up = started.elapsed().as_secs();
                let body =
                    format!("hello from module {name} (epoch {epoch}) on node {node}, up {up} s\n");
                answer(&mut stream, "200 OK", &body);
            }
            _ => answer(&mut stream, "404 Not Found", "try /, /health or /crash\n"),
        }
    }
}
