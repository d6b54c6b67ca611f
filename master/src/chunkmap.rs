//! Chunkservers and where chunks live: the in-memory, non-persistent half of the master.
//!
//! Replica locations are learned from chunk reports (and from the chain a client
//! committed), never stored: after a restart the master relearns them from
//! registrations. Every chunk some server holds has a record (`records.rs`) with its
//! holders and the version each reported; `servers[*].chunks` is the inverse, each
//! server's chunks by record number, kept in step by the methods here and nowhere
//! else. Records name servers by a slot number each gets at its first registration
//! and keeps until it is forgotten: four bytes rather than sixteen, which lets a
//! chunk's holders fit inline (`holders.rs`).

mod holders;
mod number_set;
mod records;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use dfs_protocol::{ChunkHandle, ChunkReport, ChunkVersion, ErrorCode, ServerId, ServerStatus};
use rand::seq::SliceRandom;

use number_set::NumberSet;
use records::Records;

/// Chunk creations within this window count as recent for placement.
const RECENT_WINDOW: Duration = Duration::from_secs(10);
/// Changed chunks remembered one by one for upkeep; past this many, only that there
/// were too many (then upkeep looks at every chunk), so memory stays bounded when a
/// server holding millions of chunks registers or dies. A million (some 40 MB at
/// most) keeps a few registrations of large servers in one round to the chunks they
/// hold: at 100,000, each registration of a server with 100,000 chunks made the next
/// round review all of them, and at 10 million chunks registrations queued behind
/// those reviews.
const MAX_CHANGED: usize = 1 << 20;

/// Chunks whose replicas changed since upkeep last asked ([`ChunkMap::take_changes`]).
#[derive(Debug, Default)]
pub struct Changes {
    pub handles: HashSet<ChunkHandle>,
    /// Servers every chunk of which changed: they registered, died or came back.
    /// Named rather than listed chunk by chunk, so that a server of 100,000 chunks
    /// costs one entry here (upkeep reads its chunks from the map).
    pub servers: HashSet<ServerId>,
    /// Too many changed to list: every chunk must be looked at.
    pub all: bool,
}

#[derive(Debug)]
struct ServerEntry {
    addr: String,
    capacity: u64,
    used: u64,
    load: u32,
    last_seen: Instant,
    /// What it holds, by record number (the version is in the record).
    chunks: NumberSet,
    /// When chunks were recently placed here.
    recent: VecDeque<Instant>,
    /// Whether the server was alive when upkeep last asked for changes: a server that
    /// died or came back since changed every chunk it holds.
    seen_alive: bool,
    /// Its number in `locations`.
    slot: u32,
}

impl ServerEntry {
    fn used_fraction(&self) -> f64 {
        self.used as f64 / self.capacity.max(1) as f64
    }

    fn recent_creations(&mut self, now: Instant) -> usize {
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > RECENT_WINDOW)
        {
            self.recent.pop_front();
        }
        self.recent.len()
    }
}

#[derive(Debug)]
pub struct ChunkMap {
    dead_after: Duration,
    servers: HashMap<ServerId, ServerEntry>,
    records: Records,
    /// The server in each slot; `None` for a free one.
    slots: Vec<Option<ServerId>>,
    free_slots: Vec<u32>,
    changed: Changes,
}

impl ChunkMap {
    pub fn new(dead_after: Duration) -> ChunkMap {
        ChunkMap {
            dead_after,
            servers: HashMap::new(),
            records: Records::default(),
            slots: Vec::new(),
            free_slots: Vec::new(),
            changed: Changes::default(),
        }
    }

    /// A slot for a server registering for the first time.
    fn take_slot(&mut self, server: ServerId) -> u32 {
        if let Some(slot) = self.free_slots.pop() {
            if let Some(cell) = self.slots.get_mut(slot as usize) {
                *cell = Some(server);
                return slot;
            }
        }
        // Four billion registrations between forgettings are not a real case; the
        // saturation keeps the arithmetic honest all the same.
        let slot = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
        self.slots.push(Some(server));
        slot
    }

    /// The servers holding `handle`, with the version each reported.
    fn holder_versions_of<'a>(
        &'a self,
        handle: &ChunkHandle,
    ) -> impl Iterator<Item = (ServerId, ChunkVersion)> + 'a {
        self.records
            .by_handle(handle)
            .into_iter()
            .flat_map(|r| r.holders.iter())
            .filter_map(|(slot, v)| Some((self.slots.get(slot as usize).copied().flatten()?, v)))
    }

    /// The live servers holding `handle` at exactly `version`.
    fn live_at<'a>(
        &'a self,
        handle: &ChunkHandle,
        version: ChunkVersion,
        now: Instant,
    ) -> impl Iterator<Item = (ServerId, &'a ServerEntry)> + 'a {
        self.holder_versions_of(handle)
            .filter(move |(_, v)| *v == version)
            .filter_map(move |(id, _)| {
                let e = self.servers.get(&id)?;
                self.alive(e, now).then_some((id, e))
            })
    }

    /// Drops `slot` from chunk `n`'s holders, and the record once it has none.
    fn unlocate(&mut self, n: u32, slot: u32) {
        if let Some(holders) = self.records.holders_mut(n) {
            holders.remove(slot);
        }
        self.records.release_if_unheld(n);
    }

    /// The handle of chunk `n`.
    fn handle_of(&self, n: u32) -> Option<ChunkHandle> {
        self.records.get(n).map(|r| r.handle)
    }

    /// Notes that `handle`'s replicas changed.
    fn touch(&mut self, handle: ChunkHandle) {
        let c = &mut self.changed;
        if c.all {
            return;
        }
        if c.handles.len() >= MAX_CHANGED {
            c.all = true;
            c.handles = HashSet::new();
        } else {
            c.handles.insert(handle);
        }
    }

    /// Every chunk whose replicas changed since the last call: reported added or
    /// removed, or on a server that died or came back since (judged at `now`).
    pub fn take_changes(&mut self, now: Instant) -> Changes {
        let dead_after = self.dead_after;
        for (id, e) in self.servers.iter_mut() {
            let alive = now.saturating_duration_since(e.last_seen) < dead_after;
            if alive != e.seen_alive {
                e.seen_alive = alive;
                self.changed.servers.insert(*id);
            }
        }
        std::mem::take(&mut self.changed)
    }

    fn alive(&self, entry: &ServerEntry, now: Instant) -> bool {
        now.saturating_duration_since(entry.last_seen) < self.dead_after
    }

    fn add_location(&mut self, server: ServerId, report: ChunkReport) {
        let handle = report.handle;
        if self.add_location_quietly(server, report) {
            self.touch(handle);
        }
    }

    /// Records the replica without noting a change; whether the server is known.
    fn add_location_quietly(&mut self, server: ServerId, report: ChunkReport) -> bool {
        let Some(entry) = self.servers.get_mut(&server) else {
            return false;
        };
        let Some(n) = self.records.number_or_new(report.handle) else {
            tracing::error!(handle = %report.handle, "chunk map full: replica not recorded");
            return false;
        };
        entry.chunks.insert(n);
        if let Some(holders) = self.records.holders_mut(n) {
            holders.set(entry.slot, report.version);
        }
        true
    }

    fn remove_location(&mut self, server: ServerId, handle: ChunkHandle) {
        if let (Some(entry), Some(n)) =
            (self.servers.get_mut(&server), self.records.number(&handle))
        {
            if entry.chunks.remove(n) {
                let slot = entry.slot;
                self.unlocate(n, slot);
            }
        }
        self.touch(handle);
    }

    /// A (re)registration: replaces everything known about `server` with this report.
    pub fn register(
        &mut self,
        server: ServerId,
        addr: String,
        capacity: u64,
        used: u64,
        chunks: Vec<ChunkReport>,
        now: Instant,
    ) {
        let old = self.servers.remove(&server);
        // By handle: unlocating may free a number, which the new report may reuse.
        let mut old_handles = Vec::new();
        let slot = match &old {
            Some(old) => {
                old_handles.reserve(old.chunks.len());
                for n in old.chunks.iter() {
                    if let Some(h) = self.handle_of(n) {
                        old_handles.push(h);
                    }
                    self.unlocate(n, old.slot);
                }
                old.slot
            }
            None => self.take_slot(server),
        };
        self.servers.insert(
            server,
            ServerEntry {
                addr,
                capacity,
                used,
                load: 0,
                last_seen: now,
                chunks: NumberSet::default(),
                recent: VecDeque::new(),
                seen_alive: true,
                slot,
            },
        );
        for report in chunks {
            self.add_location_quietly(server, report);
        }
        // Every chunk it reports now changed, and it is named as a whole; of those it
        // held before, only the ones it no longer reports are noted one by one.
        self.changed.servers.insert(server);
        for h in old_handles {
            if !self.holds(&server, &h) {
                self.touch(h);
            }
        }
    }

    /// A heartbeat; `false` when the server is unknown and must register first.
    #[allow(clippy::too_many_arguments)]
    pub fn heartbeat(
        &mut self,
        server: ServerId,
        capacity: u64,
        used: u64,
        load: u32,
        added: Vec<ChunkReport>,
        removed: Vec<ChunkHandle>,
        now: Instant,
    ) -> bool {
        let Some(entry) = self.servers.get_mut(&server) else {
            return false;
        };
        entry.capacity = capacity;
        entry.used = used;
        entry.load = load;
        entry.last_seen = now;
        for report in added {
            self.add_location(server, report);
        }
        for handle in removed {
            self.remove_location(server, handle);
        }
        true
    }

    /// Records that every server of `chain` holds `handle` at `version` (a committed write).
    pub fn record_chain(&mut self, handle: ChunkHandle, version: ChunkVersion, chain: &[ServerId]) {
        for &server in chain {
            self.add_location(
                server,
                ChunkReport {
                    handle,
                    version,
                    size: 0,
                },
            );
        }
    }

    /// Whether a live server holds `handle` at exactly `version`.
    pub fn has_replica(&self, handle: &ChunkHandle, version: ChunkVersion, now: Instant) -> bool {
        self.live_at(handle, version, now).next().is_some()
    }

    /// The live servers holding `handle` at `version`, without allocating.
    pub fn live_holders<'a>(
        &'a self,
        handle: &'a ChunkHandle,
        version: ChunkVersion,
        now: Instant,
    ) -> impl Iterator<Item = ServerId> + 'a {
        self.live_at(handle, version, now).map(|(id, _)| id)
    }

    /// Whether `server` reported holding `handle` (at any version).
    pub fn holds(&self, server: &ServerId, handle: &ChunkHandle) -> bool {
        self.records.number(handle).is_some_and(|n| {
            self.servers
                .get(server)
                .is_some_and(|e| e.chunks.contains(n))
        })
    }

    /// Every server that reported holding `handle`, at the version it reported.
    pub fn holders(&self, handle: &ChunkHandle) -> Vec<(ServerId, ChunkVersion)> {
        self.holder_versions(handle).collect()
    }

    /// [`Self::holders`] without allocating.
    pub fn holder_versions<'a>(
        &'a self,
        handle: &'a ChunkHandle,
    ) -> impl Iterator<Item = (ServerId, ChunkVersion)> + 'a {
        self.holder_versions_of(handle)
    }

    /// Whether `server` has registered (since this master started).
    pub fn is_registered(&self, server: &ServerId) -> bool {
        self.servers.contains_key(server)
    }

    /// Estimated bytes per structure (see [`crate::footprint`]); time in proportion
    /// to servers, not chunks.
    pub fn footprint(&self) -> Vec<crate::footprint::Part> {
        use crate::footprint::Part;
        let per_server: u64 = self.servers.values().map(|e| e.chunks.footprint()).sum();
        // Holders inline in the records; a chunk with more than three, or with
        // holders at different versions, spills to the heap, which is rare and not
        // counted (counting would cost a pass).
        vec![
            Part {
                structure: "replica_locations",
                bytes: self.records.footprint()
                    + crate::footprint::vec_heap::<Option<ServerId>>(self.slots.capacity()),
            },
            Part {
                structure: "replicas_per_server",
                bytes: per_server,
            },
        ]
    }

    /// How long a silent server counts as alive.
    pub fn dead_after(&self) -> Duration {
        self.dead_after
    }

    /// Whether `server` is registered and heard from within the dead-after window.
    pub fn is_alive(&self, server: &ServerId, now: Instant) -> bool {
        self.servers.get(server).is_some_and(|e| self.alive(e, now))
    }

    /// The address of a server, if it ever registered.
    pub fn addr(&self, server: &ServerId) -> Option<&str> {
        self.servers.get(server).map(|e| e.addr.as_str())
    }

    /// Whether any server, live or not, reported holding `handle`.
    pub fn is_held(&self, handle: &ChunkHandle) -> bool {
        self.records.number(handle).is_some()
    }

    /// Live servers holding `handle` at exactly `version`, as (id, address).
    pub fn replicas(
        &self,
        handle: &ChunkHandle,
        version: ChunkVersion,
        now: Instant,
    ) -> Vec<(ServerId, String)> {
        let mut out: Vec<(ServerId, String)> = self
            .live_at(handle, version, now)
            .map(|(id, e)| (id, e.addr.clone()))
            .collect();
        out.sort_by(|a, b| a.1.cmp(&b.1));
        out
    }

    pub fn alive_count(&self, now: Instant) -> usize {
        self.servers.values().filter(|e| self.alive(e, now)).count()
    }

    /// A placement counted `counted` bytes on `server` for a chunk that came out
    /// `size` bytes: the rest is given back until the next heartbeat says what the
    /// server holds. Without it, a burst of small files would count a whole chunk
    /// each and run out of room on paper within one heartbeat.
    pub fn settle_estimate(&mut self, server: &ServerId, counted: u64, size: u64) {
        if let Some(e) = self.servers.get_mut(server) {
            e.used = e.used.saturating_sub(counted.saturating_sub(size));
        }
    }

    /// Chooses `n` distinct live servers for a new chunk: emptiest first (by fraction
    /// of capacity used, in whole percent), then fewest chunks created in the last few
    /// seconds (so a burst of new chunks does not pile onto one server), ties at random.
    /// The chosen servers' usage is bumped by `chunk_size` until their next heartbeat
    /// says what they really hold.
    pub fn place(
        &mut self,
        n: u32,
        chunk_size: u64,
        now: Instant,
        exclude: &HashSet<ServerId>,
    ) -> Result<Vec<(ServerId, String)>, ErrorCode> {
        let dead_after = self.dead_after;
        let mut candidates: Vec<(u64, usize, ServerId)> = self
            .servers
            .iter_mut()
            .filter(|(id, e)| {
                now.saturating_duration_since(e.last_seen) < dead_after
                    && e.used < e.capacity
                    && !exclude.contains(id)
            })
            .map(|(id, e)| {
                (
                    (e.used_fraction() * 100.0) as u64,
                    e.recent_creations(now),
                    *id,
                )
            })
            .collect();
        let wanted = usize::try_from(n).unwrap_or(usize::MAX);
        if candidates.len() < wanted {
            let alive = self
                .servers
                .iter()
                .filter(|(id, e)| self.alive(e, now) && !exclude.contains(id))
                .count();
            if alive >= wanted {
                return Err(ErrorCode::NoSpace {
                    needed: chunk_size,
                    available: 0,
                });
            }
            return Err(ErrorCode::NotEnoughServers {
                wanted: n,
                alive: u32::try_from(alive).unwrap_or(u32::MAX),
            });
        }
        candidates.shuffle(&mut rand::rng());
        candidates.sort_by_key(|(pct, recent, _)| (*pct, *recent));
        let mut chosen = Vec::with_capacity(wanted);
        for (_, _, id) in candidates.into_iter().take(wanted) {
            if let Some(e) = self.servers.get_mut(&id) {
                e.used = e.used.saturating_add(chunk_size);
                e.recent.push_back(now);
                chosen.push((id, e.addr.clone()));
            }
        }
        Ok(chosen)
    }

    /// Live servers with the bytes they use and their capacity, as last reported.
    pub fn usage_bytes(&self, now: Instant) -> Vec<(ServerId, u64, u64)> {
        self.servers
            .iter()
            .filter(|(_, e)| self.alive(e, now))
            .map(|(id, e)| (*id, e.used, e.capacity))
            .collect()
    }

    /// Live servers and their used fraction of capacity.
    pub fn usage(&self, now: Instant) -> Vec<(ServerId, f64)> {
        self.servers
            .iter()
            .filter(|(_, e)| self.alive(e, now))
            .map(|(id, e)| (*id, e.used_fraction()))
            .collect()
    }

    /// The chunks `server` reported, with versions.
    pub fn chunks_of(
        &self,
        server: &ServerId,
    ) -> impl Iterator<Item = (&ChunkHandle, ChunkVersion)> {
        let entry = self.servers.get(server);
        let slot = entry.map_or(0, |e| e.slot);
        entry
            .into_iter()
            .flat_map(|e| e.chunks.iter())
            .filter_map(move |n| {
                let r = self.records.get(n)?;
                Some((&r.handle, r.holders.version_of(slot)?))
            })
    }

    /// How many chunks `server` reported holding.
    pub fn chunks_held(&self, server: &ServerId) -> usize {
        self.servers.get(server).map_or(0, |e| e.chunks.len())
    }

    /// The server registered at `addr`.
    pub fn by_addr(&self, addr: &str) -> Option<ServerId> {
        self.servers
            .iter()
            .find(|(_, e)| e.addr == addr)
            .map(|(id, _)| *id)
    }

    /// Forgets servers silent for longer than `after` (their replicas were re-made
    /// elsewhere long ago); returns them. A returning one registers afresh.
    pub fn forget_dead(&mut self, now: Instant, after: Duration) -> Vec<ServerId> {
        let gone: Vec<ServerId> = self
            .servers
            .iter()
            .filter(|(_, e)| now.saturating_duration_since(e.last_seen) > after)
            .map(|(id, _)| *id)
            .collect();
        for id in &gone {
            if let Some(entry) = self.servers.remove(id) {
                for n in entry.chunks.iter() {
                    if let Some(handle) = self.handle_of(n) {
                        self.touch(handle);
                    }
                    self.unlocate(n, entry.slot);
                }
                // Free only now: no chunk names the slot any more.
                if let Some(cell) = self.slots.get_mut(entry.slot as usize) {
                    *cell = None;
                    self.free_slots.push(entry.slot);
                }
            }
        }
        gone
    }

    /// The servers heard from within the dead-after window.
    pub fn live(&self, now: Instant) -> impl Iterator<Item = &ServerId> + '_ {
        self.servers
            .iter()
            .filter(move |(_, e)| self.alive(e, now))
            .map(|(id, _)| id)
    }

    /// How long ago each chunkserver was last heard from, by address.
    pub fn heartbeat_ages(&self, now: Instant) -> Vec<(String, Duration)> {
        self.servers
            .values()
            .map(|e| (e.addr.clone(), now.saturating_duration_since(e.last_seen)))
            .collect()
    }

    pub fn status(&self, now: Instant) -> Vec<ServerStatus> {
        let mut out: Vec<ServerStatus> = self
            .servers
            .iter()
            .map(|(id, e)| ServerStatus {
                id: *id,
                addr: e.addr.clone(),
                alive: self.alive(e, now),
                capacity: e.capacity,
                used: e.used,
                chunks: e.chunks.len() as u64,
                load: e.load,
                decommissioning: false,
                draining: 0,
            })
            .collect();
        out.sort_by(|a, b| a.addr.cmp(&b.addr));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(handle: ChunkHandle) -> ChunkReport {
        ChunkReport {
            handle,
            version: ChunkVersion::FIRST,
            size: 1,
        }
    }

    #[test]
    fn placement_picks_distinct_emptiest_servers() {
        let now = Instant::now();
        let mut map = ChunkMap::new(Duration::from_secs(10));
        let ids: Vec<ServerId> = (0..4).map(|_| ServerId::random()).collect();
        for (i, id) in ids.iter().enumerate() {
            map.register(*id, format!("s{i}"), 1000, (i as u64) * 100, vec![], now);
        }
        let none = HashSet::new();
        let chosen = map.place(3, 10, now, &none).unwrap();
        let addrs: Vec<_> = chosen.iter().map(|c| c.1.as_str()).collect();
        assert_eq!(addrs, ["s0", "s1", "s2"]);
        assert!(matches!(
            map.place(5, 10, now, &none),
            Err(ErrorCode::NotEnoughServers {
                wanted: 5,
                alive: 4
            })
        ));
        // dead servers are not placed on
        let later = now + Duration::from_secs(11);
        assert!(map.place(1, 10, later, &none).is_err());
        let first: HashSet<ServerId> = [ids[0]].into();
        let chosen = map.place(1, 10, now, &first).unwrap();
        assert_ne!(chosen[0].0, ids[0], "excluded servers are not chosen");
    }

    #[test]
    fn reports_and_reregistration_keep_locations_consistent() {
        let now = Instant::now();
        let mut map = ChunkMap::new(Duration::from_secs(10));
        let (a, b) = (ServerId::random(), ServerId::random());
        let h = ChunkHandle::random();
        map.register(a, "a".into(), 10, 0, vec![report(h)], now);
        map.register(b, "b".into(), 10, 0, vec![], now);
        map.record_chain(h, ChunkVersion::FIRST, &[b]);
        assert_eq!(map.replicas(&h, ChunkVersion::FIRST, now).len(), 2);
        assert!(map.replicas(&h, ChunkVersion(2), now).is_empty());
        map.register(a, "a2".into(), 10, 0, vec![], now);
        assert_eq!(map.replicas(&h, ChunkVersion::FIRST, now).len(), 1);
        assert!(map.heartbeat(b, 10, 0, 0, vec![], vec![h], now));
        assert!(map.replicas(&h, ChunkVersion::FIRST, now).is_empty());
        assert!(!map.heartbeat(ServerId::random(), 1, 1, 0, vec![], vec![], now));
    }

    #[test]
    fn a_forgotten_servers_slot_goes_to_the_next_newcomer_without_its_chunks() {
        let now = Instant::now();
        let mut map = ChunkMap::new(Duration::from_secs(10));
        let (a, b, c) = (ServerId::random(), ServerId::random(), ServerId::random());
        let (h1, h2) = (ChunkHandle::random(), ChunkHandle::random());
        map.register(a, "a".into(), 10, 0, vec![report(h1)], now);
        map.register(b, "b".into(), 10, 0, vec![report(h1), report(h2)], now);
        let later = now + Duration::from_secs(100);
        map.heartbeat(b, 10, 0, 0, vec![], vec![], later);
        assert_eq!(map.forget_dead(later, Duration::from_secs(50)), [a]);
        assert_eq!(map.holders(&h1), [(b, ChunkVersion::FIRST)]);
        map.register(c, "c".into(), 10, 0, vec![report(h2)], later);
        assert_eq!(map.slots.iter().flatten().count(), 2, "a's slot reused");
        assert_eq!(map.holders(&h1), [(b, ChunkVersion::FIRST)]);
        let mut on_h2: Vec<ServerId> = map.holders(&h2).into_iter().map(|(s, _)| s).collect();
        on_h2.sort();
        let mut expect = vec![b, c];
        expect.sort();
        assert_eq!(on_h2, expect);
        // A re-registration keeps the slot and replaces the chunks.
        map.register(c, "c".into(), 10, 0, vec![report(h1)], later);
        assert_eq!(map.holders(&h2), [(b, ChunkVersion::FIRST)]);
        assert_eq!(map.holders(&h1).len(), 2);
        assert_eq!(map.slots.len(), 2);
    }

    /// A re-registration frees the numbers of chunks no longer reported, and the new
    /// report may be handed the same numbers: the chunks that went are still named
    /// by handle as changed, and nothing is confused with what took their number.
    #[test]
    fn a_reregistration_that_swaps_every_chunk_keeps_handles_apart() {
        let now = Instant::now();
        let mut map = ChunkMap::new(Duration::from_secs(10));
        let (a, b) = (ServerId::random(), ServerId::random());
        let old: Vec<ChunkHandle> = (0..4).map(|_| ChunkHandle::random()).collect();
        let new: Vec<ChunkHandle> = (0..4).map(|_| ChunkHandle::random()).collect();
        map.register(
            a,
            "a".into(),
            10,
            0,
            old.iter().map(|h| report(*h)).collect(),
            now,
        );
        map.register(b, "b".into(), 10, 0, vec![report(old[0])], now);
        map.take_changes(now);
        let numbers: Vec<u32> = old.iter().filter_map(|h| map.records.number(h)).collect();
        let fresh = ChunkReport {
            handle: new[0],
            version: ChunkVersion(2),
            size: 1,
        };
        let reports = std::iter::once(fresh)
            .chain(new[1..].iter().map(|h| report(*h)))
            .collect();
        map.register(a, "a".into(), 10, 0, reports, now);
        let reused = new
            .iter()
            .filter(|h| map.records.number(h).is_some_and(|n| numbers.contains(&n)))
            .count();
        assert!(reused >= 3, "freed numbers are handed out again ({reused})");
        for h in &old[1..] {
            assert!(!map.holds(&a, h) && !map.is_held(h));
            assert!(map.holders(h).is_empty());
        }
        assert_eq!(map.holders(&old[0]), [(b, ChunkVersion::FIRST)]);
        assert_eq!(map.holders(&new[0]), [(a, ChunkVersion(2))]);
        assert!(map.has_replica(&new[0], ChunkVersion(2), now));
        assert!(!map.has_replica(&new[0], ChunkVersion::FIRST, now));
        let mut held: Vec<(ChunkHandle, ChunkVersion)> =
            map.chunks_of(&a).map(|(h, v)| (*h, v)).collect();
        held.sort();
        let mut expect: Vec<(ChunkHandle, ChunkVersion)> = new[1..]
            .iter()
            .map(|h| (*h, ChunkVersion::FIRST))
            .chain([(new[0], ChunkVersion(2))])
            .collect();
        expect.sort();
        assert_eq!(held, expect);
        let changes = map.take_changes(now);
        assert!(changes.servers.contains(&a));
        for h in &old {
            assert!(changes.handles.contains(h), "{h} went from a");
        }
    }

    #[test]
    fn small_chunks_give_back_what_placement_counted() {
        let now = Instant::now();
        let mut map = ChunkMap::new(Duration::from_secs(10));
        let ids: Vec<ServerId> = (0..3).map(|_| ServerId::random()).collect();
        for (i, id) in ids.iter().enumerate() {
            map.register(*id, format!("s{i}"), 1000, 0, vec![], now);
        }
        let none = HashSet::new();
        // A whole chunk (100) is counted per placement: ten fill every server...
        for _ in 0..10 {
            let chosen = map.place(3, 100, now, &none).expect("room");
            for (id, _) in chosen {
                // ...unless each chunk, committed at 1 byte, gives the rest back.
                map.settle_estimate(&id, 100, 1);
            }
        }
        assert!(map.place(3, 100, now, &none).is_ok(), "room left on paper");
        let mut full = ChunkMap::new(Duration::from_secs(10));
        for (i, id) in ids.iter().enumerate() {
            full.register(*id, format!("s{i}"), 1000, 0, vec![], now);
        }
        for _ in 0..10 {
            full.place(3, 100, now, &none).expect("room");
        }
        assert!(matches!(
            full.place(3, 100, now, &none),
            Err(ErrorCode::NoSpace { .. })
        ));
    }
}
