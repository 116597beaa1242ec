//! Child processes the demo owns: each runs in its own process group, its stdout goes line by
//! line to a log file and to the driver, and dropping the handle stops the whole group.
//!
//! Own process groups, because the driver must decide the order of shutdown (clients first,
//! then the server) and must still find every descendant if a child forked; and because a
//! terminal's Ctrl-C then reaches only the driver, which stops the rest deliberately instead of
//! racing them.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process_group};

/// How long a child gets to exit after SIGINT before it is killed.
const GRACE: Duration = Duration::from_secs(10);

/// One line a child printed, tagged with the child's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Which child ("server", "hospital-1", ...).
    pub from: String,
    /// The line, without its newline.
    pub text: String,
}

/// A running child. Dropping it stops its process group: SIGINT (both `cohort serve` and
/// `cohort join` shut down cleanly on it), then SIGKILL after a grace period.
#[derive(Debug)]
pub struct Supervised {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

/// Where children's lines arrive.
pub type Lines = Receiver<Line>;

/// A sender children's reader threads share.
pub fn line_channel() -> (Sender<Line>, Lines) {
    channel()
}

impl Supervised {
    /// Starts `program args` as `name` in a new process group, without the parent's `COHORT_*`
    /// variables. Its stdout is copied to `log_dir/NAME.log` and sent to `lines`; stderr goes
    /// to `log_dir/NAME.err`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        log_dir: &Path,
        lines: Sender<Line>,
    ) -> Result<Self, String> {
        use std::os::unix::process::CommandExt;
        let log = log_dir.join(format!("{name}.log"));
        let err_path = log_dir.join(format!("{name}.err"));
        let err = File::create(&err_path)
            .map_err(|e| format!("cannot create {}: {e}", err_path.display()))?;
        let mut out =
            File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let mut cmd = Command::new(program);
        // `cohort serve` lets COHORT_* variables override its config file: an operator's
        // COHORT_DATA_DIR must never point the demo's server at real data.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("COHORT_") {
                cmd.env_remove(&key);
            }
        }
        let mut child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err))
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let stdout = child.stdout.take();
        let from = name.to_owned();
        if let Some(stdout) = stdout {
            std::thread::spawn(move || {
                for text in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let _ = writeln!(out, "{text}");
                    let _ = lines.send(Line {
                        from: from.clone(),
                        text,
                    });
                }
            });
        }
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
            log,
        })
    }

    /// The child's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its process id (also its process group id), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its stdout log.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Its stderr log.
    pub fn err_log(&self) -> PathBuf {
        self.log.with_extension("err")
    }

    /// The exit status if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The last non-empty line of its stderr: what to show when it died.
    pub fn last_error(&self) -> String {
        std::fs::read_to_string(self.err_log())
            .ok()
            .and_then(|t| {
                t.lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| format!("no message (see {})", self.log.display()))
    }

    /// Stops the process group and waits for the child: SIGINT, then SIGKILL after `GRACE`.
    /// Returns the exit status when the child had to be waited for.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        self.interrupt();
        self.finish(Instant::now() + GRACE)
    }

    /// Sends SIGINT to the group of a child that still runs.
    fn interrupt(&mut self) {
        if let Some(child) = self.child.as_mut()
            && matches!(child.try_wait(), Ok(None))
        {
            signal_group(child, Signal::INT);
        }
    }

    /// Waits for the child until `deadline`, then kills its group.
    fn finish(&mut self, deadline: Instant) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                signal_group(&child, Signal::KILL);
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        signal_group(&child, Signal::KILL);
        let _ = child.kill();
        child.wait().ok()
    }
}

fn signal_group(child: &Child, signal: Signal) {
    let pid = i32::try_from(child.id()).ok().and_then(Pid::from_raw);
    if let Some(pid) = pid {
        // ESRCH (the group is already gone) is the expected outcome, not an error.
        let _ = kill_process_group(pid, signal);
    }
}

/// Stops several children at once: all are interrupted first, then each is waited for, so
/// shutdown takes one grace period, not one per child.
pub fn stop_all(children: &mut [Supervised]) {
    for c in children.iter_mut() {
        c.interrupt();
    }
    let deadline = Instant::now() + GRACE;
    for c in children.iter_mut() {
        c.finish(deadline);
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop();
    }
}
