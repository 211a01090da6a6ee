//! The `farmhand` binary: flags, exit codes, and a call into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use clap_complete::Shell;
use farmhand::ctl::CtlArgs;
use farmhand::farm::daemon;
use farmhand::host::logging::{self, LogFormat, LogLevel};

/// Single-host build-farm daemon.
#[derive(Parser)]
#[command(name = "farmhand", version, about)]
struct Cli {
    /// The farm config.
    #[arg(long, default_value = "/etc/farmhand/config.toml", global = true)]
    config: PathBuf,
    /// Verbosity.
    #[arg(long, value_enum, default_value = "info", global = true)]
    log_level: LogLevel,
    /// Log format: auto = journald when stderr is the journal, else logfmt.
    #[arg(long, value_enum, default_value = "auto", global = true)]
    log_format: LogFormat,
    /// Poll every recipe once, build and publish what is new, exit.
    #[arg(long, conflicts_with = "check")]
    once: bool,
    /// Validate config and recipes, print the roster and problems, exit 0 or 2.
    #[arg(long)]
    check: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Create a self-contained demo farm and run the daemon on it.
    Demo {
        /// Where the demo farm lives.
        #[arg(long, default_value = "./farmhand-demo")]
        dir: PathBuf,
        /// HTTP listen address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: String,
    },
    /// Act on a running farm and read its state: poll, pause, resume,
    /// cancel, retry, status, builds, logs, events.
    Ctl(CtlArgs),
    /// Print a shell completion script for farmhand.
    Completions {
        /// The shell.
        shell: CompletionShell,
    },
    /// Internal: runs one git operation for the daemon (request on stdin,
    /// answer on stdout).
    #[command(name = "git-helper", hide = true)]
    GitHelper {
        /// Run at a lower CPU priority (polls: background work).
        #[arg(long)]
        background: bool,
    },
}

/// The shells `farmhand completions` writes scripts for.
#[derive(Clone, Copy, ValueEnum)]
enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

impl CompletionShell {
    fn shell(self) -> Shell {
        match self {
            CompletionShell::Bash => Shell::Bash,
            CompletionShell::Zsh => Shell::Zsh,
            CompletionShell::Fish => Shell::Fish,
        }
    }
}

/// The completion script for `shell`.
fn completions(shell: CompletionShell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell.shell(), &mut Cli::command(), "farmhand", &mut out);
    out
}

/// The long flags, which Go's flag package (and so peipkg-manager's command
/// line) also spells with a single dash: `-config /etc/x.toml`,
/// `-log-level=debug`, `-once`.
const LONG_FLAGS: [&str; 7] = [
    "config",
    "log-level",
    "log-format",
    "once",
    "check",
    "dir",
    "addr",
];

/// Rewrites Go-style single-dash long flags to their `--` form, so an
/// existing `ExecStart=... -config ...` line works unchanged. Anything
/// else (values, `--` flags, `-h`, `-V`) passes through as it is.
fn go_style_flags(args: impl Iterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    args.enumerate()
        .map(|(i, a)| {
            let Some(s) = a.to_str().filter(|_| i > 0) else {
                return a;
            };
            match s.strip_prefix('-') {
                Some(rest)
                    if !rest.starts_with('-')
                        && LONG_FLAGS.contains(&rest.split('=').next().unwrap_or("")) =>
                {
                    format!("-{s}").into()
                }
                _ => a,
            }
        })
        .collect()
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse_from(go_style_flags(std::env::args_os())) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Some(Command::GitHelper { background }) => {
            return ExitCode::from(farmhand::git::helper::helper_main(background) as u8)
        }
        Some(Command::Ctl(args)) => {
            return ExitCode::from(farmhand::ctl::main(args, &cli.config) as u8)
        }
        Some(Command::Completions { shell }) => {
            use std::io::Write as _;
            let _ = std::io::stdout().write_all(&completions(shell));
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    if cli.check {
        return ExitCode::from(daemon::check(&cli.config) as u8);
    }
    farmhand::host::memory::tune();
    logging::init(cli.log_format, cli.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(64)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("farmhand: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Some(Command::Demo { dir, addr }) => farmhand::demo::run(&dir, &addr).await,
            Some(Command::GitHelper { .. } | Command::Ctl(_) | Command::Completions { .. }) => {
                unreachable!("handled before the runtime starts")
            }
            None => {
                let cfg = daemon::load_config(&cli.config)?;
                if cli.once {
                    daemon::run_once(cfg).await
                } else {
                    daemon::run_daemon(cfg).await
                }
            }
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(err = %e, "farmhand stopped");
            eprintln!("farmhand: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packaged_completions_are_current() {
        for (shell, file) in [
            (CompletionShell::Bash, "farmhand.bash"),
            (CompletionShell::Zsh, "_farmhand"),
            (CompletionShell::Fish, "farmhand.fish"),
        ] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("packaging/completions")
                .join(file);
            let packaged = std::fs::read(&path).unwrap_or_default();
            assert!(
                packaged == completions(shell),
                "{} is out of date; regenerate it with: cargo run -- completions {} > {}",
                path.display(),
                shell.shell(),
                path.display()
            );
        }
    }

    #[test]
    fn go_style_single_dash_flags_are_accepted() {
        let args = [
            "farmhand",
            "-config",
            "/etc/c.toml",
            "-log-level=debug",
            "-once",
            "-h",
            "--check",
            "-x",
        ]
        .map(std::ffi::OsString::from);
        let out = go_style_flags(args.into_iter());
        assert_eq!(
            out,
            [
                "farmhand",
                "--config",
                "/etc/c.toml",
                "--log-level=debug",
                "--once",
                "-h",
                "--check",
                "-x"
            ]
            .map(std::ffi::OsString::from)
        );
    }
}
