//! [`run`]: drives a [`Target`] with many connections for a warm-up and a measured window,
//! closed or open loop, and returns the [`Report`].
//!
//! Closed loop: each connection sends its next request as soon as the last one is answered;
//! latency runs from send to answer. Open loop (`--rate`): request *i* is due at
//! `start + i/rate`, whatever happened before. A pacer thread releases each request when it
//! comes due (a `std` thread sleeps to within tens of microseconds, where tokio's timer wheel
//! rounds to the millisecond); any idle connection takes the next due request, and its latency
//! runs from the moment it was *due*, so a stalled server is charged for every request it
//! delayed (no coordinated omission). The time from the actual send is kept too, as the
//! service time.
//!
//! Promises:
//! - Only requests that start (closed) or come due (open) inside the measured window are
//!   recorded; those in flight at its end are waited for (each is bounded by
//!   [`REQUEST_TIMEOUT`](crate::bench::target::REQUEST_TIMEOUT)).
//! - Connection *k* draws its requests from a random stream seeded by `--seed` and *k*; which
//!   connection takes which due request in open loop depends on timing.
//! - Every task and thread it starts has ended when it returns.

// The load generator is shell: it reads the clock, spawns workers and a pacer (clippy.toml).
#![allow(clippy::disallowed_methods)]

use crate::bench::options::{BenchError, BenchOptions};
use crate::bench::progress::Progress;
use crate::bench::report::{Latencies, LatencySummary, Report};
use crate::bench::target::{Connection, OpError, Outcome, Target};
use crate::bench::workload::{KeyDistribution, OpKind, OpMix, Workload};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// The shortest sleep of the open loop's pacer: at high rates it wakes at most this often and
/// releases every request that came due meanwhile.
const PACER_MIN_SLEEP: Duration = Duration::from_micros(50);

/// Runs the bench the options describe and prints its report (table or JSON) on stdout.
pub async fn run_and_print(options: BenchOptions) -> Result<Report, BenchError> {
    let report = run(&options).await?;
    let text = if options.json {
        report.to_json()?
    } else {
        report.to_table()
    };
    println!("{}", text.trim_end());
    Ok(report)
}

/// Runs the bench the options describe.
pub async fn run(options: &BenchOptions) -> Result<Report, BenchError> {
    options.validate()?;
    let workload = Arc::new(Workload {
        keys: KeyDistribution::new(options.keys, options.zipf),
        mix: OpMix::new(options.reads),
        prefix: options.key_prefix.clone(),
    });
    let value: Arc<[u8]> = (0..options.value_size)
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    let target = Target::from_options(options).await?;
    let mut connections = Vec::with_capacity(options.connections);
    for _ in 0..options.connections {
        let conn = target
            .connect()
            .await
            .map_err(|e| unreachable(options, &e))?;
        connections.push(conn);
    }
    // One request first: a target that cannot answer at all is an error, not a report.
    let mut probe = vec![];
    workload.key_name(0, &mut probe);
    if let Err(e) = connections[0].execute(OpKind::Read, &probe, &value).await {
        return Err(unreachable(options, &e));
    }
    if options.preload {
        connections = preload(connections, &workload, &value).await?;
    }

    let start = Instant::now();
    let warmup = Duration::from_secs_f64(options.warmup);
    let clock = Arc::new(Clock {
        start,
        measure_from: start + warmup,
        end: start + warmup + Duration::from_secs_f64(options.duration),
        completed: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    let open = options.rate.map(|rate| {
        Arc::new(OpenLoop {
            rate,
            due: Semaphore::new(0),
            next: AtomicU64::new(0),
        })
    });
    let progress = match options.quiet {
        true => None,
        false => Progress::start(clock.clone()),
    };
    let pacer = open.clone().map(|open| {
        let clock = clock.clone();
        std::thread::spawn(move || open.pace(&clock))
    });

    let mut workers = tokio::task::JoinSet::new();
    for (k, conn) in connections.into_iter().enumerate() {
        let worker = Worker {
            conn,
            workload: workload.clone(),
            value: value.clone(),
            clock: clock.clone(),
            open: open.clone(),
            rng: StdRng::seed_from_u64(
                options.seed ^ (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            ),
            stats: Stats::new(open.is_some()),
        };
        workers.spawn(worker.run());
    }
    let mut total = Stats::new(open.is_some());
    while let Some(stats) = workers.join_next().await {
        total.merge(stats.map_err(|e| BenchError::Output(format!("a worker failed: {e}")))?);
    }
    let released = match pacer {
        Some(pacer) => pacer
            .join()
            .map_err(|_| BenchError::Output("the pacer failed".into()))?,
        None => 0,
    };
    if let Some(progress) = progress {
        progress.finish().await;
    }
    let unsent = match &open {
        Some(open) => {
            // Requests due in the window that no connection took before the end.
            let first_measured = (warmup.as_secs_f64() * open.rate).ceil() as u64;
            let taken = open.next.load(Ordering::SeqCst);
            released.saturating_sub(taken.max(first_measured))
        }
        None => 0,
    };
    Ok(total.report(options, &workload, unsent))
}

fn unreachable(options: &BenchOptions, e: &OpError) -> BenchError {
    BenchError::Unreachable {
        url: options.url(),
        reason: e.kind.clone(),
    }
}

/// Writes every key once, spread over the connections.
async fn preload(
    connections: Vec<Connection>,
    workload: &Arc<Workload>,
    value: &Arc<[u8]>,
) -> Result<Vec<Connection>, BenchError> {
    let n = connections.len() as u64;
    let keys = match &workload.keys {
        KeyDistribution::Uniform { keys } => *keys,
        KeyDistribution::Zipfian(z) => z.items(),
    };
    let mut tasks = tokio::task::JoinSet::new();
    for (k, mut conn) in connections.into_iter().enumerate() {
        let workload = workload.clone();
        let value = value.clone();
        tasks.spawn(async move {
            let mut name = Vec::new();
            for key in (k as u64..keys).step_by(n as usize) {
                workload.key_name(key, &mut name);
                if let Err(e) = conn.execute(OpKind::Write, &name, &value).await {
                    return Err(BenchError::Preload(e.kind));
                }
            }
            Ok(conn)
        });
    }
    let mut out = Vec::new();
    while let Some(done) = tasks.join_next().await {
        out.push(done.map_err(|e| BenchError::Preload(e.to_string()))??);
    }
    Ok(out)
}

/// The run's timeline and live counters (for the progress bar).
pub(crate) struct Clock {
    pub start: Instant,
    pub measure_from: Instant,
    pub end: Instant,
    pub completed: AtomicU64,
    pub failed: AtomicU64,
}

/// The open loop's schedule: request `i` is due at `start + i/rate`.
struct OpenLoop {
    rate: f64,
    /// One permit per request that came due and was not yet taken; closed at the end.
    due: Semaphore,
    /// The index of the next request a connection takes.
    next: AtomicU64,
}

impl OpenLoop {
    fn due_at(&self, clock: &Clock, i: u64) -> Instant {
        clock.start + Duration::from_secs_f64(i as f64 / self.rate)
    }

    /// Releases requests as they come due until the end; returns how many it released.
    fn pace(&self, clock: &Clock) -> u64 {
        // Linux lets a sleep overrun by the thread's timer slack, 50 µs unless set: every
        // request would come due that much late. Ask for 1 ns (a failure only costs precision).
        // SAFETY: PR_SET_TIMERSLACK takes one integer and touches only this thread's settings.
        #[cfg(target_os = "linux")]
        unsafe {
            libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
        }
        let mut released = 0u64;
        loop {
            let now = Instant::now();
            if now >= clock.end {
                self.due.close();
                return released;
            }
            // Requests 0..=floor(elapsed·rate) are due by now.
            let due = ((now - clock.start).as_secs_f64() * self.rate) as u64 + 1;
            if due > released {
                self.due.add_permits((due - released) as usize);
                released = due;
            }
            let next = self.due_at(clock, released).min(clock.end);
            let sleep = next.saturating_duration_since(Instant::now());
            std::thread::sleep(sleep.max(PACER_MIN_SLEEP));
        }
    }
}

/// One connection's loop.
struct Worker {
    conn: Connection,
    workload: Arc<Workload>,
    value: Arc<[u8]>,
    clock: Arc<Clock>,
    open: Option<Arc<OpenLoop>>,
    rng: StdRng,
    stats: Stats,
}

impl Worker {
    async fn run(mut self) -> Stats {
        let mut name = Vec::with_capacity(32);
        loop {
            // When the request counts from: its due time (open loop) or now (closed loop).
            let due = match &self.open {
                Some(open) => match open.due.acquire().await {
                    Ok(permit) => {
                        permit.forget();
                        let i = open.next.fetch_add(1, Ordering::SeqCst);
                        open.due_at(&self.clock, i)
                    }
                    Err(_) => break, // closed: the window is over
                },
                None => {
                    let now = Instant::now();
                    if now >= self.clock.end {
                        break;
                    }
                    now
                }
            };
            let op = self.workload.next_op(&mut self.rng);
            self.workload.key_name(op.key, &mut name);
            let sent = Instant::now();
            let result = self.conn.execute(op.kind, &name, &self.value).await;
            let done = Instant::now();
            let measured = due >= self.clock.measure_from;
            match result {
                Ok(outcome) => {
                    self.clock.completed.fetch_add(1, Ordering::Relaxed);
                    if measured {
                        self.stats.record(op.kind, outcome, done - due, done - sent);
                    }
                }
                Err(e) => {
                    self.clock.failed.fetch_add(1, Ordering::Relaxed);
                    if e.is_connect() {
                        // Nothing listens: do not spin on refused connections.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    if measured {
                        *self.stats.errors.entry(e.kind).or_default() += 1;
                    }
                }
            }
        }
        self.stats
    }
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 1 hour, three significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// What one worker (or all of them, merged) measured, in microseconds.
struct Stats {
    read: Histogram<u64>,
    write: Histogram<u64>,
    /// Open loop: from the actual send.
    service: Option<(Histogram<u64>, Histogram<u64>)>,
    misses: u64,
    errors: BTreeMap<String, u64>,
}

impl Stats {
    fn new(open: bool) -> Stats {
        Stats {
            read: histogram(),
            write: histogram(),
            service: open.then(|| (histogram(), histogram())),
            misses: 0,
            errors: BTreeMap::new(),
        }
    }

    fn record(&mut self, kind: OpKind, outcome: Outcome, latency: Duration, service: Duration) {
        let us = |d: Duration| (d.as_micros() as u64).max(1);
        if outcome == Outcome::Miss {
            self.misses += 1;
        }
        let (h, s) = match kind {
            OpKind::Read => (&mut self.read, self.service.as_mut().map(|s| &mut s.0)),
            OpKind::Write => (&mut self.write, self.service.as_mut().map(|s| &mut s.1)),
        };
        h.saturating_record(us(latency));
        if let Some(s) = s {
            s.saturating_record(us(service));
        }
    }

    fn merge(&mut self, other: Stats) {
        self.read.add(&other.read).expect("same bounds");
        self.write.add(&other.write).expect("same bounds");
        if let (Some(mine), Some(theirs)) = (&mut self.service, &other.service) {
            mine.0.add(&theirs.0).expect("same bounds");
            mine.1.add(&theirs.1).expect("same bounds");
        }
        self.misses += other.misses;
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
    }

    fn report(&self, options: &BenchOptions, workload: &Workload, unsent: u64) -> Report {
        let latencies = |read: &Histogram<u64>, write: &Histogram<u64>| {
            let mut all = read.clone();
            all.add(write).expect("same bounds");
            Latencies {
                all: LatencySummary::from_micros(&all),
                read: LatencySummary::from_micros(read),
                write: LatencySummary::from_micros(write),
            }
        };
        let latency_ms = latencies(&self.read, &self.write);
        let ops = latency_ms.all.count;
        Report {
            target: Report::target_name(options.target).into(),
            url: options.url(),
            mode: if options.rate.is_some() {
                "open"
            } else {
                "closed"
            }
            .into(),
            connections: options.connections,
            rate: options.rate,
            warmup_secs: options.warmup,
            duration_secs: options.duration,
            keys: options.keys,
            distribution: workload.keys.describe(),
            reads: options.reads,
            value_size: options.value_size,
            r: options.r.clone(),
            w: options.w.clone(),
            wait: options.wait,
            seed: options.seed,
            ops,
            // One decimal: enough, and it reads back exactly from JSON.
            ops_per_sec: (ops as f64 / options.duration * 10.0).round() / 10.0,
            misses: self.misses,
            errors: self.errors.clone(),
            unsent,
            latency_ms,
            service_ms: self.service.as_ref().map(|(r, w)| latencies(r, w)),
        }
    }
}
