//! Start-up and shutdown: one glommio executor per core, each pinned to its
//! CPU and owning its own SO_REUSEPORT listener (bound here, on the main
//! thread, so that port 0 resolves to one port for every core), plus the
//! admin thread. Explains io_uring / memlock failures instead of panicking.

use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use config_schema::Config;
use glommio::{LocalExecutorBuilder, Placement};
use socket2::{Domain, Protocol, Socket, Type};

use crate::percore::Core;
use crate::shared::Shared;

/// Registered io memory per executor: a proxy does no file I/O, and the
/// default 10 MiB exceeds ordinary memlock limits.
const IO_MEMORY: usize = 64 << 10;
/// Listen backlog per core.
const BACKLOG: i32 = 4096;

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} (server.listen): {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error("cannot listen on {addr} (admin.listen): {source}")]
    AdminListen { addr: SocketAddr, source: io::Error },
    #[error("io_uring is unavailable on this kernel ({detail}); shadowtee needs Linux >= 5.10 with io_uring enabled (check /proc/sys/kernel/io_uring_disabled = 0, and that no seccomp profile such as a container runtime's default blocks io_uring_setup)")]
    NoIoUring { detail: String },
    #[error("the locked-memory limit is too low for io_uring ({detail}; RLIMIT_MEMLOCK = {limit}); raise it, e.g. `ulimit -l unlimited`, LimitMEMLOCK=infinity in a systemd unit, or --ulimit memlock=-1 for docker")]
    Memlock { detail: String, limit: String },
    #[error("cannot start executor for core {core}: {detail}")]
    Executor { core: usize, detail: String },
}

/// A running engine.
pub struct Running {
    pub listen: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub shared: Arc<Shared>,
    pub cores: Vec<usize>,
    threads: Vec<JoinHandle<()>>,
}

impl Running {
    /// Begin a graceful drain (as SIGTERM does).
    pub fn drain(&self) {
        self.shared.begin_drain();
    }
    /// Wait for every executor to finish draining.
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// CPUs to run on: `n` of the CPUs this process may use (round-robin when
/// more executors than CPUs are asked for).
pub fn pick_cpus(n: Option<usize>) -> Vec<usize> {
    let mut avail: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    if avail.is_empty() {
        avail = (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
    }
    let n = n.unwrap_or(avail.len()).max(1);
    (0..n).map(|i| avail[i % avail.len()]).collect()
}

/// SO_REUSEPORT would let us share a port another process is serving on:
/// first make sure the address is free with an ordinary bind.
fn probe_exclusive(addr: SocketAddr) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())
}

fn bind_reuseport(addr: SocketAddr) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nodelay(true)?;
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

fn memlock_limit() -> String {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } != 0 {
        return "unknown".into();
    }
    if r.rlim_cur == libc::RLIM_INFINITY {
        "unlimited".into()
    } else {
        format!("{} KiB", r.rlim_cur / 1024)
    }
}

/// glommio refuses to start below this locked-memory limit (sys/uring.rs).
const MIN_MEMLOCK: u64 = 512 * 1024;

/// Raise RLIMIT_MEMLOCK to what glommio needs when the hard limit (or root)
/// allows it, so a default container limit (64 KiB) is not fatal.
fn raise_memlock() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) != 0 || r.rlim_cur >= MIN_MEMLOCK {
            return;
        }
        let want = 8 * MIN_MEMLOCK;
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: r.rlim_max.max(want),
        };
        if libc::setrlimit(libc::RLIMIT_MEMLOCK, &raised) != 0 && r.rlim_max > r.rlim_cur {
            let soft = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            libc::setrlimit(libc::RLIMIT_MEMLOCK, &soft);
        }
    }
}

fn classify(core: usize, e: &glommio::GlommioError<()>) -> StartError {
    let detail = e.to_string();
    if let glommio::GlommioError::ReactorError(glommio::ReactorErrorKind::MemLockLimit(_, min)) = e
    {
        return StartError::Memlock {
            detail: format!(
                "glommio needs at least {} KiB of lockable memory",
                min / 1024
            ),
            limit: memlock_limit(),
        };
    }
    let io_err: Option<i32> = match e {
        glommio::GlommioError::IoError(io) => io.raw_os_error(),
        _ => None,
    };
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .map(|s| s.trim() != "0")
        .unwrap_or(false);
    match io_err {
        Some(libc::ENOSYS) => StartError::NoIoUring { detail },
        Some(libc::EPERM) | Some(libc::EACCES) if disabled => StartError::NoIoUring {
            detail: format!("{detail}; kernel.io_uring_disabled is set"),
        },
        Some(libc::EPERM) | Some(libc::EACCES) => StartError::NoIoUring {
            detail: format!("{detail}; io_uring_setup was refused (a seccomp profile, e.g. a container runtime's default, may block it)"),
        },
        Some(libc::ENOMEM) => StartError::Memlock {
            detail,
            limit: memlock_limit(),
        },
        _ if detail.contains("MemLock") => StartError::Memlock {
            detail,
            limit: memlock_limit(),
        },
        _ => StartError::Executor { core, detail },
    }
}

/// Bind, start one executor per core and the admin thread.
pub fn start(
    config: Config,
    config_path: Option<PathBuf>,
    cores_override: Option<usize>,
) -> Result<Running, StartError> {
    let cpus = pick_cpus(cores_override.or(config.server.cores.map(|c| c.get())));
    raise_memlock();
    probe_exclusive(config.server.listen).map_err(|source| StartError::Listen {
        addr: config.server.listen,
        source,
    })?;
    let first = bind_reuseport(config.server.listen).map_err(|source| StartError::Listen {
        addr: config.server.listen,
        source,
    })?;
    let listen = first
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .unwrap_or(config.server.listen);
    let mut sockets = vec![first];
    for _ in 1..cpus.len() {
        sockets.push(bind_reuseport(listen).map_err(|source| StartError::Listen {
            addr: listen,
            source,
        })?);
    }
    let admin_cfg = config.admin.clone();
    let shared =
        Shared::new(config, cpus.len(), config_path).map_err(|e| StartError::Executor {
            core: 0,
            detail: format!("cannot create the drain notification socket pair: {e}"),
        })?;

    let (tx, rx) = mpsc::channel::<Result<usize, StartError>>();
    let mut threads = Vec::new();
    for (core, (cpu, sock)) in cpus.iter().copied().zip(sockets).enumerate() {
        let tx = tx.clone();
        let shared = shared.clone();
        let fd = sock.into_raw_fd();
        let t = std::thread::Builder::new()
            .name(format!("shadowtee-{core}"))
            .spawn(move || {
                let ex = match LocalExecutorBuilder::new(Placement::Fixed(cpu))
                    .name(&format!("shadowtee-{core}"))
                    .io_memory(IO_MEMORY)
                    .make()
                {
                    Ok(ex) => ex,
                    Err(e) => {
                        // SAFETY: fd came from into_raw_fd above and is owned here.
                        drop(unsafe { StdListener::from_raw_fd(fd) });
                        let _ = tx.send(Err(classify(core, &e)));
                        return;
                    }
                };
                ex.run(async move {
                    // SAFETY: fd is a bound, listening, non-blocking TCP socket
                    // whose ownership moves into the glommio listener.
                    let listener = unsafe { glommio::net::TcpListener::from_raw_fd(fd) };
                    let c = Core::new(core, shared);
                    let _ = tx.send(Ok(core));
                    crate::serve::run(c, listener).await;
                });
            })
            .map_err(|e| StartError::Executor {
                core,
                detail: e.to_string(),
            })?;
        threads.push(t);
    }
    drop(tx);
    for _ in 0..cpus.len() {
        match rx.recv() {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                shared.begin_drain();
                return Err(e);
            }
            Err(_) => {
                return Err(StartError::Executor {
                    core: 0,
                    detail: "executor thread exited during start-up".into(),
                })
            }
        }
    }
    let admin = match crate::admin::start(admin_cfg.listen, shared.clone()) {
        Ok(a) => Some(a),
        Err(source) if admin_cfg.explicit => {
            shared.begin_drain();
            return Err(StartError::AdminListen {
                addr: admin_cfg.listen,
                source,
            });
        }
        Err(e) => {
            eprintln!(
                "shadowtee: admin listener on default {} unavailable ({e}); continuing without it",
                admin_cfg.listen
            );
            None
        }
    };
    Ok(Running {
        listen,
        admin,
        shared,
        cores: cpus,
        threads,
    })
}

/// Handle signals until the engine has drained: SIGHUP reloads `path`
/// (an invalid file keeps the old config), SIGINT/SIGTERM drain and return.
/// A second SIGINT/SIGTERM exits at once.
pub fn serve_signals(
    running: Running,
    mut signals: signal_hook::iterator::Signals,
    path: Option<PathBuf>,
) {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let shared = running.shared.clone();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let mut running = Some(running);
    loop {
        for sig in signals.pending() {
            match sig {
                SIGHUP => match &path {
                    Some(p) => match config_schema::load(p) {
                        Ok(cfg) => {
                            let id = shared.reload(cfg);
                            eprintln!("shadowtee: reloaded {} (generation {id})", p.display());
                        }
                        Err(errs) => {
                            eprintln!(
                                "shadowtee: reload of {} rejected, keeping the running config:",
                                p.display()
                            );
                            for e in &errs.0 {
                                eprintln!("{e}");
                            }
                        }
                    },
                    None => eprintln!("shadowtee: SIGHUP ignored (no config file)"),
                },
                SIGINT | SIGTERM => {
                    if let Some(r) = running.take() {
                        eprintln!("shadowtee: draining");
                        r.drain();
                        let tx = done_tx.clone();
                        std::thread::spawn(move || {
                            r.join();
                            let _ = tx.send(());
                        });
                    } else {
                        eprintln!("shadowtee: second signal, exiting now");
                        std::process::exit(0);
                    }
                }
                _ => {}
            }
        }
        if done_rx.try_recv().is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
