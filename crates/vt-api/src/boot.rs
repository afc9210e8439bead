//! Boot-timing percentiles (`GET /v1/system/boot-timings`) and the one nearest-rank
//! percentile function they use.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use vt_events::BootTimings;

/// Filters of `GET /v1/system/boot-timings`; all optional, combined with AND.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BootTimingsQuery {
    /// Only instances placed on this node (id or name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(max_length = 253)]
    pub node: Option<String>,
    /// Only instances of this env (`env_...` id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(max_length = 64)]
    pub env: Option<String>,
    /// Only instances of this process type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(max_length = 63)]
    pub process: Option<String>,
}

/// A phase of an instance's start, as measured in [`BootTimings`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BootPhase {
    /// Start → the image's root disk is ready.
    RootDisk,
    /// Boot start → the VMM process is spawned.
    VmmSpawned,
    /// Guest kernel start → guest init start (guest clock).
    KernelToInit,
    /// Guest init start → entrypoint started (guest clock).
    InitToEntrypoint,
    /// Start → the entrypoint runs, as the node saw it.
    Running,
    /// Start → the first passing health check.
    Healthy,
}

impl BootPhase {
    /// Every phase, in boot order (the order of summaries).
    pub const ALL: [BootPhase; 6] =
        [Self::RootDisk, Self::VmmSpawned, Self::KernelToInit, Self::InitToEntrypoint, Self::Running, Self::Healthy];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RootDisk => "root_disk",
            Self::VmmSpawned => "vmm_spawned",
            Self::KernelToInit => "kernel_to_init",
            Self::InitToEntrypoint => "init_to_entrypoint",
            Self::Running => "running",
            Self::Healthy => "healthy",
        }
    }

    /// This phase's time in `t`, milliseconds.
    pub fn of(self, t: &BootTimings) -> Option<u64> {
        match self {
            Self::RootDisk => t.root_disk_ms,
            Self::VmmSpawned => t.vmm_spawned_ms,
            Self::KernelToInit => t.kernel_to_init_ms,
            Self::InitToEntrypoint => t.init_to_entrypoint_ms,
            Self::Running => t.running_ms,
            Self::Healthy => t.healthy_ms,
        }
    }
}

/// One phase over the instances that report it, milliseconds. Percentiles are nearest-rank
/// ([`nearest_rank`]); all four are absent when `count` is 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PhaseStats {
    pub phase: BootPhase,
    /// Instances that reported this phase.
    pub count: u32,
    pub p50_ms: Option<u64>,
    pub p95_ms: Option<u64>,
    pub p99_ms: Option<u64>,
    pub max_ms: Option<u64>,
}

impl PhaseStats {
    /// The statistics of `samples` (any order).
    pub fn of(phase: BootPhase, mut samples: Vec<u64>) -> PhaseStats {
        samples.sort_unstable();
        PhaseStats {
            phase,
            count: u32::try_from(samples.len()).unwrap_or(u32::MAX),
            p50_ms: nearest_rank(&samples, 50),
            p95_ms: nearest_rank(&samples, 95),
            p99_ms: nearest_rank(&samples, 99),
            max_ms: samples.last().copied(),
        }
    }
}

/// `GET /v1/system/boot-timings`: per-phase boot timings of the matching instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BootTimingSummary {
    /// Instances matching the filters.
    pub instances: u32,
    /// Of those, the instances that reported boot timings.
    pub with_timings: u32,
    /// Every phase, always all six, in boot order.
    pub phases: Vec<PhaseStats>,
}

impl BootTimingSummary {
    /// The summary of `instances` instances, of which those with timings yield them.
    pub fn of<'a>(instances: usize, timings: impl IntoIterator<Item = &'a BootTimings>) -> BootTimingSummary {
        let timings: Vec<&BootTimings> = timings.into_iter().collect();
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        BootTimingSummary {
            instances: count(instances),
            with_timings: count(timings.len()),
            phases: BootPhase::ALL
                .iter()
                .map(|&p| PhaseStats::of(p, timings.iter().filter_map(|t| p.of(t)).collect()))
                .collect(),
        }
    }
}

/// Nearest-rank percentile of `sorted` (ascending): the smallest sample such that at least
/// `percent`% of the samples are ≤ it, i.e. the sample at rank ⌈percent/100 × n⌉ (1-based,
/// at least 1, at most n). `None` for no samples. Always one of the samples, never an
/// interpolation: p50 of [1, 2, 3, 4] is 2, p95 of 20 samples is the 19th.
pub fn nearest_rank<T: Copy>(sorted: &[T], percent: u32) -> Option<T> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = (percent as usize).saturating_mul(n).div_ceil(100).clamp(1, n);
    Some(sorted[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_picks_a_sample() {
        assert_eq!(nearest_rank::<u64>(&[], 50), None);
        assert_eq!(nearest_rank(&[7], 1), Some(7));
        assert_eq!(nearest_rank(&[7], 99), Some(7));
        assert_eq!(nearest_rank(&[1, 2, 3, 4], 50), Some(2));
        assert_eq!(nearest_rank(&[1, 2, 3, 4], 51), Some(3));
        assert_eq!(nearest_rank(&[1, 2, 3, 4, 5], 50), Some(3));
        assert_eq!(nearest_rank(&[1, 2, 3, 4, 5], 95), Some(5));
        let hundred: Vec<u64> = (1..=100).collect();
        for p in [1, 50, 95, 99, 100] {
            assert_eq!(nearest_rank(&hundred, p), Some(u64::from(p)));
        }
        let twenty: Vec<u64> = (1..=20).collect();
        assert_eq!(nearest_rank(&twenty, 95), Some(19));
        assert_eq!(nearest_rank(&twenty, 99), Some(20));
        // Out of range asks for the ends.
        assert_eq!(nearest_rank(&twenty, 0), Some(1));
        assert_eq!(nearest_rank(&twenty, 250), Some(20));
        // Any Copy type, e.g. the agent's f64 milliseconds.
        assert_eq!(nearest_rank(&[0.5, 1.5, 2.5], 50), Some(1.5));
    }

    #[test]
    fn summary_counts_each_phase_over_the_instances_that_have_it() {
        let t = |root: u64, running: Option<u64>| BootTimings {
            root_disk_ms: Some(root),
            running_ms: running,
            ..Default::default()
        };
        let timings = [t(30, Some(2000)), t(10, None), t(20, Some(1000))];
        let s = BootTimingSummary::of(5, &timings);
        assert_eq!((s.instances, s.with_timings), (5, 3));
        assert_eq!(s.phases.iter().map(|p| p.phase).collect::<Vec<_>>(), BootPhase::ALL);
        assert_eq!(
            s.phases[0],
            PhaseStats {
                phase: BootPhase::RootDisk,
                count: 3,
                p50_ms: Some(20),
                p95_ms: Some(30),
                p99_ms: Some(30),
                max_ms: Some(30)
            }
        );
        assert_eq!(
            s.phases[4],
            PhaseStats {
                phase: BootPhase::Running,
                count: 2,
                p50_ms: Some(1000),
                p95_ms: Some(2000),
                p99_ms: Some(2000),
                max_ms: Some(2000)
            }
        );
        assert_eq!(
            s.phases[5],
            PhaseStats { phase: BootPhase::Healthy, count: 0, p50_ms: None, p95_ms: None, p99_ms: None, max_ms: None }
        );
        for p in BootPhase::ALL {
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
    }
}
