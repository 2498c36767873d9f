//! [`LogBuffer`]: log lines handed to a writer thread, so that no admission waits on
//! standard error.
//!
//! A `write(2)` to stderr per log line cost a rewriting admission about a third of its
//! throughput (the INFO line per rewrite), and stderr in a Pod is a pipe the container
//! runtime drains: when it falls behind, a direct write blocks the request. Here a line
//! is appended to a buffer under a mutex (no system call); a thread writes the buffer
//! out in one `write` every [`FLUSH_INTERVAL`] while lines keep coming (sooner when
//! [`WRITE_NOW`] bytes are waiting), and sleeps until woken when they stop. Past
//! [`MAX_BUFFERED`] bytes waiting, lines are dropped and counted, and the count is
//! reported once the writer catches up: a stuck log pipe costs log lines, never
//! admissions.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the writer thread writes while lines keep coming: how late a line may
/// appear. Each write is a wake-up of the writer on a CPU the admissions need: at
/// 1,000 rewriting admissions a second (one at a time), writing every 10 ms cost the
/// writer 2.9 µs of CPU per admission, a twentieth of all the process spent on one;
/// every 50 ms, 1.1 µs.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// Bytes that may wait for the writer; past this, lines are dropped.
pub const MAX_BUFFERED: usize = 1 << 20;
/// Bytes waiting that wake the writer before its interval is over, so that a burst of
/// lines is written long before it could fill [`MAX_BUFFERED`].
pub const WRITE_NOW: usize = MAX_BUFFERED / 4;
/// Empty intervals after which the writer sleeps until the next line wakes it (a
/// second).
const IDLE_INTERVALS: u32 = 20;

/// The state shared by the writers (any thread) and the writer thread.
#[derive(Debug, Default)]
struct Pending {
    lines: Vec<u8>,
    /// Lines dropped since the last report.
    dropped: u64,
    /// The writer thread waits without a timeout: the next line must wake it.
    asleep: bool,
    /// [`WRITE_NOW`] bytes are waiting and the writer was woken for them.
    hurried: bool,
    /// No more lines will come: write what is left and stop.
    closed: bool,
}

#[derive(Debug, Default)]
struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding the lock leaves whole lines behind (a line is appended
        // with one extend): the buffer is still usable.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A handle that appends lines; cheap to clone.
#[derive(Debug, Clone)]
pub struct LogBuffer {
    shared: Arc<Shared>,
}

/// Owns the writer thread: dropping it writes every buffered line and joins the
/// thread. Keep it alive for as long as the program logs.
#[derive(Debug)]
pub struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl LogBuffer {
    /// A buffer whose lines the returned guard's thread writes to `out`.
    pub fn start(out: impl Write + Send + 'static) -> std::io::Result<(Self, FlushGuard)> {
        Self::start_with_interval(out, FLUSH_INTERVAL)
    }

    fn start_with_interval(
        out: impl Write + Send + 'static,
        interval: Duration,
    ) -> std::io::Result<(Self, FlushGuard)> {
        let shared = Arc::new(Shared::default());
        let thread = std::thread::Builder::new()
            .name("log-writer".to_owned())
            .spawn({
                let shared = Arc::clone(&shared);
                move || write_out(&shared, out, interval)
            })?;
        Ok((
            Self {
                shared: Arc::clone(&shared),
            },
            FlushGuard {
                shared,
                thread: Some(thread),
            },
        ))
    }

    /// Appends `line` (one whole formatted event); drops it when the writer is
    /// [`MAX_BUFFERED`] behind.
    pub fn append(&self, line: &[u8]) {
        let mut pending = self.shared.lock();
        if pending.lines.len() + line.len() > MAX_BUFFERED {
            pending.dropped += 1;
            return;
        }
        pending.lines.extend_from_slice(line);
        let wake = if pending.asleep {
            pending.asleep = false;
            true
        } else if pending.lines.len() >= WRITE_NOW && !pending.hurried {
            pending.hurried = true;
            true
        } else {
            false
        };
        if wake {
            drop(pending);
            self.shared.wake.notify_one();
        }
    }
}

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writer thread: every [`FLUSH_INTERVAL`] (or once [`WRITE_NOW`] bytes wait),
/// whatever has accumulated in one write; after [`IDLE_INTERVALS`] empty intervals,
/// asleep until a line wakes it.
fn write_out(shared: &Shared, mut out: impl Write, interval: Duration) {
    let mut batch = Vec::new();
    let mut empty_intervals = 0;
    loop {
        let (dropped, closed) = {
            let mut pending = shared.lock();
            if pending.lines.is_empty() && !pending.closed && empty_intervals >= IDLE_INTERVALS {
                pending.asleep = true;
                while pending.asleep && !pending.closed {
                    pending = shared
                        .wake
                        .wait(pending)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                empty_intervals = 0;
            }
            std::mem::swap(&mut batch, &mut pending.lines);
            pending.hurried = false;
            (std::mem::take(&mut pending.dropped), pending.closed)
        };
        if batch.is_empty() {
            empty_intervals += 1;
        } else {
            empty_intervals = 0;
            // Nothing to do about a failed write to stderr; the next batch tries again.
            let _ = out.write_all(&batch);
            batch.clear();
        }
        if dropped > 0 {
            let _ = writeln!(
                out,
                "harbor-pilot: {dropped} log lines dropped: standard error did not keep up"
            );
        }
        let _ = out.flush();
        if closed {
            // What was appended while the last batch was written.
            let rest = std::mem::take(&mut shared.lock().lines);
            let _ = out.write_all(&rest);
            let _ = out.flush();
            return;
        }
        // Lines that arrive meanwhile wait for the next interval: under load one write
        // per interval, not one per line. A close, or WRITE_NOW bytes, end it early.
        let pending = shared.lock();
        drop(
            shared
                .wake
                .wait_timeout_while(pending, interval, |pending| {
                    !pending.closed && pending.lines.len() < WRITE_NOW
                })
                .unwrap_or_else(PoisonError::into_inner),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Write` the test can read back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_in_order_by_the_time_the_guard_drops() {
        let out = Captured::default();
        let (buffer, guard) = LogBuffer::start(out.clone()).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let buffer = buffer.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        buffer.append(format!("{t} {i}\n").as_bytes());
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        drop(guard);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        for t in 0..4 {
            let mine: Vec<usize> = text
                .lines()
                .filter_map(|l| l.strip_prefix(&format!("{t} ")))
                .map(|i| i.parse().unwrap())
                .collect();
            assert_eq!(mine, (0..500).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_line_after_the_writer_fell_asleep_still_appears() {
        let out = Captured::default();
        let (buffer, guard) = LogBuffer::start(out.clone()).unwrap();
        // Long enough for the writer to give up on the timer and sleep.
        std::thread::sleep(FLUSH_INTERVAL * (IDLE_INTERVALS + 20));
        assert!(guard.shared.lock().asleep, "writer did not go to sleep");
        buffer.append(b"late\n");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while out.0.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "line never written");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(&*out.0.lock().unwrap(), b"late\n");
        drop(guard);
    }

    #[test]
    fn a_burst_is_written_before_the_interval_is_over() {
        /// Counts the writer's rounds: it flushes at the end of each.
        struct Rounds(Captured, Arc<Mutex<usize>>);
        impl Write for Rounds {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.write(buf)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                *self.1.lock().unwrap() += 1;
                Ok(())
            }
        }
        let out = Captured::default();
        let rounds = Arc::new(Mutex::new(0));
        let (buffer, guard) = LogBuffer::start_with_interval(
            Rounds(out.clone(), Arc::clone(&rounds)),
            Duration::from_secs(3600),
        )
        .unwrap();
        // The writer's first round is over: it now waits out an hour's interval, and
        // only the amount waiting can wake it before that.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while *rounds.lock().unwrap() == 0 {
            assert!(std::time::Instant::now() < deadline, "writer never ran");
            std::thread::sleep(Duration::from_millis(5));
        }
        let line = [b'x'; 1023];
        let lines = WRITE_NOW / (line.len() + 1);
        for _ in 0..lines {
            buffer.append(&[&line[..], b"\n"].concat());
        }
        while out.0.lock().unwrap().len() < lines * (line.len() + 1) {
            assert!(std::time::Instant::now() < deadline, "burst not written");
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(guard);
    }

    /// Standard error stuck (the writer blocked): lines beyond the bound are dropped,
    /// not waited for, and the count is written once the writer moves again.
    #[test]
    fn a_stuck_writer_costs_lines_not_callers() {
        struct Gate(Arc<(Mutex<bool>, Condvar)>, Captured);
        impl Write for Gate {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let (open, changed) = &*self.0;
                let mut open = open.lock().unwrap();
                while !*open {
                    open = changed.wait(open).unwrap();
                }
                self.1.write(buf)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let out = Captured::default();
        let (buffer, guard) = LogBuffer::start(Gate(Arc::clone(&gate), out.clone())).unwrap();
        buffer.append(b"first\n");
        // The writer takes "first" and blocks on the gate.
        std::thread::sleep(FLUSH_INTERVAL * 5);
        let line = [b'x'; 1023];
        let fits = MAX_BUFFERED / (line.len() + 1);
        for _ in 0..fits + 10 {
            buffer.append(&[&line[..], b"\n"].concat());
        }
        assert_eq!(guard.shared.lock().dropped, 10);
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        drop(guard);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(text.starts_with("first\n"));
        assert_eq!(text.lines().filter(|l| l.starts_with('x')).count(), fits);
        assert!(
            text.ends_with("harbor-pilot: 10 log lines dropped: standard error did not keep up\n")
        );
    }
}
