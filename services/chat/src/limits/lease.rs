//! Leases: a share of a counter's headroom that Redis granted this replica ahead of use, so that a request far
//! from its limits is admitted without waiting for a Redis round trip.
//!
//! The Redis counters always include what is leased, so every replica's check stays safe: leased units are
//! spent already as far as the others can tell. A lease is topped up in the background once it runs below half
//! of its last grant, asking for what it was spent at over [`LEASE_RUNWAY`], so that at a steady rate, however
//! high, requests do not wait for Redis at all. A grant is at most [`HEADROOM_SHARE`]th of the headroom left,
//! so near a limit nothing is leased and every request is checked in Redis, exactly as without leases. What a
//! replica still holds when it asks Redis again is given back in the same script before the check, so that one
//! replica alone is never refused over units it holds itself. Unused units go back to Redis when the lease
//! expires ([`LEASE_TTL`]) and when the service stops; a replica that dies holding a lease loses those units
//! until the counter's window ends (a minute, or the month for tokens).
//!
//! This module keeps the book; [`Limiter`](super::Limiter) talks to Redis.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// How long a grant may be spent locally before what is left goes back to Redis.
pub const LEASE_TTL: Duration = Duration::from_secs(2);

/// A grant takes at most this fraction (1/n) of the headroom left on a counter.
pub const HEADROOM_SHARE: u64 = 16;

/// How many requests' worth a replica asks for at least when it refills.
pub const LEASED_REQUESTS: u64 = 256;

/// A top-up asks for what the lease was spent at over this long since its last grant, when that is more than
/// [`LEASED_REQUESTS`]' worth. Asked at half, a top-up then has half of this to arrive before the lease runs
/// dry; a dry lease sends every request to Redis, which at thousands of requests a second is what overloads
/// the replica (the gateway benchmark at 14,000 req/s: 110,000 Redis commands a second instead of 250).
pub const LEASE_RUNWAY: Duration = Duration::from_millis(500);

/// Units of one counter that a request needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Need<'a> {
    pub key: &'a str,
    pub units: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Lease {
    remaining: u64,
    expires: Instant,
    /// Below this the lease is topped up: half of the last grant.
    low_water: u64,
    /// When the last grant came and what the lease held right after it: how fast it has been spent since.
    granted_at: Instant,
    level_at_grant: u64,
}

impl Lease {
    /// The units this lease was spent at over [`LEASE_RUNWAY`], since its last grant.
    fn demand(&self, now: Instant) -> u64 {
        let spent = self.level_at_grant.saturating_sub(self.remaining);
        let elapsed = now.saturating_duration_since(self.granted_at).max(Duration::from_millis(1));
        u64::try_from(u128::from(spent) * LEASE_RUNWAY.as_nanos() / elapsed.as_nanos()).unwrap_or(u64::MAX)
    }
}

/// What a request that goes to Redis sends along for one counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refill {
    /// Units this replica held and gives back before the check.
    pub give_back: u64,
    /// Whether to ask for a new grant: only one request at a time refills a counter, so that a burst of
    /// requests does not lease the headroom many times over.
    pub ask: bool,
    /// What the lease given back was spent at over [`LEASE_RUNWAY`] (0 without one): the least to ask for.
    pub demand: u64,
}

/// A counter a spend left below half of its last grant: top it up, asking for at least `demand` units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopUp {
    pub demand: u64,
}

/// The leases this replica holds, by Redis key.
#[derive(Debug, Default)]
pub struct Leases {
    held: HashMap<String, Lease>,
    refilling: HashSet<String>,
}

impl Leases {
    /// Whether a live lease holds what `need` asks for.
    fn covers(&self, need: &Need<'_>, now: Instant) -> bool {
        self.held.get(need.key).is_some_and(|lease| lease.expires > now && lease.remaining >= need.units)
    }

    /// Spends every need from the leases when all of them can cover it, and says which of them this request
    /// should top up (marked as refilling already); otherwise spends nothing and returns `None`. A caller
    /// must start every top-up it is given, or end it with [`abandon_refill`](Self::abandon_refill).
    pub fn try_spend<const N: usize>(&mut self, needs: &[Need<'_>; N], now: Instant) -> Option<[Option<TopUp>; N]> {
        if !needs.iter().all(|need| self.covers(need, now)) {
            return None;
        }
        let Leases { held, refilling } = self;
        Some(needs.each_ref().map(|need| {
            let lease = held.get_mut(need.key)?;
            lease.remaining -= need.units;
            let top_up = lease.remaining < lease.low_water && refilling.insert(need.key.to_string());
            top_up.then(|| TopUp { demand: lease.demand(now) })
        }))
    }

    /// Whether a request these leases cannot cover now would be covered by the top-ups under way: every need
    /// that is short has a lease whose top-up has been asked for. Such a request waits for the top-up instead
    /// of asking Redis itself, so that a lease that runs dry under a burst costs one round trip, not one per
    /// request of the burst.
    pub fn topping_up(&self, needs: &[Need<'_>], now: Instant) -> bool {
        let mut short = needs.iter().filter(|need| !self.covers(need, now)).peekable();
        short.peek().is_some()
            && short.all(|need| self.held.contains_key(need.key) && self.refilling.contains(need.key))
    }

    /// Takes back what is held for `key`, to be given back to Redis by the request that now asks it, and
    /// says whether that request should ask for a new grant. Call [`finish_refill`](Self::finish_refill) when
    /// the answer comes, or [`abandon_refill`](Self::abandon_refill) if it does not.
    pub fn start_refill(&mut self, key: &str, now: Instant) -> Refill {
        let (give_back, demand) = self.held.remove(key).map_or((0, 0), |lease| (lease.remaining, lease.demand(now)));
        let ask = self.refilling.insert(key.to_string());
        Refill { give_back, ask, demand }
    }

    /// Adds a grant for `key`, whose refill (or top-up) this request started.
    pub fn finish_refill(&mut self, key: &str, granted: u64, now: Instant) {
        self.refilling.remove(key);
        if granted > 0 {
            let empty = Lease { remaining: 0, expires: now, low_water: 0, granted_at: now, level_at_grant: 0 };
            let lease = self.held.entry(key.to_string()).or_insert(empty);
            lease.remaining += granted;
            lease.expires = now + LEASE_TTL;
            lease.low_water = granted / 2;
            lease.granted_at = now;
            lease.level_at_grant = lease.remaining;
        }
    }

    /// The refill of `key` ended without an answer (Redis failed, or the request went away). What was given
    /// back may or may not have reached Redis; it is not taken again, so the counter can only overstate use.
    pub fn abandon_refill(&mut self, key: &str) {
        self.refilling.remove(key);
    }

    /// Settles a request against a live lease of `key`: unused reserved units (`delta` < 0) join the lease,
    /// extra units (`delta` > 0) are taken from it as far as it goes. Returns the part of `delta` that must
    /// still be applied to the Redis counter.
    pub fn settle(&mut self, key: &str, delta: i64, now: Instant) -> i64 {
        let Some(lease) = self.held.get_mut(key).filter(|lease| lease.expires > now) else {
            return delta;
        };
        if delta < 0 {
            lease.remaining = lease.remaining.saturating_add(delta.unsigned_abs());
            return 0;
        }
        let taken = lease.remaining.min(delta.unsigned_abs());
        lease.remaining -= taken;
        delta - i64::try_from(taken).unwrap_or(i64::MAX)
    }

    /// Removes the leases that have expired, with the units they still hold.
    pub fn take_expired(&mut self, now: Instant) -> Vec<(String, u64)> {
        let expired: Vec<String> =
            self.held.iter().filter(|(_, lease)| lease.expires <= now).map(|(key, _)| key.clone()).collect();
        expired
            .into_iter()
            .filter_map(|key| self.held.remove(&key).map(|lease| (key, lease.remaining)))
            .filter(|(_, remaining)| *remaining > 0)
            .collect()
    }

    /// Removes every lease, with the units it still holds (the service is stopping).
    pub fn take_all(&mut self) -> Vec<(String, u64)> {
        self.held.drain().map(|(key, lease)| (key, lease.remaining)).filter(|(_, remaining)| *remaining > 0).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn need(key: &str, units: u64) -> Need<'_> {
        Need { key, units }
    }

    /// Leases granted in a refill of each key.
    fn leased(grants: &[(&str, u64)], now: Instant) -> Leases {
        let mut leases = Leases::default();
        for (key, units) in grants {
            leases.start_refill(key, now);
            leases.finish_refill(key, *units, now);
        }
        leases
    }

    #[test]
    fn a_request_is_admitted_locally_only_when_every_counter_covers_it() {
        let now = Instant::now();
        let mut leases = Leases::default();
        assert!(leases.try_spend(&[need("minute", 1)], now).is_none(), "nothing leased yet");
        for key in ["minute", "month"] {
            assert_eq!(leases.start_refill(key, now), Refill { give_back: 0, ask: true, demand: 0 });
        }
        leases.finish_refill("minute", 2, now);
        leases.finish_refill("month", 100, now);
        assert!(leases.try_spend(&[need("minute", 1), need("month", 60)], now).is_some());
        assert!(leases.try_spend(&[need("minute", 1), need("month", 60)], now).is_none(), "40 left: nothing spent");
        assert!(leases.try_spend(&[need("minute", 1), need("month", 40)], now).is_some(), "the minute is unspent");
        assert!(leases.try_spend(&[need("minute", 1)], now).is_none());
    }

    #[test]
    fn an_expired_lease_is_not_spent_and_goes_back() {
        let now = Instant::now();
        let mut leases = leased(&[("minute", 10)], now);
        assert!(leases.try_spend(&[need("minute", 3)], now).is_some());
        let later = now + LEASE_TTL;
        assert!(leases.try_spend(&[need("minute", 1)], later).is_none());
        assert!(leases.take_expired(now).is_empty());
        assert_eq!(leases.take_expired(later), vec![("minute".to_string(), 7)]);
        assert!(leases.take_expired(later).is_empty(), "given back once");
    }

    #[test]
    fn only_one_request_refills_a_counter_and_it_gives_back_what_was_held() {
        let now = Instant::now();
        let mut leases = leased(&[("month", 50)], now);
        assert!(leases.try_spend(&[need("month", 20)], now).is_some());
        let later = now + LEASE_RUNWAY;
        assert_eq!(leases.start_refill("month", later), Refill { give_back: 30, ask: true, demand: 20 });
        assert_eq!(
            leases.start_refill("month", later),
            Refill { give_back: 0, ask: false, demand: 0 },
            "a refill is under way"
        );
        leases.finish_refill("month", 40, now);
        assert_eq!(leases.start_refill("month", now), Refill { give_back: 40, ask: true, demand: 0 });
        leases.abandon_refill("month");
        assert_eq!(
            leases.start_refill("month", now),
            Refill { give_back: 0, ask: true, demand: 0 },
            "nothing is given back twice"
        );
    }

    #[test]
    fn settling_adjusts_a_live_lease_and_passes_the_rest_to_redis() {
        let now = Instant::now();
        let mut leases = Leases::default();
        assert_eq!(leases.settle("month", -42, now), -42, "no lease: Redis takes it all");
        leases.start_refill("month", now);
        leases.finish_refill("month", 10, now);
        assert_eq!(leases.settle("month", -42, now), 0);
        assert_eq!(leases.settle("month", 50, now), 0, "52 held");
        assert_eq!(leases.settle("month", 5, now), 3, "2 held");
        assert_eq!(leases.settle("month", -1, now + LEASE_TTL), -1, "an expired lease takes nothing");
        assert!(leases.take_expired(now + LEASE_TTL).is_empty(), "nothing left to give back");
    }

    #[test]
    fn stopping_gives_everything_back() {
        let now = Instant::now();
        let mut leases = leased(&[("a", 5), ("b", 0), ("c", 7)], now);
        let mut all = leases.take_all();
        all.sort();
        assert_eq!(all, vec![("a".to_string(), 5), ("c".to_string(), 7)]);
        assert!(leases.try_spend(&[need("a", 1)], now).is_none());
    }

    #[test]
    fn a_lease_below_half_its_grant_is_topped_up_by_one_request() {
        let now = Instant::now();
        let mut leases = leased(&[("minute", 10), ("month", 1000)], now);
        let later = now + LEASE_RUNWAY;
        let spend = |leases: &mut Leases| leases.try_spend(&[need("minute", 1), need("month", 100)], later);
        for _ in 0..5 {
            assert_eq!(spend(&mut leases), Some([None, None]), "at or above half: no top-up");
        }
        assert_eq!(
            spend(&mut leases),
            Some([Some(TopUp { demand: 6 }), Some(TopUp { demand: 600 })]),
            "4 and 400 left: both below half, spent at 6 and 600 over the runway"
        );
        assert_eq!(spend(&mut leases), Some([None, None]), "a top-up is under way");
        leases.finish_refill("minute", 6, later);
        leases.finish_refill("month", 0, later);
        assert_eq!(
            spend(&mut leases),
            Some([None, Some(TopUp { demand: 800 })]),
            "8 requests left, above 3; 200 tokens, below 500"
        );
        assert_eq!(spend(&mut leases), Some([None, None]), "100 tokens left");
        assert_eq!(spend(&mut leases), Some([None, None]), "none left, and the top-up is under way");
        assert_eq!(spend(&mut leases), None);
    }

    #[test]
    fn a_request_short_of_a_lease_being_topped_up_waits_for_it() {
        let now = Instant::now();
        let mut leases = leased(&[("minute", 100), ("month", 400)], now);
        let needs = [need("minute", 1), need("month", 100)];
        assert!(!leases.topping_up(&needs, now), "covered, but no top-up under way");
        for _ in 0..2 {
            assert_eq!(leases.try_spend(&needs, now), Some([None, None]));
        }
        assert_eq!(leases.try_spend(&needs, now), Some([None, Some(TopUp { demand: 150_000 })]));
        assert!(leases.try_spend(&needs, now).is_some(), "the last 100 tokens");
        assert!(leases.try_spend(&needs, now).is_none(), "the month's lease is dry");
        assert!(leases.topping_up(&needs, now), "its top-up is under way, and the minute's lease covers");
        leases.finish_refill("month", 0, now);
        assert!(leases.try_spend(&needs, now).is_none(), "nothing granted");
        assert!(!leases.topping_up(&needs, now), "and nothing more to wait for: ask Redis");
        assert!(!leases.topping_up(&[need("other", 1)], now), "no lease at all: ask Redis");
    }

    #[test]
    fn a_top_up_asks_for_what_the_lease_was_spent_at_over_the_runway() {
        let granted = Instant::now();
        let mut leases = leased(&[("minute", 256)], granted);
        for _ in 0..128 {
            assert_eq!(leases.try_spend(&[need("minute", 1)], granted), Some([None]));
        }
        // 129 requests in 10 ms: 12,900 a second, 6,450 over the half-second runway.
        let top_up = leases.try_spend(&[need("minute", 1)], granted + Duration::from_millis(10));
        assert_eq!(top_up, Some([Some(TopUp { demand: 6450 })]));
        let topped_up = granted + Duration::from_millis(12);
        leases.finish_refill("minute", 6450, topped_up);
        for _ in 0..3352 {
            assert_eq!(leases.try_spend(&[need("minute", 1)], topped_up), Some([None]));
        }
        let slower = leases.try_spend(&[need("minute", 1)], topped_up + Duration::from_secs(1));
        assert_eq!(slower, Some([Some(TopUp { demand: 1676 })]), "3,353 in a second: 1,676 over the runway");
        assert_eq!(leases.start_refill("minute", topped_up + Duration::from_secs(1)).demand, 1676);
    }
}
