//! The `shadowtee` command line (docs/SPEC.md "Command line").

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

#[derive(Parser)]
#[command(
    name = "shadowtee",
    version,
    about = "HTTP/1.1 tee proxy: weighted primary routing plus mirroring to shadows that can never slow the primary"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve until SIGINT/SIGTERM (graceful drain); SIGHUP reloads the config.
    Run {
        #[arg(long)]
        config: PathBuf,
        /// Overrides server.cores.
        #[arg(long)]
        cores: Option<usize>,
    },
    /// Validate a config file and print a summary (exit 1 with every error).
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// Start demo upstreams and the engine on loopback, send a burst, print what happened.
    Demo {
        /// Keep serving after the burst until Ctrl-C.
        #[arg(long)]
        serve: bool,
        #[arg(long)]
        cores: Option<usize>,
        /// Requests in the burst.
        #[arg(long, default_value_t = 200)]
        requests: usize,
    },
    /// Print the primary-vs-shadow comparison of a running engine.
    Compare {
        /// Admin address, e.g. 127.0.0.1:9901.
        #[arg(long)]
        admin: String,
        /// Print the raw JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Translate an Istio VirtualService (YAML) into shadowtee TOML on stdout.
    ImportIstio {
        file: PathBuf,
        /// NAME=HOST:PORT for each subset (or host) the routes name.
        #[arg(long = "subset")]
        subsets: Vec<String>,
        /// server.listen of the produced config.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run { config, cores } => run(config, cores),
        Cmd::Check { config } => check(config),
        Cmd::Demo {
            serve,
            cores,
            requests,
        } => cli::demo::run(serve, cores, requests),
        Cmd::Compare { admin, json } => compare(&admin, json),
        Cmd::ImportIstio {
            file,
            subsets,
            listen,
        } => import_istio(file, subsets, &listen),
    }
}

fn check(path: PathBuf) -> ExitCode {
    match config_schema::load(&path) {
        Ok(cfg) => {
            println!("{}: ok", path.display());
            print!("{}", cfg.summary());
            ExitCode::SUCCESS
        }
        Err(errs) => {
            eprintln!("{}: {} error(s)", path.display(), errs.0.len());
            for e in &errs.0 {
                eprintln!("{e}");
            }
            ExitCode::from(1)
        }
    }
}

fn run(path: PathBuf, cores: Option<usize>) -> ExitCode {
    let cfg = match config_schema::load(&path) {
        Ok(c) => c,
        Err(errs) => {
            eprintln!("shadowtee: invalid config {}:", path.display());
            for e in &errs.0 {
                eprintln!("{e}");
            }
            return ExitCode::from(1);
        }
    };
    let signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("shadowtee: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    let running = match shadowtee::runtime::start(cfg, Some(path.clone()), cores) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shadowtee: {e}");
            return ExitCode::from(1);
        }
    };
    println!(
        "shadowtee listening on {} (cores {:?}); admin on {}",
        running.listen,
        running.cores,
        running.admin.map_or("-".to_string(), |a| a.to_string())
    );
    let _ = std::io::stdout().flush();
    shadowtee::runtime::serve_signals(running, signals, Some(path));
    ExitCode::SUCCESS
}

fn compare(admin: &str, raw: bool) -> ExitCode {
    match shadowtee_net::get(admin, "/compare").and_then(|(status, body)| {
        if status == 200 {
            Ok(body)
        } else {
            Err(std::io::Error::other(format!("status {status}")))
        }
    }) {
        Ok(body) => {
            if raw {
                print!("{body}");
                return ExitCode::SUCCESS;
            }
            match serde_json::from_str::<serde_json::Value>(&body) {
                Ok(v) => {
                    print!("{}", cli::table::render_table(&v));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("shadowtee: {admin}/compare did not answer JSON: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Err(e) => {
            eprintln!("shadowtee: cannot read {admin}/compare: {e}");
            ExitCode::from(1)
        }
    }
}

fn import_istio(file: PathBuf, subsets: Vec<String>, listen: &str) -> ExitCode {
    let yaml = match std::fs::read_to_string(&file) {
        Ok(y) => y,
        Err(e) => {
            eprintln!("shadowtee: cannot read {}: {e}", file.display());
            return ExitCode::from(1);
        }
    };
    let mut pairs = Vec::new();
    for s in subsets {
        match s.split_once('=') {
            Some((n, a)) if !n.is_empty() && !a.is_empty() => {
                pairs.push((n.to_string(), a.to_string()))
            }
            _ => {
                eprintln!("shadowtee: --subset wants NAME=HOST:PORT, got {s:?}");
                return ExitCode::from(1);
            }
        }
    }
    match shadowtee_istio::import_virtual_service(&yaml, &pairs, listen) {
        Ok(out) => {
            print!("{}", out.toml);
            if !out.unsupported.is_empty() {
                eprintln!("not carried over ({}):", out.unsupported.len());
                for u in &out.unsupported {
                    eprintln!("  - {u}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shadowtee: {}: {e}", file.display());
            ExitCode::from(1)
        }
    }
}
