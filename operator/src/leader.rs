//! Leader election on a Lease: only the replica holding it runs the controllers, and only while it surely holds
//! it may anything of the process write.
//!
//! Written here rather than taken from a crate: kube-lease-manager, used before, judged expiry by the Lease's
//! timestamps (another clock), never created a deleted Lease again and let a leader go on writing while its
//! renewals failed; kubert's lease manager needs the Lease to exist beforehand. client-go's algorithm is the
//! model, with its write fence made explicit:
//!
//! - **One writer at a time.** A leader may write until `renew_deadline` after its last successful renewal
//!   *began*, on its own monotonic clock ([`WriteFence`], which every write request of the process passes, see
//!   `kube_client`). Another replica takes the Lease only after seeing it unchanged for `lease_duration`
//!   (longer than the deadline, the difference being the margin for clock drift), on its own clock: no
//!   replica ever trusts another's timestamps. A leader stopped past the deadline (SIGSTOP, a long pause)
//!   finds its fence closed when it runs again, before any request leaves.
//! - **Losing the Lease ends leadership at once**: deleted, taken by another replica, or not renewed by the
//!   deadline (the API server unreachable). The fence closes and the process stops, to stand again as a
//!   candidate after its restart.
//! - **A deleted Lease is created again** by the first replica that finds it missing, which starts leading once
//!   any former leader's fence has surely closed: `renew_deadline` plus one retry period after it first saw the
//!   Lease missing, within the lease duration of the deletion.
//! - **A replica that cannot take part reports not ready**: one that has had no answer about the Lease for a
//!   lease duration.
//! - A leader that stops on request gives the Lease up (after its controllers stopped writing), so that a
//!   standby takes over at once.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::names::FIELD_MANAGER;

/// The election's three durations (client-go's defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How long a Lease unchanged means its holder is gone. Also the longest time before a standby leads.
    pub lease_duration: Duration,
    /// How long after a renewal began the leader may still write; shorter than `lease_duration`.
    pub renew_deadline: Duration,
    /// The pause between two looks at the Lease.
    pub retry_period: Duration,
}

impl Timing {
    pub const DEFAULT: Timing = Timing {
        lease_duration: Duration::from_secs(15),
        renew_deadline: Duration::from_secs(10),
        retry_period: Duration::from_secs(2),
    };

    /// How long after first seeing the Lease missing (or held under its own name by an earlier process) a
    /// replica waits before it leads: any former leader's fence closed by then.
    fn fence_wait(&self) -> Duration {
        self.renew_deadline + self.retry_period
    }
}

/// Whether the process may write to the API server now. Cloned into the client's layers; checked before every
/// request that is not a read.
#[derive(Clone, Debug)]
pub struct WriteFence(Arc<Mutex<Fence>>);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fence {
    /// No election: a single replica always writes.
    Unfenced,
    /// May write until then.
    Until(Instant),
    Closed,
}

impl WriteFence {
    /// For a replica that runs without leader election.
    pub fn unfenced() -> WriteFence {
        WriteFence(Arc::new(Mutex::new(Fence::Unfenced)))
    }

    /// For a candidate: closed until it leads.
    pub fn closed() -> WriteFence {
        WriteFence(Arc::new(Mutex::new(Fence::Closed)))
    }

    pub fn allows_writes(&self) -> bool {
        match self.0.lock().map(|fence| *fence) {
            Ok(Fence::Unfenced) => true,
            Ok(Fence::Until(deadline)) => Instant::now() < deadline,
            Ok(Fence::Closed) | Err(_) => false,
        }
    }

    fn open_until(&self, deadline: Instant) {
        if let Ok(mut fence) = self.0.lock() {
            *fence = Fence::Until(deadline);
        }
    }

    fn close(&self) {
        if let Ok(mut fence) = self.0.lock() {
            *fence = Fence::Closed;
        }
    }
}

/// Where this replica stands in the election.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Waiting to lead (holding the Lease already, or watching another hold it).
    Candidate,
    Leader,
    /// Was the leader and is no longer: the process must stop.
    Lost(LossReason),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossReason {
    Deleted,
    Taken,
    /// No renewal succeeded before the deadline (the API server unreachable, or the process paused).
    NotRenewed,
}

/// The Lease as far as the election reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub holder: Option<String>,
    /// Changes with every write of the Lease, renewals included.
    pub resource_version: String,
}

/// What the elector remembers between two looks at the Lease.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    pub leading: bool,
    /// The Lease's resourceVersion and when (on this replica's clock) it was first seen.
    pub last_change: Option<(String, Instant)>,
    /// Since when the Lease has been seen missing.
    pub absent_since: Option<Instant>,
    /// While holding the Lease without leading yet: from when this replica may lead.
    pub lead_from: Option<Instant>,
}

/// What to do after looking at the Lease. Pure: see [`decide`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Lose(LossReason),
    /// Create the missing Lease under this replica's name.
    Create,
    /// Write this replica's renewal over the Lease it holds.
    Renew,
    /// Take the Lease from a holder that gave it up or is gone.
    Take,
    Wait,
}

/// The next step, given the Lease as just read (`None`: it does not exist). Updates what is remembered of
/// changes; never trusts the Lease's timestamps, only when this replica saw it change.
pub fn decide(memory: &mut Memory, lease: Option<&Seen>, me: &str, now: Instant, timing: &Timing) -> Decision {
    let Some(lease) = lease else {
        memory.last_change = None;
        let since = *memory.absent_since.get_or_insert(now);
        if memory.leading {
            return Decision::Lose(LossReason::Deleted);
        }
        memory.lead_from = Some(since + timing.fence_wait());
        return Decision::Create;
    };
    memory.absent_since = None;
    let changed_at = match &memory.last_change {
        Some((version, at)) if *version == lease.resource_version => *at,
        _ => {
            memory.last_change = Some((lease.resource_version.clone(), now));
            now
        }
    };
    match lease.holder.as_deref() {
        Some(holder) if holder == me => {
            if !memory.leading && memory.lead_from.is_none() {
                // Held under this replica's name by an earlier process (a restarted container): it may still be
                // writing until its own fence closes.
                memory.lead_from = Some(changed_at + timing.fence_wait());
            }
            Decision::Renew
        }
        _ if memory.leading => Decision::Lose(LossReason::Taken),
        None | Some("") => Decision::Take,
        Some(_) if now.duration_since(changed_at) >= timing.lease_duration => Decision::Take,
        Some(_) => Decision::Wait,
    }
}

/// A running election.
pub struct Leadership {
    role: watch::Receiver<Role>,
    release: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    /// Whether the replica takes part in the election (has had an answer about the Lease lately).
    pub participating: Arc<AtomicBool>,
}

impl Leadership {
    /// Starts standing for the Lease `name` in `namespace`. `client` must not pass the fence itself.
    pub fn start(client: Client, namespace: &str, name: &str, identity: &str, fence: WriteFence) -> Leadership {
        Self::start_with(client, namespace, name, identity, fence, Timing::DEFAULT)
    }

    pub fn start_with(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        fence: WriteFence,
        timing: Timing,
    ) -> Leadership {
        let (role_tx, role) = watch::channel(Role::Candidate);
        let (release, release_rx) = watch::channel(false);
        let participating = Arc::new(AtomicBool::new(false));
        let elector = Elector {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            timing,
            fence,
            role: role_tx,
            participating: participating.clone(),
            memory: Memory::default(),
            last_answer: None,
        };
        let task = tokio::spawn(elector.run(release_rx));
        Leadership { role, release, task, participating }
    }

    /// Resolves once this replica leads; `Err` if the election stopped first.
    pub async fn acquired(&mut self) -> anyhow::Result<()> {
        self.role.wait_for(|role| *role == Role::Leader).await.map(|_| ()).map_err(anyhow::Error::from)
    }

    /// Resolves when this replica has lost the leadership it had.
    pub fn lost(&self) -> impl Future<Output = LossReason> + Send + 'static {
        let mut role = self.role.clone();
        async move {
            match role.wait_for(|role| matches!(role, Role::Lost(_))).await.map(|role| *role) {
                Ok(Role::Lost(reason)) => reason,
                _ => LossReason::NotRenewed,
            }
        }
    }

    /// Stops standing, and gives the Lease up if this replica holds it (call once nothing writes any more).
    pub async fn release(self) {
        let _ = self.release.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
    fence: WriteFence,
    role: watch::Sender<Role>,
    participating: Arc<AtomicBool>,
    memory: Memory,
    /// When the API server last answered about the Lease.
    last_answer: Option<Instant>,
}

impl Elector {
    async fn run(mut self, mut release: watch::Receiver<bool>) {
        loop {
            let started = Instant::now();
            let retry_now = self.step(started).await;
            if matches!(*self.role.borrow(), Role::Lost(_)) {
                return;
            }
            let answered_lately =
                self.last_answer.is_some_and(|at| Instant::now().duration_since(at) < self.timing.lease_duration);
            self.participating.store(answered_lately, Ordering::Relaxed);
            let mut pause = if retry_now { Duration::ZERO } else { self.timing.retry_period };
            if let Some(deadline) = self.fence_deadline() {
                // Wake when the fence closes, to end leadership at that instant.
                pause = pause.min(deadline.saturating_duration_since(Instant::now()));
            }
            let released = tokio::select! {
                _ = tokio::time::sleep(pause) => false,
                _ = release.wait_for(|release| *release) => true,
            };
            if released {
                self.give_up().await;
                return;
            }
        }
    }

    fn fence_deadline(&self) -> Option<Instant> {
        match self.fence.0.lock().map(|fence| *fence) {
            Ok(Fence::Until(deadline)) => Some(deadline),
            _ => None,
        }
    }

    /// One look at the Lease and what follows. Returns whether to look again at once.
    async fn step(&mut self, started: Instant) -> bool {
        if self.memory.leading && !self.fence.allows_writes() {
            self.lose(LossReason::NotRenewed);
            return false;
        }
        let lease = match self.api.get_opt(&self.name).await {
            Ok(lease) => lease,
            Err(error) => {
                tracing::warn!(%error, lease = %self.name, "cannot read the leader Lease");
                return false;
            }
        };
        self.last_answer = Some(Instant::now());
        let seen = lease.as_ref().map(|lease| Seen {
            holder: lease.spec.as_ref().and_then(|spec| spec.holder_identity.clone()),
            resource_version: lease.resource_version().unwrap_or_default(),
        });
        match decide(&mut self.memory, seen.as_ref(), &self.identity, started, &self.timing) {
            Decision::Lose(reason) => {
                self.lose(reason);
                false
            }
            Decision::Wait => false,
            Decision::Create => {
                let mut fresh = Lease {
                    metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                    spec: Some(LeaseSpec::default()),
                };
                self.claim(&mut fresh, 0);
                let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..PostParams::default() };
                match self.api.create(&params, &fresh).await {
                    Ok(_) => tracing::info!(lease = %self.name, "created the missing leader Lease"),
                    Err(kube::Error::Api(status)) if status.code == 409 => return true,
                    Err(error) => tracing::warn!(%error, "cannot create the leader Lease"),
                }
                false
            }
            Decision::Take => {
                let Some(mut lease) = lease else { return false };
                let transitions = lease.spec.as_ref().and_then(|spec| spec.lease_transitions).unwrap_or(0);
                self.claim(&mut lease, transitions.saturating_add(1));
                match self.replace(&lease).await {
                    Ok(()) => {
                        // The former holder gave the Lease up, or was seen silent for a whole lease duration: its
                        // fence is closed either way.
                        self.lead(started);
                        false
                    }
                    Err(retry) => retry,
                }
            }
            Decision::Renew => {
                let Some(mut lease) = lease else { return false };
                if let Some(spec) = lease.spec.as_mut() {
                    spec.renew_time = Some(MicroTime(Timestamp::now()));
                    spec.lease_duration_seconds = Some(seconds(self.timing.lease_duration));
                }
                match self.replace(&lease).await {
                    Ok(()) => {
                        if self.memory.leading {
                            self.fence.open_until(started + self.timing.renew_deadline);
                        } else if self.memory.lead_from.is_none_or(|from| started >= from) {
                            self.lead(started);
                        }
                        false
                    }
                    Err(retry) => retry,
                }
            }
        }
    }

    /// Writes this replica's claim into a Lease record.
    fn claim(&self, lease: &mut Lease, transitions: i32) {
        let now = MicroTime(Timestamp::now());
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(seconds(self.timing.lease_duration));
        spec.acquire_time = Some(now.clone());
        spec.renew_time = Some(now);
        spec.lease_transitions = Some(transitions);
    }

    /// Writes the Lease back, guarded by the resourceVersion it was read at. `Err(true)`: somebody else wrote
    /// it meanwhile, look again at once.
    async fn replace(&mut self, lease: &Lease) -> Result<(), bool> {
        let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..PostParams::default() };
        match self.api.replace(&self.name, &params, lease).await {
            Ok(written) => {
                self.last_answer = Some(Instant::now());
                // Our own write is not a sign of life of another holder.
                self.memory.last_change = written.resource_version().map(|version| (version, Instant::now()));
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => Err(true),
            Err(error) => {
                tracing::warn!(%error, lease = %self.name, "cannot write the leader Lease");
                Err(false)
            }
        }
    }

    fn lead(&mut self, renewed_at: Instant) {
        self.memory.leading = true;
        self.memory.lead_from = None;
        self.fence.open_until(renewed_at + self.timing.renew_deadline);
        self.role.send_replace(Role::Leader);
    }

    fn lose(&mut self, reason: LossReason) {
        self.fence.close();
        self.memory.leading = false;
        self.participating.store(false, Ordering::Relaxed);
        self.role.send_replace(Role::Lost(reason));
    }

    /// Gives the Lease up, if held: the next candidate takes it without waiting. Called after the controllers
    /// stopped, so nothing writes any more.
    async fn give_up(&mut self) {
        self.fence.close();
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else { return };
        let held = lease.spec.as_ref().and_then(|spec| spec.holder_identity.as_deref()) == Some(self.identity.as_str());
        if !held {
            return;
        }
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.renew_time = Some(MicroTime(Timestamp::now()));
        }
        if self.replace(&lease).await.is_ok() {
            tracing::info!(lease = %self.name, "gave up the leader Lease");
        }
    }
}

fn seconds(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs()).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timing = Timing::DEFAULT;

    fn held_by(holder: &str, version: &str) -> Seen {
        Seen { holder: Some(holder.into()), resource_version: version.into() }
    }

    #[test]
    fn a_lease_held_by_another_is_taken_only_after_a_whole_lease_duration_unchanged() {
        let start = Instant::now();
        let mut memory = Memory::default();
        assert_eq!(decide(&mut memory, Some(&held_by("b", "1")), "a", start, &T), Decision::Wait);
        let almost = start + T.lease_duration - Duration::from_millis(1);
        assert_eq!(decide(&mut memory, Some(&held_by("b", "1")), "a", almost, &T), Decision::Wait);
        // A renewal by b starts the count again, whatever the Lease's timestamps say.
        assert_eq!(decide(&mut memory, Some(&held_by("b", "2")), "a", almost, &T), Decision::Wait);
        let later = almost + T.lease_duration - Duration::from_millis(1);
        assert_eq!(decide(&mut memory, Some(&held_by("b", "2")), "a", later, &T), Decision::Wait);
        assert_eq!(decide(&mut memory, Some(&held_by("b", "2")), "a", almost + T.lease_duration, &T), Decision::Take);
    }

    #[test]
    fn a_lease_given_up_is_taken_at_once() {
        let released = Seen { holder: None, resource_version: "9".into() };
        assert_eq!(decide(&mut Memory::default(), Some(&released), "a", Instant::now(), &T), Decision::Take);
    }

    #[test]
    fn a_deleted_lease_ends_leadership_and_a_candidate_creates_it_but_leads_only_after_the_fence_wait() {
        let now = Instant::now();
        let mut leader = Memory { leading: true, ..Memory::default() };
        assert_eq!(decide(&mut leader, None, "a", now, &T), Decision::Lose(LossReason::Deleted));

        let mut candidate = Memory::default();
        assert_eq!(decide(&mut candidate, None, "b", now, &T), Decision::Create);
        let lead_from = candidate.lead_from.expect("waits");
        assert!(lead_from >= now + T.renew_deadline, "after any former leader's fence closed");
        assert!(lead_from <= now + T.lease_duration, "within the lease duration");
        // Seen missing again later: the wait still counts from the first sight.
        assert_eq!(decide(&mut candidate, None, "b", now + Duration::from_secs(2), &T), Decision::Create);
        assert_eq!(candidate.lead_from, Some(lead_from));
    }

    #[test]
    fn a_lease_taken_by_another_ends_leadership() {
        let mut leader = Memory { leading: true, ..Memory::default() };
        let decision = decide(&mut leader, Some(&held_by("b", "5")), "a", Instant::now(), &T);
        assert_eq!(decision, Decision::Lose(LossReason::Taken));
        let mut leader = Memory { leading: true, ..Memory::default() };
        assert_eq!(decide(&mut leader, Some(&held_by("a", "5")), "a", Instant::now(), &T), Decision::Renew);
    }

    #[test]
    fn a_lease_under_our_own_name_from_an_earlier_process_is_led_only_after_its_fence_closed() {
        let now = Instant::now();
        let mut restarted = Memory::default();
        assert_eq!(decide(&mut restarted, Some(&held_by("a", "3")), "a", now, &T), Decision::Renew);
        assert!(restarted.lead_from.is_some_and(|from| from >= now + T.renew_deadline));
    }

    #[test]
    fn the_timing_keeps_a_margin_between_the_fence_and_a_takeover() {
        assert!(T.renew_deadline < T.lease_duration);
        assert!(T.fence_wait() < T.lease_duration);
        assert!(T.fence_wait() > T.renew_deadline);
    }

    #[tokio::test(start_paused = true)]
    async fn the_fence_closes_at_its_deadline_on_the_monotonic_clock() {
        let fence = WriteFence::closed();
        assert!(!fence.allows_writes());
        fence.open_until(Instant::now() + Duration::from_secs(10));
        assert!(fence.allows_writes());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(!fence.allows_writes(), "not one write after the deadline");
        assert!(WriteFence::unfenced().allows_writes());
    }
}
