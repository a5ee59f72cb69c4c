//! `rate`: open-loop HTTP/1.1 load at a fixed total rate, with latency measured from the moment
//! each request was due (not sent), so a stalled server cannot hide its stall (coordinated
//! omission, as in wrk2).
//!
//! One thread, one epoll (mio), and a timerfd armed at the next due time with nanosecond
//! resolution. The first version ran on tokio, whose timer wheel ticks in milliseconds: every
//! request left 1–2 ms after it was due, in bursts of all the requests due in one tick, and that
//! lateness was counted as latency. Straight to the origin, with no proxy between, it measured
//! p50 1.5 ms and p99 4.4 ms: its own floor was as large as the tails it had to compare.
//!
//! Several targets are **interleaved**: time is cut into slices, and the slices go to the
//! targets in turn (slice k to target k mod T). Each target has its own connections, used only
//! in its slices, at the full rate. A stall of the shared machine then lands on whichever target
//! owns that moment, and over many slices every target gets its share, where back-to-back runs
//! of several seconds each could give one target all of a bad minute. Each target's latencies
//! are also cut into windows of whole cycles, and a window's p99 can be compared with the other
//! targets' p99 in the same window.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::ToSocketAddrs;
use std::os::fd::AsRawFd;

use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use rustix::time::{
    ClockId, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, clock_gettime,
    timerfd_create, timerfd_settime,
};

pub struct Plan {
    pub urls: Vec<http::Uri>,
    pub rate: f64,
    pub conns: usize,
    pub secs: f64,
    /// Slice length when several targets are interleaved.
    pub slice_ms: f64,
    /// Latencies of requests due in the first `warm_secs` are not recorded.
    pub warm_secs: f64,
    /// Window length for the per-window p99s.
    pub window_secs: f64,
}

const TIMER: Token = Token(usize::MAX);

fn now_ns() -> u64 {
    let t = clock_gettime(ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

struct Conn {
    sock: TcpStream,
    target: usize,
    next_due: u64,
    /// Due times of the requests made and not yet answered, oldest first. The oldest is the one
    /// on the wire once `sent` is set; the others wait for the connection (no pipelining).
    waiting: VecDeque<u64>,
    sent: bool,
    out: Vec<u8>,
    out_at: usize,
    inb: Vec<u8>,
    dead: bool,
}

#[derive(Default)]
struct Tally {
    /// (window, latency in µs)
    samples: Vec<(u32, u32)>,
    non_2xx: u64,
    errors: u64,
}

/// What the bytes read so far hold: nothing complete yet, or a whole answer of `len` bytes.
enum Answer {
    Partial,
    Whole {
        len: usize,
        status: u16,
        close: bool,
    },
}

/// Reads one answer head and its Content-Length body. Only what the bench's origins send is
/// understood (a Content-Length body); anything else is an error, counted and loud.
fn parse_answer(buf: &[u8]) -> Result<Answer, &'static str> {
    let Some(h) = memchr::memmem::find(buf, b"\r\n\r\n") else {
        return Ok(Answer::Partial);
    };
    let head = &buf[..h];
    if head.len() < 12 || !head.starts_with(b"HTTP/1.") {
        return Err("not an HTTP/1 answer");
    }
    let status = std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or("bad status")?;
    let mut len = None;
    let mut close = false;
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            len = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<usize>().ok());
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err("chunked answer (the bench's answers have a Content-Length)");
        } else if name.eq_ignore_ascii_case(b"connection") && value.eq_ignore_ascii_case(b"close") {
            close = true;
        }
    }
    let len = h + 4 + len.ok_or("answer without Content-Length")?;
    Ok(if buf.len() >= len {
        Answer::Whole { len, status, close }
    } else {
        Answer::Partial
    })
}

pub fn run(plan: Plan) -> io::Result<()> {
    let targets = plan.urls.len();
    let interval = (plan.conns as f64 / plan.rate * 1e9) as u64;
    let slice = (plan.slice_ms * 1e6) as u64;
    let mut poll = Poll::new()?;
    let mut conns = Vec::with_capacity(targets * plan.conns);
    let mut requests = Vec::with_capacity(targets);
    for (t, url) in plan.urls.iter().enumerate() {
        let authority = url
            .authority()
            .ok_or_else(|| io::Error::other("URL without host:port"))?
            .to_string();
        let path = url
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_else(|| "/".into());
        requests.push(format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\n\r\n").into_bytes());
        let addr = authority
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::other("no address"))?;
        for _ in 0..plan.conns {
            let s = std::net::TcpStream::connect(addr)?;
            s.set_nodelay(true)?;
            s.set_nonblocking(true)?;
            let mut sock = TcpStream::from_std(s);
            poll.registry().register(
                &mut sock,
                Token(conns.len()),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            conns.push(Conn {
                sock,
                target: t,
                next_due: 0,
                waiting: VecDeque::new(),
                sent: false,
                out: Vec::new(),
                out_at: 0,
                inb: Vec::with_capacity(4096),
                dead: false,
            });
        }
    }
    let timer = timerfd_create(
        TimerfdClockId::Monotonic,
        TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
    )?;
    poll.registry()
        .register(&mut SourceFd(&timer.as_raw_fd()), TIMER, Interest::READABLE)?;

    let start = now_ns() + 50_000_000;
    let end = start + (plan.secs * 1e9) as u64;
    let record_from = start + (plan.warm_secs * 1e9) as u64;
    // A target's slices: whole run when alone.
    let owner = |t: u64| -> usize {
        if targets == 1 {
            0
        } else {
            (((t - start) / slice) % targets as u64) as usize
        }
    };
    let cycle = slice.max(1) * targets as u64;
    let window_len = ((plan.window_secs * 1e9) as u64 / cycle).max(1) * cycle;
    let window = |due: u64| -> u32 { ((due - start) / window_len) as u32 };
    for (i, c) in conns.iter_mut().enumerate() {
        // Stagger a target's connections over one interval, so its rate is smooth.
        c.next_due = start + interval * (i % plan.conns) as u64 / plan.conns as u64;
    }

    let mut tally: Vec<Tally> = (0..targets).map(|_| Tally::default()).collect();
    let mut events = Events::with_capacity(1024);
    let mut armed = 0u64;
    loop {
        let now = now_ns();
        // Make every request now due; send on each idle connection.
        let mut next = u64::MAX;
        for c in conns.iter_mut() {
            while c.next_due <= now && c.next_due < end {
                if owner(c.next_due) == c.target {
                    if c.dead {
                        tally[c.target].errors += 1;
                    } else {
                        c.waiting.push_back(c.next_due);
                    }
                }
                c.next_due += interval;
            }
            if c.next_due < end {
                next = next.min(c.next_due);
            }
            if !c.sent && !c.dead && !c.waiting.is_empty() {
                send(c, &requests[c.target], &mut tally);
            }
        }
        let busy = conns.iter().any(|c| !c.dead && !c.waiting.is_empty());
        if now >= end && !busy {
            break;
        }
        if now >= end + 5_000_000_000 {
            // Answers still missing 5 s after the end: errors.
            for c in conns.iter().filter(|c| !c.dead) {
                tally[c.target].errors += c.waiting.len() as u64;
            }
            break;
        }
        let wake = if next == u64::MAX {
            end + 5_000_000_000
        } else {
            next
        };
        if wake != armed {
            let at = Timespec {
                tv_sec: (wake / 1_000_000_000) as i64,
                tv_nsec: (wake % 1_000_000_000) as _,
            };
            let spec = Itimerspec {
                it_interval: Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                },
                it_value: at,
            };
            timerfd_settime(&timer, TimerfdTimerFlags::ABSTIME, &spec)?;
            armed = wake;
        }
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            if ev.token() == TIMER {
                let mut b = [0u8; 8];
                let _ = rustix::io::read(&timer, &mut b);
                armed = 0;
                continue;
            }
            let c = &mut conns[ev.token().0];
            if c.dead {
                continue;
            }
            if ev.is_writable() && c.out_at < c.out.len() {
                flush(c, &mut tally);
            }
            if ev.is_readable() || ev.is_read_closed() {
                read_answers(c, &mut tally, &requests, record_from, &window);
            }
        }
    }

    let url_count = plan.urls.len();
    for (t, tally) in tally.iter_mut().enumerate() {
        let mut all: Vec<u32> = tally.samples.iter().map(|s| s.1).collect();
        all.sort_unstable();
        let windows = tally
            .samples
            .iter()
            .map(|s| s.0)
            .max()
            .map_or(0, |w| w as usize + 1);
        let mut per_window = vec![Vec::new(); windows];
        for &(w, l) in &tally.samples {
            per_window[w as usize].push(l);
        }
        let window_p99: Vec<String> = per_window
            .iter_mut()
            .map(|v| {
                v.sort_unstable();
                pct(v, 0.99).to_string()
            })
            .collect();
        // Every latency, to three significant digits, as value/count pairs: runs can be pooled.
        let mut hist: Vec<(u32, u32)> = Vec::new();
        for &l in &all {
            let step = 10u32.pow((l.max(1).ilog10()).saturating_sub(2));
            let v = l / step * step;
            match hist.last_mut() {
                Some((last, n)) if *last == v => *n += 1,
                _ => hist.push((v, 1)),
            }
        }
        let hist: Vec<String> = hist.iter().map(|(v, n)| format!("{v},{n}")).collect();
        let target = if url_count > 1 {
            format!("\"target\":\"{}\",", plan.urls[t])
        } else {
            String::new()
        };
        println!(
            "{{{target}\"requests\":{},\"non_2xx\":{},\"errors\":{},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{},\"window_p99_us\":[{}],\"hist\":[{}]}}",
            all.len(),
            tally.non_2xx,
            tally.errors,
            pct(&all, 0.50),
            pct(&all, 0.99),
            pct(&all, 0.999),
            all.last().copied().unwrap_or(0),
            window_p99.join(","),
            hist.join(",")
        );
    }
    Ok(())
}

fn pct(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn kill(c: &mut Conn, tally: &mut [Tally], why: &str) {
    eprintln!("connection to target {} lost: {why}", c.target);
    tally[c.target].errors += c.waiting.len() as u64;
    c.waiting.clear();
    c.dead = true;
}

/// Puts the oldest waiting request on the wire.
fn send(c: &mut Conn, request: &[u8], tally: &mut [Tally]) {
    c.out.clear();
    c.out.extend_from_slice(request);
    c.out_at = 0;
    c.sent = true;
    flush(c, tally);
}

fn flush(c: &mut Conn, tally: &mut [Tally]) {
    while c.out_at < c.out.len() {
        match c.sock.write(&c.out[c.out_at..]) {
            Ok(0) => return kill(c, tally, "write returned 0"),
            Ok(n) => c.out_at += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return kill(c, tally, &e.to_string()),
        }
    }
}

fn read_answers(
    c: &mut Conn,
    tally: &mut [Tally],
    requests: &[Vec<u8>],
    record_from: u64,
    window: &dyn Fn(u64) -> u32,
) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match c.sock.read(&mut buf) {
            Ok(0) => return kill(c, tally, "closed by the server"),
            Ok(n) => c.inb.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return kill(c, tally, &e.to_string()),
        }
    }
    loop {
        match parse_answer(&c.inb) {
            Ok(Answer::Partial) => return,
            Err(why) => return kill(c, tally, why),
            Ok(Answer::Whole { len, status, close }) => {
                let now = now_ns();
                c.inb.drain(..len);
                let Some(due) = c.waiting.pop_front().filter(|_| c.sent) else {
                    return kill(c, tally, "an answer to no request");
                };
                let t = &mut tally[c.target];
                if !(200..300).contains(&status) {
                    t.non_2xx += 1;
                }
                if due >= record_from {
                    t.samples.push((window(due), ((now - due) / 1000) as u32));
                }
                c.sent = false;
                if close {
                    return kill(c, tally, "the server closed the connection after an answer");
                }
                if !c.waiting.is_empty() {
                    send(c, &requests[c.target], tally);
                }
            }
        }
    }
}
