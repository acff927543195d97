//! Admission for the daemon's HTTP server: at most [`Gate::capacity`] connections, and a new
//! connection is never the one turned away. When the table is full, an idle connection (no
//! request being answered) is closed to make room: the oldest one of the client address that
//! holds the most. A flood of idle, slow (one header byte a second) or kept-alive connections
//! therefore displaces itself, while a scrape, which sends its request at once and is answered
//! from a ready-made body, gets through; a remote flooder cannot displace the Prometheus
//! server's connection while it holds more connections itself.
//!
//! Owns: the connection table and the choice of which connection makes room.
//! Must not: do I/O (the server closes a displaced connection when told).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Instant,
};

use tokio::sync::oneshot;

pub struct Gate {
    capacity: usize,
    table: Mutex<Table>,
    displaced: AtomicU64,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    conns: HashMap<u64, Entry>,
}

struct Entry {
    addr: IpAddr,
    since: Instant,
    busy: Arc<AtomicBool>,
    close: oneshot::Sender<()>,
}

/// One admitted connection. Dropping it leaves the table.
pub struct Admitted {
    gate: Arc<Gate>,
    id: u64,
    /// Set while a request is being answered: such a connection is not displaced.
    pub busy: Arc<AtomicBool>,
    /// Fires when the connection must close to make room.
    pub displaced: oneshot::Receiver<()>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.gate.lock().conns.remove(&self.id);
    }
}

impl Gate {
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            capacity: capacity.max(1),
            table: Mutex::new(Table::default()),
            displaced: AtomicU64::new(0),
        })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Connections displaced since start.
    pub fn displaced(&self) -> u64 {
        self.displaced.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic while holding the lock cannot leave the table inconsistent (every
        // operation is one insert or remove): keep using it.
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Admits a connection from `addr`, displacing one if the table is full. Returns `None`
    /// only when the table is full of connections that are all being answered.
    pub fn admit(self: &Arc<Self>, addr: IpAddr, now: Instant) -> Option<Admitted> {
        let mut table = self.lock();
        if table.conns.len() >= self.capacity {
            let victim = victim(&table.conns)?;
            if let Some(entry) = table.conns.remove(&victim) {
                // The connection may be ending on its own: nothing to tell then.
                let _ = entry.close.send(());
                self.displaced.fetch_add(1, Ordering::Relaxed);
            }
        }
        let id = table.next_id;
        table.next_id += 1;
        let busy = Arc::new(AtomicBool::new(false));
        let (close, displaced) = oneshot::channel();
        table.conns.insert(
            id,
            Entry {
                addr,
                since: now,
                busy: busy.clone(),
                close,
            },
        );
        Some(Admitted {
            gate: self.clone(),
            id,
            busy,
            displaced,
        })
    }
}

/// The idle connection to close: of the address with the most connections (idle or not),
/// the oldest idle one.
fn victim(conns: &HashMap<u64, Entry>) -> Option<u64> {
    let mut per_addr: HashMap<IpAddr, usize> = HashMap::new();
    for e in conns.values() {
        *per_addr.entry(e.addr).or_default() += 1;
    }
    conns
        .iter()
        .filter(|(_, e)| !e.busy.load(Ordering::Relaxed))
        .max_by_key(|(id, e)| {
            (
                per_addr.get(&e.addr).copied().unwrap_or(0),
                std::cmp::Reverse(e.since),
                std::cmp::Reverse(**id),
            )
        })
        .map(|(id, _)| *id)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_full_table_displaces_the_oldest_idle_connection_of_the_busiest_address() {
        let gate = Gate::new(4);
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut scraper = gate.admit(ip("10.0.0.1"), at(0)).unwrap();
        let mut flood: Vec<Admitted> = (1..=3)
            .map(|i| gate.admit(ip("10.0.0.66"), at(i)).unwrap())
            .collect();
        // Full: the next one displaces the flooder's oldest, not the older scraper.
        let _new = gate.admit(ip("10.0.0.66"), at(10)).unwrap();
        assert!(flood[0].displaced.try_recv().is_ok());
        assert!(flood[1].displaced.try_recv().is_err());
        assert!(scraper.displaced.try_recv().is_err());
        assert_eq!(gate.displaced(), 1);
        drop(flood.remove(0));
        // A connection being answered is never displaced.
        flood[0].busy.store(true, Ordering::Relaxed);
        let _another = gate.admit(ip("10.0.0.66"), at(11)).unwrap();
        assert!(flood[0].displaced.try_recv().is_err());
        assert!(flood[1].displaced.try_recv().is_ok());
        assert_eq!(gate.displaced(), 2);
    }

    #[test]
    fn on_one_address_the_oldest_idle_goes_first_and_leaving_frees_a_place() {
        let gate = Gate::new(2);
        let t0 = Instant::now();
        let mut a = gate.admit(ip("127.0.0.1"), t0).unwrap();
        let b = gate
            .admit(ip("127.0.0.1"), t0 + Duration::from_millis(1))
            .unwrap();
        drop(b);
        // b left: no one is displaced.
        let mut c = gate
            .admit(ip("127.0.0.1"), t0 + Duration::from_millis(2))
            .unwrap();
        assert!(a.displaced.try_recv().is_err());
        let _d = gate
            .admit(ip("127.0.0.1"), t0 + Duration::from_millis(3))
            .unwrap();
        assert!(a.displaced.try_recv().is_ok());
        assert!(c.displaced.try_recv().is_err());
    }

    #[test]
    fn a_table_of_busy_connections_turns_the_newcomer_away() {
        let gate = Gate::new(1);
        let a = gate.admit(ip("127.0.0.1"), Instant::now()).unwrap();
        a.busy.store(true, Ordering::Relaxed);
        assert!(gate.admit(ip("127.0.0.1"), Instant::now()).is_none());
        drop(a);
        assert!(gate.admit(ip("127.0.0.1"), Instant::now()).is_some());
    }
}
