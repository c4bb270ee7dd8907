//! The clock as a dependency. The core never reads time itself; the services hold a `Clock` so
//! tests can drive time by hand (`portcullis-testkit::ManualClock`) instead of sleeping.

use std::fmt::Debug;

use crate::Timestamp;

pub trait Clock: Send + Sync + Debug {
    /// Wall-clock time, UTC. Used for what people read (audit timestamps, windows); durations
    /// that enforce access run on the monotonic clock in the services, so a clock jump never
    /// extends access.
    fn now(&self) -> Timestamp;
}
