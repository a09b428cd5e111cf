//! The health gate: what `cairn` does at start about the last update.
//!
//! * Back on the old slot after a trial that never committed: record the rollback (keeping
//!   the reason the trial boot wrote, if it got that far) and forget the failed slot.
//! * On a trial boot: wait until the node is healthy, then commit the slot; if it is not
//!   healthy within the deadline, record why and reboot, which boots the old slot.

use std::future::Future;
use std::time::{Duration, Instant};

use cairn_slots::Slot;

use super::{Node, Record, UpdateError};

/// How long a trial boot may take to become healthy, unless the node config says otherwise.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(300);
const RETRY: Duration = Duration::from_secs(2);

/// A trial boot that has yet to pass its health gate.
#[derive(Debug)]
pub struct Trial {
    pub slot: Slot,
    pub version: String,
    /// `cairn.break_health=1` on the kernel command line: fail on purpose (rollback tests).
    pub break_health: bool,
}

/// What the gate concluded.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Committed,
    /// Recorded as failed; the caller reboots (into the old slot).
    Failed(String),
}

/// Settles what the last boot left behind; returns the trial to gate, if this is one.
pub fn on_start(node: &Node, cmdline: &str) -> Result<Option<Trial>, UpdateError> {
    let st = node.status()?;
    let version = st.running_version.clone().unwrap_or_default();
    if st.rolled_back() {
        let failed = st.running.other();
        let failed_version = st.other_version.clone().unwrap_or_default();
        let rec = node.amend_record(|rec| {
            if rec.result != "failed" || rec.reason.is_none() {
                rec.reason = Some(format!(
                    "the trial boot of Cairn {failed_version} (slot {failed}) ended before passing its health gate (crash, hang or power loss)"
                ));
            }
            rec.result = "rolled-back".into();
            rec.slot = failed.to_string();
            rec.to_version = failed_version;
            if rec.from_version.is_empty() {
                rec.from_version = version;
            }
        })?;
        eprintln!(
            "cairn: update: rolled back to slot {}: {}",
            st.running,
            rec.reason.as_deref().unwrap_or("")
        );
        node.with_boot_rw(|e| {
            e.forget(failed)
                .map_err(super::io_err("removing the failed slot's entry"))
        })?;
        return Ok(None);
    }
    if st.on_trial() {
        let break_health = cmdline
            .split_whitespace()
            .any(|w| w == "cairn.break_health=1");
        eprintln!(
            "cairn: update: trial boot of Cairn {version} on slot {}: committing once healthy",
            st.running
        );
        return Ok(Some(Trial {
            slot: st.running,
            version,
            break_health,
        }));
    }
    Ok(None)
}

impl Trial {
    fn outcome(&self, rec: &mut Record, result: &str, reason: Option<String>) {
        rec.result = result.into();
        rec.slot = self.slot.to_string();
        rec.to_version = self.version.clone();
        rec.reason = reason;
    }

    /// Polls `healthy` until it succeeds (then commits) or `deadline` passes (then records
    /// the failure). Rebooting after a failure is the caller's job.
    pub async fn run<F, Fut>(
        self,
        node: &Node,
        deadline: Duration,
        mut healthy: F,
    ) -> Result<Outcome, UpdateError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let start = Instant::now();
        let reason = loop {
            if self.break_health {
                break "health gate failed on purpose: the bundle was made with BREAK_HEALTH=1"
                    .to_string();
            }
            let last = match healthy().await {
                Ok(()) => {
                    node.with_boot_rw(|e| {
                        e.commit(self.slot)
                            .map_err(super::io_err("committing the slot entry"))
                    })?;
                    node.amend_record(|rec| self.outcome(rec, "committed", None))?;
                    eprintln!(
                        "cairn: update: committed slot {} (Cairn {})",
                        self.slot, self.version
                    );
                    return Ok(Outcome::Committed);
                }
                Err(e) => e,
            };
            if start.elapsed() >= deadline {
                break format!("not healthy within {}s: {last}", deadline.as_secs());
            }
            tokio::time::sleep(RETRY.min(deadline)).await;
        };
        node.amend_record(|rec| self.outcome(rec, "failed", Some(reason.clone())))?;
        eprintln!(
            "cairn: update: trial of slot {} failed: {reason}",
            self.slot
        );
        Ok(Outcome::Failed(reason))
    }
}
