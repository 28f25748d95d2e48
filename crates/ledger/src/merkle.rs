//! Merkle tree math of RFC 6962 / RFC 9162, as pure functions.
//!
//! - leaf hash: `SHA-256(0x00 ‖ data)`; interior node: `SHA-256(0x01 ‖ left ‖ right)`;
//! - the hash of an empty tree is `SHA-256("")`;
//! - a tree of `n > 1` leaves splits at `k`, the largest power of two smaller than `n`.
//!
//! Proof *generation* ([`inclusion_proof`], [`consistency_proof`]) reads perfect-subtree hashes
//! from a [`NodeSource`] (storage keeps one hash per complete subtree), so a proof costs
//! O(log n) lookups; proof *verification* ([`verify_inclusion`], [`verify_consistency`]) follows
//! the algorithms of RFC 9162 §2.1.3.2 and §2.1.4.2 step by step. [`Frontier`] is the compact
//! state of a growing tree: the hashes of its maximal perfect subtrees.

use sha2::{Digest, Sha256};

/// A SHA-256 digest: a leaf hash, a node hash or a root hash.
pub type Hash = [u8; 32];

/// Why a proof could not be produced or did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    #[error("index {index} is outside a tree of size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("sizes out of order: cannot prove tree size {old} is a prefix of size {new}")]
    SizesOutOfOrder { old: u64, new: u64 },
    #[error("proof has {got} hashes, a proof for these sizes has {expected}")]
    WrongProofLength { got: usize, expected: usize },
    #[error("proof does not lead to the expected root")]
    RootMismatch,
    #[error("proof leads to the expected new root but not to the old root")]
    OldRootMismatch,
    #[error("trees of equal size {size} must have equal roots and an empty proof")]
    EqualSizesDiffer { size: u64 },
}

/// `SHA-256(0x00 ‖ data)`: the hash of a leaf holding `data`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 ‖ left ‖ right)`: the hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// `SHA-256("")`: the root of the empty tree.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The root of the tree over `leaves` (leaf hashes), by the recursive definition of RFC 6962
/// §2.1. O(n); used as the reference the storage-backed functions are tested against.
pub fn root_from_leaves(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => empty_root(),
        [one] => *one,
        _ => {
            let k = split_point(leaves.len() as u64) as usize;
            let (left, right) = leaves.split_at(k);
            node_hash(&root_from_leaves(left), &root_from_leaves(right))
        }
    }
}

/// The largest power of two strictly smaller than `n` (`n >= 2`).
fn split_point(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// Read access to the hashes of perfect subtrees of one tree: the subtree at `level` (height;
/// leaves are level 0) and `index` covers leaves `[index·2^level, (index+1)·2^level)`.
pub trait NodeSource {
    /// The error reading a node can fail with.
    type Error: From<MerkleError>;
    /// The hash of the perfect subtree at (`level`, `index`); callers only ask for subtrees
    /// that lie entirely within the tree size they are working on.
    fn perfect(&self, level: u32, index: u64) -> Result<Hash, Self::Error>;
}

/// The hash of the subtree over leaves `[start, end)`, where the range is one that occurs in the
/// RFC 6962 decomposition (its start is a multiple of the largest power of two not above its
/// size). Perfect ranges are one lookup; others combine O(log n) lookups.
fn range_hash<S: NodeSource>(src: &S, start: u64, end: u64) -> Result<Hash, S::Error> {
    let n = end - start;
    if n == 0 {
        return Ok(empty_root());
    }
    if n.is_power_of_two() {
        let level = n.trailing_zeros();
        return src.perfect(level, start >> level);
    }
    let k = split_point(n);
    let left = range_hash(src, start, start + k)?;
    let right = range_hash(src, start + k, end)?;
    Ok(node_hash(&left, &right))
}

/// The root of the first `size` leaves of the tree behind `src`.
pub fn root<S: NodeSource>(src: &S, size: u64) -> Result<Hash, S::Error> {
    range_hash(src, 0, size)
}

/// The audit path `PATH(index, D[0:size])` of RFC 6962 §2.1.1, lowest level first.
pub fn inclusion_proof<S: NodeSource>(
    src: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, S::Error> {
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size }.into());
    }
    let mut proof = Vec::with_capacity(64);
    path(src, index, 0, size, &mut proof)?;
    Ok(proof)
}

/// `PATH(m, D[start:end])`, with `m` relative to `start`.
fn path<S: NodeSource>(
    src: &S,
    m: u64,
    start: u64,
    end: u64,
    out: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    let n = end - start;
    if n <= 1 {
        return Ok(());
    }
    let k = split_point(n);
    if m < k {
        path(src, m, start, start + k, out)?;
        out.push(range_hash(src, start + k, end)?);
    } else {
        path(src, m - k, start + k, end, out)?;
        out.push(range_hash(src, start, start + k)?);
    }
    Ok(())
}

/// The consistency proof `PROOF(old, D[0:new])` of RFC 6962 §2.1.2, lowest level first.
/// Empty when `old` is 0 or equals `new`.
pub fn consistency_proof<S: NodeSource>(
    src: &S,
    old: u64,
    new: u64,
) -> Result<Vec<Hash>, S::Error> {
    if old > new {
        return Err(MerkleError::SizesOutOfOrder { old, new }.into());
    }
    let mut proof = Vec::with_capacity(64);
    if old > 0 && old < new {
        subproof(src, old, 0, new, true, &mut proof)?;
    }
    Ok(proof)
}

/// `SUBPROOF(m, D[start:end], b)`, with `m` relative to `start`.
fn subproof<S: NodeSource>(
    src: &S,
    m: u64,
    start: u64,
    end: u64,
    complete: bool,
    out: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    let n = end - start;
    if m == n {
        if !complete {
            out.push(range_hash(src, start, end)?);
        }
        return Ok(());
    }
    let k = split_point(n);
    if m <= k {
        subproof(src, m, start, start + k, complete, out)?;
        out.push(range_hash(src, start + k, end)?);
    } else {
        subproof(src, m - k, start + k, end, false, out)?;
        out.push(range_hash(src, start, start + k)?);
    }
    Ok(())
}

/// Right-shifts `a` and `b` together while `a` is non-zero and even.
fn shift_while_even(a: &mut u64, b: &mut u64) {
    while *a != 0 && *a & 1 == 0 {
        *a >>= 1;
        *b >>= 1;
    }
}

/// The root an inclusion proof leads to (RFC 9162 §2.1.3.2, steps 1–4), checking that the proof
/// has exactly the length a tree of `size` needs for `index`.
pub fn root_from_inclusion_proof(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
) -> Result<Hash, MerkleError> {
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    let mut f = index;
    let mut s = size - 1;
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return Err(wrong_length(
                proof.len(),
                inclusion_proof(&Shape, index, size),
            ));
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            shift_while_even(&mut f, &mut s);
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(wrong_length(
            proof.len(),
            inclusion_proof(&Shape, index, size),
        ));
    }
    Ok(r)
}

/// Checks that `leaf` is at `index` in the tree of `size` leaves whose root is `root`
/// (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), MerkleError> {
    if root_from_inclusion_proof(index, size, leaf, proof)? == *root {
        Ok(())
    } else {
        Err(MerkleError::RootMismatch)
    }
}

/// A node source of all-zero hashes: proofs generated from it have the right *shape*, which
/// error messages use to say how long a proof should have been.
struct Shape;

impl NodeSource for Shape {
    type Error = MerkleError;
    fn perfect(&self, _level: u32, _index: u64) -> Result<Hash, MerkleError> {
        Ok([0; 32])
    }
}

fn wrong_length(got: usize, expected: Result<Vec<Hash>, MerkleError>) -> MerkleError {
    match expected {
        Ok(p) => MerkleError::WrongProofLength {
            got,
            expected: p.len(),
        },
        Err(e) => e,
    }
}

/// Checks that the tree of `old` leaves with root `old_root` is a prefix of the tree of `new`
/// leaves with root `new_root` (RFC 9162 §2.1.4.2). `old == 0` is consistent with anything
/// given an empty proof; `old == new` needs equal roots and an empty proof.
pub fn verify_consistency(
    old: u64,
    new: u64,
    proof: &[Hash],
    old_root: &Hash,
    new_root: &Hash,
) -> Result<(), MerkleError> {
    if old > new {
        return Err(MerkleError::SizesOutOfOrder { old, new });
    }
    if old == new {
        return if proof.is_empty() && old_root == new_root {
            Ok(())
        } else {
            Err(MerkleError::EqualSizesDiffer { size: old })
        };
    }
    if old == 0 {
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(MerkleError::WrongProofLength {
                got: proof.len(),
                expected: 0,
            })
        };
    }
    // Step 1.
    let Some((first, rest)) = proof.split_first() else {
        return Err(wrong_length(0, consistency_proof(&Shape, old, new)));
    };
    // Step 2: when `old` is a power of two its root is the first node of the path.
    let (start, path): (&Hash, &[Hash]) = if old.is_power_of_two() {
        (old_root, proof)
    } else {
        (first, rest)
    };
    // Steps 3 and 4.
    let mut f = old - 1;
    let mut s = new - 1;
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    // Step 5.
    let mut fr = *start;
    let mut sr = *start;
    // Step 6.
    for c in path {
        if s == 0 {
            return Err(wrong_length(
                proof.len(),
                consistency_proof(&Shape, old, new),
            ));
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            shift_while_even(&mut f, &mut s);
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    // Step 7.
    if s != 0 {
        return Err(wrong_length(
            proof.len(),
            consistency_proof(&Shape, old, new),
        ));
    }
    if sr != *new_root {
        return Err(MerkleError::RootMismatch);
    }
    if fr != *old_root {
        return Err(MerkleError::OldRootMismatch);
    }
    Ok(())
}

/// The compact state of a tree being built leaf by leaf: the hashes of its maximal perfect
/// subtrees, largest (leftmost) first — one per set bit of the size. Appending a leaf returns the
/// perfect subtrees it completes, which is exactly what storage must keep for O(log n) proofs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    peaks: Vec<Hash>,
}

impl Clone for Frontier {
    fn clone(&self) -> Self {
        Frontier {
            size: self.size,
            peaks: self.peaks.clone(),
        }
    }

    /// Reuses the peaks' allocation: the writer copies its frontier at every commit.
    fn clone_from(&mut self, source: &Self) {
        self.size = source.size;
        self.peaks.clone_from(&source.peaks);
    }
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        Frontier::default()
    }

    /// The frontier of the first `size` leaves of the tree behind `src` (O(log n) lookups).
    pub fn from_source<S: NodeSource>(src: &S, size: u64) -> Result<Self, S::Error> {
        let mut peaks = Vec::with_capacity(size.count_ones() as usize);
        let mut start = 0u64;
        for level in (0..64u32).rev() {
            if size & (1 << level) != 0 {
                peaks.push(src.perfect(level, start >> level)?);
                start += 1 << level;
            }
        }
        Ok(Frontier { size, peaks })
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf; `completed` receives the perfect subtrees of level 1 and above this leaf
    /// completes, lowest first: for the leaf at index `i` these are the subtrees of levels
    /// `1..=i.trailing_ones()` ending at `i`.
    pub fn push(&mut self, leaf: Hash, completed: &mut Vec<Hash>) {
        let mut h = leaf;
        let mut n = self.size;
        while n & 1 == 1 {
            let Some(left) = self.peaks.pop() else { break };
            h = node_hash(&left, &h);
            completed.push(h);
            n >>= 1;
        }
        self.peaks.push(h);
        self.size += 1;
    }

    /// The root of the tree so far.
    pub fn root(&self) -> Hash {
        let mut peaks = self.peaks.iter().rev();
        match peaks.next() {
            None => empty_root(),
            Some(last) => peaks.fold(*last, |acc, left| node_hash(left, &acc)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// All levels of a tree kept in memory, for tests.
    struct Levels(Vec<Vec<Hash>>);

    impl Levels {
        fn new(leaves: &[Hash]) -> Self {
            let mut levels = vec![leaves.to_vec()];
            while let Some(last) = levels.last() {
                if last.len() < 2 {
                    break;
                }
                let next = last
                    .chunks_exact(2)
                    .map(|p| node_hash(&p[0], &p[1]))
                    .collect();
                levels.push(next);
            }
            Levels(levels)
        }
    }

    impl NodeSource for Levels {
        type Error = MerkleError;
        fn perfect(&self, level: u32, index: u64) -> Result<Hash, MerkleError> {
            Ok(self.0[level as usize][index as usize])
        }
    }

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    #[test]
    fn split_point_is_largest_power_of_two_below() {
        assert_eq!(split_point(2), 1);
        assert_eq!(split_point(3), 2);
        assert_eq!(split_point(4), 2);
        assert_eq!(split_point(5), 4);
        assert_eq!(split_point(8), 4);
        assert_eq!(split_point(9), 8);
        assert_eq!(split_point(u64::MAX), 1 << 63);
    }

    #[test]
    fn frontier_matches_recursive_definition() {
        let all = leaves(70);
        let mut f = Frontier::new();
        assert_eq!(f.root(), empty_root());
        let mut completed = Vec::new();
        for (i, leaf) in all.iter().enumerate() {
            completed.clear();
            f.push(*leaf, &mut completed);
            assert_eq!(completed.len() as u32, (i as u64).trailing_ones());
            assert_eq!(f.root(), root_from_leaves(&all[..=i]), "size {}", i + 1);
        }
        let src = Levels::new(&all);
        for size in 0..=70 {
            let g = Frontier::from_source(&src, size).unwrap();
            assert_eq!(g.root(), root_from_leaves(&all[..size as usize]));
            assert_eq!(root(&src, size).unwrap(), g.root());
        }
    }

    #[test]
    fn every_proof_of_small_trees_verifies() {
        let all = leaves(33);
        let src = Levels::new(&all);
        for size in 1..=33u64 {
            let r = root(&src, size).unwrap();
            for index in 0..size {
                let p = inclusion_proof(&src, index, size).unwrap();
                verify_inclusion(index, size, &all[index as usize], &p, &r).unwrap();
            }
            for old in 0..=size {
                let p = consistency_proof(&src, old, size).unwrap();
                verify_consistency(old, size, &p, &root(&src, old).unwrap(), &r).unwrap();
            }
        }
    }

    #[test]
    fn out_of_range_requests_are_errors() {
        let src = Levels::new(&leaves(4));
        assert_eq!(
            inclusion_proof(&src, 4, 4),
            Err(MerkleError::IndexOutOfRange { index: 4, size: 4 })
        );
        assert_eq!(
            consistency_proof(&src, 5, 4),
            Err(MerkleError::SizesOutOfOrder { old: 5, new: 4 })
        );
    }
}
