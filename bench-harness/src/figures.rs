//! Which plots a report has, each as SVG and PNG: per run, latency by percentile
//! (produce-ack and end-to-end, a line per profile) and throughput over time (a line pair
//! per profile); throughput bars over all runs; and, when a scenario's runs are phases on
//! one broker, the throughput over time of all phases end to end.

use std::path::Path;

use crate::plot;
use crate::plot_time::{self, ProfileTimeline};
use crate::results::{RunResult, TimelinePoint};

/// Writes every plot into `out`; returns the file names written (SVG and PNG). A plot that
/// fails is reported and skipped.
pub fn write_plots(out: &Path, results: &[RunResult], phases_on_one_broker: bool) -> Vec<String> {
    let runs = distinct(results.iter().map(|r| r.run.as_str()));
    let mut written = Vec::new();
    let mut keep = |name: String, outcome: Result<(), String>| match outcome {
        Ok(()) => {
            let png = Path::new(&name).with_extension("png").display().to_string();
            written.push(name);
            written.push(png);
        }
        Err(error) => eprintln!("shardline-bench: {error}"),
    };
    for run in &runs {
        for (kind, title) in [
            ("produce", "produce-ack latency"),
            ("e2e", "end-to-end latency"),
        ] {
            let lines = latency_lines(out, results, run, kind);
            if lines.is_empty() {
                continue;
            }
            let name = format!("latency-{kind}-{run}.svg");
            let title = format!("{title}, run {run}");
            keep(
                name.clone(),
                plot::latency_plot(&out.join(&name), &title, &lines),
            );
        }
        let lines = timelines(results.iter().filter(|r| r.run == *run));
        if !lines.is_empty() {
            let name = format!("throughput-time-{run}.svg");
            let title = format!("throughput over time, run {run}");
            keep(
                name.clone(),
                plot_time::throughput_time_plot(&out.join(&name), &title, &lines, &[]),
            );
        }
    }
    if phases_on_one_broker && runs.len() > 1 {
        let (lines, boundaries) = phases_end_to_end(results);
        if !lines.is_empty() {
            let name = "throughput-time-phases.svg".to_string();
            let title = format!("throughput over time, phases {}", runs.join(" → "));
            keep(
                name.clone(),
                plot_time::throughput_time_plot(&out.join(&name), &title, &lines, &boundaries),
            );
        }
    }
    let name = "throughput.svg".to_string();
    keep(
        name.clone(),
        plot::throughput_plot(&out.join(&name), "throughput by run and profile", results),
    );
    written
}

fn distinct<'a>(names: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen: Vec<&str> = Vec::new();
    for name in names {
        if !seen.contains(&name) {
            seen.push(name);
        }
    }
    seen
}

/// (profile, percentile rows) of `run`'s produce or end-to-end histograms.
fn latency_lines(
    out: &Path,
    results: &[RunResult],
    run: &str,
    kind: &str,
) -> Vec<(String, Vec<(f64, f64)>)> {
    results
        .iter()
        .filter(|r| r.run == run)
        .filter_map(|r| {
            let file = if kind == "produce" {
                &r.produce_hgrm
            } else {
                &r.end_to_end_hgrm
            };
            let rows = plot::read_hgrm(&out.join(file)).ok()?;
            (!rows.is_empty()).then(|| (r.profile.clone(), rows))
        })
        .collect()
}

/// One line pair per result that has a timeline.
fn timelines<'a>(results: impl Iterator<Item = &'a RunResult>) -> Vec<ProfileTimeline> {
    results
        .filter(|r| !r.timeline.is_empty())
        .map(|r| ProfileTimeline {
            profile: r.profile.clone(),
            points: r.timeline.clone(),
        })
        .collect()
}

/// Per profile, its runs' timelines end to end (in run order); the boundaries are those of
/// the first profile (the phases have the same planned lengths for every profile).
pub fn phases_end_to_end(results: &[RunResult]) -> (Vec<ProfileTimeline>, Vec<f64>) {
    let mut lines = Vec::new();
    let mut first_boundaries = None;
    for profile in distinct(results.iter().map(|r| r.profile.as_str())) {
        let runs: Vec<&[TimelinePoint]> = results
            .iter()
            .filter(|r| r.profile == profile)
            .map(|r| r.timeline.as_slice())
            .collect();
        let (points, boundaries) = plot_time::concatenate(&runs);
        if points.is_empty() {
            continue;
        }
        first_boundaries.get_or_insert(boundaries);
        lines.push(ProfileTimeline {
            profile: profile.to_string(),
            points,
        });
    }
    (lines, first_boundaries.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::tests::run_result;

    #[test]
    fn every_plot_is_listed_as_svg_and_png_and_phases_get_their_own_plot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let results = [
            run_result("latency", "before", 500),
            run_result("latency", "spike", 600),
            run_result("durable", "before", 700),
            run_result("durable", "spike", 800),
        ];
        let written = write_plots(dir.path(), &results, true);
        for name in [
            "throughput-time-before.svg",
            "throughput-time-before.png",
            "throughput-time-spike.png",
            "throughput-time-phases.svg",
            "throughput-time-phases.png",
            "throughput.svg",
            "throughput.png",
        ] {
            assert!(written.iter().any(|w| w == name), "{name} in {written:?}");
            assert!(dir.path().join(name).is_file(), "{name}");
        }
        // The hgrm files of run_result do not exist: no latency plots, and no error.
        assert!(
            !written.iter().any(|w| w.starts_with("latency-")),
            "{written:?}"
        );
        let (lines, boundaries) = phases_end_to_end(&results);
        assert_eq!(lines.len(), 2);
        assert_eq!(boundaries, [2.002]);
        assert_eq!(lines[0].points.len(), 4);
        let without_phases = write_plots(dir.path(), &results[..1], false);
        assert_eq!(
            without_phases,
            [
                "throughput-time-before.svg",
                "throughput-time-before.png",
                "throughput.svg",
                "throughput.png"
            ]
        );
    }
}
