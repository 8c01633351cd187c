//! One invocation of the harness: every profile, every run, then the report.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::broker::{self, BrokerProcess, DataDir, Placement, ProcessUsage};
use crate::comparison;
use crate::figures;
use crate::loadgen::{loadgen_args, run_loadgen, RunFiles, Target};
use crate::peers::PeerInstall;
use crate::replicated;
use crate::report::{self, ReportContext};
use crate::results::RunResult;
use crate::scenario::{RunSpec, Scenario};
use crate::Args;

const SECONDS_PER_DAY: u64 = 86_400;

/// What every run of the session shares.
pub struct Session<'a> {
    pub scenario: &'a Scenario,
    shardline: PathBuf,
    loadgen: PathBuf,
    tuning_dir: PathBuf,
    pub data_parent: PathBuf,
    out: PathBuf,
    broker_placement: Placement,
    loadgen_cpus: Option<Vec<usize>>,
    started: Instant,
    /// TLS flags for the broker and for the load generator (empty: plaintext).
    broker_tls: Vec<String>,
    loadgen_tls: Vec<String>,
    /// A SCRAM user the harness creates on each broker, and its password file.
    sasl: Option<(String, PathBuf)>,
    /// The Prometheus scraping the brokers (`--prometheus`).
    scraper: Option<crate::scrape::Scraper>,
}

/// Runs the scenario; `Ok(false)` when a run failed (the report is still written).
pub fn run(args: &Args) -> Result<bool, String> {
    let mut scenario = Scenario::load(&args.scenario)?;
    if let Some(profiles) = &args.profiles {
        scenario.restrict_profiles(profiles)?;
    }
    if let Some(peers) = &args.peers {
        let peers: Vec<String> = peers.iter().filter(|p| *p != "none").cloned().collect();
        scenario.set_peers(&peers)?;
    }
    let peers = scenario.peer_list()?;
    let install = PeerInstall::from_env(&args.kafka_version);
    if let Some(reason) = &scenario.not_runnable {
        return Err(format!(
            "scenario {} is not yet runnable: {reason}",
            scenario.name
        ));
    }
    let started_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let out = args.out.clone().unwrap_or_else(|| {
        Path::new("target/bench-reports").join(format!(
            "{}-{}",
            scenario.name,
            utc_timestamp(started_unix_s)
        ))
    });
    std::fs::create_dir_all(&out).map_err(|e| format!("creating {}: {e}", out.display()))?;
    let allowed_cpus = broker::allowed_cpus();
    let (broker_placement, loadgen_cpus) = if args.no_pin {
        (Placement::Unpinned, None)
    } else {
        broker::placement(&allowed_cpus)
    };
    let session = Session {
        scenario: &scenario,
        shardline: binary(args.shardline.as_ref(), "shardline")?,
        loadgen: binary(args.loadgen.as_ref(), "shardline-loadgen")?,
        tuning_dir: tuning_dir(args.tuning_dir.as_ref())?,
        data_parent: args
            .data_parent
            .clone()
            .unwrap_or_else(std::env::temp_dir)
            .join(format!("shardline-bench-{}", std::process::id())),
        out,
        broker_placement,
        loadgen_cpus,
        started: Instant::now(),
        broker_tls: Vec::new(),
        loadgen_tls: Vec::new(),
        sasl: None,
        scraper: None,
    };
    let mut session = session;
    if let (Some(cert), Some(key), Some(ca)) = (&args.tls_cert, &args.tls_key, &args.tls_ca) {
        if scenario.replication.is_some() {
            return Err(format!(
                "scenario {}: --tls-* applies to single-broker scenarios, not to clusters",
                scenario.name
            ));
        }
        let flag = |name: &str, path: &Path| [name.to_string(), path.display().to_string()];
        session.broker_tls = [flag("--tls-cert", cert), flag("--tls-key", key)].concat();
        session.loadgen_tls = flag("--tls-ca", ca).to_vec();
    }
    if let (Some(user), Some(file)) = (&args.sasl_user, &args.sasl_password_file) {
        session.sasl = Some((user.clone(), file.clone()));
        session
            .loadgen_tls
            .extend(["--sasl-user".to_string(), user.clone()]);
        session.loadgen_tls.extend([
            "--sasl-password-file".to_string(),
            file.display().to_string(),
        ]);
    }
    if args.prometheus {
        if scenario.replication.is_some() || !scenario.comparisons.is_empty() {
            return Err(format!(
                "scenario {}: --prometheus applies to single-broker scenarios without peers",
                scenario.name
            ));
        }
        let scraper =
            crate::scrape::Scraper::start(&session.data_parent.join("prometheus"), &session.out)?;
        session.broker_tls.extend(scraper.broker_args());
        session.scraper = Some(scraper);
    }
    let session = session;
    for profile in &scenario.profiles {
        let path = session.profile_path(profile);
        if !path.is_file() {
            return Err(format!("profile {profile}: no file {}", path.display()));
        }
    }
    let clusters = scenario.replication.as_ref().map_or(String::new(), |r| {
        let peers = match scenario.peers.len() {
            0 => String::new(),
            _ => format!(", then peer cluster(s) {}", scenario.peers.join(", ")),
        };
        format!(" x {} clusters{peers}", r.clusters.len())
    });
    eprintln!(
        "shardline-bench: scenario {} ({} profiles{clusters} x {} runs, about {:.0} s of load), \
         report in {}",
        scenario.name,
        scenario.profiles.len(),
        scenario.runs.len(),
        scenario.load_seconds(),
        session.out.display()
    );
    let device_probe = args.device_probe.then(|| {
        eprintln!("shardline-bench: probing the data device (2.5 GiB of writes)");
        let probed = crate::device::probe(
            &session.data_parent,
            crate::device::ProbeSize::REPORT,
            scenario.message_bytes as u64,
        );
        match &probed {
            Ok(probe) => eprintln!("{}", probe.describe()),
            Err(error) => eprintln!("shardline-bench: the device probe failed: {error}"),
        }
        probed
    });
    let hog = match args.disk_hog {
        true => Some(crate::hog::DiskHog::start(&session.data_parent)?),
        false => None,
    };
    let results = if let Some(replication) = &scenario.replication {
        replicated::run_all(&session, replication, &peers, &install)
    } else if !scenario.comparisons.is_empty() {
        comparison::run_all(&session, &peers, &install)
    } else {
        session.every_profile()
    };
    if let Some(scraper) = &session.scraper {
        match scraper.plot(&session.out) {
            Ok(path) => eprintln!("scraped throughput: {}", path.display()),
            Err(error) => eprintln!("no scraped-throughput plot: {error}"),
        }
    }
    let disk_hog = hog.map(crate::hog::DiskHog::stop);
    match &disk_hog {
        Some(Ok(totals)) => eprintln!("{}", totals.describe()),
        Some(Err(error)) => eprintln!("shardline-bench: {error}"),
        None => {}
    }
    let hog_failed = matches!(disk_hog, Some(Err(_)));
    let _ = std::fs::remove_dir_all(&session.data_parent);
    let plots = figures::write_plots(&session.out, &results, scenario.broker_per_profile);
    let context = ReportContext {
        scenario: &scenario,
        kafka_version: peers
            .iter()
            .any(|peer| peer.is_kafka())
            .then(|| install.kafka_version.clone()),
        machine: report::machine(&allowed_cpus),
        placement: session.placement_json(),
        started_unix_s,
        elapsed_s: session.started.elapsed().as_secs_f64(),
        plots,
        disk_hog,
        device_probe,
    };
    let json = serde_json::to_string_pretty(&report::report_json(&context, &results))
        .map_err(|e| format!("encoding report.json: {e}"))?;
    report::write(&session.out, "report.json", &json)?;
    report::write(
        &session.out,
        "report.md",
        &report::report_markdown(&context, &results),
    )?;
    println!("report: {}", session.out.join("report.md").display());
    println!("{}", report::markdown_table(&results));
    let peer_text = report::peer_section(&results);
    if !peer_text.is_empty() {
        println!("{peer_text}");
    }
    let replication_text = report::replication_section(&results);
    if !replication_text.is_empty() {
        println!("{replication_text}");
    }
    Ok(!hog_failed && results.iter().all(|r| r.skipped.is_some() || r.succeeded()))
}

impl Session<'_> {
    /// The file of tuning profile `profile`.
    pub fn profile_path(&self, profile: &str) -> PathBuf {
        self.tuning_dir.join(format!("{profile}.toml"))
    }

    /// The `shardline` binary.
    pub fn shardline(&self) -> &Path {
        &self.shardline
    }

    /// The CPUs the broker side is confined to, when it is pinned (a cluster's brokers
    /// inherit them from their launcher; a peer cluster's nodes get them too).
    pub fn broker_cpus(&self) -> Option<&[usize]> {
        match &self.broker_placement {
            Placement::Pinned(cpus) => Some(cpus.as_slice()),
            Placement::Unpinned => None,
        }
    }

    /// The load generator.
    pub fn loadgen(&self) -> &Path {
        &self.loadgen
    }

    /// Every profile of the scenario, each run on a fresh broker (or, with
    /// `broker_per_profile`, all runs of a profile on one).
    fn every_profile(&self) -> Vec<RunResult> {
        let profiles = &self.scenario.profiles;
        let mut results = Vec::new();
        for (index, profile) in profiles.iter().enumerate() {
            let label = format!("{profile} ({}/{})", index + 1, profiles.len());
            if self.scenario.broker_per_profile {
                results.extend(self.profile_with_one_broker(profile, &label));
            } else {
                for run in &self.scenario.runs {
                    results.push(self.run_with_own_broker(profile, &label, run));
                }
            }
        }
        results
    }

    pub fn progress(&self, message: &str) {
        eprintln!("[{:7.1}s] {message}", self.started.elapsed().as_secs_f64());
    }

    fn start_broker(
        &self,
        profile: &str,
        data_name: &str,
    ) -> Result<(DataDir, BrokerProcess), String> {
        let data = DataDir::create(&self.data_parent, data_name)?;
        let broker = BrokerProcess::start(
            &self.shardline,
            &data.0,
            &self.profile_path(profile),
            &self.broker_placement,
            &self.broker_tls,
        )?;
        Ok((data, broker))
    }

    /// Creates `--sasl-user` on a broker the harness started (which does not require SCRAM,
    /// so no administrator login is needed), with the `shardline` CLI.
    fn create_sasl_user(&self, address: &str) -> Result<(), String> {
        let Some((user, file)) = &self.sasl else {
            return Ok(());
        };
        let output = std::process::Command::new(&self.shardline)
            .args(["user", "create", "--broker", address, "--name", user])
            .arg("--password-file")
            .arg(file)
            .args(self.loadgen_tls.iter().take_while(|a| *a != "--sasl-user"))
            .output()
            .map_err(|e| format!("running shardline user create: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "creating SCRAM user {user}: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(())
    }

    /// A fresh broker, one loadgen run, the broker's usage, a clean stop.
    fn run_with_own_broker(&self, profile: &str, label: &str, run: &RunSpec) -> RunResult {
        let mut result = self.empty_result(profile, run, &self.scenario.topic);
        self.shardline_run(&mut result, profile, label, run);
        result
    }

    /// Into `result`: a fresh broker with `profile`, one loadgen run, the broker's usage,
    /// a clean stop.
    pub fn shardline_run(&self, result: &mut RunResult, profile: &str, label: &str, run: &RunSpec) {
        self.progress(&format!("{label} run {}: starting broker", run.label()));
        let (_data, mut broker) =
            match self.start_broker(profile, &format!("{}-{}", result.profile, result.run)) {
                Ok(started) => started,
                Err(error) => {
                    result.errors.push(error);
                    return;
                }
            };
        if let Err(error) = self.create_sasl_user(&broker.address) {
            result.errors.push(error);
            return;
        }
        let loaded_from = crate::scrape::now_s();
        self.load(result, &broker.address, label, run);
        if let Some(scraper) = &self.scraper {
            scraper.mark(profile, loaded_from, crate::scrape::now_s());
        }
        match broker.usage() {
            Ok(usage) => set_usage(result, None, usage),
            Err(error) => result.errors.push(error),
        }
        if let Err(error) = broker.stop() {
            result.errors.push(error);
        }
        self.progress(&format!("{label} run {}: done", run.label()));
    }

    /// One broker for all runs of the profile, in order (phases); each on its own topic.
    fn profile_with_one_broker(&self, profile: &str, label: &str) -> Vec<RunResult> {
        let runs = &self.scenario.runs;
        let topic = |run: &RunSpec| format!("{}-{}", self.scenario.topic, run.label());
        self.progress(&format!(
            "{label}: starting broker for {} phases",
            runs.len()
        ));
        let (_data, mut broker) = match self.start_broker(profile, profile) {
            Ok(started) => started,
            Err(error) => {
                return runs
                    .iter()
                    .map(|run| {
                        let mut result = self.empty_result(profile, run, &topic(run));
                        result.errors.push(error.clone());
                        result
                    })
                    .collect();
            }
        };
        let mut results = Vec::new();
        let sasl_user = self.create_sasl_user(&broker.address);
        for run in runs {
            let mut result = self.empty_result(profile, run, &topic(run));
            if let Err(error) = &sasl_user {
                result.errors.push(error.clone());
                results.push(result);
                continue;
            }
            let before = broker.usage();
            let loaded_from = crate::scrape::now_s();
            self.load(&mut result, &broker.address, label, run);
            if let Some(scraper) = &self.scraper {
                scraper.mark(profile, loaded_from, crate::scrape::now_s());
            }
            match (before, broker.usage()) {
                (Ok(before), Ok(after)) => set_usage(&mut result, Some(before), after),
                (Err(error), _) | (_, Err(error)) => result.errors.push(error),
            }
            results.push(result);
        }
        if let Err(error) = broker.stop() {
            if let Some(last) = results.last_mut() {
                last.errors.push(error);
            }
        }
        self.progress(&format!("{label}: done"));
        results
    }

    /// Runs the loadgen for `run` against the server at `address` (the system and acks of
    /// `result`) and reads its report into `result`.
    pub fn load(&self, result: &mut RunResult, address: &str, label: &str, run: &RunSpec) {
        let files = RunFiles::new(&result.profile, &result.run);
        // A cluster's label is not a profile: its brokers' profile is.
        let tuning_profile = result
            .cluster
            .as_ref()
            .map_or(result.profile.as_str(), |cluster| {
                cluster.tuning_profile.as_str()
            });
        let profile_path = self.profile_path(tuning_profile);
        let target = Target {
            system: &result.system,
            acks: &result.acks,
            profile: (result.system == "shardline" && profile_path.exists())
                .then_some(profile_path.as_path()),
        };
        let mut args = loadgen_args(self.scenario, run, &result.topic, address, &target);
        if result.system == "shardline" {
            args.extend(self.loadgen_tls.iter().cloned());
        }
        let time = Duration::from_secs_f64(result.warmup_s + result.duration_s);
        self.progress(&format!(
            "{label} run {}: rate {} for {:.1} s (+{:.1} s warm-up) against {}",
            run.label(),
            run.rate,
            result.duration_s,
            result.warmup_s,
            address
        ));
        let prefix = format!("  {} {}:", result.profile, result.run);
        let status = run_loadgen(
            &self.loadgen,
            &args,
            &self.out,
            &files,
            self.loadgen_cpus.as_deref(),
            time,
            &prefix,
        );
        match status {
            Ok(status) => {
                result.loadgen_exit_code = status.code();
                if !status.success() {
                    result.errors.push(format!(
                        "loadgen exited with {status} (log: {})",
                        files.log.display()
                    ));
                }
            }
            Err(error) => result.errors.push(error),
        }
        let json_path = self.out.join(&files.json);
        match std::fs::read_to_string(&json_path)
            .map_err(|e| e.to_string())
            .and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string()))
        {
            Ok(report) => result.read_loadgen(report),
            Err(error) => result
                .errors
                .push(format!("reading {}: {error}", json_path.display())),
        }
    }

    /// The directory of `result`'s files in the report (loadgen JSON, histograms, logs).
    pub fn run_dir(&self, result: &RunResult) -> PathBuf {
        self.out
            .join(RunFiles::new(&result.profile, &result.run).dir)
    }

    pub fn empty_result(&self, profile: &str, run: &RunSpec, topic: &str) -> RunResult {
        self.empty_result_labelled(profile, &run.label(), run, topic)
    }

    /// As `empty_result`, under run label `label`.
    pub fn empty_result_labelled(
        &self,
        profile: &str,
        label: &str,
        run: &RunSpec,
        topic: &str,
    ) -> RunResult {
        let files = RunFiles::new(profile, label);
        let path = |p: &Path| p.display().to_string();
        RunResult {
            system: "shardline".into(),
            acks: self.scenario.acks.clone(),
            profile: profile.to_string(),
            run: label.to_string(),
            rate: run.rate.clone(),
            warmup_s: self.scenario.warmup_s(run),
            duration_s: self.scenario.duration_s(run),
            topic: topic.to_string(),
            loadgen_json: path(&files.json),
            produce_hgrm: path(&files.hdr_dir.join("produce-ack.hgrm")),
            end_to_end_hgrm: path(&files.hdr_dir.join("end-to-end.hgrm")),
            ..RunResult::default()
        }
    }

    fn placement_json(&self) -> serde_json::Value {
        if let Some(replication) = &self.scenario.replication {
            return self.cluster_placement_json(replication.cores_per_broker);
        }
        let description = match (&self.broker_placement, &self.loadgen_cpus) {
            (Placement::Pinned(broker), Some(loadgen)) => format!(
                "{} shards pinned to CPUs {broker:?}, loadgen on CPUs {loadgen:?}",
                broker::BROKER_SHARDS
            ),
            _ => format!(
                "{} unpinned shards (--no-pin, or fewer than 4 CPUs): broker and loadgen share \
                 the CPUs",
                broker::BROKER_SHARDS
            ),
        };
        let broker_cpus = match &self.broker_placement {
            Placement::Pinned(cpus) => Some(cpus.clone()),
            Placement::Unpinned => None,
        };
        json!({
            "broker_shards": broker::BROKER_SHARDS,
            "broker_cpus": broker_cpus,
            "loadgen_cpus": self.loadgen_cpus,
            "description": description,
            "shardline": self.shardline.display().to_string(),
            "loadgen": self.loadgen.display().to_string(),
            "tuning_dir": self.tuning_dir.display().to_string(),
        })
    }

    /// Where a replicated scenario's brokers and loadgen run.
    fn cluster_placement_json(&self, cores_per_broker: usize) -> serde_json::Value {
        let mut description = match (&self.broker_placement, &self.loadgen_cpus) {
            (Placement::Pinned(brokers), Some(loadgen)) => format!(
                "every broker of a cluster unpinned with {cores_per_broker} shard(s) \
                 (`shardline cluster local --cores {cores_per_broker}`) inside CPUs \
                 {brokers:?} (the launcher's affinity, inherited), loadgen on CPUs {loadgen:?}"
            ),
            _ => format!(
                "every broker of a cluster unpinned with {cores_per_broker} shard(s) \
                 (`shardline cluster local --cores {cores_per_broker}`): the brokers and the \
                 loadgen share the CPUs"
            ),
        };
        if !self.scenario.peers.is_empty() {
            description.push_str(&format!(
                "; the nodes of a peer cluster ({}) where the brokers are",
                self.scenario.peers.join(", ")
            ));
        }
        let broker_cpus = match &self.broker_placement {
            Placement::Pinned(cpus) => Some(cpus.clone()),
            Placement::Unpinned => None,
        };
        json!({
            "cores_per_broker": cores_per_broker,
            "broker_cpus": broker_cpus,
            "loadgen_cpus": self.loadgen_cpus,
            "description": description,
            "shardline": self.shardline.display().to_string(),
            "loadgen": self.loadgen.display().to_string(),
            "tuning_dir": self.tuning_dir.display().to_string(),
        })
    }
}

pub fn set_usage(result: &mut RunResult, before: Option<ProcessUsage>, after: ProcessUsage) {
    let cpu_before = before.map_or(0.0, |usage| usage.cpu_s);
    result.broker_cpu_s = Some(after.cpu_s - cpu_before);
    result.broker_peak_rss_mib = Some(after.peak_rss_mib);
}

/// `given`, else `name` next to this executable.
fn binary(given: Option<&PathBuf>, name: &str) -> Result<PathBuf, String> {
    if let Some(path) = given {
        return if path.is_file() {
            Ok(path.clone())
        } else {
            Err(format!("no binary at {}", path.display()))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("locating this binary: {e}"))?;
    let path = exe.with_file_name(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "no {name} next to {} (build it: cargo build --release --workspace, or pass --{})",
            exe.display(),
            name.trim_start_matches("shardline-")
        ))
    }
}

fn tuning_dir(given: Option<&PathBuf>) -> Result<PathBuf, String> {
    let candidates = match given {
        Some(dir) => vec![dir.clone()],
        None => vec![
            PathBuf::from("tuning"),
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tuning"),
        ],
    };
    candidates
        .into_iter()
        .find(|dir| dir.is_dir())
        .ok_or("no tuning/ directory here or in the repository; pass --tuning-dir".into())
}

/// `YYYYMMDD-HHMMSS` in UTC for seconds since the epoch (civil-from-days, H. Hinnant).
pub fn utc_timestamp(unix_s: u64) -> String {
    let days = (unix_s / SECONDS_PER_DAY) as i64;
    let seconds = unix_s % SECONDS_PER_DAY;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        seconds / 3600,
        seconds % 3600 / 60,
        seconds % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_timestamps_are_calendar_dates() {
        assert_eq!(utc_timestamp(0), "19700101-000000");
        assert_eq!(utc_timestamp(951_782_400), "20000229-000000");
        assert_eq!(utc_timestamp(1_795_903_261), "20261128-220101");
    }
}
