//! Load for bench/: `rate URL[,URL...] RATE CONNS SECS [SLICE_MS [WARM_SECS [WINDOW_SECS]]]`
//! sends requests at a fixed total rate spread over CONNS keep-alive connections per target and
//! measures each latency from the moment the request was due (not sent), so a stalled server
//! cannot hide its stall (coordinated omission, as in wrk2); several targets are interleaved in
//! slices (see `rate.rs`); prints one JSON line per target. `hold ADDR N` opens N keep-alive
//! connections, makes one request on each, prints `ready`, and keeps them open until standard
//! input closes. `sink` and `push` move bulk bytes for the TCP scenario.
//!
//! Written here because Debian has no open-loop HTTP load tool with latency percentiles (wrk2 and
//! oha are not packaged).

mod rate;

use std::net::SocketAddr;
use std::time::Instant;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn usage() -> ! {
    eprintln!(
        "usage: loadgen rate URL[,URL...] RATE CONNS SECS [SLICE_MS [WARM_SECS [WINDOW_SECS]]] | hold ADDR N | sink ADDR | push ADDR MIB"
    );
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match args.get(1).map(String::as_str) {
        Some("rate") if (6..=9).contains(&args.len()) => {
            let num = |i: usize, default: f64| -> f64 {
                args.get(i)
                    .map_or(Some(default), |a| a.parse().ok())
                    .unwrap_or_else(|| usage())
            };
            let plan = rate::Plan {
                urls: args[2]
                    .split(',')
                    .map(|u| u.parse().unwrap_or_else(|_| usage()))
                    .collect(),
                rate: num(3, 0.0),
                conns: num(4, 0.0) as usize,
                secs: num(5, 0.0),
                slice_ms: num(6, 100.0),
                warm_secs: num(7, 0.0),
                window_secs: num(8, 3.0),
            };
            if plan.rate <= 0.0 || plan.conns == 0 || plan.secs <= 0.0 || plan.slice_ms <= 0.0 {
                usage();
            }
            if let Err(e) = rate::run(plan) {
                eprintln!("loadgen rate: {e}");
                std::process::exit(1);
            }
        }
        Some("sink") if args.len() == 3 => {
            let addr: SocketAddr = args[2].parse().unwrap_or_else(|_| usage());
            rt.block_on(sink(addr));
        }
        Some("push") if args.len() == 4 => {
            let addr: SocketAddr = args[2].parse().unwrap_or_else(|_| usage());
            let mib: u64 = args[3].parse().unwrap_or_else(|_| usage());
            rt.block_on(push(addr, mib));
        }
        Some("hold") if args.len() == 4 => {
            let addr: SocketAddr = args[2].parse().unwrap_or_else(|_| usage());
            let n: usize = args[3].parse().unwrap_or_else(|_| usage());
            rt.block_on(hold(addr, n));
        }
        _ => usage(),
    }
}

async fn hold(addr: SocketAddr, n: usize) {
    let mut held = Vec::with_capacity(n);
    let req = format!("GET /1k HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let mut failed = 0;
    for _ in 0..n {
        let Ok(mut s) = TcpStream::connect(addr).await else {
            failed += 1;
            continue;
        };
        if s.write_all(req.as_bytes()).await.is_err() {
            failed += 1;
            continue;
        }
        // Read the whole answer (head + 1 KiB) so the connection is idle on both sides.
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(k) => {
                    got.extend_from_slice(&buf[..k]);
                    if let Some(h) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&got[..h]).to_ascii_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if got.len() >= h + 4 + len {
                            break;
                        }
                    }
                }
            }
        }
        if !got.starts_with(b"HTTP/1.1 200") {
            failed += 1;
        }
        held.push(s);
    }
    println!("ready {} failed {failed}", held.len());
    let mut line = String::new();
    let _ = tokio::io::BufReader::new(tokio::io::stdin())
        .read_line(&mut line)
        .await;
}

/// Accepts connections and discards what they send; answers "done" after each sender's FIN.
async fn sink(addr: SocketAddr) {
    let l = tokio::net::TcpListener::bind(addr).await.expect("bind");
    println!("ready");
    while let Ok((mut s, _)) = l.accept().await {
        tokio::spawn(async move {
            let mut buf = vec![0u8; 256 * 1024];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
            let _ = s.write_all(b"done").await;
        });
    }
}

/// Sends MIB mebibytes through one connection, then waits for the far end's "done"; prints
/// the seconds it took.
async fn push(addr: SocketAddr, mib: u64) {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let chunk = vec![0x5au8; 1 << 20];
    for _ in 0..mib {
        s.write_all(&chunk).await.expect("write");
    }
    s.shutdown().await.expect("shutdown");
    let mut done = Vec::new();
    let _ = s.read_to_end(&mut done).await;
    println!(
        "{{\"mib\":{mib},\"seconds\":{:.3},\"done\":{}}}",
        start.elapsed().as_secs_f64(),
        done == b"done"
    );
}
