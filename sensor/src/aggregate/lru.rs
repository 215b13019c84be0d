//! An intrusive least-recently-used list over slots of a `Vec`: each element carries its own
//! `prev`/`next` slot numbers (8 bytes), so ordering by recency costs no allocation per element
//! and moving, removing and finding the oldest are O(1).

pub const NIL: u32 = u32::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Links {
    prev: u32,
    next: u32,
}

impl Default for Links {
    fn default() -> Self {
        Self {
            prev: NIL,
            next: NIL,
        }
    }
}

impl Links {
    /// The slots before and after this one ([`NIL`] at an end).
    pub fn neighbours(&self) -> [u32; 2] {
        [self.prev, self.next]
    }
}

pub trait Linked {
    fn links(&mut self) -> &mut Links;
}

/// Head: most recently used; tail: least.
#[derive(Clone, Copy, Debug)]
pub struct Lru {
    head: u32,
    tail: u32,
}

impl Default for Lru {
    fn default() -> Self {
        Self {
            head: NIL,
            tail: NIL,
        }
    }
}

impl Lru {
    pub fn oldest(&self) -> Option<u32> {
        (self.tail != NIL).then_some(self.tail)
    }

    pub fn unlink<T: Linked>(&mut self, slots: &mut [T], i: u32) {
        let Links { prev, next } = *slots[i as usize].links();
        if prev == NIL {
            self.head = next;
        } else {
            slots[prev as usize].links().next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            slots[next as usize].links().prev = prev;
        }
        *slots[i as usize].links() = Links::default();
    }

    pub fn push_front<T: Linked>(&mut self, slots: &mut [T], i: u32) {
        let head = self.head;
        *slots[i as usize].links() = Links {
            prev: NIL,
            next: head,
        };
        if head != NIL {
            slots[head as usize].links().prev = i;
        }
        self.head = i;
        if self.tail == NIL {
            self.tail = i;
        }
    }

    /// Marks `i` (already in the list) most recently used.
    pub fn touch<T: Linked>(&mut self, slots: &mut [T], i: u32) {
        if self.head != i {
            self.unlink(slots, i);
            self.push_front(slots, i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Item(Links);
    impl Linked for Item {
        fn links(&mut self) -> &mut Links {
            &mut self.0
        }
    }

    #[test]
    fn order_follows_use() {
        let mut items: Vec<Item> = (0..4).map(|_| Item::default()).collect();
        let mut lru = Lru::default();
        assert_eq!(lru.oldest(), None);
        for i in 0..4 {
            lru.push_front(&mut items, i);
        }
        assert_eq!(lru.oldest(), Some(0));
        lru.touch(&mut items, 0);
        assert_eq!(lru.oldest(), Some(1));
        lru.unlink(&mut items, 1);
        assert_eq!(lru.oldest(), Some(2));
        lru.touch(&mut items, 0);
        lru.unlink(&mut items, 2);
        lru.unlink(&mut items, 3);
        assert_eq!(lru.oldest(), Some(0));
        lru.unlink(&mut items, 0);
        assert_eq!(lru.oldest(), None);
    }
}
