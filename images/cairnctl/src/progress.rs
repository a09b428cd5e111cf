//! Step-by-step progress on stderr: `[ 3/11] squashfs: 7.9 MiB (1.2 s)`.

use std::time::Instant;

pub struct Progress {
    total: usize,
    step: usize,
    started: Instant,
    step_started: Instant,
    quiet: bool,
}

impl Progress {
    pub fn new(total: usize, quiet: bool) -> Self {
        let now = Instant::now();
        Progress {
            total,
            step: 0,
            started: now,
            step_started: now,
            quiet,
        }
    }

    /// Announces the next step.
    pub fn step(&mut self, what: &str) {
        self.step += 1;
        self.step_started = Instant::now();
        if !self.quiet {
            eprintln!("[{:>2}/{}] {what}", self.step, self.total);
        }
    }

    /// Reports a detail of the current step with its elapsed time.
    pub fn done(&self, detail: &str) {
        if !self.quiet {
            eprintln!(
                "        {detail} ({:.1} s)",
                self.step_started.elapsed().as_secs_f64()
            );
        }
    }

    pub fn finish(&self, what: &str) {
        if !self.quiet {
            eprintln!("{what} in {:.1} s", self.started.elapsed().as_secs_f64());
        }
    }
}

pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
