//! Real peer processes (nginx, HAProxy, Pebble, the gatehouse binary; next Postfix, Redis,
//! Chromium): each in a temp directory of its own with its output captured there, waited for
//! until it serves, and ended on drop with everything it started.
//!
//! ```ignore
//! if !require("redis-server") {
//!     return;
//! }
//! let mut redis = Peer::new("redis");
//! let dir = redis.dir().to_path_buf();
//! redis.spawn(
//!     Command::new("redis-server")
//!         .args(["--port", &port.to_string(), "--save", "", "--appendonly", "no", "--dir"])
//!         .arg(dir),
//! );
//! redis.wait_tcp(port, Duration::from_secs(10)).await;
//! ```
//!
//! A peer that daemonises (Postfix) is stopped by its own command, then by its pid file:
//! `peer.stop_with(postfix_stop, Duration::from_secs(10)).pid_file(queue.join("pid/master.pid"))`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::eventually;

/// Whether a required peer binary is installed (on PATH or in /usr/sbin): a loud skip locally,
/// a failure under `CI=true`, where every peer must be there.
pub fn require(bin: &str) -> bool {
    let found = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {bin} || test -x /usr/sbin/{bin}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{bin} is required under CI=true but is not installed");
        }
        eprintln!("\n\n*** SKIPPING: {bin} is not installed (install it to run this test) ***\n\n");
    }
    found
}

/// The program to run for `bin`: `/usr/sbin/BIN` where it is (daemons' home, often not on a
/// user's PATH), else `bin` looked up on PATH.
pub fn program(bin: &str) -> PathBuf {
    let sbin = Path::new("/usr/sbin").join(bin);
    if sbin.exists() { sbin } else { bin.into() }
}

/// The gatehouse binary this test build made.
pub fn gatehouse_command() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gatehouse"))
}

/// How many lines of each log a failure message shows.
const TAIL: usize = 30;

/// One peer: its directory, the processes started for it, and how to end them.
pub struct Peer {
    name: String,
    dir: PathBuf,
    children: Vec<(String, Child)>,
    /// Files whose last lines a failure message shows: captured output and the peer's own logs.
    logs: Vec<PathBuf>,
    own_group: bool,
    stop: Option<(Command, Duration)>,
    pid_file: Option<PathBuf>,
}

impl Peer {
    /// A peer named `name` (in messages and file names) with a new, empty temp directory.
    pub fn new(name: &str) -> Peer {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "gatehouse-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Peer {
            name: name.to_string(),
            dir,
            children: Vec::new(),
            logs: Vec::new(),
            own_group: false,
            stop: None,
            pid_file: None,
        }
    }

    /// The gatehouse binary running `cfg`, written to `gatehouse.toml` in its directory
    /// (see [`Peer::path`]; write it again and send SIGHUP to reload). Logs at warn level.
    pub fn gatehouse(cfg: &str) -> Peer {
        let mut p = Peer::new("gatehouse");
        let file = p.write("gatehouse.toml", cfg);
        p.spawn(
            gatehouse_command()
                .args(["run", "-c"])
                .arg(file)
                .env("RUST_LOG", "warn"),
        );
        p
    }

    /// The peer's directory, removed on drop (kept, and named, when the test failed).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `rel` in the peer's directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Writes `text` to `rel` in the peer's directory (making parent directories); its path.
    pub fn write(&self, rel: &str, text: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }

    /// A log file the peer writes itself (nginx's error.log, Postfix's maillog): its tail goes
    /// in failure messages too.
    pub fn log(&mut self, path: impl Into<PathBuf>) -> &mut Peer {
        self.logs.push(path.into());
        self
    }

    /// Starts later processes in a process group of their own, and ends the whole group on
    /// drop: for peers that fork helpers (Chromium). Without it a peer stays in the test's
    /// group, so an interrupted test run takes it along.
    pub fn own_group(&mut self) -> &mut Peer {
        self.own_group = true;
        self
    }

    /// On drop, first runs `cmd` (`postfix -c DIR stop`), killed if it takes over `within`.
    pub fn stop_with(&mut self, cmd: Command, within: Duration) -> &mut Peer {
        self.stop = Some((cmd, within));
        self
    }

    /// On drop, kills the process (and its group) whose pid `path` holds, if it still runs: for
    /// peers that daemonise, whose processes are not our children.
    pub fn pid_file(&mut self, path: impl Into<PathBuf>) -> &mut Peer {
        self.pid_file = Some(path.into());
        self
    }

    /// Starts `cmd`, its stdout and stderr going to `PROGRAM.stdout` / `PROGRAM.stderr` in the
    /// peer's directory. A peer may start several processes (Pebble and its DNS server).
    pub fn spawn(&mut self, cmd: &mut Command) -> &mut Peer {
        let program = Path::new(cmd.get_program())
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.name.clone());
        let mut label = program.clone();
        let mut n = 1;
        while self.children.iter().any(|(l, _)| *l == label) {
            n += 1;
            label = format!("{program}-{n}");
        }
        let out = self.path(&format!("{label}.stdout"));
        let err = self.path(&format!("{label}.stderr"));
        cmd.stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap());
        if self.own_group {
            std::os::unix::process::CommandExt::process_group(cmd, 0);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{}: cannot start {cmd:?}: {e}", self.name));
        self.logs.extend([err, out]);
        self.children.push((label, child));
        self
    }

    /// The pid of the process started first.
    pub fn pid(&self) -> u32 {
        self.children[0].1.id()
    }

    /// Sends `sig` (`-TERM`, `-HUP`, `-INT`) to the process started first.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "{}: kill {sig} failed", self.name);
    }

    /// Waits until something accepts TCP connections on 127.0.0.1:`port`; fails with the peer's
    /// logs if that takes over `within` or a process of the peer fails first.
    pub async fn wait_tcp(&mut self, port: u16, within: Duration) {
        let what = format!("listening on 127.0.0.1:{port}");
        self.wait_until(within, &what, async || {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
    }

    /// Polls `ready` until it is true; fails with the peer's logs if that takes over `within`
    /// or a process of the peer exits unsuccessfully first (one that exits with 0, such as
    /// `postfix start` once the daemon is up, is not a failure).
    pub async fn wait_until(
        &mut self,
        within: Duration,
        what: &str,
        mut ready: impl AsyncFnMut() -> bool,
    ) {
        let mut failed = None;
        let done = eventually(within, async || {
            failed = self.failed();
            failed.is_some() || ready().await
        })
        .await;
        if let Some((label, status)) = failed {
            panic!(
                "{}: {label} exited with {status} before {what}\n{}",
                self.name,
                self.logs()
            );
        }
        assert!(
            done,
            "{}: not {what} after {within:?}\n{}",
            self.name,
            self.logs()
        );
    }

    /// A process of the peer that has exited unsuccessfully.
    fn failed(&mut self) -> Option<(String, ExitStatus)> {
        self.children
            .iter_mut()
            .find_map(|(label, c)| match c.try_wait() {
                Ok(Some(s)) if !s.success() => Some((label.clone(), s)),
                _ => None,
            })
    }

    /// Waits for the process started first to exit; its status. Fails with the peer's logs if
    /// it still runs after `within`.
    pub async fn exit_status(&mut self, within: Duration) -> ExitStatus {
        let mut status = None;
        let first = &mut self.children[0].1;
        eventually(within, async || {
            status = first.try_wait().unwrap();
            status.is_some()
        })
        .await;
        status.unwrap_or_else(|| {
            panic!(
                "{}: still running after {within:?}\n{}",
                self.name,
                self.logs()
            )
        })
    }

    /// The last lines of each of the peer's logs, for a failure message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for f in &self.logs {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(TAIL);
            out.push_str(&format!(
                "--- {} (last {} of {} lines) ---\n",
                f.display(),
                lines.len() - from,
                lines.len()
            ));
            for l in &lines[from..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

/// Kills the process group `-pid` (when `group`) and the process `pid`; either may be gone.
fn kill(pid: u32, group: bool) {
    let mut targets = vec![pid.to_string()];
    if group {
        targets.insert(0, format!("-{pid}"));
    }
    for t in targets {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &t])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some((mut cmd, within)) = self.stop.take() {
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if let Ok(mut c) = cmd.spawn() {
                let end = Instant::now() + within;
                while matches!(c.try_wait(), Ok(None)) && Instant::now() < end {
                    std::thread::sleep(Duration::from_millis(25));
                }
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        for (_, c) in &mut self.children {
            if self.own_group {
                kill(c.id(), true);
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let daemon = self.pid_file.as_ref().and_then(|f| {
            let text = std::fs::read_to_string(f).ok()?;
            text.trim().parse::<u32>().ok()
        });
        if let Some(pid) = daemon {
            kill(pid, true);
        }
        if std::thread::panicking() {
            eprintln!("{}: files kept in {}", self.name, self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

// The harness's own checks: a peer that dies early is reported with its output, and drop ends
// what a peer left running (a daemon known by its pid file, helpers in its process group).

/// Whether process `pid` has ended (gone, or a zombie nobody reaps).
fn ended(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}

/// The pid written to `path`, once it is there.
async fn pid_in(peer: &mut Peer, path: &Path) -> u32 {
    let mut pid = None;
    peer.wait_until(Duration::from_secs(5), "pid written", async || {
        pid = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        pid.is_some()
    })
    .await;
    pid.unwrap()
}

#[tokio::test]
async fn a_peer_that_exits_early_fails_with_its_output() {
    use futures_util::FutureExt;
    let mut p = Peer::new("early");
    p.spawn(Command::new("sh").args(["-c", "echo 'bad config line 3' >&2; exit 3"]));
    let port = crate::common::free_port();
    let waited = std::panic::AssertUnwindSafe(p.wait_tcp(port, Duration::from_secs(10)))
        .catch_unwind()
        .await;
    let failed = waited.unwrap_err();
    let message = failed.downcast_ref::<String>().unwrap();
    assert!(
        message.contains("sh exited with exit status: 3"),
        "{message}"
    );
    assert!(message.contains("bad config line 3"), "{message}");
}

#[tokio::test]
async fn drop_ends_a_daemon_by_its_pid_file_and_a_group_whole() {
    // A daemon in a session of its own, as Postfix's master is; its stop command hangs.
    let mut daemon = Peer::new("daemon");
    let pid_file = daemon.path("master.pid");
    let daemonise = format!("setsid sleep 300 & echo $! > {}", pid_file.display());
    daemon.spawn(Command::new("sh").args(["-c", &daemonise]));
    let master = pid_in(&mut daemon, &pid_file).await;
    let mut stop = Command::new("sleep");
    stop.arg("10");
    daemon
        .stop_with(stop, Duration::from_millis(200))
        .pid_file(&pid_file);
    // A peer whose helper process stays in its group.
    let mut forking = Peer::new("forking");
    let helper_file = forking.path("helper.pid");
    let fork = format!("sleep 301 & echo $! > {}; wait", helper_file.display());
    forking
        .own_group()
        .spawn(Command::new("sh").args(["-c", &fork]));
    let helper = pid_in(&mut forking, &helper_file).await;
    assert!(!ended(master) && !ended(helper));
    let t = Instant::now();
    drop(daemon);
    drop(forking);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the hung stop command was cut"
    );
    let gone = eventually(Duration::from_secs(3), async || {
        ended(master) && ended(helper)
    })
    .await;
    assert!(gone, "daemon {master} or helper {helper} still runs");
}
