//! The prover's side: the [`Prover`] trait that computes C = A·B, the CPU prover, and the
//! commitment that answers both rounds.
//!
//! A prover only multiplies; generating A and B, committing to C and opening rows are
//! the same code for every device ([`commit`], [`Committed::open`]), so a GPU prover can
//! only differ in how fast it is, never in what it answers.

use std::time::Instant;

use rayon::prelude::*;
use thiserror::Error;

use super::merkle::Tree;
use super::prg::{self, Matrix, RowGenerator};
use super::transcript::{
    ChallengeRequest, Commitment, Hex32, OpenRequest, OpenResponse, OpenedRow, ProverInfo,
    TranscriptError, validate_open_request,
};

/// Errors of a prover.
#[derive(Debug, Error)]
pub enum ProverError {
    /// The request is malformed (names the field).
    #[error("invalid challenge request")]
    Request(#[from] TranscriptError),
    /// The device could not compute the product.
    #[error("{device} cannot compute the product: {detail}")]
    Device {
        /// The device (`gpu:0`).
        device: String,
        /// What failed.
        detail: String,
    },
}

/// Something that computes C = A·B exactly (`i8` inputs, `i32` accumulation).
pub trait Prover: Send + Sync {
    /// The device and its model.
    fn info(&self) -> ProverInfo;

    /// C = A·B for row-major `n × n` matrices, row-major.
    fn multiply(&self, a: &[i8], b: &[i8], n: usize) -> Result<Vec<i32>, ProverError>;
}

/// The CPU prover: exact int8 products on all cores (rayon).
#[derive(Debug, Clone, Default)]
pub struct CpuProver;

/// Rows of C computed together, so that each row of B is read once per block.
const ROW_BLOCK: usize = 8;

impl Prover for CpuProver {
    fn info(&self) -> ProverInfo {
        ProverInfo {
            device: "cpu".to_owned(),
            model: "cpu".to_owned(),
        }
    }

    fn multiply(&self, a: &[i8], b: &[i8], n: usize) -> Result<Vec<i32>, ProverError> {
        Ok(multiply_cpu(a, b, n))
    }
}

/// The CPU product, row blocks in parallel; each block streams B once.
pub fn multiply_cpu(a: &[i8], b: &[i8], n: usize) -> Vec<i32> {
    let mut c = vec![0i32; n * n];
    if n == 0 {
        return c;
    }
    c.par_chunks_mut(n * ROW_BLOCK)
        .enumerate()
        .for_each(|(block, c_block)| {
            let first_row = block * ROW_BLOCK;
            for k in 0..n {
                let b_row = &b[k * n..(k + 1) * n];
                for (offset, c_row) in c_block.chunks_mut(n).enumerate() {
                    let a_value = i32::from(a[(first_row + offset) * n + k]);
                    for (c_entry, &b_entry) in c_row.iter_mut().zip(b_row) {
                        *c_entry += a_value * i32::from(b_entry);
                    }
                }
            }
        });
    c
}

/// A challenge answered in round 1: C and its tree, kept for round 2.
#[derive(Debug, Clone)]
pub struct Committed {
    seed: [u8; 32],
    n: usize,
    c: Vec<i32>,
    tree: Tree,
    /// Round 1's answer.
    pub commitment: Commitment,
}

/// Answers round 1: generates A and B, has `prover` multiply them, builds the Merkle
/// tree over the rows of C.
pub fn commit(
    prover: &dyn Prover,
    id: &str,
    request: &ChallengeRequest,
) -> Result<Committed, ProverError> {
    request.validate()?;
    let started = Instant::now();
    let n = request.n as usize;
    let seed = request.seed.0;
    let (a, b) = rayon::join(
        || RowGenerator::new(&seed, n, Matrix::A).matrix(),
        || RowGenerator::new(&seed, n, Matrix::B).matrix(),
    );
    let c = prover.multiply(&a, &b, n)?;
    if c.len() != n * n {
        return Err(ProverError::Device {
            device: prover.info().device,
            detail: format!("returned {} entries for n = {n}", c.len()),
        });
    }
    let tree = Tree::build(&seed, n, &c);
    let compute_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(Committed {
        seed,
        n,
        commitment: Commitment {
            id: id.to_owned(),
            root: Hex32(tree.root()),
            compute_ms,
            prover: prover.info(),
        },
        c,
        tree,
    })
}

impl Committed {
    /// Assembles a commitment from parts (a dishonest prover in tests builds its own C).
    pub fn from_product(seed: [u8; 32], n: usize, c: Vec<i32>, commitment: Commitment) -> Self {
        let tree = Tree::build(&seed, n, &c);
        let commitment = Commitment {
            root: Hex32(tree.root()),
            ..commitment
        };
        Self {
            seed,
            n,
            c,
            tree,
            commitment,
        }
    }

    /// The challenge's size.
    pub fn n(&self) -> usize {
        self.n
    }

    /// The seed.
    pub fn seed(&self) -> [u8; 32] {
        self.seed
    }

    /// C, row-major.
    pub fn product(&self) -> &[i32] {
        &self.c
    }

    /// Answers round 2: `C·r` and the requested rows with their proofs. Errors name the
    /// field of the request.
    pub fn open(&self, request: &OpenRequest) -> Result<OpenResponse, TranscriptError> {
        validate_open_request(request, self.n as u32)?;
        let r = prg::r_vector(&request.r_seed.0, &self.commitment.root.0, self.n);
        let cr = self
            .c
            .par_chunks(self.n.max(1))
            .map(|row| prg::dot_i32(row, &r))
            .collect();
        let rows = request
            .rows
            .iter()
            .map(|&index| {
                let index_usize = index as usize;
                let row = &self.c[index_usize * self.n..(index_usize + 1) * self.n];
                OpenedRow {
                    index,
                    values: OpenedRow::encode(row),
                    proof: self
                        .tree
                        .proof(index_usize)
                        .into_iter()
                        .map(Hex32)
                        .collect(),
                }
            })
            .collect();
        Ok(OpenResponse { cr, rows })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_product_is_exact() {
        let n = 64;
        let a = RowGenerator::new(&[3; 32], n, Matrix::A).matrix();
        let b = RowGenerator::new(&[3; 32], n, Matrix::B).matrix();
        let c = multiply_cpu(&a, &b, n);
        for (i, j) in [(0, 0), (5, 63), (63, 17), (31, 31)] {
            let exact: i32 = (0..n)
                .map(|k| i32::from(a[i * n + k]) * i32::from(b[k * n + j]))
                .sum();
            assert_eq!(c[i * n + j], exact, "C[{i}][{j}]");
        }
        // The extremes: a row of -128 times a column of -128 sums to n·2^14.
        let a = vec![-128i8; n * n];
        let c = multiply_cpu(&a, &a, n);
        assert!(c.iter().all(|&v| v == (n as i32) * 16384));
    }
}
