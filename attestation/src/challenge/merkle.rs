//! The Merkle commitment over the rows of C.
//!
//! Leaf `i` is `SHA-256(0x00 || "plinth-challenge/1" || seed || u32le(i) || row_i)`, the
//! row as `n` little-endian `i32`s; binding the seed and the index into every leaf means a
//! root computed for one challenge cannot be replayed for another. An inner node is
//! `SHA-256(0x01 || left || right)`; a level with an odd number of nodes carries its last
//! node up unchanged. A proof lists the siblings from the leaf up, skipping the levels
//! where the node was carried.

use rayon::prelude::*;

use super::prg::digest;

/// A 32-byte hash.
pub type Hash = [u8; 32];

/// The little-endian bytes of a row of C.
pub fn row_bytes(row: &[i32]) -> Vec<u8> {
    row.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The leaf hash of row `index` of the challenge with `seed`.
pub fn leaf(seed: &[u8; 32], index: u32, row: &[i32]) -> Hash {
    digest(&[
        &[0x00],
        b"plinth-challenge/1",
        seed,
        &index.to_le_bytes(),
        &row_bytes(row),
    ])
}

fn node(left: &Hash, right: &Hash) -> Hash {
    digest(&[&[0x01], left, right])
}

/// Every level of the tree, leaves first, root last.
#[derive(Debug, Clone)]
pub struct Tree {
    levels: Vec<Vec<Hash>>,
}

impl Tree {
    /// Builds the tree over the rows of `c` (`n` rows of `n` entries), hashing on all
    /// cores.
    pub fn build(seed: &[u8; 32], n: usize, c: &[i32]) -> Self {
        let leaves: Vec<Hash> = c
            .par_chunks(n.max(1))
            .enumerate()
            .map(|(index, row)| leaf(seed, index as u32, row))
            .collect();
        Self::from_leaves(leaves)
    }

    /// Builds the tree over given leaves.
    pub fn from_leaves(leaves: Vec<Hash>) -> Self {
        let mut levels = vec![leaves];
        while levels.last().is_some_and(|level| level.len() > 1) {
            let below = levels.last().map(Vec::as_slice).unwrap_or_default();
            let above: Vec<Hash> = below
                .chunks(2)
                .map(|pair| match pair {
                    [left, right] => node(left, right),
                    [single] => *single,
                    _ => [0; 32],
                })
                .collect();
            levels.push(above);
        }
        Self { levels }
    }

    /// The root (all zeros for an empty tree).
    pub fn root(&self) -> Hash {
        self.levels
            .last()
            .and_then(|level| level.first())
            .copied()
            .unwrap_or([0; 32])
    }

    /// The proof of leaf `index`: its siblings from the bottom up.
    pub fn proof(&self, index: usize) -> Vec<Hash> {
        let mut proof = Vec::new();
        let mut position = index;
        for level in &self.levels[..self.levels.len().saturating_sub(1)] {
            let sibling = position ^ 1;
            if let Some(hash) = level.get(sibling) {
                proof.push(*hash);
            }
            position /= 2;
        }
        proof
    }
}

/// Recomputes the root from leaf `index` of `count` leaves and its proof; `None` when the
/// proof has the wrong length for that position.
pub fn root_from_proof(
    leaf_hash: Hash,
    index: usize,
    count: usize,
    proof: &[Hash],
) -> Option<Hash> {
    if index >= count {
        return None;
    }
    let mut hash = leaf_hash;
    let mut position = index;
    let mut width = count;
    let mut siblings = proof.iter();
    while width > 1 {
        let carried = position == width - 1 && width % 2 == 1;
        if !carried {
            let sibling = siblings.next()?;
            hash = if position.is_multiple_of(2) {
                node(&hash, sibling)
            } else {
                node(sibling, &hash)
            };
        }
        position /= 2;
        width = width.div_ceil(2);
    }
    if siblings.next().is_some() {
        return None;
    }
    Some(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_proof_verifies_for_every_width() {
        for count in 1..=9usize {
            let leaves: Vec<Hash> = (0..count).map(|i| [i as u8 + 1; 32]).collect();
            let tree = Tree::from_leaves(leaves.clone());
            for (index, leaf_hash) in leaves.iter().enumerate() {
                let proof = tree.proof(index);
                assert_eq!(
                    root_from_proof(*leaf_hash, index, count, &proof),
                    Some(tree.root()),
                    "count {count} index {index}"
                );
                // Another leaf, another position, or a truncated proof fail.
                assert_ne!(
                    root_from_proof([0xee; 32], index, count, &proof),
                    Some(tree.root())
                );
                if count > 1 {
                    assert_ne!(
                        root_from_proof(*leaf_hash, (index + 1) % count, count, &proof),
                        Some(tree.root())
                    );
                    if !proof.is_empty() {
                        assert_ne!(
                            root_from_proof(*leaf_hash, index, count, &proof[1..]),
                            Some(tree.root())
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn leaves_bind_seed_index_and_row() {
        let row = [1, -2, 3];
        let base = leaf(&[0; 32], 0, &row);
        assert_ne!(base, leaf(&[1; 32], 0, &row));
        assert_ne!(base, leaf(&[0; 32], 1, &row));
        assert_ne!(base, leaf(&[0; 32], 0, &[1, -2, 4]));
    }
}
