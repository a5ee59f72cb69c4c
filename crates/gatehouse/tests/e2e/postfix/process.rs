//! Running `postfix -c DIR ...` with a timeout, and ending what is left of an instance by pid.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn postfix_bin() -> &'static str {
    if Path::new("/usr/sbin/postfix").exists() {
        "/usr/sbin/postfix"
    } else {
        "postfix"
    }
}

/// Runs `postfix -c ETC CMD`, output to DIR/postfix.out; ends its process group on timeout.
pub fn postfix_command(etc: &Path, cmd: &str, timeout: Duration) -> Result<(), String> {
    let out_path = etc.with_file_name("postfix.out");
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&out_path)
        .map_err(|e| e.to_string())?;
    let mut child = Command::new(postfix_bin())
        .arg("-c")
        .arg(etc)
        .arg(cmd)
        .env_remove("MAIL_CONFIG")
        .env_remove("MAIL_DEBUG")
        .stdin(Stdio::null())
        .stdout(out.try_clone().map_err(|e| e.to_string())?)
        .stderr(out)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("postfix {cmd}: {e}"))?;
    let end = Instant::now() + timeout;
    let output = || fs::read_to_string(&out_path).unwrap_or_default();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("postfix {cmd}: {status}\n{}", output())),
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) | Err(_) => {
                kill_pids(&[format!("-{}", child.id())]);
                let _ = child.wait();
                return Err(format!(
                    "postfix {cmd}: timed out after {timeout:?}\n{}",
                    output()
                ));
            }
        }
    }
}

pub fn master_pid(dir: &Path) -> Option<u32> {
    fs::read_to_string(dir.join("queue/pid/master.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Living (not zombie) processes of the instance configured in `etc`: those whose environment
/// has MAIL_CONFIG=etc, which `postfix -c` sets and master passes to every daemon. (The pid in
/// master.pid alone could be stale and reused by another process.)
pub fn instance_pids(etc: &Path) -> Vec<u32> {
    let mut marker = format!("MAIL_CONFIG={}", etc.display()).into_bytes();
    marker.push(0);
    let alive = |pid: u32| {
        fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, rest)| rest.trim_start().to_string())
            })
            .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'))
    };
    let me = std::process::id();
    let mut pids: Vec<u32> = fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter(|&pid| pid != me)
                .filter(|&pid| {
                    fs::read(format!("/proc/{pid}/environ"))
                        .is_ok_and(|env| env.split_inclusive(|&b| b == 0).any(|v| v == marker))
                })
                .collect()
        })
        .unwrap_or_default();
    pids.retain(|&p| alive(p));
    pids
}

/// SIGKILLs what is left of the instance, by pid.
pub fn kill_instance(etc: &Path) {
    let pids = instance_pids(etc);
    if !pids.is_empty() {
        eprintln!(
            "postfix ({}): killing leftover pids {pids:?}",
            etc.display()
        );
        kill_pids(&pids.iter().map(u32::to_string).collect::<Vec<_>>());
    }
}

fn kill_pids(pids: &[String]) {
    let _ = Command::new("kill")
        .arg("-KILL")
        .arg("--")
        .args(pids)
        .stderr(Stdio::null())
        .status();
}
