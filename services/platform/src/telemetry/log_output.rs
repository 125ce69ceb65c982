//! Where log lines go: stdout, in batches.
//!
//! Writing each line with its own `write(2)` made the access log a fifth of the chat gateway's CPU per request
//! at 2,000 requests a second (`docs/benchmarks-chat.md`). Lines are appended to a buffer instead, and one
//! `write` carries all that arrived within [`FLUSH_EVERY`]. A warning or an error is written at once, with
//! everything before it, so what explains a failure is never held back; a full buffer is written by the
//! thread that filled it, so a stalled stdout slows logging down instead of growing memory. Dropping the
//! [`LogFlusher`] (the telemetry guard does, at the end of `main`) writes what is left.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// The longest a line waits in the buffer.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// A buffer this large is written by the thread that appends to it, without waiting for the flusher.
const FULL: usize = 256 * 1024;

/// The log's output: a [`MakeWriter`] for the fmt layer. Clones share one buffer.
#[derive(Clone)]
pub struct BatchedOutput<W: Write + Send + 'static> {
    shared: Arc<Shared<W>>,
}

struct Shared<W> {
    pending: Mutex<Vec<u8>>,
    /// Held while a batch is taken and written, so batches reach the output in the order they were taken.
    output: Mutex<W>,
    control: Arc<Control>,
}

/// The flusher's stop signal, apart from the output so that [`LogFlusher`] need not name its type.
struct Control {
    stopping: Mutex<bool>,
    wake: std::sync::Condvar,
    /// Set once the flusher is told to stop: every line is then written as it comes.
    unbatched: AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain bytes behind; logging must go on.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<W: Write + Send + 'static> BatchedOutput<W> {
    /// The output and the thread that writes it out every [`FLUSH_EVERY`]; keep the flusher until the end.
    pub fn start(output: W) -> std::io::Result<(BatchedOutput<W>, LogFlusher)> {
        let control = Arc::new(Control {
            stopping: Mutex::new(false),
            wake: std::sync::Condvar::new(),
            unbatched: AtomicBool::new(false),
        });
        let shared = Arc::new(Shared {
            pending: Mutex::new(Vec::with_capacity(64 * 1024)),
            output: Mutex::new(output),
            control: control.clone(),
        });
        let flusher = shared.clone();
        let thread = std::thread::Builder::new().name("log-flush".into()).spawn(move || {
            let control = &flusher.control;
            let mut stopping = lock(&control.stopping);
            while !*stopping {
                stopping = control.wake.wait_timeout(stopping, FLUSH_EVERY).unwrap_or_else(PoisonError::into_inner).0;
                flusher.flush();
            }
        })?;
        Ok((BatchedOutput { shared }, LogFlusher { thread: Some(thread), control }))
    }
}

impl<W: Write> Shared<W> {
    fn flush(&self) {
        let mut output = lock(&self.output);
        let batch = std::mem::take(&mut *lock(&self.pending));
        if !batch.is_empty() {
            // Nowhere to report a failure to write the log; the lines are dropped, as a direct write would.
            let _ = output.write_all(&batch).and_then(|()| output.flush());
        }
    }
}

/// Stops the flusher thread and writes what is left, when dropped; lines logged afterwards are written at once.
#[must_use = "dropping the flusher stops batched log output"]
pub struct LogFlusher {
    thread: Option<JoinHandle<()>>,
    control: Arc<Control>,
}

impl Drop for LogFlusher {
    fn drop(&mut self) {
        self.control.unbatched.store(true, Ordering::Release);
        *lock(&self.control.stopping) = true;
        self.control.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One log line being written: appended to the buffer, and written out when dropped if it is urgent.
pub struct LineWriter<'a, W: Write> {
    shared: &'a Shared<W>,
    urgent: bool,
}

impl<W: Write> Write for LineWriter<'_, W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let full = {
            let mut pending = lock(&self.shared.pending);
            pending.extend_from_slice(bytes);
            pending.len() >= FULL
        };
        if full || self.shared.control.unbatched.load(Ordering::Acquire) {
            self.shared.flush();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for LineWriter<'_, W> {
    fn drop(&mut self) {
        if self.urgent {
            self.shared.flush();
        }
    }
}

impl<'a, W: Write + Send + 'static> MakeWriter<'a> for BatchedOutput<W> {
    type Writer = LineWriter<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter { shared: &self.shared, urgent: false }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        LineWriter { shared: &self.shared, urgent: *meta.level() <= Level::WARN }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;
    use crate::telemetry::captured::Captured;

    fn logger(output: BatchedOutput<Captured>) -> impl tracing::Subscriber {
        tracing_subscriber::registry().with(tracing_subscriber::fmt::layer().json().with_writer(output))
    }

    #[test]
    fn info_lines_wait_for_the_flusher_and_a_warning_takes_them_along() {
        let captured = Captured::default();
        let (output, _flusher) = BatchedOutput::start(captured.clone()).expect("start");
        // The flusher may run between the two info lines; hold it off by taking the output lock.
        let held = lock(&output.shared.output);
        tracing::subscriber::with_default(logger(output.clone()), || {
            tracing::info!(n = 1, "first");
            tracing::info!(n = 2, "second");
        });
        assert!(captured.lines().is_empty(), "info lines are batched");
        drop(held);
        tracing::subscriber::with_default(logger(output.clone()), || tracing::warn!(n = 3, "third"));
        let lines = captured.lines();
        assert_eq!(lines.len(), 3, "the warning is written at once, after what came before it: {lines:?}");
        for (line, n) in lines.iter().zip(1..) {
            let line: serde_json::Value = serde_json::from_str(line).expect("one JSON object per line");
            assert_eq!(line["fields"]["n"], n);
        }
    }

    #[test]
    fn batched_lines_are_written_within_the_flush_interval() {
        let captured = Captured::default();
        let (output, _flusher) = BatchedOutput::start(captured.clone()).expect("start");
        tracing::subscriber::with_default(logger(output), || tracing::info!("batched"));
        let started = Instant::now();
        while captured.lines().is_empty() {
            assert!(started.elapsed() < FLUSH_EVERY * 20, "the flusher never wrote the line");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn lines_from_many_threads_arrive_whole_and_dropping_the_flusher_writes_the_rest() {
        let captured = Captured::default();
        let (output, flusher) = BatchedOutput::start(captured.clone()).expect("start");
        let threads: Vec<_> = (0..4)
            .map(|thread| {
                let output = output.clone();
                std::thread::spawn(move || {
                    tracing::subscriber::with_default(logger(output), || {
                        for n in 0..2_000 {
                            tracing::info!(thread, n, padding = "x".repeat(n % 300), "line");
                        }
                    });
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("logging thread");
        }
        drop(flusher);
        let lines = captured.lines();
        assert_eq!(lines.len(), 8_000, "more than one full buffer, nothing lost");
        tracing::subscriber::with_default(logger(output), || tracing::info!(thread = 0, n = 2_000, "after"));
        let lines = captured.lines();
        assert_eq!(lines.len(), 8_001, "once the flusher is gone, lines are written at once");
        let mut next = [0_u64; 4];
        for line in &lines {
            let line: serde_json::Value = serde_json::from_str(line).expect("whole JSON lines");
            let thread = line["fields"]["thread"].as_u64().expect("thread") as usize;
            assert_eq!(line["fields"]["n"].as_u64(), Some(next[thread]), "each thread's lines in order");
            next[thread] += 1;
        }
    }
}
