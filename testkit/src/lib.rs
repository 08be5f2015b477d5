//! Helpers shared by Warren's tests (a dev-dependency only, never linked into the broker).
//!
//! Seeded tests take their seed from `WARREN_SEED` (to replay a failure; a failing test prints
//! its seed) or else from the clock, and their round count from `WARREN_FUZZ_ROUNDS`.

/// A small xorshift random source: fast, seedable and the same on every platform, which is all
/// a replayable test needs. Not for anything that needs real randomness.
#[derive(Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..bound` (0 when `bound` is 0).
    pub fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound.max(1) as u64) as usize
    }
}

/// The seed: `WARREN_SEED` if set, else the clock. Never 0, which xorshift cannot leave.
pub fn seed() -> u64 {
    std::env::var("WARREN_SEED").ok().and_then(|text| text.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(7, |elapsed| elapsed.as_nanos() as u64)
    }) | 1
}

/// How many rounds a seeded test runs: `WARREN_FUZZ_ROUNDS`, else 3,000.
pub fn rounds() -> usize {
    std::env::var("WARREN_FUZZ_ROUNDS").ok().and_then(|text| text.parse().ok()).unwrap_or(3_000)
}

/// Runs `round` `rounds()` times, with the seeded random source and a second one derived from
/// the seed and the round number (for choices that must replay round by round, such as where
/// reads split). A panic fails the test with the seed and round that replay it.
pub fn fuzz_rounds(mut round: impl FnMut(&mut Rng, &mut Rng)) {
    let seed = seed();
    let mut rng = Rng(seed);
    for index in 0..rounds() {
        let mut round_rng = Rng(seed ^ index as u64 | 1);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| round(&mut rng, &mut round_rng)));
        assert!(result.is_ok(), "panicked: WARREN_SEED={seed} round {index}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_stays_below_its_bound_and_the_same_seed_repeats() {
        let (mut first, mut second) = (Rng(42), Rng(42));
        for bound in 0..1000 {
            let value = first.below(bound);
            assert!(value < bound.max(1));
            assert_eq!(value, second.below(bound));
        }
    }

    #[test]
    #[should_panic(expected = "WARREN_SEED=")]
    fn a_panicking_round_fails_naming_its_seed() {
        fuzz_rounds(|rng, _| assert!(rng.below(4) != 0));
    }
}
