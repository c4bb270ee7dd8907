//! Small statistics and machine probes shared by the benchmarks (`benches/` of store, web).

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Instant;

/// The median; NaN for no values.
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// The nearest-rank percentile `p` (0-100); NaN for no values.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// A rate rounded with thousands separators: 12345.6 -> "12,346".
pub fn fmt_rate(r: f64) -> String {
    let s = (r.round() as u64).to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Median latency of an 8 KiB write + fdatasync in a scratch file under `dir`, in ms: the disk's
/// part of every durable commit, which on a shared VM swings by an order of magnitude.
pub fn fsync_ms(dir: &Path) -> f64 {
    let dir = tempfile::tempdir_in(dir).expect("scratch dir");
    let mut f = std::fs::File::create(dir.path().join("probe")).expect("probe file");
    f.write_all(&[0; 1 << 20]).expect("write");
    f.sync_all().expect("sync");
    let mut times = Vec::new();
    for i in 0..200u64 {
        f.seek(SeekFrom::Start((i % 128) * 8192)).expect("seek");
        let t = Instant::now();
        f.write_all(&[b'x'; 8192]).expect("write");
        f.sync_data().expect("fdatasync");
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    median(&times)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_percentiles_and_rates() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(fmt_rate(12345.6), "12,346");
        assert_eq!(fmt_rate(999.0), "999");
        assert_eq!(fmt_rate(1_000_000.0), "1,000,000");
    }
}
