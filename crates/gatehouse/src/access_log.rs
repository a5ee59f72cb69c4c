//! The access log: one JSON line per request, written by a thread of its own so that a slow disk
//! never stalls a request. When the queue is full, lines are dropped and counted, not waited for.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// One request, as logged.
#[derive(Serialize)]
pub struct Entry<'a> {
    /// Client address.
    pub client: IpAddr,
    /// Method.
    pub method: &'a str,
    /// Host without port.
    pub host: &'a str,
    /// Path.
    pub path: &'a str,
    /// Status code sent.
    pub status: u16,
    /// Request body bytes.
    pub bytes_in: u64,
    /// Response body bytes.
    pub bytes_out: u64,
    /// Time to the end of the answer.
    #[serde(skip)]
    pub duration: Duration,
    /// Listener name.
    pub listener: &'a str,
    /// Route name.
    pub route: &'a str,
    /// Upstream name ("" for local answers).
    pub upstream: &'a str,
    /// Server address ("" for local answers).
    pub server: &'a str,
    /// Request id.
    pub request_id: &'a str,
    /// Whether the answer's body was sent to the end.
    pub completed: bool,
}

#[derive(Serialize)]
struct Line<'a, E: Serialize> {
    time: String,
    #[serde(flatten)]
    entry: &'a E,
    duration_ms: f64,
}

/// Where lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Standard output.
    Stdout,
    /// Appended to a file.
    File(PathBuf),
}

/// A running access log.
pub struct AccessLogger {
    target: Target,
    tx: SyncSender<String>,
    dropped: AtomicU64,
}

impl AccessLogger {
    /// Opens the target and starts the writer thread.
    pub fn start(target: Target) -> std::io::Result<AccessLogger> {
        let out: Box<dyn Write + Send> = match &target {
            Target::Stdout => Box::new(std::io::stdout()),
            Target::File(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
        };
        let (tx, rx) = sync_channel::<String>(16 * 1024);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer(rx, out))?;
        Ok(AccessLogger {
            target,
            tx,
            dropped: AtomicU64::new(0),
        })
    }

    /// The target it writes to.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Queues one request's line.
    pub fn write(&self, e: &Entry<'_>) {
        self.write_any(e, e.duration);
    }

    /// Queues one line of any engine's record (an SMTP transaction's, say), with the time and
    /// its duration added.
    pub fn write_any<E: Serialize>(&self, e: &E, duration: Duration) {
        let line = Line {
            time: rfc3339(SystemTime::now()),
            entry: e,
            duration_ms: (duration.as_secs_f64() * 1e6).round() / 1e3,
        };
        let Ok(s) = serde_json::to_string(&line) else {
            return;
        };
        if let Err(TrySendError::Full(_)) = self.tx.try_send(s) {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed);
            if n.is_power_of_two() {
                tracing::warn!(dropped = n + 1, "access log cannot keep up; lines dropped");
            }
        }
    }
}

fn writer(rx: Receiver<String>, out: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    while let Ok(line) = rx.recv() {
        let _ = out.write_all(line.as_bytes());
        let _ = out.write_all(b"\n");
        while let Ok(line) = rx.try_recv() {
            let _ = out.write_all(line.as_bytes());
            let _ = out.write_all(b"\n");
        }
        let _ = out.flush();
    }
}

/// UTC time as RFC 3339 with milliseconds, e.g. 2026-11-24T04:12:54.123Z.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_839_174_123);
        assert_eq!(rfc3339(t), "2026-11-28T04:12:54.123Z");
    }
}
