//! The `gatehouse` command: run | check | demo | schema.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gatehouse::Gatehouse;

// mimalloc: a proxy allocates and frees small objects per request (header maps, bodies, futures);
// bench/RESULTS.md records what it measured against glibc malloc.
#[global_allocator]
static GLOBAL: Mimalloc = Mimalloc;

/// mimalloc, asked for plain blocks where their natural alignment suffices.
///
/// Written here rather than taken as `mimalloc::MiMalloc`, because that type asks for every
/// block through `mi_malloc_aligned`. In mimalloc 3 that call has a fast path only up to
/// 1 KiB. A larger block whose size class is not a power of two, such as a request's boxed
/// future, is over-allocated by `alignment - 1` bytes and then aligned by hand. That slow path
/// cost ~700 instructions per proxied request (bench/RESULTS.md). Rust's own `System`
/// allocator uses the same rule as below: plain `malloc` when `align <= 16 && align <= size`.
struct Mimalloc;

/// The alignment every mimalloc block of at least this size has: blocks are 16-byte aligned
/// from 16 bytes up (alloc.c asserts `block_size < MI_MAX_ALIGN_SIZE ||
/// _mi_is_aligned(block, MI_MAX_ALIGN_SIZE)`), and smaller blocks are word-aligned.
const MI_MAX_ALIGN: usize = 16;

/// Whether a plain mimalloc block of `size` bytes is aligned enough for `align`.
fn natural(size: usize, align: usize) -> bool {
    align <= MI_MAX_ALIGN && align <= size
}

// SAFETY: each method keeps GlobalAlloc's contract by handing it to a mimalloc function that
// keeps the same one:
// - `alloc`: a block of at least `size` bytes, aligned to `align`. `mi_malloc` is used only
//   when `natural` holds, and then its block is aligned as `MI_MAX_ALIGN` says. Otherwise
//   `mi_malloc_aligned` is used, as `MiMalloc` does.
// - `dealloc`: `mi_free` frees blocks from either call, including the interior pointers of
//   aligned ones.
// - `realloc`: `mi_realloc` returns a plain block, so it is used only when that block's
//   natural alignment suffices for the new size. Otherwise `mi_realloc_aligned` keeps the
//   alignment. Both accept blocks from either allocation call, as `mi_free` does.
// Null on failure is passed through, which GlobalAlloc allows.
#[allow(unsafe_code)]
unsafe impl std::alloc::GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if natural(layout.size(), layout.align()) {
                libmimalloc_sys::mi_malloc(layout.size()).cast()
            } else {
                libmimalloc_sys::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if natural(layout.size(), layout.align()) {
                libmimalloc_sys::mi_zalloc(layout.size()).cast()
            } else {
                libmimalloc_sys::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: std::alloc::Layout) {
        // SAFETY: `ptr` came from this allocator (the caller's contract), so from mimalloc.
        unsafe { libmimalloc_sys::mi_free(ptr.cast()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        // SAFETY: see the impl; `ptr` came from this allocator (the caller's contract).
        unsafe {
            if natural(new_size, layout.align()) {
                libmimalloc_sys::mi_realloc(ptr.cast(), new_size).cast()
            } else {
                libmimalloc_sys::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
            }
        }
    }
}

/// Memory settings for a process that holds many idle connections (bench/RESULTS.md, idle): no
/// transparent huge pages, which turn each small connection object into a share of a 2 MiB
/// page; and memory freed when connections go idle handed back to the OS soon after. mimalloc
/// purges freed pages only after a delay (1 s) and only when the allocator runs again, which an
/// idle proxy never does: a small thread asks it to purge shortly after connections were
/// parked. (Purging at once on every free instead costs ~10 % more CPU under load: pages are
/// decommitted and faulted in again.)
fn tune_memory() {
    let _ = nix::sys::prctl::set_thp_disable(true);
}

/// Starts the thread that hands memory freed by parked connections back to the OS.
fn start_memory_housekeeping() {
    let spawned = std::thread::Builder::new()
        .name("gatehouse-memory".into())
        .spawn(|| {
            // Collects after parks: at once after a quiet second, then at most once a second
            // while they keep coming (a forced purge undoes the purge delay's savings), and
            // once more when they have settled (a tick without new ones).
            let tick = std::time::Duration::from_millis(100);
            let mut seen = gatehouse::http::h1::parked_total();
            let mut pending = false;
            let mut last = std::time::Instant::now();
            loop {
                std::thread::sleep(tick);
                let now = gatehouse::http::h1::parked_total();
                let settled = now == seen;
                pending |= !settled;
                seen = now;
                if pending && (settled || last.elapsed() >= std::time::Duration::from_secs(1)) {
                    collect();
                    pending = false;
                    last = std::time::Instant::now();
                }
            }
        });
    if let Err(e) = spawned {
        eprintln!("gatehouse: no memory housekeeping thread: {e}");
    }
}

/// Purges the memory mimalloc holds free (process-wide arenas) now.
#[allow(unsafe_code)]
fn collect() {
    // SAFETY: mi_collect takes a plain bool and is safe to call from any thread at any time
    // (mimalloc.h: "eagerly free memory"); it touches this thread's heap and the shared arenas,
    // which mimalloc synchronises itself.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

#[derive(Parser)]
#[command(
    name = "gatehouse",
    version,
    about = "A reverse proxy, load balancer and application gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve with a config file.
    Run {
        /// Config file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Validate a config file: prints `ok`, or every error with file:line:col, and exits 1.
    Check {
        /// Config file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Three demo origins on loopback behind a proxy on 127.0.0.1:8080 (admin on :9901).
    Demo {
        /// Proxy address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        bind: String,
        /// Admin address.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: String,
    },
    /// Print the config file's JSON Schema.
    Schema,
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn runtime(threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    // One thread: everything runs on the main thread, with no work-stealing scheduler to pay for
    // (bench/RESULTS.md has the measured effect).
    if threads == Some(1) {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
    }
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(t) = threads {
        b.worker_threads(t);
    }
    b.enable_all().build()
}

fn main() -> ExitCode {
    tune_memory();
    let cli = Cli::parse();
    match cli.command {
        Command::Schema => {
            println!("{}", gatehouse_config::json_schema());
            ExitCode::SUCCESS
        }
        Command::Check { config } => check(&config),
        Command::Run { config } => run(config),
        Command::Demo { bind, admin } => demo(bind, admin),
    }
}

/// `gatehouse check`: the config file and the certificate, key and CA files it names.
fn check(config: &Path) -> ExitCode {
    match gatehouse_config::load(config) {
        Ok(model) => {
            // Certificate, key and CA files are part of the config: read them too.
            let errors = gatehouse::tls::check_files(&model);
            if errors.is_empty() {
                println!("ok");
                return ExitCode::SUCCESS;
            }
            for e in &errors {
                eprintln!("{}: {e}", config.display());
            }
            eprintln!("{} error(s) in {}", errors.len(), config.display());
            ExitCode::from(1)
        }
        Err(errs) => {
            eprintln!("{errs}");
            eprintln!("{} error(s) in {}", errs.0.len(), config.display());
            ExitCode::from(1)
        }
    }
}

/// `gatehouse run`: serves the config file until a signal stops it.
fn run(config: PathBuf) -> ExitCode {
    init_logging();
    let model = match gatehouse_config::load(&config) {
        Ok(m) => m,
        Err(errs) => {
            eprintln!("{errs}");
            return ExitCode::from(1);
        }
    };
    let rt = match runtime(model.global.threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(serve(model, Some(config), None))
}

/// `gatehouse demo`: three demo origins and a proxy in front of them, with a banner of what to try.
fn demo(bind: String, admin: String) -> ExitCode {
    init_logging();
    let rt = match runtime(None) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        let mut origins = Vec::new();
        for name in ["demo-1", "demo-2", "demo-3"] {
            match gatehouse::demo::start_origin(name).await {
                Ok(a) => origins.push(a),
                Err(e) => {
                    eprintln!("cannot start demo origin: {e}");
                    return ExitCode::from(1);
                }
            }
        }
        let text = gatehouse::demo::config(&bind, &admin, &origins);
        let model = match gatehouse_config::parse(&text, "demo.toml") {
            Ok(m) => m,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(1);
            }
        };
        let banner = format!(
            "gatehouse demo: proxy on http://{bind}, admin on http://{admin}, origins {origins:?}\n\
             try:\n  curl -s http://{bind}/hello\n  curl -s -H 'X-Forwarded-For: 6.6.6.6' http://{bind}/ | grep -i forwarded\n  \
             curl -s http://{admin}/status\n  curl -s http://{admin}/metrics | grep gatehouse_http_requests\n\
             Ctrl-C stops it."
        );
        serve(model, None, Some(banner)).await
    })
}

async fn serve(
    model: gatehouse_config::Config,
    path: Option<PathBuf>,
    banner: Option<String>,
) -> ExitCode {
    start_memory_housekeeping();
    use tokio::signal::unix::{SignalKind, signal};
    let gh = match Gatehouse::start(model, path).await {
        Ok(g) => g,
        Err(e) => {
            eprintln!("cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(b) = banner {
        eprintln!("{b}");
    }
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("cannot install signal handlers");
        return ExitCode::from(1);
    };
    loop {
        tokio::select! {
            _ = hup.recv() => {
                let _ = gh.reload().await;
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    // The grace period of the config in force now (a reload may have changed it).
    let grace = gh.shared().snapshot().config.global.grace_period;
    tracing::info!(
        ?grace,
        "stopping: no new connections, finishing in-flight requests"
    );
    let left = gh.shutdown(grace).await;
    tracing::info!(left, "stopped");
    ExitCode::SUCCESS
}
