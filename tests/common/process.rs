//! Child processes of the tests: [`Proc`] for any program (killed by its PID on drop,
//! also when a test fails), and [`Serve`] for `harbor-pilot serve` with its JSON log
//! read line by line.

use std::collections::BTreeSet;
use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

/// A running `harbor-pilot serve`, killed on drop if still running.
pub struct Serve {
    child: Child,
    pub logs: mpsc::Receiver<Value>,
    pub seen: Vec<Value>,
}

impl Serve {
    pub fn start(extra: &[&str]) -> Self {
        Self::start_with_config(&super::example_config_path(), extra)
    }

    pub fn start_with_config(config: &std::path::Path, extra: &[&str]) -> Self {
        Self::start_with_env(config, extra, &[])
    }

    /// With extra environment variables (`RUST_LOG` among them).
    pub fn start_with_env(config: &std::path::Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_harbor-pilot"))
            .args([
                "serve",
                "--webhook-addr",
                "127.0.0.1:0",
                "--admin-addr",
                "127.0.0.1:0",
                "--log-format",
                "json",
            ])
            .args(extra)
            .env("HARBOR_PILOT_CONFIG", config)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, logs) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let value = serde_json::from_str(&line).unwrap_or(Value::String(line));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            logs,
            seen: Vec::new(),
        }
    }

    /// Every log line so far. The server writes its lines out every 50 ms
    /// (`telemetry::buffer::FLUSH_INTERVAL`), so a line logged just before this call
    /// may still be on its way: this reads until none has come for four times that
    /// (or for at most 5 s of lines).
    pub fn drain_logs(&mut self) -> &[Value] {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match self.logs.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => self.seen.push(line),
                Err(_) => break,
            }
        }
        &self.seen
    }

    /// The first log line whose message is `message` (waits up to 20 s).
    pub fn wait_log(&mut self, message: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(line) = self.seen.iter().find(|l| l["message"] == message) {
                return line.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.logs.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("no log line {message:?}; saw: {:#?}", self.seen),
            }
        }
    }

    pub fn addr(&mut self, message: &str) -> SocketAddr {
        self.wait_log(message)["addr"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: Signal) {
        kill(
            Pid::from_raw(i32::try_from(self.child.id()).unwrap()),
            signal,
        )
        .unwrap();
    }

    /// Waits (up to 30 s) for the exit status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed (SIGKILL) and reaped on drop.
pub struct Proc {
    name: &'static str,
    child: Child,
}

impl Proc {
    pub fn spawn(name: &'static str, command: &mut Command, log: &Path) -> Self {
        let log = std::fs::File::create(log).unwrap();
        let child = command
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{name} cannot be started ({e}): scripts/test installs it (Debian) or builds it (scripts/cluster-tools)")
            });
        Self { name, child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the process now (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago. The processes here cannot take an open socket,
/// so a start that loses the port to someone else is retried with another.
///
/// No port is given twice in one test binary: its tests run in parallel, and a port
/// released here can be the kernel's next answer to another test before this one's
/// server binds it. The stand-in's nginx can lose its port that way to another test's
/// registry; `wait_listening` then sees the port open and the test talks to the wrong
/// server (a certificate from the other test's CA: a fresh-clone CI run failed
/// tests/prewarm.rs with `BadSignature`, which nothing else here explains).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<BTreeSet<u16>> = std::sync::Mutex::new(BTreeSet::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if GIVEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(port)
        {
            return port;
        }
    }
}

pub fn wait_listening(process: &mut Proc, port: u16, log: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if process.exited() {
            return false;
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "{} did not listen on {port}: {}",
        process.name,
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

pub fn start_with_retry(
    name: &'static str,
    mut make: impl FnMut(u16) -> (Command, PathBuf),
) -> (Proc, u16) {
    for _ in 0..5 {
        let port = free_port();
        let (mut command, log) = make(port);
        let mut process = Proc::spawn(name, &mut command, &log);
        if wait_listening(&mut process, port, &log) {
            return (process, port);
        }
        // Lost the port to another process (or failed): try another port.
    }
    panic!("{name} would not start; see its log in the test's temporary directory");
}
