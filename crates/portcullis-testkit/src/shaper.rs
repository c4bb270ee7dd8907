//! The model of one direction of a shaped link, for the `link-shaper` forwarder (issue 16's
//! benchmark; this kernel has no `sch_netem`): random loss on entry, a bottleneck of a fixed
//! rate with a drop-tail queue bounded in time, then a fixed one-way delay.
//!
//! Pure: the caller passes the time and the random draw, so the arithmetic is tested without a
//! clock or a device.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// What a link does to the packets offered to it, one way.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    /// One-way propagation delay (half the round trip).
    pub delay: Duration,
    /// Bottleneck rate, bits per second.
    pub rate_bps: u64,
    /// The longest a packet may wait in the bottleneck's queue; a packet that would wait longer
    /// is dropped (drop-tail, like a router's buffer sized in time).
    pub queue: Duration,
    /// Probability that a packet is lost at random before the queue, 0.0 to 1.0.
    pub loss: f64,
}

/// Where an offered packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It reaches the far end at this instant.
    Deliver(Instant),
    /// Lost at random.
    Lost,
    /// The queue held more than `Shape::queue` of traffic already.
    QueueFull,
}

/// One direction of a link: the instant its bottleneck is busy until.
#[derive(Debug)]
pub struct Link {
    shape: Shape,
    busy_until: Option<Instant>,
}

impl Link {
    pub fn new(shape: Shape) -> Link {
        Link {
            shape,
            busy_until: None,
        }
    }

    /// A packet of `len` bytes offered at `now`; `draw` is uniform in [0, 1).
    pub fn offer(&mut self, now: Instant, len: usize, draw: f64) -> Verdict {
        if draw < self.shape.loss {
            return Verdict::Lost;
        }
        let start = self.busy_until.map_or(now, |b| b.max(now));
        if start - now > self.shape.queue {
            return Verdict::QueueFull;
        }
        let on_wire = Duration::from_secs_f64(len as f64 * 8.0 / self.shape.rate_bps as f64);
        let done = start + on_wire;
        self.busy_until = Some(done);
        Verdict::Deliver(done + self.shape.delay)
    }
}

/// A duration written as `40ms`, `1.5s` or `250us`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = split_unit(s);
    let scale = match unit {
        "us" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        _ => {
            return Err(format!(
                "'{s}' is not a duration: write e.g. 40ms, 1.5s or 250us"
            ));
        }
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration: write e.g. 40ms, 1.5s or 250us"))?;
    if !(v >= 0.0 && v.is_finite()) {
        return Err(format!("'{s}': a duration is not negative"));
    }
    Ok(Duration::from_secs_f64(v * scale))
}

/// A rate written as `50mbit`, `800kbit` or `1gbit`, in bits per second.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let (num, unit) = split_unit(s);
    let scale = match unit.to_ascii_lowercase().as_str() {
        "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        _ => return Err(format!("'{s}' is not a rate: write e.g. 50mbit or 800kbit")),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a rate: write e.g. 50mbit or 800kbit"))?;
    let bps = (v * scale).round();
    if !(bps >= 1.0 && bps.is_finite()) {
        return Err(format!("'{s}': a rate is at least 1 bit per second"));
    }
    Ok(bps as u64)
}

fn split_unit(s: &str) -> (&str, &str) {
    let at = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    s.split_at(at)
}

/// `rtt=40ms,rate=50mbit,queue=500ms,loss=1%`: the round trip is split evenly between the two
/// directions, and each direction gets the rate, queue and loss.
impl FromStr for Shape {
    type Err = String;

    fn from_str(s: &str) -> Result<Shape, String> {
        let mut shape = Shape {
            delay: Duration::ZERO,
            rate_bps: 0,
            queue: Duration::ZERO,
            loss: 0.0,
        };
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("'{part}': write key=value (rtt, rate, queue, loss)"))?;
            match k {
                "rtt" => shape.delay = parse_duration(v)? / 2,
                "rate" => shape.rate_bps = parse_rate(v)?,
                "queue" => shape.queue = parse_duration(v)?,
                "loss" => {
                    let pct: f64 = v.trim_end_matches('%').parse().map_err(|_| {
                        format!("'{v}' is not a loss rate: write a percentage, e.g. 1%")
                    })?;
                    if !(0.0..=100.0).contains(&pct) {
                        return Err(format!("'{v}': a loss rate is between 0% and 100%"));
                    }
                    shape.loss = pct / 100.0;
                }
                other => {
                    return Err(format!(
                        "'{other}' is not a link setting: choose rtt, rate, queue or loss"
                    ));
                }
            }
        }
        if shape.rate_bps == 0 {
            return Err(format!("'{s}': a link needs a rate, e.g. rate=50mbit"));
        }
        Ok(shape)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ms RTT, {} Mbit/s, {} ms queue, {} % loss",
            (self.delay * 2).as_secs_f64() * 1e3,
            self.rate_bps as f64 / 1e6,
            self.queue.as_secs_f64() * 1e3,
            (self.loss * 100_000.0).round() / 1000.0
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(loss: f64) -> Shape {
        // 8 Mbit/s: a 1,000-byte packet takes exactly 1 ms on the wire.
        Shape {
            delay: Duration::from_millis(20),
            rate_bps: 8_000_000,
            queue: Duration::from_millis(3),
            loss,
        }
    }

    #[test]
    fn an_idle_link_delivers_after_the_wire_time_and_the_delay() {
        let t = Instant::now();
        let mut l = Link::new(shape(0.0));
        assert_eq!(
            l.offer(t, 1000, 0.5),
            Verdict::Deliver(t + Duration::from_millis(21))
        );
        // Long after, the link is idle again: the same wait, not a queued one.
        let later = t + Duration::from_secs(1);
        assert_eq!(
            l.offer(later, 1000, 0.5),
            Verdict::Deliver(later + Duration::from_millis(21))
        );
    }

    #[test]
    fn a_burst_queues_at_the_rate_and_drops_once_the_queue_is_full() {
        let t = Instant::now();
        let mut l = Link::new(shape(0.0));
        let verdicts: Vec<Verdict> = (0..6).map(|_| l.offer(t, 1000, 0.5)).collect();
        let at = |ms| Verdict::Deliver(t + Duration::from_millis(ms));
        // Waits of 0, 1, 2 and 3 ms fit a 3 ms queue; the fifth would wait 4 ms.
        assert_eq!(
            verdicts,
            vec![
                at(21),
                at(22),
                at(23),
                at(24),
                Verdict::QueueFull,
                Verdict::QueueFull
            ]
        );
        // A dropped packet takes no wire time: once the queue drains by 1 ms, one more fits.
        let t1 = t + Duration::from_millis(1);
        assert_eq!(l.offer(t1, 1000, 0.5), at(25));
        assert_eq!(l.offer(t1, 1000, 0.5), Verdict::QueueFull);
    }

    #[test]
    fn loss_is_drawn_per_packet_before_the_queue() {
        let t = Instant::now();
        let mut l = Link::new(shape(0.01));
        assert_eq!(l.offer(t, 1000, 0.009), Verdict::Lost);
        // The lost packet used no wire time.
        assert_eq!(
            l.offer(t, 1000, 0.01),
            Verdict::Deliver(t + Duration::from_millis(21))
        );
    }

    #[test]
    fn shapes_are_read_from_one_line_and_bad_ones_are_named() {
        let s: Shape = "rtt=40ms,rate=50mbit,queue=500ms,loss=1%".parse().unwrap();
        assert_eq!(s.delay, Duration::from_millis(20));
        assert_eq!(s.rate_bps, 50_000_000);
        assert_eq!(s.queue, Duration::from_millis(500));
        assert!((s.loss - 0.01).abs() < 1e-12);
        assert_eq!(
            s.to_string(),
            "40 ms RTT, 50 Mbit/s, 500 ms queue, 1 % loss"
        );
        let err = |t: &str| t.parse::<Shape>().unwrap_err();
        assert_eq!(
            err("rtt=40ms"),
            "'rtt=40ms': a link needs a rate, e.g. rate=50mbit"
        );
        assert_eq!(
            err("rate=50mbps"),
            "'50mbps' is not a rate: write e.g. 50mbit or 800kbit"
        );
        assert_eq!(
            err("rate=1mbit,jitter=5ms"),
            "'jitter' is not a link setting: choose rtt, rate, queue or loss"
        );
        assert_eq!(
            err("rate=1mbit,loss=120%"),
            "'120%': a loss rate is between 0% and 100%"
        );
        assert_eq!(
            err("rate=1mbit,rtt=forty"),
            "'forty' is not a duration: write e.g. 40ms, 1.5s or 250us"
        );
    }
}
