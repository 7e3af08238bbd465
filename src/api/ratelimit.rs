//! A token bucket for log lines an untrusted party can trigger (a refused peer, a wrong
//! bearer token, a flood of connections): the first few are logged, then at most a steady
//! trickle, and the number suppressed in between is reported with the next line.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct LogLimiter {
    state: Mutex<Bucket>,
    burst: u32,
    refill_every: Duration,
}

#[derive(Debug)]
struct Bucket {
    tokens: u32,
    last_refill: Instant,
    suppressed: u64,
}

impl LogLimiter {
    /// Allows `burst` lines at once, then one per `refill_every`.
    pub fn new(burst: u32, refill_every: Duration) -> Self {
        Self {
            state: Mutex::new(Bucket {
                tokens: burst,
                last_refill: Instant::now(),
                suppressed: 0,
            }),
            burst,
            refill_every,
        }
    }

    /// `Some(suppressed_since_last)` if this line may be logged, `None` to drop it.
    pub fn check(&self) -> Option<u64> {
        self.check_at(Instant::now())
    }

    fn check_at(&self, now: Instant) -> Option<u64> {
        let mut bucket = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(bucket.last_refill);
        let refill_nanos = self.refill_every.as_nanos().max(1);
        let earned = elapsed.as_nanos() / refill_nanos;
        if earned > 0 {
            let earned = u32::try_from(earned).unwrap_or(u32::MAX);
            bucket.tokens = bucket.tokens.saturating_add(earned).min(self.burst);
            bucket.last_refill = now;
        }
        if bucket.tokens == 0 {
            bucket.suppressed += 1;
            return None;
        }
        bucket.tokens -= 1;
        Some(std::mem::take(&mut bucket.suppressed))
    }
}

impl Default for LogLimiter {
    /// 10 lines at once, then one every 6 s.
    fn default() -> Self {
        Self::new(10, Duration::from_secs(6))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_trickle_with_suppressed_count() {
        let limiter = LogLimiter::new(2, Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(limiter.check_at(t0), Some(0));
        assert_eq!(limiter.check_at(t0), Some(0));
        assert_eq!(limiter.check_at(t0), None);
        assert_eq!(limiter.check_at(t0), None);
        assert_eq!(limiter.check_at(t0 + Duration::from_millis(1500)), Some(2));
        assert_eq!(limiter.check_at(t0 + Duration::from_millis(1500)), None);
        // A long quiet period refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(100);
        assert_eq!(limiter.check_at(later), Some(1));
        assert_eq!(limiter.check_at(later), Some(0));
        assert_eq!(limiter.check_at(later), None);
    }
}
