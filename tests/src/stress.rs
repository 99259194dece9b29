//! Shared by the reliability suites and the benchmark: reproducible
//! randomness and the suite sizes.

/// xorshift64*: a small deterministic generator, no crate needed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// `SLOTS_STRESS`: `short` (the VM suite, under emulation), unset, or
/// `long`; picks one of three sizes.
pub fn size<T>(short: T, default: T, long: T) -> T {
    match std::env::var("SLOTS_STRESS").as_deref() {
        Ok("short") => short,
        Ok("long") => long,
        _ => default,
    }
}
