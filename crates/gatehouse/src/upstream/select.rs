//! Balancing algorithms: smooth weighted round robin (process-wide, lock-free), weighted least
//! connections, power of two choices, and Maglev consistent hashing. Backups are served only when no
//! primary is available, in simple rotation.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use gatehouse_config::model::{self, Balance};

use super::{PickInput, ServerState};

/// Maglev lookup table size: a prime well above 100 × the number of servers we expect.
const MAGLEV_SIZE: usize = 65_537;

#[derive(Debug)]
pub(crate) struct Selector {
    balance: Balance,
    primaries: Vec<usize>,
    backups: Vec<usize>,
    weights: Vec<u32>,
    /// Smooth weighted round robin order over primaries, one period long (sum of weights).
    sequence: Vec<usize>,
    counter: AtomicUsize,
    /// Maglev table: entries are indexes into `servers`.
    maglev: Vec<u32>,
}

impl Selector {
    pub(crate) fn new(up: &model::Upstream) -> Selector {
        let primaries: Vec<usize> = (0..up.servers.len())
            .filter(|i| !up.servers[*i].backup)
            .collect();
        let backups: Vec<usize> = (0..up.servers.len())
            .filter(|i| up.servers[*i].backup)
            .collect();
        let weights: Vec<u32> = up.servers.iter().map(|s| s.weight).collect();
        let sequence = smooth_wrr_sequence(&primaries, &weights);
        let maglev = if up.balance == Balance::Hash {
            maglev_table(
                &primaries
                    .iter()
                    .map(|i| (*i, up.servers[*i].address.as_str()))
                    .collect::<Vec<_>>(),
            )
        } else {
            Vec::new()
        };
        Selector {
            balance: up.balance,
            primaries,
            backups,
            weights,
            sequence,
            counter: AtomicUsize::new(0),
            maglev,
        }
    }

    pub(crate) fn pick(
        &self,
        servers: &[Arc<ServerState>],
        input: &PickInput<'_>,
    ) -> Option<usize> {
        let ok = |i: usize| servers[i].is_available() && !input.exclude.contains(&i);
        let primary = match self.balance {
            Balance::RoundRobin => self.round_robin(&ok),
            Balance::LeastConn => self.least_conn(servers, &ok),
            Balance::RandomTwo => self.random_two(servers, &ok),
            Balance::Hash => match input.hash {
                Some(h) => self.hash(h, &ok),
                None => self.round_robin(&ok),
            },
        };
        primary.or_else(|| {
            if self.backups.is_empty() {
                return None;
            }
            let start = self.counter.fetch_add(1, Ordering::Relaxed);
            (0..self.backups.len())
                .map(|k| self.backups[(start + k) % self.backups.len()])
                .find(|i| ok(*i))
        })
    }

    fn round_robin(&self, ok: &impl Fn(usize) -> bool) -> Option<usize> {
        let n = self.sequence.len();
        if n == 0 {
            return None;
        }
        let start = self.counter.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|k| self.sequence[(start + k) % n])
            .find(|i| ok(*i))
    }

    fn least_conn(
        &self,
        servers: &[Arc<ServerState>],
        ok: &impl Fn(usize) -> bool,
    ) -> Option<usize> {
        // Rotate the starting point so that ties spread instead of always hitting the first server.
        let n = self.primaries.len();
        let start = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut best: Option<(usize, u64, u64)> = None;
        for k in 0..n {
            let i = self.primaries[(start + k) % n];
            if !ok(i) {
                continue;
            }
            let active = servers[i].active.load(Ordering::Relaxed) as u64;
            let w = u64::from(self.weights[i]);
            // Compare active/weight without division: a/wa < b/wb  <=>  a*wb < b*wa.
            match best {
                Some((_, ba, bw)) if active * bw >= ba * w => {}
                _ => best = Some((i, active, w)),
            }
        }
        best.map(|b| b.0)
    }

    fn random_two(
        &self,
        servers: &[Arc<ServerState>],
        ok: &impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let avail: Vec<usize> = self.primaries.iter().copied().filter(|i| ok(*i)).collect();
        match avail.len() {
            0 => None,
            1 => Some(avail[0]),
            n => {
                let a = fastrand::usize(..n);
                let mut b = fastrand::usize(..n - 1);
                if b >= a {
                    b += 1;
                }
                let (a, b) = (avail[a], avail[b]);
                let load = |i: usize| {
                    servers[i].active.load(Ordering::Relaxed) as u64 * 1000
                        / u64::from(self.weights[i])
                };
                Some(if load(b) < load(a) { b } else { a })
            }
        }
    }

    fn hash(&self, h: u64, ok: &impl Fn(usize) -> bool) -> Option<usize> {
        if self.maglev.is_empty() {
            return None;
        }
        // The owner of the key first; when it is unavailable, walk the table from there, which
        // spreads its keys over the remaining servers like Maglev's own rebuild would.
        let start = (fmix64(h) % MAGLEV_SIZE as u64) as usize;
        for k in 0..MAGLEV_SIZE.min(4096) {
            let i = self.maglev[(start + k * 7919) % MAGLEV_SIZE] as usize;
            if ok(i) {
                return Some(i);
            }
        }
        self.primaries.iter().copied().find(|i| ok(*i))
    }
}

/// nginx's smooth weighted round robin, unrolled over one period: weights {a:5, b:1, c:1} give
/// a a b a c a a, never a burst of one server when the weights allow spreading.
fn smooth_wrr_sequence(primaries: &[usize], weights: &[u32]) -> Vec<usize> {
    let total: i64 = primaries.iter().map(|i| i64::from(weights[*i])).sum();
    let mut current: Vec<i64> = vec![0; primaries.len()];
    let mut seq = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (k, i) in primaries.iter().enumerate() {
            current[k] += i64::from(weights[*i]);
            if current[k] > current[best] {
                best = k;
            }
        }
        current[best] -= total;
        seq.push(primaries[best]);
    }
    seq
}

/// Maglev (Eisenbud et al., NSDI 2016) lookup table: each server fills slots in its own
/// permutation order until the table is full; removing one of N servers moves about 1/N of keys.
fn maglev_table(servers: &[(usize, &str)]) -> Vec<u32> {
    if servers.is_empty() {
        return Vec::new();
    }
    let m = MAGLEV_SIZE as u64;
    let perms: Vec<(u64, u64)> = servers
        .iter()
        .map(|(_, name)| {
            let offset = super::fnv1a(name.as_bytes()) % m;
            let skip = super::fnv1a(format!("skip:{name}").as_bytes()) % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; servers.len()];
    let mut table = vec![u32::MAX; MAGLEV_SIZE];
    let mut filled = 0;
    'outer: loop {
        for (k, (offset, skip)) in perms.iter().enumerate() {
            let mut c = (offset + next[k] * skip) % m;
            while table[c as usize] != u32::MAX {
                next[k] += 1;
                c = (offset + next[k] * skip) % m;
            }
            table[c as usize] = servers[k].0 as u32;
            next[k] += 1;
            filled += 1;
            if filled == MAGLEV_SIZE {
                break 'outer;
            }
        }
    }
    table
}

/// MurmurHash3's 64-bit finalizer. Keys are FNV-1a hashes, whose values for similar inputs
/// ("user-1", "user-2", ...) are correlated; taken modulo the table size directly they
/// clustered on some servers (CI once saw 18 of 200 keys where 50 were due). Mixed first, every
/// input bit moves about half the output bits.
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooth_wrr_spreads() {
        let seq = smooth_wrr_sequence(&[0, 1, 2], &[5, 1, 1]);
        assert_eq!(seq, vec![0, 0, 1, 0, 2, 0, 0]);
        let seq = smooth_wrr_sequence(&[0, 1, 2], &[1, 1, 1]);
        assert_eq!(seq, vec![0, 1, 2]);
    }

    #[test]
    fn maglev_moves_about_one_nth() {
        let names: Vec<String> = (0..5).map(|i| format!("10.0.0.{i}:80")).collect();
        let all: Vec<(usize, &str)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (i, n.as_str()))
            .collect();
        let t5 = maglev_table(&all);
        let t4 = maglev_table(&all[..4]);
        let moved = t5
            .iter()
            .zip(&t4)
            .filter(|(a, b)| **a != 4 && a != b)
            .count();
        // Only slots owned by the removed server should move, plus a little churn.
        assert!(moved < MAGLEV_SIZE / 20, "moved {moved}");
        for s in 0..5u32 {
            let share = t5.iter().filter(|x| **x == s).count();
            assert!((12_000..14_300).contains(&share), "server {s} has {share}");
        }
    }
}
