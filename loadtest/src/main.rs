//! The `loadtest` command line: `run`, `serve`, `scenario tee`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use loadtest::run::{parse_header, RunConfig, Target};
use loadtest::scenario::{parse_rows, TeeArgs};
use loadtest::serve::{parse_mode, ServeArgs};
use loadtest::{parse_cpus, parse_duration};

#[derive(Parser)]
#[command(
    name = "loadtest",
    version,
    about = "HTTP/1.1 load generator (wrk/wrk2-style, io_uring via glommio), benchmark upstreams, and the shadowtee comparison"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate load against a URL: closed loop (default) or open loop (--rate).
    Run(RunArgs),
    /// Run a benchmark upstream until SIGINT/SIGTERM.
    Serve(ServeCli),
    /// Standard comparisons.
    Scenario {
        #[command(subcommand)]
        which: Scenario,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// http://HOST:PORT/path
    url: String,
    /// Keep-alive connections in total.
    #[arg(short, long, default_value_t = 10)]
    connections: usize,
    /// e.g. 10s, 500ms, 2m.
    #[arg(short, long, default_value = "10s")]
    duration: String,
    /// Executors (threads); default: one per --cpus entry, else 1.
    #[arg(short, long)]
    threads: Option<usize>,
    /// CPUs to pin the threads to, e.g. 0,1 or 0-3 (thread i -> cpus[i % n]).
    #[arg(long)]
    cpus: Option<String>,
    /// Open loop: total requests/s, latency measured from each request's scheduled time.
    #[arg(short = 'R', long)]
    rate: Option<f64>,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    #[arg(short, long, default_value = "GET")]
    method: String,
    /// 'name: value'; repeatable.
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Request body.
    #[arg(long, conflicts_with = "body_size")]
    body: Option<String>,
    /// Request body of N bytes of 'x'.
    #[arg(long)]
    body_size: Option<usize>,
    /// Connect/write/read-progress timeout.
    #[arg(long, default_value = "2s")]
    timeout: String,
    /// Print one JSON object instead of the text summary.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct ServeCli {
    /// Sent as x-upstream and used in bodies.
    #[arg(long, default_value = "v1")]
    name: String,
    /// fast | status:NNN | delay:MS | hung | garbage | echo | chunked | close-mid-body | refuse
    #[arg(long, default_value = "fast")]
    mode: String,
    #[arg(long, default_value = "127.0.0.1:3001")]
    listen: SocketAddr,
    /// One executor pinned to each CPU, e.g. 0 or 0,1; default: one unpinned.
    #[arg(long)]
    cpus: Option<String>,
    /// fast/delay bodies: N bytes of 'x' instead of the greeting.
    #[arg(long)]
    body_size: Option<usize>,
    /// Every Nth request answers 500.
    #[arg(long)]
    fail_every: Option<u32>,
}

#[derive(Subcommand)]
enum Scenario {
    /// Direct vs shadowtee (no/healthy/hung mirror, compare_body) vs nginx (no/healthy/hung mirror).
    Tee {
        /// Measured time per row.
        #[arg(long, default_value = "10s")]
        duration: String,
        #[arg(long, default_value_t = 50)]
        connections: usize,
        #[arg(long, default_value_t = 1)]
        proxy_cpu: usize,
        #[arg(long, default_value_t = 0)]
        load_cpu: usize,
        /// apt-get install -y nginx wrk first.
        #[arg(long)]
        install_peers: bool,
        /// The shadowtee binary (default: `shadowtee` next to this executable).
        #[arg(long)]
        shadowtee: Option<PathBuf>,
        /// Run the row sequence N times, interleaved; report per-row medians.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        repeat: u32,
        /// Rows to run, e.g. a,b,c,h (default: all, a-h).
        #[arg(long)]
        rows: Option<String>,
        /// Print one JSON object instead of the markdown table.
        #[arg(long)]
        json: bool,
    },
    /// RSS growth per idle keep-alive client connection: shadowtee (100%
    /// mirror) beside nginx (plain), one after the other on one CPU.
    Idle {
        /// Idle connections opened (one request served on each).
        #[arg(long, default_value_t = 8000)]
        connections: usize,
        #[arg(long, default_value_t = 1)]
        proxy_cpu: usize,
        #[arg(long, default_value_t = 0)]
        load_cpu: usize,
        /// The shadowtee binary (default: `shadowtee` next to this executable).
        #[arg(long)]
        shadowtee: Option<PathBuf>,
        /// Skip the nginx row.
        #[arg(long)]
        no_nginx: bool,
        /// Add a row for shadowtee without a mirror.
        #[arg(long)]
        plain: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Run(a) => run(a),
        Cmd::Serve(a) => serve(a),
        Cmd::Scenario {
            which:
                Scenario::Tee {
                    duration,
                    connections,
                    proxy_cpu,
                    load_cpu,
                    install_peers,
                    shadowtee,
                    repeat,
                    rows,
                    json,
                },
        } => (|| {
            let args = TeeArgs {
                duration: parse_duration(&duration)?,
                connections,
                proxy_cpu,
                load_cpu,
                install_peers,
                shadowtee,
                repeat: repeat as usize,
                rows: rows
                    .as_deref()
                    .map(parse_rows)
                    .transpose()?
                    .unwrap_or_default(),
            };
            let res = loadtest::scenario::tee(&args)?;
            if json {
                println!("{}", res.to_json());
            } else {
                print!("{}", res.render_markdown());
            }
            Ok(())
        })(),
        Cmd::Scenario {
            which:
                Scenario::Idle {
                    connections,
                    proxy_cpu,
                    load_cpu,
                    shadowtee,
                    no_nginx,
                    plain,
                },
        } => (|| {
            let args = loadtest::idle::IdleArgs {
                connections,
                proxy_cpu,
                load_cpu,
                shadowtee,
                nginx: !no_nginx,
                plain,
            };
            let rows = loadtest::idle::idle(&args)?;
            print!("{}", loadtest::idle::render(&rows));
            Ok(())
        })(),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadtest: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(a: RunArgs) -> loadtest::Result<()> {
    let mut cfg = RunConfig::new(Target::parse(&a.url)?);
    cfg.connections = a.connections;
    cfg.duration = parse_duration(&a.duration)?;
    cfg.timeout = parse_duration(&a.timeout)?;
    cfg.cpus = a
        .cpus
        .as_deref()
        .map(parse_cpus)
        .transpose()?
        .unwrap_or_default();
    cfg.threads = a.threads.unwrap_or(cfg.cpus.len().max(1));
    cfg.rate = a.rate;
    cfg.pipeline = a.pipeline;
    cfg.method = a.method;
    cfg.headers = a
        .headers
        .iter()
        .map(|h| parse_header(h))
        .collect::<Result<_, _>>()?;
    cfg.body = match (a.body, a.body_size) {
        (Some(b), _) => b.into_bytes(),
        (None, Some(n)) => vec![b'x'; n],
        (None, None) => Vec::new(),
    };
    let report = loadtest::run::run(&cfg)?;
    if a.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.render());
    }
    Ok(())
}

fn serve(a: ServeCli) -> loadtest::Result<()> {
    let args = ServeArgs {
        name: a.name,
        mode: parse_mode(&a.mode)?,
        listen: a.listen,
        cpus: a
            .cpus
            .as_deref()
            .map(parse_cpus)
            .transpose()?
            .unwrap_or_default(),
        body_size: a.body_size,
        fail_every: a.fail_every,
    };
    loadtest::serve::serve(&args)
}
