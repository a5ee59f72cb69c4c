//! `max_connections_per_ip`: live connections counted per client address on a bound socket.
//! A connection takes a slot when it is accepted (after its PROXY header, if any: the address
//! counted is the client's, not the load balancer's) and gives it back when it ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// Live connections by client address; an address leaves the table with its last connection,
/// so the table is as large as the set of clients connected now.
#[derive(Default)]
pub struct PerIp {
    live: Mutex<HashMap<IpAddr, u32>>,
}

/// A connection's slot, given back on drop.
pub struct PerIpSlot {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    /// A slot for a connection from `ip`, or None when `ip` has `max` live already.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<PerIpSlot> {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let n = live.entry(ip).or_insert(0);
        if *n as usize >= max {
            return None;
        }
        *n += 1;
        Some(PerIpSlot {
            table: self.clone(),
            ip,
        })
    }

    /// Live connections from `ip`.
    #[cfg(test)]
    fn live(&self, ip: IpAddr) -> usize {
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.get(&ip).map_or(0, |n| *n as usize)
    }

    /// Addresses with a live connection.
    #[cfg(test)]
    fn addresses(&self) -> usize {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for PerIpSlot {
    fn drop(&mut self) {
        let mut live = (self.table.live.lock()).unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = live.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                live.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_address_and_given_back() {
        let t = Arc::new(PerIp::default());
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let s1 = t.acquire(a, 2).unwrap();
        let _s2 = t.acquire(a, 2).unwrap();
        assert!(t.acquire(a, 2).is_none());
        // A refused address leaves no slot taken.
        assert_eq!(t.live(a), 2);
        let _s3 = t.acquire(b, 2).unwrap();
        drop(s1);
        assert_eq!(t.live(a), 1);
        let s4 = t.acquire(a, 2).unwrap();
        drop(s4);
        drop(_s2);
        assert_eq!(t.live(a), 0);
        assert_eq!(
            t.addresses(),
            1,
            "an address leaves with its last connection"
        );
    }
}
