//! When a per-tenant map that grows with every tenant served sweeps out its stale entries: once it has doubled since the last sweep (the library's context parts, the HTTP layer's rate limiters).

/// Below this many entries a map is never swept.
pub const SWEEP_FROM: usize = 1024;

/// The size at which a map next sweeps. Sweeping when it has doubled keeps
/// the work amortised (each sweep's cost is paid for by as many insertions)
/// while a map of tenants gone quiet stays within twice the tenants in use.
#[derive(Debug, Clone, Copy)]
pub struct SweepSchedule {
    at: usize,
}

impl Default for SweepSchedule {
    fn default() -> Self {
        Self { at: SWEEP_FROM }
    }
}

impl SweepSchedule {
    /// Whether a map of `len` entries, about to gain one, sweeps first.
    pub fn due(&self, len: usize) -> bool {
        len >= self.at
    }

    /// Whether a map of `len` entries, about to gain one, sweeps first, when
    /// the map also sweeps whenever it reaches `capacity`.
    pub fn due_within(&self, len: usize, capacity: usize) -> bool {
        len >= self.at.min(capacity)
    }

    /// Records a sweep that left `len` entries: the next comes when they
    /// have doubled.
    pub fn swept(&mut self, len: usize) {
        self.at = (2 * len).max(SWEEP_FROM);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_sweeps_from_its_floor_and_then_each_time_it_has_doubled() {
        let mut schedule = SweepSchedule::default();
        assert!(!schedule.due(SWEEP_FROM - 1));
        assert!(schedule.due(SWEEP_FROM));
        schedule.swept(3_000);
        assert!(!schedule.due(5_999));
        assert!(schedule.due(6_000));
        assert!(schedule.due_within(100, 100), "capacity reached");
        schedule.swept(10);
        assert!(!schedule.due(SWEEP_FROM - 1), "never below the floor");
    }
}
