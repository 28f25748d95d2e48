//! Property tests: for random trees every inclusion and consistency proof verifies, and any
//! altered proof or statement fails.
//!
//! A root does not encode the tree size (the signed checkpoint does), so a changed size is
//! checked against the root of the size claimed, as a verifier holding that checkpoint would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{record, Fixture, Memory};
use proptest::prelude::*;
use truststack_ledger::merkle::{
    consistency_proof, inclusion_proof, leaf_hash, root, root_from_leaves, verify_consistency,
    verify_inclusion, Hash,
};

fn tree(n: usize, seed: u64) -> (Vec<Hash>, Memory) {
    let leaves: Vec<Hash> = (0..n as u64)
        .map(|i| leaf_hash(&(seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_be_bytes()))
        .collect();
    let mem = Memory::new(&leaves);
    (leaves, mem)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn inclusion_proofs_verify_and_alterations_fail(
        n in 1usize..80, seed: u64, flip in any::<(usize, u8)>(), other in 0usize..80,
    ) {
        let (leaves, mem) = tree(n, seed);
        let size = n as u64;
        let r = root(&mem, size).unwrap();
        prop_assert_eq!(r, root_from_leaves(&leaves));
        let roots: Vec<Hash> = (0..=size).map(|s| root(&mem, s).unwrap()).collect();
        for index in 0..size {
            let leaf = leaves[index as usize];
            let proof = inclusion_proof(&mem, index, size).unwrap();
            prop_assert!(verify_inclusion(index, size, &leaf, &proof, &r).is_ok());
            // A flipped bit anywhere in the proof.
            if !proof.is_empty() {
                let mut bad = proof.clone();
                let (i, bit) = (flip.0 % proof.len(), flip.1 % 8);
                bad[i][(flip.0 / proof.len()) % 32] ^= 1 << bit;
                prop_assert!(verify_inclusion(index, size, &leaf, &bad, &r).is_err());
            }
            // Every other index.
            for wrong in (0..size).filter(|&w| w != index) {
                prop_assert!(verify_inclusion(wrong, size, &leaf, &proof, &r).is_err(),
                    "index {} verified as {} in size {}", index, wrong, size);
            }
            // Another size, against that size's root; and sizes out of range.
            let s2 = (other as u64 % size.max(1)).max(index + 1);
            if s2 != size {
                prop_assert!(verify_inclusion(index, s2, &leaf, &proof, &roots[s2 as usize]).is_err());
            }
            prop_assert!(verify_inclusion(index, index, &leaf, &proof, &r).is_err());
            // A different leaf.
            let other_leaf = leaf_hash(b"not in the tree");
            prop_assert!(verify_inclusion(index, size, &other_leaf, &proof, &r).is_err());
        }
    }

    #[test]
    fn consistency_proofs_verify_and_alterations_fail(
        n in 1usize..50, seed: u64, flip in any::<(usize, u8)>(), shift in 1u64..80,
    ) {
        let (_, mem) = tree(n, seed);
        let size = n as u64;
        let roots: Vec<Hash> = (0..=size).map(|s| root(&mem, s).unwrap()).collect();
        for new in 0..=size {
            for old in 0..=new {
                let (r1, r2) = (&roots[old as usize], &roots[new as usize]);
                let proof = consistency_proof(&mem, old, new).unwrap();
                prop_assert!(verify_consistency(old, new, &proof, r1, r2).is_ok());
                if proof.is_empty() {
                    continue;
                }
                let mut bad = proof.clone();
                let (i, bit) = (flip.0 % proof.len(), flip.1 % 8);
                bad[i][(flip.0 / proof.len()) % 32] ^= 1 << bit;
                prop_assert!(verify_consistency(old, new, &bad, r1, r2).is_err());
                // Another old size (with its root), another new size (with its root).
                let old2 = (old + shift) % new;
                if old2 != old {
                    prop_assert!(verify_consistency(old2, new, &proof, &roots[old2 as usize], r2).is_err(),
                        "{} -> {} verified as {} -> {}", old, new, old2, new);
                }
                let new2 = old + (new - old + shift) % (size - old + 1);
                if new2 != new {
                    prop_assert!(verify_consistency(old, new2, &proof, r1, &roots[new2 as usize]).is_err(),
                        "{} -> {} verified as {} -> {}", old, new, old, new2);
                }
                prop_assert!(verify_consistency(old, new, &proof, r2, r1).is_err());
                prop_assert!(verify_consistency(old, new, &proof[1..], r1, r2).is_err());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]

    /// The same through a real SQLite ledger: proofs served from stored nodes verify against the
    /// roots of the recomputed tree, at every size.
    #[test]
    fn stored_tree_serves_valid_proofs(n in 1u64..70, every in 0u64..20) {
        let f = Fixture::new();
        let ledger = f.open(every);
        let mut leaves = Vec::new();
        for i in 0..n {
            let index = ledger.append(&record(i)).unwrap();
            prop_assert_eq!(index, i);
            leaves.push(ledger.entry(i).unwrap().leaf);
        }
        prop_assert_eq!(ledger.root(), root_from_leaves(&leaves));
        for size in 1..=n {
            let r = root_from_leaves(&leaves[..size as usize]);
            prop_assert_eq!(ledger.root_at(size).unwrap(), r);
            for index in 0..size {
                let proof = ledger.inclusion_proof(index, size).unwrap();
                prop_assert!(proof.verify(&leaves[index as usize], &r).is_ok());
            }
            let proof = ledger.consistency_proof(size / 2, size).unwrap();
            let old_root = root_from_leaves(&leaves[..(size / 2) as usize]);
            prop_assert!(proof.verify(&old_root, &r).is_ok());
        }
        for c in ledger.checkpoints().unwrap() {
            prop_assert_eq!(c.checkpoint.root, root_from_leaves(&leaves[..c.checkpoint.size as usize]));
        }
    }
}
