//! A slab of a worker's endpoints: the key of an entry is its mio token, its transport id
//! (client-facing endpoints) or its relay id (relay sockets), for as long as it lives.
//!
//! Keys are reused after removal, so they stay small; each slot also counts how often it
//! was emptied (its generation), so a late event for a removed entry (an io_uring
//! completion) can be told apart from one for the entry that took its key.

/// Entries by key, with a free list.
pub(super) struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: Vec<usize>,
}

struct Slot<T> {
    generation: u32,
    entry: Option<T>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> Slab<T> {
    /// The key the next [`Slab::insert`] will use.
    pub(super) fn vacant_key(&mut self) -> usize {
        if let Some(&key) = self.free.last() {
            return key;
        }
        self.slots.push(Slot {
            generation: 0,
            entry: None,
        });
        self.free.push(self.slots.len() - 1);
        self.slots.len() - 1
    }

    /// Store an entry; returns its key.
    pub(super) fn insert(&mut self, entry: T) -> usize {
        let key = self.vacant_key();
        self.free.pop();
        self.slots[key].entry = Some(entry);
        key
    }

    /// Remove an entry; its key may be reused by the next insert.
    pub(super) fn remove(&mut self, key: usize) -> Option<T> {
        let slot = self.slots.get_mut(key)?;
        let entry = slot.entry.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(key);
        Some(entry)
    }

    /// Take an entry out for the duration of a call that needs the rest of the slab, without
    /// freeing its key; [`Slab::put_back`] returns it.
    pub(super) fn take(&mut self, key: usize) -> Option<T> {
        self.slots.get_mut(key)?.entry.take()
    }

    /// Return an entry taken with [`Slab::take`].
    pub(super) fn put_back(&mut self, key: usize, entry: T) {
        if let Some(slot) = self.slots.get_mut(key) {
            debug_assert!(slot.entry.is_none(), "slab key {key} reused while taken");
            slot.entry = Some(entry);
        }
    }

    /// Forget the key of an entry taken with [`Slab::take`] that will not come back.
    pub(super) fn release(&mut self, key: usize) {
        if let Some(slot) = self.slots.get_mut(key) {
            if slot.entry.is_none() {
                slot.generation = slot.generation.wrapping_add(1);
                self.free.push(key);
            }
        }
    }

    pub(super) fn get(&self, key: usize) -> Option<&T> {
        self.slots.get(key)?.entry.as_ref()
    }

    pub(super) fn get_mut(&mut self, key: usize) -> Option<&mut T> {
        self.slots.get_mut(key)?.entry.as_mut()
    }

    /// How often the slot of `key` was emptied.
    pub(super) fn generation(&self, key: usize) -> u32 {
        self.slots.get(key).map_or(0, |s| s.generation)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (usize, &T)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(k, s)| Some((k, s.entry.as_ref()?)))
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (usize, &mut T)> {
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(|(k, s)| Some((k, s.entry.as_mut()?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_reused_and_generations_tell_them_apart() {
        let mut s = Slab::default();
        let a = s.insert("a");
        let b = s.insert("b");
        assert_eq!((a, b), (0, 1));
        assert_eq!(s.generation(a), 0);
        assert_eq!(s.remove(a), Some("a"));
        assert_eq!(s.remove(a), None);
        assert_eq!(s.generation(a), 1);
        assert_eq!(s.vacant_key(), a);
        assert_eq!(s.insert("c"), a);
        assert_eq!(s.get(a), Some(&"c"));

        let taken = s.take(b).unwrap();
        assert_eq!(s.get(b), None);
        assert_eq!(s.insert("d"), 2, "a taken entry keeps its key");
        s.put_back(b, taken);
        assert_eq!(s.get(b), Some(&"b"));
        let _ = s.take(b);
        s.release(b);
        assert_eq!(s.iter().map(|(k, _)| k).collect::<Vec<_>>(), vec![0, 2]);
        assert_eq!(s.vacant_key(), b);
    }
}
