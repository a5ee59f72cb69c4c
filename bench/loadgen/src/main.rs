//! Load for bench/: `rate URL RATE CONNS SECS` sends requests at a fixed total rate spread over
//! CONNS keep-alive connections and measures each latency from the moment the request was due
//! (not sent), so a stalled server cannot hide its stall (coordinated omission, as in wrk2);
//! prints one JSON line. `hold ADDR N` opens N keep-alive connections, makes one request on each,
//! prints `ready`, and keeps them open until standard input closes.
//!
//! Written here because Debian has no open-loop HTTP load tool with latency percentiles (wrk2 and
//! oha are not packaged).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn usage() -> ! {
    eprintln!("usage: loadgen rate URL RATE CONNS SECS | hold ADDR N | sink ADDR | push ADDR MIB");
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match args.get(1).map(String::as_str) {
        Some("rate") if args.len() == 6 => {
            let url: http::Uri = args[2].parse().unwrap_or_else(|_| usage());
            let rate: f64 = args[3].parse().unwrap_or_else(|_| usage());
            let conns: usize = args[4].parse().unwrap_or_else(|_| usage());
            let secs: f64 = args[5].parse().unwrap_or_else(|_| usage());
            rt.block_on(rate_run(url, rate, conns, Duration::from_secs_f64(secs)));
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

struct ConnResult {
    latencies_us: Vec<u64>,
    non_2xx: u64,
    errors: u64,
}

async fn rate_run(url: http::Uri, rate: f64, conns: usize, dur: Duration) {
    let authority = url.authority().expect("url has host:port").to_string();
    let path = url.path_and_query().map(|p| p.to_string()).unwrap_or_else(|| "/".into());
    let interval = Duration::from_secs_f64(conns as f64 / rate);
    let start = Instant::now() + Duration::from_millis(100);
    let mut tasks = Vec::new();
    for c in 0..conns {
        let (authority, path) = (authority.clone(), path.clone());
        // Stagger the connections over one interval so the total rate is smooth.
        let first = start + interval.mul_f64(c as f64 / conns as f64);
        tasks.push(tokio::spawn(async move {
            let mut res = ConnResult { latencies_us: Vec::new(), non_2xx: 0, errors: 0 };
            let Ok(stream) = TcpStream::connect(&authority).await else {
                res.errors += 1;
                return res;
            };
            let _ = stream.set_nodelay(true);
            let Ok((mut tx, conn)) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await else {
                res.errors += 1;
                return res;
            };
            tokio::spawn(conn);
            let end = start + dur;
            let mut due = first;
            while due < end {
                tokio::time::sleep_until(due.into()).await;
                let req = http::Request::get(path.as_str())
                    .header("host", authority.as_str())
                    .body(Empty::new())
                    .expect("request");
                match tx.send_request(req).await {
                    Ok(resp) => {
                        if !resp.status().is_success() {
                            res.non_2xx += 1;
                        }
                        if resp.into_body().collect().await.is_err() {
                            res.errors += 1;
                        }
                    }
                    Err(_) => {
                        res.errors += 1;
                        break;
                    }
                }
                res.latencies_us.push(due.elapsed().as_micros() as u64);
                due += interval;
            }
            res
        }));
    }
    let mut all = Vec::new();
    let (mut non_2xx, mut errors) = (0, 0);
    for t in tasks {
        if let Ok(r) = t.await {
            all.extend(r.latencies_us);
            non_2xx += r.non_2xx;
            errors += r.errors;
        }
    }
    all.sort_unstable();
    let pct = |p: f64| -> u64 {
        if all.is_empty() {
            return 0;
        }
        let i = ((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1;
        all[i]
    };
    println!(
        "{{\"requests\":{},\"non_2xx\":{non_2xx},\"errors\":{errors},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{}}}",
        all.len(),
        pct(0.50),
        pct(0.99),
        pct(0.999),
        all.last().copied().unwrap_or(0)
    );
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
    let _ = tokio::io::BufReader::new(tokio::io::stdin()).read_line(&mut line).await;
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
    println!("{{\"mib\":{mib},\"seconds\":{:.3},\"done\":{}}}", start.elapsed().as_secs_f64(), done == b"done");
}
