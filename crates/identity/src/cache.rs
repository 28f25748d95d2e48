//! A bounded map from a token's SHA-256 to its verified content, evicting the oldest entry
//! first. It only saves the signature check and the parsing: the verifier re-checks lifetime and
//! revocation on every hit.

use crate::credential::VerifiedCredential;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// The SHA-256 of a token string.
pub(crate) type TokenHash = [u8; 32];

pub(crate) struct Cache {
    capacity: usize,
    map: HashMap<TokenHash, Arc<VerifiedCredential>>,
    order: VecDeque<TokenHash>,
    /// Bumped whenever the trusted keys change; an entry verified under an older set of keys is
    /// not inserted.
    generation: u64,
}

impl Cache {
    pub(crate) fn new(capacity: usize) -> Self {
        Cache {
            capacity,
            map: HashMap::new(),
            order: VecDeque::new(),
            generation: 0,
        }
    }

    pub(crate) fn get(&self, key: &TokenHash) -> Option<Arc<VerifiedCredential>> {
        self.map.get(key).cloned()
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Inserts unless the keys changed since `generation` was read.
    pub(crate) fn insert(
        &mut self,
        key: TokenHash,
        value: Arc<VerifiedCredential>,
        generation: u64,
    ) {
        if self.capacity == 0 || generation != self.generation || self.map.contains_key(&key) {
            return;
        }
        while self.map.len() >= self.capacity {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
        self.map.insert(key, value);
        self.order.push_back(key);
    }

    /// Forgets everything and starts a new generation.
    pub(crate) fn invalidate(&mut self) {
        self.map.clear();
        self.order.clear();
        self.generation = self.generation.wrapping_add(1);
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}
