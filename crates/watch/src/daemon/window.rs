//! One window of a round: its tokens' files read on the blocking pool, their batches asked, their
//! checks run (up to [`CHECKS_IN_FLIGHT`] at once), each taken in, in the configuration's order,
//! and the window's records written. See the [parent module](super) for the round around it.
//!
//! Must never: take in checks out of the configuration's order (a round decides as it would one
//! token after another), or cut a check in flight (a write the engine began is completed).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use jiff::Timestamp;
use permatoken_inspect::Status;
use permatoken_renew::Known;

use super::{CHECKS_IN_FLIGHT, Daemon, Error, RoundSummary};
use crate::alert::random_unit;
use crate::check::{CheckError, Checked, Job, Pending, WriteSetup};
use crate::config::TokenConfig;
use crate::outcome::Outcome;
use crate::records::status_str;
use crate::states::{Observation, Observed};

/// The records of a window, written together at its end: a call per check would cost a
/// transaction each.
struct WindowWrites {
    tokens: Vec<permatoken_state::TokenRecord>,
    checks: Vec<permatoken_state::CheckRecord>,
}

impl Daemon {
    /// Checks the tokens at positions `window`: reads them, asks their batches, runs their checks
    /// (up to [`CHECKS_IN_FLIGHT`] at once), takes each in, in order, and writes their records.
    pub(super) async fn window(
        &mut self,
        window: &[usize],
        now: Timestamp,
        summary: &mut RoundSummary,
    ) -> Result<(), Error> {
        let jobs = self.prepare(window).await?;
        let (known, deferred) = self.prefetch(&jobs).await;
        let mut writes = WindowWrites {
            tokens: Vec::with_capacity(jobs.len()),
            checks: Vec::with_capacity(jobs.len()),
        };
        // The Graph calls of up to CHECKS_IN_FLIGHT tokens overlap; what follows each check
        // (states, alerts, the store) is taken in one token at a time, in the configuration's
        // order, so a round decides as it would one token after another.
        let mut in_flight: VecDeque<(TokenConfig, Pending)> = VecDeque::new();
        for (n, (token, job)) in jobs.into_iter().enumerate() {
            if let Some(until) = deferred.get(&n) {
                // Its app (or user) is rate-limited: not a failed check, only a later one; but not
                // a check made either (`watch --once` must not exit 0 on it). Unknown meanwhile,
                // so a pause that outlasts `unknown_after` is alerted, and a short one is not.
                summary.deferred += 1;
                summary.note(Status::Unknown);
                // The pause is measured on the monotonic clock; people are told its end on the
                // wall clock, as the round's wall time plus what is left of it.
                let wait = until.saturating_duration_since(self.round_at.mono);
                self.schedule.defer(&token.name, wait, self.round_at.mono);
                let observation = crate::batch::deferred(self.batch_at().wall_of(*until));
                self.announce(&token, &token.name, &observation, now, summary);
                continue;
            }
            let pending = match job {
                Ok(mut job) => {
                    job.use_known(known.clone());
                    if let Some(gate) = self.leadership.gate(now) {
                        job.claim_through(gate);
                    }
                    Pending::start(job, now)
                }
                Err(e) => Pending::Done(Checked::NotRun(e)),
            };
            // Should the round fail below, checks still in flight finish on their own (a write the
            // engine began is completed, never cut); the next round reads what they left.
            in_flight.push_back((token, pending));
            if in_flight.len() >= CHECKS_IN_FLIGHT
                && let Some((token, pending)) = in_flight.pop_front()
            {
                let checked = pending.finish().await;
                self.take_in(&token, checked, now, summary, &mut writes)
                    .await?;
            }
        }
        while let Some((token, pending)) = in_flight.pop_front() {
            let checked = pending.finish().await;
            self.take_in(&token, checked, now, summary, &mut writes)
                .await?;
        }
        if !writes.checks.is_empty() {
            // A state that cannot take them stops nothing: the checks are lost to the history.
            let tokens = self.store.upsert_tokens(writes.tokens).await;
            if self.written("the window's tokens", now, tokens).is_some() {
                let checks = self.store.record_checks(writes.checks).await;
                self.written("the window's checks", now, checks);
            }
        }
        Ok(())
    }

    /// The jobs of the tokens at positions `window`, their files read on the blocking pool (a
    /// fleet's files may be slow to read: the election's heartbeat, on this thread, goes on).
    async fn prepare(
        &mut self,
        window: &[usize],
    ) -> Result<Vec<(TokenConfig, Result<Job, CheckError>)>, Error> {
        let configs: Vec<TokenConfig> = window
            .iter()
            .map(|&i| self.config.tokens[i].clone())
            .collect();
        let read = tokio::task::spawn_blocking(move || {
            let reads: Vec<_> = configs.iter().map(crate::sources::read).collect();
            (configs, reads)
        })
        .await;
        let (configs, reads) = match read {
            Ok(done) => done,
            Err(e) => {
                let configs: Vec<TokenConfig> = window
                    .iter()
                    .map(|&i| self.config.tokens[i].clone())
                    .collect();
                let why = || crate::sources::SourceError::Stopped(e.to_string());
                let reads = configs.iter().map(|_| Err(why())).collect();
                (configs, reads)
            }
        };
        let mut jobs = Vec::with_capacity(configs.len());
        for (token, read) in configs.into_iter().zip(reads) {
            let job = match read {
                Ok(read) => {
                    let client = self.clients.client_for(&read.app, &self.counters)?;
                    let write = WriteSetup {
                        backup_dir: self.backup_dir.clone(),
                        reload_slots: self.fleet.reload_slots(&token.set),
                    };
                    Ok(Job::new(&token, read, client, write))
                }
                Err(e) => Err(CheckError::Unreadable(e)),
            };
            jobs.push((token, job));
        }
        Ok(jobs)
    }

    /// With `batch_checks`, asks the batches for `jobs` ([`crate::batch::prefetch`]): the window's
    /// known answers, and the checks deferred (by index) until their app's rate limit has passed.
    async fn prefetch(
        &mut self,
        jobs: &[(TokenConfig, Result<Job, CheckError>)],
    ) -> (Option<Arc<Known>>, HashMap<usize, Instant>) {
        if !self.config.batch_checks {
            return (None, HashMap::new());
        }
        let due = jobs
            .iter()
            .enumerate()
            .filter_map(|(i, (_, job))| Some((i, crate::batch::Due::of(job.as_ref().ok()?)?)))
            .collect();
        let at = self.batch_at();
        let fetched = crate::batch::prefetch(
            due,
            self.memory.identities(),
            &mut self.budgets,
            &self.counters,
            at,
        )
        .await;
        (Some(Arc::new(fetched.known)), fetched.deferred)
    }

    /// The round's moment, as the batches' pauses are measured.
    fn batch_at(&self) -> crate::batch::At {
        crate::batch::At {
            wall: self.round_at.wall,
            mono: self.round_at.mono,
        }
    }

    /// Takes in one token's check: marks its claims done, then what it saw, or why it told nothing.
    async fn take_in(
        &mut self,
        token: &TokenConfig,
        checked: Checked,
        now: Timestamp,
        summary: &mut RoundSummary,
        writes: &mut WindowWrites,
    ) -> Result<(), Error> {
        // A check taken in is the round's progress: a round of a fleet may outlast the watchdog's
        // interval, and only a round that stopped taking checks in is hung.
        self.notifier.alive();
        let ran = match checked {
            Checked::NotRun(e) => {
                self.not_checked(token, &e, now, summary);
                return Ok(());
            }
            Checked::Ran(ran) => *ran,
        };
        // Done, whatever came of it: the action ran its course (a claim left open would say it
        // may still be under way).
        for key in ran.job.take_claimed() {
            let done = self.store.claim_done(&key, now).await;
            self.written("a claim done", now, done);
        }
        let report = match ran.result {
            Ok(report) => report,
            Err(e) => {
                self.not_checked(token, &e, now, summary);
                return Ok(());
            }
        };
        let outcome = Outcome::of(token, &ran.job.spec, &report, now);
        self.take_in_outcome(token, outcome, now, summary, writes)
            .await?;
        let policy = &token.policy;
        let mono = self.round_at.mono;
        if policy.doctor && self.schedule.doctor_is_due(&token.name, mono) {
            let job = &ran.job;
            let ca = self.clients.config().extra_roots_pem.clone();
            let items = crate::checklist::run(token, &job.source, &job.app, &job.client, ca).await;
            for (name, observation) in items {
                self.announce(token, &name, &observation, now, summary);
            }
            self.schedule
                .doctor_ran(&token.name, policy.doctor_interval, mono);
        }
        Ok(())
    }

    /// A check that told nothing: unknown, announced (alerted only once it lasts), retried soon.
    fn not_checked(
        &mut self,
        token: &TokenConfig,
        error: &CheckError,
        now: Timestamp,
        summary: &mut RoundSummary,
    ) {
        error.log(&token.name);
        self.counters.check(&token.name, "error");
        summary.checked(Status::Unknown);
        self.announce(token, &token.name, &error.observation(), now, summary);
        let mono = self.round_at.mono;
        self.schedule
            .checked(&token.name, &token.policy, None, true, mono, random_unit());
    }

    /// Everything that follows one engine run: events, records, what is remembered, states,
    /// alerts and the next check of the token and its backups.
    async fn take_in_outcome(
        &mut self,
        token: &TokenConfig,
        outcome: Outcome,
        now: Timestamp,
        summary: &mut RoundSummary,
        writes: &mut WindowWrites,
    ) -> Result<(), Error> {
        self.memory.found_backups(&token.name, outcome.backups());
        let Outcome {
            seen,
            records,
            happened,
        } = outcome;
        for happened in &happened {
            happened.emit(&self.counters);
            let recorded = self.store.record_event(happened.event(now)).await;
            self.written("an event", now, recorded);
        }
        for (record, check) in records {
            writes.tokens.push(record);
            writes.checks.push(check);
        }
        // The token and its backups are checked together: the soonest expiry among them and any
        // unknown check set when they are checked next.
        let mut soonest: Option<Timestamp> = None;
        let mut any_unknown = false;
        for seen in seen {
            let report = &seen.report;
            self.memory.saw(
                &seen.name,
                seen.key.as_ref(),
                report.token.scopes.clone().unwrap_or_default(),
                permatoken_renew::LastCheck::of(report),
            );
            self.counters.check(&seen.name, status_str(report.status));
            summary.checked(report.status);
            let observation = crate::states::observe(report, seen.engine);
            self.announce(token, &seen.name, &observation, now, summary);
            any_unknown |= observation.observed == Observed::Unknown;
            // Only an expiry still ahead brings the next check nearer: a token already expired is
            // dead by the API's word and stays so until its file changes, which the interval notices.
            if let Some(at) = report.expires_at().filter(|at| *at > now) {
                soonest = Some(soonest.map_or(at, |s| s.min(at)));
            }
        }
        // Expiry is Meta's wall time: what is left of it is measured on the wall clock.
        let expires_in = soonest.map(|at| crate::schedule::age(now, at));
        self.schedule.checked(
            &token.name,
            &token.policy,
            expires_in,
            any_unknown,
            self.round_at.mono,
            random_unit(),
        );
        Ok(())
    }

    /// Decides on `observation` of `name` (the token or one of its backups or checklist items).
    fn announce(
        &mut self,
        token: &TokenConfig,
        name: &str,
        observation: &Observation,
        now: Timestamp,
        summary: &mut RoundSummary,
    ) {
        self.memory.told(name, observation, now);
        let timing = token.policy.timing();
        if self.announcer.announce(
            name,
            observation,
            timing,
            &token.alerts,
            now,
            self.round_at.mono,
        ) {
            summary.alerts += 1;
        }
    }
}
