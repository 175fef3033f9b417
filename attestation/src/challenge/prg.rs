//! The challenge's fixed, documented pseudo-random generator.
//!
//! Matrices: the ChaCha20 keystream (20 rounds, the original layout with a 64-bit block
//! counter and a 64-bit stream id, as `chacha20::ChaCha20Rng` produces it) keyed with
//! `SHA-256("plinth-challenge/1 matrix" || seed)`. Stream 0 is A, stream 1 is B; the
//! keystream's bytes in order, each read as a two's-complement `i8`, fill the matrix
//! row-major, so row `i` starts at keystream byte `i * n` (word `i * n / 4`; `n` is a
//! multiple of 64, see [`super::N_MULTIPLE`]). Rows can therefore be generated in any
//! order and in parallel.
//!
//! Freivalds' vector r: stream 0 of the ChaCha20 keystream keyed with
//! `SHA-256("plinth-challenge/1 r" || r_seed || root)`, read as little-endian `u64`
//! words; each word's low 40 bits are kept and the value accepted when below the prime
//! [`MODULUS`] (rejection sampling, so r is uniform modulo p). Binding the root into r
//! means a commitment changed after r was revealed gets a different r.

use chacha20::ChaCha20Rng;
use rand_core::{Rng as _, SeedableRng as _};
use rayon::prelude::*;

/// The prime modulus of Freivalds' check, `2^40 - 87`: small enough that an `i8` times
/// a residue summed over 65,536 terms fits an `i64`, large enough that a wrong product
/// passes with probability at most `1/p` (about `2^-40`) per check.
pub const MODULUS: u64 = (1 << 40) - 87;

/// Which matrix of a challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matrix {
    /// The left factor (stream 0).
    A,
    /// The right factor (stream 1).
    B,
}

fn matrix_key(seed: &[u8; 32]) -> [u8; 32] {
    digest(&[b"plinth-challenge/1 matrix", seed])
}

pub(crate) fn digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        context.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// A generator of one matrix's rows.
#[derive(Debug, Clone)]
pub struct RowGenerator {
    key: [u8; 32],
    stream: u64,
    n: usize,
}

impl RowGenerator {
    /// The generator of matrix `which` of the challenge with `seed` and size `n`.
    pub fn new(seed: &[u8; 32], n: usize, which: Matrix) -> Self {
        Self {
            key: matrix_key(seed),
            stream: match which {
                Matrix::A => 0,
                Matrix::B => 1,
            },
            n,
        }
    }

    /// Fills `row` (length `n`) with row `index`.
    pub fn fill_row(&self, index: usize, row: &mut [i8]) {
        let mut rng = ChaCha20Rng::from_seed(self.key);
        rng.set_stream(self.stream);
        rng.set_word_pos((index as u128) * (self.n as u128) / 4);
        let bytes: &mut [u8] = bytemuck_i8(row);
        rng.fill_bytes(bytes);
    }

    /// The whole matrix, row-major, generated on all cores.
    pub fn matrix(&self) -> Vec<i8> {
        let mut out = vec![0i8; self.n * self.n];
        out.par_chunks_mut(self.n.max(1))
            .enumerate()
            .for_each(|(index, row)| self.fill_row(index, row));
        out
    }
}

fn bytemuck_i8(row: &mut [i8]) -> &mut [u8] {
    // SAFETY: i8 and u8 have the same size, alignment and validity (every bit
    // pattern is valid for both); the slice's length and lifetime are kept.
    unsafe { std::slice::from_raw_parts_mut(row.as_mut_ptr().cast::<u8>(), row.len()) }
}

/// Freivalds' vector r (`n` residues modulo [`MODULUS`]) for `r_seed` and the
/// committed `root`.
pub fn r_vector(r_seed: &[u8; 32], root: &[u8; 32], n: usize) -> Vec<u64> {
    let mut rng = ChaCha20Rng::from_seed(digest(&[b"plinth-challenge/1 r", r_seed, root]));
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let candidate = rng.next_u64() & ((1 << 40) - 1);
        if candidate < MODULUS {
            out.push(candidate);
        }
    }
    out
}

/// `x mod p` for a signed value.
pub fn residue(value: i64) -> u64 {
    value.rem_euclid(MODULUS as i64) as u64
}

/// `Σ row[j] * r[j] mod p` for an `i8` row and residues `r` (each below 2^40, so each
/// product is below 2^47 in magnitude and 65,536 of them fit an `i64`).
pub fn dot_i8(row: &[i8], r: &[u64]) -> u64 {
    let sum: i64 = row
        .iter()
        .zip(r)
        .map(|(&a, &b)| i64::from(a) * b as i64)
        .sum();
    residue(sum)
}

/// `Σ row[j] * r[j] mod p` for an `i32` row (an opened row of C).
pub fn dot_i32(row: &[i32], r: &[u64]) -> u64 {
    let p = u128::from(MODULUS);
    let sum = row.iter().zip(r).fold(0u128, |acc, (&c, &b)| {
        (acc + u128::from(residue(i64::from(c))) * u128::from(b)) % p
    });
    sum as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_deterministic_independent_of_order_and_distinct_per_matrix() {
        let seed = [7u8; 32];
        let a = RowGenerator::new(&seed, 64, Matrix::A);
        let whole = a.matrix();
        let mut row5 = vec![0i8; 64];
        a.fill_row(5, &mut row5);
        assert_eq!(&whole[5 * 64..6 * 64], row5.as_slice());
        let b = RowGenerator::new(&seed, 64, Matrix::B).matrix();
        assert_ne!(whole, b);
        let other = RowGenerator::new(&[8u8; 32], 64, Matrix::A).matrix();
        assert_ne!(whole, other);
        // Both signs occur: the bytes are read as two's complement.
        assert!(whole.iter().any(|&v| v < 0) && whole.iter().any(|&v| v > 0));
    }

    #[test]
    fn the_first_bytes_are_the_chacha20_keystream() {
        // Pins the documented layout: the first row of A is the first keystream bytes of
        // stream 0 under SHA-256("plinth-challenge/1 matrix" || seed).
        let seed = [0u8; 32];
        let mut rng = ChaCha20Rng::from_seed(matrix_key(&seed));
        let mut expected = [0u8; 64];
        rng.fill_bytes(&mut expected);
        let mut row = vec![0i8; 64];
        RowGenerator::new(&seed, 64, Matrix::A).fill_row(0, &mut row);
        let bytes: Vec<u8> = row.iter().map(|&v| v as u8).collect();
        assert_eq!(bytes, expected);
    }

    #[test]
    fn r_is_below_the_modulus_and_bound_to_the_root() {
        let r = r_vector(&[1; 32], &[2; 32], 1000);
        assert_eq!(r.len(), 1000);
        assert!(r.iter().all(|&v| v < MODULUS));
        assert_ne!(r, r_vector(&[1; 32], &[3; 32], 1000));
    }

    #[test]
    fn dots_agree_with_exact_arithmetic() {
        let row: Vec<i8> = vec![-128, 127, 5, -1];
        let r = vec![MODULUS - 1, 3, 0, 10];
        let exact: i128 = -128 * i128::from(MODULUS - 1) + 127 * 3 - 10;
        let expected = exact.rem_euclid(i128::from(MODULUS)) as u64;
        assert_eq!(dot_i8(&row, &r), expected);
        let wide: Vec<i32> = row.iter().map(|&v| i32::from(v)).collect();
        assert_eq!(dot_i32(&wide, &r), expected);
        assert_eq!(dot_i32(&[i32::MIN, i32::MAX], &[1, 1]), residue(-1));
    }
}
