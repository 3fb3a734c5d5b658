//! Session affinity (sessionAffinity: ClientIP) on the same seqlock table as
//! the conntrack: key (service, client address), value (backend, last used).

use std::net::IpAddr;

use crate::key::ip_to_words;
use crate::table::{SeqTable, SLOTS};

/// Service id and family in one word, then the client address.
const KEY_WORDS: usize = 3;
/// Backend id, last used.
const VALUE_WORDS: usize = 2;
const V6: u64 = 1 << 32;

fn key_words(service_id: u32, client: IpAddr) -> [u64; KEY_WORDS] {
    let (hi, lo, v6) = ip_to_words(client);
    [u64::from(service_id) | if v6 { V6 } else { 0 }, hi, lo]
}

fn service_of(key: &[u64; KEY_WORDS]) -> u32 {
    key[0] as u32
}

/// Session affinity (sessionAffinity: ClientIP): which backend a client was
/// last sent to, per service. Same seqlock table design, its own capacity.
/// Best effort: a full bucket forgets its least recently used client.
#[derive(Debug)]
pub struct Affinity {
    table: SeqTable<KEY_WORDS, VALUE_WORDS>,
}

impl Affinity {
    pub fn new(capacity: usize) -> Affinity {
        Affinity {
            table: SeqTable::with_capacity(capacity),
        }
    }

    /// The backend `client` used for `service_id` if it was used within
    /// `timeout_s` seconds of `now_ns`.
    pub fn get(&self, service_id: u32, client: IpAddr, timeout_s: u32, now_ns: u64) -> Option<u32> {
        let key = key_words(service_id, client);
        let [backend, last_used] = self.table.read(self.table.locate(&key), &key)?;
        let expiry = last_used.saturating_add(u64::from(timeout_s) * 1_000_000_000);
        (now_ns < expiry).then_some(backend as u32)
    }

    /// Records (or refreshes) the backend for `client`: in place if it is
    /// there, else in the emptier of its two buckets, else over the least
    /// recently used entry of both.
    pub fn set(&self, service_id: u32, client: IpAddr, backend_id: u32, now_ns: u64) {
        let key = key_words(service_id, client);
        let location = self.table.locate(&key);
        let value = [u64::from(backend_id), now_ns];
        let locks = self.table.lock_set(location.buckets);
        let guards = location.distinct().filter_map(|bucket| locks.get(bucket));
        let place = locks
            .find(location, &key)
            .or_else(|| {
                guards
                    .clone()
                    .min_by_key(|guard| guard.occupied())
                    .and_then(|guard| Some((guard, guard.empty_slot()?)))
            })
            .or_else(|| {
                guards
                    .flat_map(|guard| (0..SLOTS).map(move |slot| (guard, slot)))
                    .min_by_key(|(guard, slot)| guard.value(*slot)[1])
            });
        if let Some((guard, slot)) = place {
            guard.write(slot, location.tag, &key, &value);
        }
    }

    /// Forgets every entry of a service (affinity switched off, service removed).
    pub fn forget_service(&self, service_id: u32) -> usize {
        let mut forgotten = 0;
        for bucket in 0..self.table.buckets() {
            let copy = self.table.read_bucket(bucket);
            let holds_service = (0..SLOTS)
                .any(|slot| copy.tags[slot] != 0 && service_of(&copy.keys[slot]) == service_id);
            if !holds_service {
                continue;
            }
            let guard = self.table.lock(bucket);
            for slot in 0..SLOTS {
                if guard.tag(slot) != 0 && service_of(&guard.key(slot)) == service_id {
                    guard.clear(slot);
                    forgotten += 1;
                }
            }
        }
        forgotten
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn client(i: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i))
    }

    #[test]
    fn get_honours_the_timeout_and_set_refreshes() {
        let affinity = Affinity::new(1024);
        assert_eq!(affinity.get(1, client(1), 10, 0), None);
        affinity.set(1, client(1), 7, 100 * S);
        assert_eq!(affinity.get(1, client(1), 10, 109 * S), Some(7));
        assert_eq!(affinity.get(1, client(1), 10, 110 * S), None);
        assert_eq!(affinity.get(2, client(1), 10, 101 * S), None);
        assert_eq!(affinity.get(1, client(2), 10, 101 * S), None);
        affinity.set(1, client(1), 8, 105 * S);
        assert_eq!(affinity.get(1, client(1), 10, 114 * S), Some(8));
        let v6: IpAddr = "::10.0.0.1".parse().unwrap();
        assert_eq!(affinity.get(1, v6, 10, 106 * S), None);
    }

    #[test]
    fn a_full_table_forgets_the_least_recently_used() {
        // One bucket: every key has it as both of its buckets.
        let affinity = Affinity::new(SLOTS);
        for i in 0..SLOTS as u32 {
            affinity.set(1, client(i), i, u64::from(i) * S);
        }
        affinity.set(1, client(100), 100, 50 * S);
        assert_eq!(affinity.get(1, client(0), 1000, 51 * S), None);
        for i in 1..SLOTS as u32 {
            assert_eq!(affinity.get(1, client(i), 1000, 51 * S), Some(i));
        }
        assert_eq!(affinity.get(1, client(100), 1000, 51 * S), Some(100));
    }

    #[test]
    fn forget_service_removes_only_that_service() {
        let affinity = Affinity::new(4096);
        for i in 0..100 {
            affinity.set(1, client(i), i, S);
            affinity.set(2, client(i), i, S);
        }
        assert_eq!(affinity.forget_service(1), 100);
        assert_eq!(affinity.forget_service(1), 0);
        for i in 0..100 {
            assert_eq!(affinity.get(1, client(i), 10, S), None);
            assert_eq!(affinity.get(2, client(i), 10, S), Some(i));
        }
    }
}
