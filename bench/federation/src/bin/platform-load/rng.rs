//! Deterministic randomness without a dependency: SplitMix64, weighted and Zipf draws.

/// SplitMix64: small, fast, and every seed gives a good stream.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    #[cfg(test)]
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A stream of its own for `seed` and the parts that name a use (a user, a table, a
    /// connection): the same names give the same stream on every machine.
    pub fn derive(seed: u64, parts: &[u64]) -> Self {
        let mut state = Self(seed ^ 0x6a09_e667_f3bc_c908);
        for part in parts {
            state.0 ^= part.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            state.next_u64();
        }
        state
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n) (0 when n is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in [low, high].
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }

    /// A geometric count with mean `mean` (at least 1).
    pub fn geometric(&mut self, mean: f64) -> u64 {
        let p = 1.0 / mean.max(1.0);
        let u = self.f64().max(f64::MIN_POSITIVE);
        1 + (u.ln() / (1.0 - p).ln()).floor().max(0.0) as u64
    }
}

/// FNV-1a of a name, to derive streams from text.
pub fn hash_name(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Draws indexes with probabilities proportional to weights.
#[derive(Debug, Clone)]
pub struct Weighted {
    cumulative: Vec<f64>,
}

impl Weighted {
    pub fn new(weights: &[f64]) -> Self {
        let mut total = 0.0;
        let cumulative = weights
            .iter()
            .map(|weight| {
                total += weight.max(0.0);
                total
            })
            .collect();
        Self { cumulative }
    }

    /// Zipf's law over `n` ranks: rank r (from 1) has weight r^-s.
    pub fn zipf(n: usize, s: f64) -> Self {
        let weights: Vec<f64> = (1..=n).map(|rank| (rank as f64).powf(-s)).collect();
        Self::new(&weights)
    }

    pub fn total(&self) -> f64 {
        self.cumulative.last().copied().unwrap_or(0.0)
    }

    /// The probability of index `i`.
    pub fn probability(&self, i: usize) -> f64 {
        let below = if i == 0 { 0.0 } else { self.cumulative[i - 1] };
        (self.cumulative[i] - below) / self.total()
    }

    pub fn sample(&self, rng: &mut Rng) -> usize {
        let target = rng.f64() * self.total();
        self.cumulative
            .partition_point(|&c| c <= target)
            .min(self.cumulative.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4).map(|_| Rng::derive(7, &[1, 2]).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(
            Rng::derive(7, &[1, 2]).next_u64(),
            Rng::derive(7, &[2, 1]).next_u64()
        );
    }

    #[test]
    fn weighted_draws_follow_the_weights() {
        let weighted = Weighted::new(&[1.0, 0.0, 3.0]);
        let mut rng = Rng::new(1);
        let mut counts = [0u32; 3];
        for _ in 0..40_000 {
            counts[weighted.sample(&mut rng)] += 1;
        }
        assert_eq!(counts[1], 0);
        let ratio = f64::from(counts[2]) / f64::from(counts[0]);
        assert!((2.8..3.2).contains(&ratio), "{counts:?}");
    }

    #[test]
    fn geometric_mean_is_close() {
        let mut rng = Rng::new(3);
        let n = 50_000;
        let sum: u64 = (0..n).map(|_| rng.geometric(6.0)).sum();
        let mean = sum as f64 / f64::from(n);
        assert!((5.7..6.3).contains(&mean), "{mean}");
    }
}
