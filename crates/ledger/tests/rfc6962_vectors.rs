//! RFC 6962 reference vectors.
//!
//! Leaves, roots and proofs are copied from the transparency-dev/merkle Go module,
//! `proof/verify_test.go` (commit 02194e9afb6c1d95b5381350007963aa70fff472,
//! <https://github.com/transparency-dev/merkle/blob/main/proof/verify_test.go>), which carries
//! them over from certificate-transparency-go. Leaf indices there are 1-based; here 0-based.
//! The corrupted-proof probes mirror `corruptInclusionProof` / `corruptConsistencyProof` there.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use truststack_ledger::merkle::{
    self, consistency_proof, empty_root, inclusion_proof, leaf_hash, root_from_leaves,
    verify_consistency, verify_inclusion, Frontier, Hash, MerkleError, NodeSource,
};
use truststack_ledger::sqlite::SqliteStore;
use truststack_ledger::store::{LedgerStore, StoredEntry};
use truststack_ledger::{Ledger, LogKey};

const LEAVES: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

/// Roots of the trees of sizes 1..=8.
const ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// (leaf index, tree size, proof)
const INCLUSION: [(u64, u64, &[&str]); 5] = [
    (0, 1, &[]),
    (
        0,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        &[
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        3,
        &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    ),
    (
        1,
        5,
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
];

/// (old size, new size, proof)
const CONSISTENCY: [(u64, u64, &[&str]); 5] = [
    (1, 1, &[]),
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        &[
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
];

const EMPTY_TREE: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const SOME_HASH: &str = "abacaba000000000000000000000000000000000000000000060061e00123456";

fn h(hex_hash: &str) -> Hash {
    hex::decode(hex_hash).unwrap().try_into().unwrap()
}

fn hashes(list: &[&str]) -> Vec<Hash> {
    list.iter().map(|x| h(x)).collect()
}

fn leaf_data(i: usize) -> Vec<u8> {
    hex::decode(LEAVES[i]).unwrap()
}

fn leaves() -> Vec<Hash> {
    (0..8).map(|i| leaf_hash(&leaf_data(i))).collect()
}

/// All perfect subtrees of the 8-leaf tree, kept in memory.
struct Memory(Vec<Vec<Hash>>);

impl Memory {
    fn new(leaves: &[Hash]) -> Self {
        let mut levels = vec![leaves.to_vec()];
        while levels.last().unwrap().len() > 1 {
            let l = levels.last().unwrap();
            levels.push(
                l.chunks_exact(2)
                    .map(|p| merkle::node_hash(&p[0], &p[1]))
                    .collect(),
            );
        }
        Memory(levels)
    }
}

impl NodeSource for Memory {
    type Error = MerkleError;
    fn perfect(&self, level: u32, index: u64) -> Result<Hash, MerkleError> {
        Ok(self.0[level as usize][index as usize])
    }
}

#[test]
fn empty_tree_root() {
    assert_eq!(empty_root(), h(EMPTY_TREE));
    assert_eq!(root_from_leaves(&[]), h(EMPTY_TREE));
}

#[test]
fn roots_of_every_prefix() {
    let leaves = leaves();
    let mem = Memory::new(&leaves);
    let mut frontier = Frontier::new();
    for size in 1..=8usize {
        frontier.push(leaves[size - 1], &mut Vec::new());
        let want = h(ROOTS[size - 1]);
        assert_eq!(root_from_leaves(&leaves[..size]), want, "size {size}");
        assert_eq!(merkle::root(&mem, size as u64).unwrap(), want);
        assert_eq!(frontier.root(), want);
    }
}

#[test]
fn inclusion_proofs_match_and_verify() {
    let leaves = leaves();
    let mem = Memory::new(&leaves);
    for (index, size, proof) in INCLUSION {
        let proof = hashes(proof);
        let root = h(ROOTS[size as usize - 1]);
        assert_eq!(inclusion_proof(&mem, index, size).unwrap(), proof);
        let leaf = leaves[index as usize];
        verify_inclusion(index, size, &leaf, &proof, &root).unwrap();
        for (what, i, s, l, p, r) in corrupt_inclusion(index, size, leaf, &proof, root) {
            assert!(
                verify_inclusion(i, s, &l, &p, &r).is_err(),
                "({index}, {size}) verified with {what}"
            );
        }
    }
}

type InclusionProbe = (String, u64, u64, Hash, Vec<Hash>, Hash);

fn corrupt_inclusion(
    index: u64,
    size: u64,
    leaf: Hash,
    proof: &[Hash],
    root: Hash,
) -> Vec<InclusionProbe> {
    let p = proof.to_vec();
    let with = |extra: Vec<Hash>| extra;
    let mut probes: Vec<InclusionProbe> = vec![
        (
            "index - 1".into(),
            index.wrapping_sub(1),
            size,
            leaf,
            p.clone(),
            root,
        ),
        ("index + 1".into(), index + 1, size, leaf, p.clone(), root),
        ("index ^ 2".into(), index ^ 2, size, leaf, p.clone(), root),
        ("size * 2".into(), index, size * 2, leaf, p.clone(), root),
        ("size / 2".into(), index, size / 2, leaf, p.clone(), root),
        (
            "wrong leaf".into(),
            index,
            size,
            h(SOME_HASH),
            p.clone(),
            root,
        ),
        (
            "empty root".into(),
            index,
            size,
            leaf,
            p.clone(),
            h(EMPTY_TREE),
        ),
        (
            "random root".into(),
            index,
            size,
            leaf,
            p.clone(),
            h(SOME_HASH),
        ),
        (
            "trailing root".into(),
            index,
            size,
            leaf,
            with([p.clone(), vec![root]].concat()),
            root,
        ),
        (
            "preceding root".into(),
            index,
            size,
            leaf,
            with([vec![root], p.clone()].concat()),
            root,
        ),
    ];
    for i in 0..p.len() {
        let mut q = p.clone();
        q[i][0] ^= 8;
        probes.push((
            format!("proof[{i}] bit 3 flipped"),
            index,
            size,
            leaf,
            q,
            root,
        ));
    }
    if !p.is_empty() {
        probes.push((
            "removed component".into(),
            index,
            size,
            leaf,
            p[..p.len() - 1].to_vec(),
            root,
        ));
    }
    if p.len() > 1 {
        let q = [vec![p[0], h(SOME_HASH)], p[1..].to_vec()].concat();
        probes.push(("inserted component".into(), index, size, leaf, q, root));
    }
    probes
}

#[test]
fn consistency_proofs_match_and_verify() {
    let leaves = leaves();
    let mem = Memory::new(&leaves);
    for (old, new, proof) in CONSISTENCY {
        let proof = hashes(proof);
        let (r1, r2) = (h(ROOTS[old as usize - 1]), h(ROOTS[new as usize - 1]));
        assert_eq!(consistency_proof(&mem, old, new).unwrap(), proof);
        verify_consistency(old, new, &proof, &r1, &r2).unwrap();
        if proof.is_empty() {
            continue;
        }
        let mut probes: Vec<(String, u64, u64, Hash, Hash, Vec<Hash>)> = vec![
            ("old - 1".into(), old - 1, new, r1, r2, proof.clone()),
            ("old + 1".into(), old + 1, new, r1, r2, proof.clone()),
            ("old ^ 2".into(), old ^ 2, new, r1, r2, proof.clone()),
            ("new * 2".into(), old, new * 2, r1, r2, proof.clone()),
            ("new / 2".into(), old, new / 2, r1, r2, proof.clone()),
            (
                "wrong old root".into(),
                old,
                new,
                h(SOME_HASH),
                r2,
                proof.clone(),
            ),
            (
                "wrong new root".into(),
                old,
                new,
                r1,
                h(SOME_HASH),
                proof.clone(),
            ),
            ("swapped roots".into(), old, new, r2, r1, proof.clone()),
            ("empty proof".into(), old, new, r1, r2, vec![]),
            (
                "trailing old root".into(),
                old,
                new,
                r1,
                r2,
                [proof.clone(), vec![r1]].concat(),
            ),
            (
                "trailing new root".into(),
                old,
                new,
                r1,
                r2,
                [proof.clone(), vec![r2]].concat(),
            ),
            (
                "preceding old root".into(),
                old,
                new,
                r1,
                r2,
                [vec![r1], proof.clone()].concat(),
            ),
            (
                "preceding new root".into(),
                old,
                new,
                r1,
                r2,
                [vec![r2], proof.clone()].concat(),
            ),
            (
                "preceding proof[0]".into(),
                old,
                new,
                r1,
                r2,
                [vec![proof[0]], proof.clone()].concat(),
            ),
            (
                "truncated proof".into(),
                old,
                new,
                r1,
                r2,
                proof[..proof.len() - 1].to_vec(),
            ),
        ];
        for i in 0..proof.len() {
            let mut q = proof.clone();
            q[i][0] ^= 16;
            probes.push((format!("proof[{i}] bit 4 flipped"), old, new, r1, r2, q));
        }
        for (what, o, n, a, b, p) in probes {
            assert!(
                verify_consistency(o, n, &p, &a, &b).is_err(),
                "({old}, {new}) verified with {what}"
            );
        }
    }
}

#[test]
fn trivial_consistency_cases() {
    let (a, b) = (h(SOME_HASH), h(EMPTY_TREE));
    // Sizes that are always consistent.
    verify_consistency(0, 0, &[], &a, &a).unwrap();
    verify_consistency(0, 1, &[], &a, &b).unwrap();
    verify_consistency(1, 1, &[], &b, &b).unwrap();
    // Equal sizes with different roots, time travel, empty or superfluous proofs.
    assert!(verify_consistency(1, 1, &[], &a, &b).is_err());
    assert!(verify_consistency(1, 0, &[], &a, &b).is_err());
    assert!(verify_consistency(2, 1, &[], &a, &b).is_err());
    assert!(verify_consistency(1, 2, &[], &a, &b).is_err());
    assert!(verify_consistency(0, 1, &[b], &b, &b).is_err());
    assert!(verify_consistency(1, 1, &[b], &b, &b).is_err());
}

/// The same vectors through the real storage: the eight leaves are stored in a SQLite ledger
/// file (they are valid UTF-8), and the proofs the ledger serves are the reference ones.
#[test]
fn sqlite_backed_proofs_match_the_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vectors.db");
    let mut store = SqliteStore::open(&path).unwrap();
    let key = LogKey::generate("example.com/vectors").unwrap();
    store.set_verifier_key(&key.verifier().to_string()).unwrap();
    let mut frontier = Frontier::new();
    let mut entries = Vec::new();
    for i in 0..8 {
        let data = leaf_data(i);
        let leaf = leaf_hash(&data);
        let mut nodes = Vec::new();
        frontier.push(leaf, &mut nodes);
        entries.push(StoredEntry {
            index: i as u64,
            data,
            leaf,
            time_us: 0,
            nodes,
        });
    }
    store.append(&entries, None).unwrap();
    drop(store);
    let ledger = Ledger::open_read_only(&path).unwrap();
    assert_eq!(ledger.len(), 8);
    assert_eq!(ledger.root(), h(ROOTS[7]));
    for size in 1..=8 {
        assert_eq!(ledger.root_at(size).unwrap(), h(ROOTS[size as usize - 1]));
    }
    for (index, size, proof) in INCLUSION {
        assert_eq!(
            ledger.inclusion_proof(index, size).unwrap().path,
            hashes(proof)
        );
    }
    for (old, new, proof) in CONSISTENCY {
        assert_eq!(
            ledger.consistency_proof(old, new).unwrap().path,
            hashes(proof)
        );
    }
}
