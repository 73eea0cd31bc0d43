//! Shamir secret sharing, k of n, over GF(2^8) (the AES field, x^8 + x^4 + x^3 + x + 1).
//!
//! Owns: splitting the barrier's unseal key into shares and combining them. Arithmetic is
//! table-free (no secret-indexed lookups): multiplication is a fixed 8-round shift-and-add with
//! masks, inversion is exponentiation to 254. A share is laid out as Vault lays its unseal keys
//! out: the y bytes, then the x coordinate as the last byte. Must not: store or log shares.

use zeroize::Zeroizing;

use crate::aead::{CryptoError, random_fill};

/// Most shares one split may produce (x coordinates are the non-zero bytes).
pub const MAX_SHARES: usize = 255;

/// Why a split or combine was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShamirError {
    #[error(
        "threshold {threshold} with {shares} shares is not possible; hint: use 1 <= threshold <= shares <= 255 (threshold 1 means every share is the key)"
    )]
    BadParameters { threshold: usize, shares: usize },
    #[error("the secret is empty")]
    EmptySecret,
    #[error("share {index} is {len} bytes; every share of this key is {expected} bytes")]
    BadShareLength {
        index: usize,
        len: usize,
        expected: usize,
    },
    #[error(
        "share {index} has x coordinate 0, which no split produces; hint: the share is corrupt"
    )]
    ZeroX { index: usize },
    #[error("shares {first} and {second} are the same share (x coordinate {x})")]
    DuplicateShare { first: usize, second: usize, x: u8 },
    #[error("no shares given")]
    NoShares,
    #[error(transparent)]
    Random(#[from] CryptoError),
}

/// a * b in GF(2^8), without branches or tables.
pub(crate) fn mul(a: u8, b: u8) -> u8 {
    let mut a = a;
    let mut b = b;
    let mut p = 0u8;
    for _ in 0..8 {
        // mask is 0xff when the low bit of b is set
        let mask = 0u8.wrapping_sub(b & 1);
        p ^= a & mask;
        let carry = 0u8.wrapping_sub(a >> 7);
        a = (a << 1) ^ (0x1b & carry);
        b >>= 1;
    }
    p
}

/// a^-1 in GF(2^8) as a^254 (0 maps to 0).
pub(crate) fn inv(a: u8) -> u8 {
    // a^254 = a^(2+4+8+16+32+64+128)
    let mut result = 1u8;
    let mut sq = a;
    for _ in 0..7 {
        sq = mul(sq, sq);
        result = mul(result, sq);
    }
    result
}

/// Evaluate the polynomial with `coeffs` (constant term first) at `x` (Horner).
fn eval(coeffs: &[u8], x: u8) -> u8 {
    coeffs.iter().rev().fold(0u8, |acc, c| mul(acc, x) ^ c)
}

/// Split `secret` into `shares` shares, any `threshold` of which reconstruct it.
pub fn split(
    secret: &[u8],
    threshold: usize,
    shares: usize,
) -> Result<Vec<Zeroizing<Vec<u8>>>, ShamirError> {
    check_params(secret, threshold, shares)?;
    let xs = random_xs(shares)?;
    let mut coeffs = Zeroizing::new(vec![0u8; secret.len() * (threshold - 1)]);
    random_fill(&mut coeffs)?;
    Ok(split_with(secret, threshold, &xs, &coeffs))
}

fn check_params(secret: &[u8], threshold: usize, shares: usize) -> Result<(), ShamirError> {
    if secret.is_empty() {
        return Err(ShamirError::EmptySecret);
    }
    if threshold == 0 || threshold > shares || shares > MAX_SHARES {
        return Err(ShamirError::BadParameters { threshold, shares });
    }
    Ok(())
}

/// `shares` distinct non-zero x coordinates in random order (a random permutation of 1..=255,
/// truncated), so that share order says nothing and x never repeats.
fn random_xs(shares: usize) -> Result<Vec<u8>, ShamirError> {
    let mut all: Vec<u8> = (1..=255u8).collect();
    let mut rnd = vec![0u8; all.len() * 2];
    random_fill(&mut rnd)?;
    // Fisher-Yates with 16-bit draws (bias < 2^-8 per step, irrelevant: x is public).
    for i in (1..all.len()).rev() {
        let r = u16::from_le_bytes([
            rnd.get(2 * i).copied().unwrap_or(0),
            rnd.get(2 * i + 1).copied().unwrap_or(0),
        ]);
        let j = usize::from(r) % (i + 1);
        all.swap(i, j);
    }
    all.truncate(shares);
    Ok(all)
}

/// The split with the x coordinates and polynomial coefficients given: `coeffs` holds
/// `threshold - 1` random coefficients per secret byte. Tests drive it to show what k-1 shares
/// reveal.
pub(crate) fn split_with(
    secret: &[u8],
    threshold: usize,
    xs: &[u8],
    coeffs: &[u8],
) -> Vec<Zeroizing<Vec<u8>>> {
    let per = threshold.saturating_sub(1);
    let mut poly = Zeroizing::new(vec![0u8; threshold]);
    let mut out: Vec<Zeroizing<Vec<u8>>> = xs
        .iter()
        .map(|_| Zeroizing::new(Vec::with_capacity(secret.len() + 1)))
        .collect();
    for (i, s) in secret.iter().enumerate() {
        for (j, slot) in poly.iter_mut().enumerate() {
            *slot = if j == 0 {
                *s
            } else {
                coeffs.get(i * per + j - 1).copied().unwrap_or(0)
            };
        }
        for (share, x) in out.iter_mut().zip(xs) {
            share.push(eval(&poly, *x));
        }
    }
    for (share, x) in out.iter_mut().zip(xs) {
        share.push(*x);
    }
    out
}

/// Reconstruct the secret from shares (Lagrange interpolation at 0). With fewer shares than the
/// threshold the result is a wrong secret, indistinguishable from random: callers check it
/// against something the right secret opens (the barrier does).
pub fn combine<S: AsRef<[u8]>>(shares: &[S]) -> Result<Zeroizing<Vec<u8>>, ShamirError> {
    let first = shares.first().ok_or(ShamirError::NoShares)?.as_ref();
    let expected = first.len();
    if expected < 2 {
        return Err(ShamirError::BadShareLength {
            index: 0,
            len: expected,
            expected: 2,
        });
    }
    let mut xs = Vec::with_capacity(shares.len());
    for (index, s) in shares.iter().enumerate() {
        let s = s.as_ref();
        if s.len() != expected {
            return Err(ShamirError::BadShareLength {
                index,
                len: s.len(),
                expected,
            });
        }
        let x = s.last().copied().unwrap_or(0);
        if x == 0 {
            return Err(ShamirError::ZeroX { index });
        }
        if let Some(first) = xs.iter().position(|&seen| seen == x) {
            return Err(ShamirError::DuplicateShare {
                first,
                second: index,
                x,
            });
        }
        xs.push(x);
    }
    // Lagrange basis at 0: l_i = prod_{j != i} x_j / (x_j - x_i); subtraction is XOR.
    let basis: Vec<u8> = xs
        .iter()
        .enumerate()
        .map(|(i, &xi)| {
            xs.iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .fold(1u8, |acc, (_, &xj)| mul(acc, mul(xj, inv(xj ^ xi))))
        })
        .collect();
    let mut secret = Zeroizing::new(vec![0u8; expected - 1]);
    for (byte, out) in secret.iter_mut().enumerate() {
        *out = shares.iter().zip(&basis).fold(0u8, |acc, (s, l)| {
            acc ^ mul(s.as_ref().get(byte).copied().unwrap_or(0), *l)
        });
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reference multiplication: carry-less product reduced by the AES polynomial.
    fn slow_mul(a: u8, b: u8) -> u8 {
        let mut p: u16 = 0;
        for i in 0..8 {
            if b >> i & 1 == 1 {
                p ^= u16::from(a) << i;
            }
        }
        for i in (8..16).rev() {
            if p >> i & 1 == 1 {
                p ^= 0x11b << (i - 8);
            }
        }
        p as u8
    }

    #[test]
    fn field_arithmetic_matches_reference_on_every_pair() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                assert_eq!(mul(a, b), slow_mul(a, b), "{a} * {b}");
            }
            if a != 0 {
                assert_eq!(mul(a, inv(a)), 1, "inverse of {a}");
            }
        }
        // FIPS-197 4.2: {57} * {83} = {c1}
        assert_eq!(mul(0x57, 0x83), 0xc1);
    }

    /// One share of a 2-of-n split: over all 256 coefficients the share takes every value exactly
    /// once, whatever the secret, so one share says nothing about the secret.
    #[test]
    fn one_share_of_two_reveals_nothing() {
        for secret in [0u8, 1, 0x5a, 0xff] {
            let mut seen = [0u32; 256];
            for a in 0..=255u8 {
                let s = split_with(&[secret], 2, &[7], &[a]);
                seen[usize::from(s[0][0])] += 1;
            }
            assert!(seen.iter().all(|&c| c == 1), "secret {secret}: {seen:?}");
        }
    }

    /// Two shares of a 3-of-n split: over all 65,536 coefficient pairs each pair of share values
    /// occurs exactly once, for each secret: k-1 shares are uniform and independent of it.
    #[test]
    fn two_shares_of_three_reveal_nothing() {
        for secret in [0u8, 0xa7] {
            let mut seen = vec![0u8; 65536];
            for a in 0..=255u8 {
                for b in 0..=255u8 {
                    let s = split_with(&[secret], 3, &[3, 200], &[a, b]);
                    let idx = usize::from(s[0][0]) << 8 | usize::from(s[1][0]);
                    seen[idx] += 1;
                }
            }
            assert!(seen.iter().all(|&c| c == 1), "secret {secret}");
        }
    }

    #[test]
    fn parameters_are_checked() {
        assert!(matches!(
            split(b"k", 0, 3),
            Err(ShamirError::BadParameters { .. })
        ));
        assert!(matches!(
            split(b"k", 4, 3),
            Err(ShamirError::BadParameters { .. })
        ));
        assert!(matches!(
            split(b"k", 2, 256),
            Err(ShamirError::BadParameters { .. })
        ));
        assert_eq!(split(b"", 1, 1).unwrap_err(), ShamirError::EmptySecret);
        let s = split(b"key", 2, 3).unwrap();
        assert!(matches!(
            combine(&[s[0].clone(), s[0].clone()]),
            Err(ShamirError::DuplicateShare {
                first: 0,
                second: 1,
                ..
            })
        ));
        assert!(matches!(
            combine(&[s[0].to_vec(), vec![1, 2]]),
            Err(ShamirError::BadShareLength { index: 1, .. })
        ));
        let mut zero = s[1].to_vec();
        *zero.last_mut().unwrap() = 0;
        assert!(matches!(
            combine(&[zero]),
            Err(ShamirError::ZeroX { index: 0 })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any k of the n shares, in any order, reconstruct the secret; k-1 of them (k > 1) give
        /// something else (the probability of a match by chance is 2^-256 for 32-byte secrets).
        #[test]
        fn any_k_of_n_reconstruct(
            secret in proptest::collection::vec(any::<u8>(), 32),
            n in 1usize..=12,
            k_seed in any::<usize>(),
            pick_seed in any::<u64>(),
        ) {
            let k = 1 + k_seed % n;
            let shares = split(&secret, k, n).unwrap();
            prop_assert_eq!(shares.len(), n);
            prop_assert!(shares.iter().all(|s| s.len() == 33));
            // a pseudo-random subset of size k, in a pseudo-random order
            let mut idx: Vec<usize> = (0..n).collect();
            let mut seed = pick_seed;
            for i in (1..n).rev() {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                idx.swap(i, (seed >> 33) as usize % (i + 1));
            }
            let subset: Vec<&[u8]> = idx[..k].iter().map(|&i| &shares[i][..]).collect();
            prop_assert_eq!(&combine(&subset).unwrap()[..], &secret[..]);
            if k > 1 {
                let fewer: Vec<&[u8]> = idx[..k - 1].iter().map(|&i| &shares[i][..]).collect();
                prop_assert_ne!(&combine(&fewer).unwrap()[..], &secret[..]);
            }
        }
    }
}
