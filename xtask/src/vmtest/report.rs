//! Reading test results (libtest's output and the VM's markers) and keeping
//! `docs/kernel-compat.md`, one row per kernel series and place, up to date.
use std::{collections::BTreeMap, fmt::Write as _, path::PathBuf, process::Command};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use super::{kernel::Kernel, out_dir, qemu::Boot};
use crate::workspace_root;

const DOC: &str = "docs/kernel-compat.md";
const QEMU: &str = "QEMU (TCG)";
const HOST: &str = "host";
/// Lines of a test executable's failure report shown in the summary.
const DETAIL_LINES: usize = 40;

/// Test counts from libtest's output. Each `running N tests` starts one
/// executable's run; its `test result:` line is authoritative, and for a
/// run cut short (crash, time limit) the per-test lines are counted.
#[derive(Default, Clone)]
pub struct Counts {
    pub passed: u32,
    pub failed: u32,
    pub ignored: u32,
    /// Names of the tests that failed.
    pub failures: Vec<String>,
    /// Per-test lines of the current run, not yet summed up.
    pending: Option<[u32; 3]>,
}

impl Counts {
    pub fn add_line(&mut self, line: &str) {
        let line = line.trim_end();
        if line.starts_with("running ") && (line.ends_with(" tests") || line.ends_with(" test")) {
            self.finish();
            self.pending = Some([0; 3]);
        } else if let Some(rest) = line.strip_prefix("test result: ") {
            let num = |what: &str| {
                rest.split(';')
                    .filter_map(|p| {
                        p.trim()
                            .trim_start_matches("ok. ")
                            .trim_start_matches("FAILED. ")
                            .split_once(' ')
                    })
                    .find(|(_, w)| *w == what)
                    .and_then(|(n, _)| n.parse::<u32>().ok())
                    .unwrap_or(0)
            };
            self.passed += num("passed");
            self.failed += num("failed");
            self.ignored += num("ignored");
            self.pending = None;
        } else if let Some(rest) = line.strip_prefix("test ")
            && let Some((name, result)) = rest.rsplit_once(" ... ")
        {
            let p = self.pending.get_or_insert([0; 3]);
            match result {
                "ok" => p[0] += 1,
                "FAILED" => {
                    p[1] += 1;
                    self.failures.push(name.to_string());
                }
                r if r.starts_with("ignored") => p[2] += 1,
                _ => {}
            }
        }
    }

    /// Adds the per-test counts of a run that printed no summary.
    pub fn finish(&mut self) {
        if let Some([p, f, i]) = self.pending.take() {
            self.passed += p;
            self.failed += f;
            self.ignored += i;
        }
    }
}

/// One test executable's run inside the VM.
pub struct BinRun {
    pub name: String,
    /// Exit code; `None` if the VM stopped before it ended.
    pub rc: Option<i32>,
    pub counts: Counts,
    pub seconds: f64,
    /// libtest's report of the failures (panic messages, captured output).
    pub details: Vec<String>,
    in_details: bool,
}

/// What the console of one VM says.
#[derive(Default)]
pub struct Outcome {
    pub release: Option<String>,
    pub smoke: Option<String>,
    pub bins: Vec<BinRun>,
    pub done: bool,
    pub errors: Vec<String>,
    pub panic: bool,
}

pub fn parse_console(text: &str) -> Outcome {
    let mut o = Outcome::default();
    let mut current: Option<BinRun> = None;
    for line in text.lines() {
        if line.contains("Kernel panic") {
            o.panic = true;
        }
        let Some(i) = line.find("VMTEST-") else {
            if let Some(b) = current.as_mut() {
                b.counts.add_line(line);
                // libtest prints `failures:`, the captured output of each
                // failed test, then `failures:` again with the names.
                if line == "failures:" {
                    b.in_details = b.details.is_empty();
                } else if b.in_details {
                    b.details.push(line.to_string());
                }
            }
            continue;
        };
        let marker = &line[i + "VMTEST-".len()..];
        let (kind, rest) = marker.split_once(' ').unwrap_or((marker, ""));
        match kind {
            "KERNEL" => o.release = Some(rest.trim().to_string()),
            "SMOKE" => o.smoke = Some(rest.trim().to_string()),
            "ERROR" => o.errors.push(rest.trim().to_string()),
            "BEGIN" => {
                current = Some(BinRun {
                    name: rest.trim().to_string(),
                    rc: None,
                    counts: Counts::default(),
                    seconds: 0.0,
                    details: Vec::new(),
                    in_details: false,
                })
            }
            "END" => {
                if let Some(mut b) = current.take() {
                    let field = |k: &str| {
                        rest.split_whitespace()
                            .find_map(|w| w.strip_prefix(k))
                            .and_then(|v| v.parse::<f64>().ok())
                    };
                    b.rc = field("rc=").map(|v| v as i32);
                    b.seconds = field("end=").unwrap_or(0.0) - field("start=").unwrap_or(0.0);
                    b.counts.finish();
                    o.bins.push(b);
                }
            }
            "DONE" => o.done = true,
            _ => {}
        }
    }
    if let Some(mut b) = current.take() {
        b.counts.finish();
        o.bins.push(b);
    }
    o
}

impl Outcome {
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for b in &self.bins {
            c.passed += b.counts.passed;
            c.failed += b.counts.failed;
            c.ignored += b.counts.ignored;
            c.failures
                .extend(b.counts.failures.iter().map(|f| format!("{}: {f}", b.name)));
        }
        c
    }

    fn freplace_unavailable(&self) -> bool {
        self.smoke.as_deref().is_some_and(|s| s.contains("ext=no"))
    }

    pub fn passed(&self, boot: &Boot) -> bool {
        self.problems(boot).is_empty()
    }

    /// Why the run failed; empty when it passed.
    pub fn problems(&self, boot: &Boot) -> Vec<String> {
        let mut p = Vec::new();
        if boot.status.is_none() {
            p.push("time limit reached".to_string());
        }
        if self.panic {
            p.push("kernel panic".to_string());
        }
        if !self.done {
            p.push("no VMTEST-DONE marker (the VM did not finish the suite)".to_string());
        }
        if self.freplace_unavailable() {
            p.push("the kernel has no freplace (ext) programs".to_string());
        }
        p.extend(self.errors.iter().cloned());
        for b in &self.bins {
            match b.rc {
                Some(0) => {}
                Some(rc) if rc > 128 => p.push(format!(
                    "{} killed by signal {} (the time limit of --test-timeout, or out of memory)",
                    b.name,
                    rc - 128
                )),
                Some(rc) if b.counts.failed == 0 => p.push(format!("{} exited with {rc}", b.name)),
                Some(_) => {}
                None => p.push(format!("{} did not finish", b.name)),
            }
        }
        p.extend(
            self.counts()
                .failures
                .iter()
                .map(|f| format!("failed: {f}")),
        );
        p
    }

    pub fn summary(&self, k: &Kernel, boot: &Boot) -> String {
        let c = self.counts();
        let problems = self.problems(boot);
        let mut s = format!(
            "vmtest: {} ({}): {}: {} passed, {} failed, {} ignored in {} executable(s); {:.0} s; {}",
            k.label,
            self.release.as_deref().unwrap_or(&k.release),
            if problems.is_empty() { "PASS" } else { "FAIL" },
            c.passed,
            c.failed,
            c.ignored,
            self.bins.len(),
            boot.elapsed.as_secs_f64(),
            super::show(&boot.log),
        );
        if let Some(smoke) = &self.smoke {
            let _ = write!(s, "\n    smoke: {smoke}");
        }
        for b in &self.bins {
            let _ = write!(
                s,
                "\n    {}: rc={} {} passed, {} failed, {} ignored, {:.1} s",
                b.name,
                b.rc.map_or("-".to_string(), |r| r.to_string()),
                b.counts.passed,
                b.counts.failed,
                b.counts.ignored,
                b.seconds
            );
        }
        for b in self.bins.iter().filter(|b| !b.details.is_empty()) {
            let _ = write!(s, "\n    --- {} ---", b.name);
            for line in b.details.iter().take(DETAIL_LINES) {
                let _ = write!(s, "\n    {line}");
            }
            if b.details.len() > DETAIL_LINES {
                let _ = write!(s, "\n    ... (the rest in {})", super::show(&boot.log));
            }
        }
        for p in problems {
            let _ = write!(s, "\n    {p}");
        }
        s
    }
}

/// One row of the compatibility table.
#[derive(Clone, Serialize, Deserialize)]
pub struct Row {
    /// `major.minor` of the kernel.
    pub series: String,
    pub kernel: String,
    pub runs_on: String,
    pub backend: String,
    pub passed: u32,
    pub failed: u32,
    pub ignored: u32,
    pub result: String,
    pub date: String,
}

impl Row {
    pub fn from_vm(k: &Kernel, o: &Outcome, ok: bool) -> Self {
        let c = o.counts();
        let release = o.release.clone().unwrap_or_else(|| k.release.clone());
        Self {
            series: series(&release),
            kernel: format!("{release} (Debian {})", k.version),
            runs_on: QEMU.into(),
            backend: "freplace".into(),
            passed: c.passed,
            failed: c.failed,
            ignored: c.ignored,
            result: if ok { "pass" } else { "fail" }.into(),
            date: today(),
        }
    }

    pub fn host(c: &Counts, ok: bool) -> Self {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string();
        Self {
            series: series(&release),
            kernel: release,
            runs_on: HOST.into(),
            backend: host_backend(),
            passed: c.passed,
            failed: c.failed,
            ignored: c.ignored,
            result: if ok && c.failed == 0 { "pass" } else { "fail" }.into(),
            date: today(),
        }
    }

    fn key(&self) -> (String, String) {
        (self.runs_on.clone(), self.series.clone())
    }

    fn markdown(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            self.series,
            self.kernel,
            self.runs_on,
            self.backend,
            self.passed,
            self.failed,
            self.ignored,
            self.passed + self.failed + self.ignored,
            self.result,
            self.date
        )
    }

    fn from_markdown(line: &str) -> Option<Self> {
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        let [
            series,
            kernel,
            runs_on,
            backend,
            passed,
            failed,
            ignored,
            _total,
            result,
            date,
        ] = cells[..]
        else {
            return None;
        };
        Some(Self {
            series: series.into(),
            kernel: kernel.into(),
            runs_on: runs_on.into(),
            backend: backend.into(),
            passed: passed.parse().ok()?,
            failed: failed.parse().ok()?,
            ignored: ignored.parse().ok()?,
            result: result.into(),
            date: date.into(),
        })
    }
}

/// `6.12` for `6.12.117+deb12-cloud-amd64`.
fn series(release: &str) -> String {
    release
        .split(['.', '-', '+'])
        .take(2)
        .collect::<Vec<_>>()
        .join(".")
}

/// The backend the native suite used: `SLOTS_TEST_BACKEND`, or for `auto`
/// what this kernel allows (bpftool's probe for extension programs).
fn host_backend() -> String {
    let asked = std::env::var("SLOTS_TEST_BACKEND").unwrap_or_else(|_| "auto".into());
    if asked != "auto" {
        return asked;
    }
    let ext = Command::new("bpftool")
        .args(["feature", "probe", "kernel"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("program_type ext is available"));
    match ext {
        Some(true) => "auto: freplace".into(),
        Some(false) => "auto: tailcall".into(),
        None => "auto".into(),
    }
}

/// Saves `rows` under target/vmtest/results/ and merges them into
/// docs/kernel-compat.md (rows of other kernels stay as they were).
pub fn record(rows: &[Row]) -> Result<()> {
    let results = out_dir().join("results");
    std::fs::create_dir_all(&results)?;
    for r in rows {
        let name = format!(
            "{}-{}.json",
            r.runs_on.split(' ').next().unwrap_or("vm").to_lowercase(),
            r.series
        );
        std::fs::write(results.join(name), serde_json::to_string_pretty(r)? + "\n")?;
    }
    let doc: PathBuf = workspace_root().join(DOC);
    let old = std::fs::read_to_string(&doc).unwrap_or_default();
    let mut table: BTreeMap<(u8, Vec<u64>), Row> = BTreeMap::new();
    let order = |r: &Row| {
        let place = if r.runs_on == HOST { 1 } else { 0 };
        (
            place,
            r.series
                .split('.')
                .filter_map(|n| n.parse().ok())
                .collect::<Vec<u64>>(),
        )
    };
    for r in old.lines().filter_map(Row::from_markdown) {
        if !rows.iter().any(|n| n.key() == r.key()) {
            table.insert(order(&r), r);
        }
    }
    for r in rows {
        table.insert(order(r), r.clone());
    }
    let mut s = String::from(
        "# Kernel compatibility\n\
         \n\
         Generated from the last full run of `cargo xtask vmtest` (rows run in\n\
         QEMU) and of `cargo xtask test` (the host row); both commands rewrite\n\
         their rows, so do not edit this file by hand.\n\
         \n\
         | Series | Kernel | Runs on | Backend | Passed | Failed | Ignored | Total | Result | Date |\n\
         |---|---|---|---|--:|--:|--:|--:|---|---|\n",
    );
    for r in table.values() {
        s += &r.markdown();
        s.push('\n');
    }
    s += "\n\
         - **QEMU (TCG)**: the `integration-tests` package's test executables in a\n\
         \x20 virtual machine booting the Debian kernel package named, with\n\
         \x20 `SLOTS_TEST_BACKEND=freplace` (extension programs replace the\n\
         \x20 dispatcher's slot functions). Debian 6.1 is bookworm's\n\
         \x20 `linux-image-amd64`; 6.12 is the newest 6.12 cloud kernel in the apt\n\
         \x20 lists. Console logs: `target/vmtest/<kernel>/console.log`.\n\
         - **host**: `cargo test` on the kernel of the machine that ran\n\
         \x20 `cargo xtask test`, with the backend the tests picked (`auto` uses\n\
         \x20 tail calls where the kernel refuses extension programs).\n";
    if s != old {
        if let Some(dir) = doc.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&doc, s).with_context(|| format!("writing {}", doc.display()))?;
    }
    eprintln!(
        "vmtest: results in {}, table in {DOC}",
        super::show(&results)
    );
    Ok(())
}

/// Today's date (UTC) as YYYY-MM-DD.
fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Days since 1970-01-01 to a civil date (proleptic Gregorian calendar).
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
