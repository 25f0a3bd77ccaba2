//! Keyed entries in one slab with an intrusive recency list: the live connections of a
//! `FlowTable`, the recently closed ones, and the pipeline's framers. Slots are reused,
//! so an entry allocates nothing of its own; the index holds slot numbers (4 bytes and a
//! control byte per bucket), and the recency order is two `u32` links per slot.

use std::hash::{BuildHasher, Hash};

use hashbrown::HashTable;

const NIL: u32 = u32::MAX;
/// `prev` of a slot on the free list.
const FREE: u32 = u32::MAX - 1;

struct Slot<K, V> {
    key: K,
    value: V,
    /// Towards the older end; `FREE` when the slot holds no entry.
    prev: u32,
    /// Towards the newer end; on the free list, the next free slot.
    next: u32,
}

/// Entries by key, oldest first. Slot numbers stay valid until their entry is removed.
pub(crate) struct LruSlab<K, V> {
    slots: Vec<Slot<K, V>>,
    index: HashTable<u32>,
    // foldhash: per-packet lookups; its seeds are random per table, so crafted 4-tuples
    // cannot be aimed at one bucket ahead of time.
    hasher: foldhash::fast::RandomState,
    oldest: u32,
    newest: u32,
    free: u32,
    len: usize,
}

impl<K: Hash + Eq + Copy, V: Default> LruSlab<K, V> {
    pub(crate) fn new() -> Self {
        Self {
            slots: Vec::new(),
            index: HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
            oldest: NIL,
            newest: NIL,
            free: NIL,
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn find(&self, key: &K) -> Option<u32> {
        let hash = self.hasher.hash_one(key);
        let slots = &self.slots;
        self.index
            .find(hash, |&s| slots[s as usize].key == *key)
            .copied()
    }

    pub(crate) fn key(&self, slot: u32) -> K {
        self.slots[slot as usize].key
    }

    pub(crate) fn get(&self, slot: u32) -> &V {
        &self.slots[slot as usize].value
    }

    pub(crate) fn get_mut(&mut self, slot: u32) -> &mut V {
        &mut self.slots[slot as usize].value
    }

    /// Adds an entry for a key that has none, as the newest.
    pub(crate) fn insert(&mut self, key: K, value: V) -> u32 {
        let slot = if self.free == NIL {
            let slot = u32::try_from(self.slots.len())
                .ok()
                .filter(|&s| s < FREE)
                .unwrap_or_else(|| unreachable!("more than 2^32 - 2 entries"));
            self.slots.push(Slot {
                key,
                value,
                prev: NIL,
                next: NIL,
            });
            slot
        } else {
            let slot = self.free;
            let s = &mut self.slots[slot as usize];
            self.free = s.next;
            s.key = key;
            s.value = value;
            slot
        };
        self.link_newest(slot);
        let hash = self.hasher.hash_one(key);
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index
            .insert_unique(hash, slot, |&s| hasher.hash_one(slots[s as usize].key));
        self.len += 1;
        slot
    }

    /// Takes the entry out; its slot goes back to the free list.
    pub(crate) fn remove(&mut self, slot: u32) -> V {
        let hash = self.hasher.hash_one(self.slots[slot as usize].key);
        if let Ok(entry) = self.index.find_entry(hash, |&s| s == slot) {
            entry.remove();
        }
        self.unlink(slot);
        let s = &mut self.slots[slot as usize];
        s.prev = FREE;
        s.next = self.free;
        self.free = slot;
        self.len -= 1;
        std::mem::take(&mut s.value)
    }

    /// Makes the entry the newest.
    pub(crate) fn touch(&mut self, slot: u32) {
        if self.newest != slot {
            self.unlink(slot);
            self.link_newest(slot);
        }
    }

    pub(crate) fn oldest(&self) -> Option<u32> {
        (self.oldest != NIL).then_some(self.oldest)
    }

    /// The entry touched next after this one (towards the newest).
    pub(crate) fn newer(&self, slot: u32) -> Option<u32> {
        let next = self.slots[slot as usize].next;
        (next != NIL).then_some(next)
    }

    /// Slot numbers in use, in no particular order. Entries may be removed while
    /// walking them by number (a removed slot is skipped by `is_live`).
    pub(crate) fn slot_count(&self) -> u32 {
        self.slots.len() as u32
    }

    pub(crate) fn is_live(&self, slot: u32) -> bool {
        self.slots
            .get(slot as usize)
            .is_some_and(|s| s.prev != FREE)
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = K> + '_ {
        self.slots.iter().filter(|s| s.prev != FREE).map(|s| s.key)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.slots
            .iter()
            .filter(|s| s.prev != FREE)
            .map(|s| &s.value)
    }

    pub(crate) fn clear(&mut self) {
        self.slots.clear();
        self.index.clear();
        self.oldest = NIL;
        self.newest = NIL;
        self.free = NIL;
        self.len = 0;
    }

    fn unlink(&mut self, slot: u32) {
        let (prev, next) = {
            let s = &self.slots[slot as usize];
            (s.prev, s.next)
        };
        match prev {
            NIL => self.oldest = next,
            p => self.slots[p as usize].next = next,
        }
        match next {
            NIL => self.newest = prev,
            n => self.slots[n as usize].prev = prev,
        }
    }

    fn link_newest(&mut self, slot: u32) {
        let newest = self.newest;
        {
            let s = &mut self.slots[slot as usize];
            s.prev = newest;
            s.next = NIL;
        }
        match newest {
            NIL => self.oldest = slot,
            n => self.slots[n as usize].next = slot,
        }
        self.newest = slot;
    }
}

impl<K: Hash + Eq + Copy, V: Default> Default for LruSlab<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::LruSlab;

    fn order(m: &LruSlab<u32, u32>) -> Vec<u32> {
        let mut out = Vec::new();
        let mut at = m.oldest();
        while let Some(s) = at {
            out.push(m.key(s));
            let next = m.slots[s as usize].next;
            at = (next != super::NIL).then_some(next);
        }
        out
    }

    #[test]
    fn finds_touches_and_reuses_slots_in_recency_order() {
        let mut m = LruSlab::new();
        let slots: Vec<u32> = (0..5).map(|k| m.insert(k, k * 10)).collect();
        assert_eq!(order(&m), [0, 1, 2, 3, 4]);
        m.touch(slots[1]);
        m.touch(slots[4]);
        assert_eq!(order(&m), [0, 2, 3, 1, 4]);
        assert_eq!(m.remove(slots[2]), 20);
        assert_eq!(m.find(&2), None);
        assert!(!m.is_live(slots[2]));
        // The freed slot is the next one used.
        let again = m.insert(7, 70);
        assert_eq!(again, slots[2]);
        assert_eq!(m.find(&7), Some(again));
        assert_eq!(*m.get(again), 70);
        assert_eq!(order(&m), [0, 3, 1, 4, 7]);
        assert_eq!(m.len(), 5);
        while let Some(s) = m.oldest() {
            m.remove(s);
        }
        assert_eq!(m.len(), 0);
        assert_eq!(order(&m), Vec::<u32>::new());
        assert_eq!(m.slot_count(), 5);
    }

    #[test]
    fn many_entries_with_churn_keep_the_index_exact() {
        let mut m = LruSlab::new();
        for k in 0..10_000u32 {
            if m.len() >= 1000 {
                let old = m.oldest().expect("full");
                let key = m.key(old);
                m.remove(old);
                assert_eq!(m.find(&key), None);
            }
            m.insert(k, k);
        }
        assert_eq!(m.len(), 1000);
        assert_eq!(m.slot_count(), 1000);
        for k in 9_000..10_000 {
            let s = m.find(&k).expect("recent key");
            assert_eq!(*m.get(s), k);
        }
        assert_eq!(m.find(&8_999), None);
    }
}
