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
/// Failed tests named in the table's notes; more are counted.
const NOTE_TESTS: usize = 4;
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
    /// Why it failed: failing tests, crashes, missing markers.
    #[serde(default)]
    pub notes: String,
}

impl Row {
    pub fn from_vm(k: &Kernel, o: &Outcome, boot: &Boot) -> Self {
        let c = o.counts();
        let problems = o.problems(boot);
        let release = o.release.clone().unwrap_or_else(|| k.release.clone());
        Self {
            series: series(&release),
            kernel: format!("{release} (Debian {})", k.version),
            runs_on: QEMU.into(),
            backend: "freplace".into(),
            passed: c.passed,
            failed: c.failed,
            ignored: c.ignored,
            result: if problems.is_empty() { "pass" } else { "fail" }.into(),
            date: today(),
            notes: notes(
                problems.iter().filter(|p| !p.starts_with("failed: ")),
                &c.failures,
            ),
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
            notes: if c.failures.is_empty() && !ok {
                "cargo test failed".into()
            } else {
                notes([].iter(), &c.failures)
            },
        }
    }

    /// One row per place and kernel series; VM rows first, by version.
    fn key(&self) -> (bool, Vec<u64>) {
        let version = self.series.split('.').filter_map(|n| n.parse().ok());
        (self.runs_on == HOST, version.collect())
    }

    fn markdown(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            self.series,
            self.kernel,
            self.runs_on,
            self.backend,
            self.passed,
            self.failed,
            self.ignored,
            self.passed + self.failed + self.ignored,
            self.result,
            self.date,
            self.notes.replace('|', "/"),
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
            notes,
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
            notes: notes.into(),
        })
    }
}

/// The notes cell: `problems`, then the failed tests by name, or for more
/// than [`NOTE_TESTS`] of them the count per executable (`bin: test`).
fn notes<'a>(problems: impl Iterator<Item = &'a String>, failures: &[String]) -> String {
    let mut notes: Vec<String> = problems.cloned().collect();
    if failures.len() <= NOTE_TESTS {
        notes.extend(failures.iter().map(|f| format!("failed: {f}")));
    } else {
        let mut per_bin: BTreeMap<&str, usize> = BTreeMap::new();
        for f in failures {
            let bin = f.split_once(": ").map_or("tests", |(b, _)| b);
            *per_bin.entry(bin).or_default() += 1;
        }
        let counts: Vec<String> = per_bin.iter().map(|(b, n)| format!("{b} {n}")).collect();
        notes.push(format!(
            "{} tests failed ({})",
            failures.len(),
            counts.join(", ")
        ));
    }
    notes.join("; ")
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
    let mut table = BTreeMap::new();
    // Rows of other kernels: from the saved results of their last run, or
    // from the table itself when those are gone.
    let saved = std::fs::read_dir(&results)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .filter_map(|p| serde_json::from_slice::<Row>(&std::fs::read(p).ok()?).ok());
    for r in old.lines().filter_map(Row::from_markdown).chain(saved) {
        table.insert(r.key(), r);
    }
    for r in rows {
        table.insert(r.key(), r.clone());
    }
    let mut s = String::from(
        "# Kernel compatibility\n\
         \n\
         Generated from the last full run of `cargo xtask vmtest` (rows run in\n\
         QEMU) and of `cargo xtask test` (the host row); both commands rewrite\n\
         their rows, so do not edit this file by hand.\n\
         \n\
         | Series | Kernel | Runs on | Backend | Passed | Failed | Ignored | Total | Result | Date | Notes |\n\
         |---|---|---|---|--:|--:|--:|--:|---|---|---|\n",
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

#[cfg(test)]
mod tests {
    use super::*;

    const CONSOLE: &str = "\
SeaBIOS (version 1.16.2)
VMTEST-KERNEL 6.12.117+deb12-cloud-amd64
VMTEST-SMOKE ext=yes veth=yes
VMTEST-BEGIN datapath

running 3 tests
test a ... ok
test b ... FAILED
test c ... ignored

failures:

---- b stdout ----
thread 'b' panicked at tests/tests/datapath.rs:1:1:
boom

failures:
    b

test result: FAILED. 1 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.10s

VMTEST-END datapath rc=101 start=2.50 end=4.00
VMTEST-BEGIN runtime

running 2 tests
test x ... ok
[    9.000000] some kernel line
VMTEST-END runtime rc=137 start=4.00 end=9.00
VMTEST-DONE total=2 failed=2
";

    #[test]
    fn console_markers_and_libtest_output() {
        let o = parse_console(CONSOLE);
        assert_eq!(o.release.as_deref(), Some("6.12.117+deb12-cloud-amd64"));
        assert_eq!(o.smoke.as_deref(), Some("ext=yes veth=yes"));
        assert!(o.done);
        assert_eq!(o.bins.len(), 2);
        let d = &o.bins[0];
        assert_eq!(
            (d.rc, d.counts.passed, d.counts.failed, d.counts.ignored),
            (Some(101), 1, 1, 1)
        );
        assert_eq!(d.counts.failures, ["b"]);
        assert!((d.seconds - 1.5).abs() < 1e-9);
        assert!(d.details.iter().any(|l| l == "boom"));
        assert!(
            !d.details.iter().any(|l| l.trim() == "b"),
            "the name list is not a detail"
        );
        // Killed before its summary: the per-test lines count.
        let r = &o.bins[1];
        assert_eq!((r.rc, r.counts.passed, r.counts.failed), (Some(137), 1, 0));
        let c = o.counts();
        assert_eq!((c.passed, c.failed, c.ignored), (2, 1, 1));
        assert_eq!(c.failures, ["datapath: b"]);
    }

    #[test]
    fn a_console_without_the_final_marker_fails() {
        let o =
            parse_console("VMTEST-KERNEL 6.1.0-56-amd64\nVMTEST-BEGIN datapath\nrunning 1 test\n");
        assert!(!o.done);
        assert_eq!(o.bins.len(), 1);
        assert_eq!(o.bins[0].rc, None);
    }

    #[test]
    fn native_counts_sum_every_executable() {
        let mut c = Counts::default();
        for line in [
            "running 2 tests",
            "test a ... ok",
            "test b ... ok",
            "test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s",
            "running 1 test",
            "test src/lib.rs - f (line 3) ... FAILED",
            "test result: FAILED. 0 passed; 1 failed; 3 ignored; 0 measured; 0 filtered out",
            "running 2 tests",
            "test crashed_before_summary ... ok",
        ] {
            c.add_line(line);
        }
        c.finish();
        assert_eq!((c.passed, c.failed, c.ignored), (3, 1, 3));
        assert_eq!(c.failures, ["src/lib.rs - f (line 3)"]);
    }

    #[test]
    fn rows_survive_the_markdown_table() {
        let row = Row {
            series: "6.1".into(),
            kernel: "6.1.0-56-amd64 (Debian 6.1.192-2)".into(),
            runs_on: QEMU.into(),
            backend: "freplace".into(),
            passed: 3,
            failed: 1,
            ignored: 2,
            result: "fail".into(),
            date: "2026-01-02".into(),
            notes: "failed: datapath: b".into(),
        };
        let back = Row::from_markdown(&row.markdown()).expect("a table row");
        assert_eq!(back.markdown(), row.markdown());
        assert!(Row::from_markdown("|---|---|").is_none());
    }

    #[test]
    fn many_failures_are_counted_per_executable() {
        let failures: Vec<String> = (0..6)
            .map(|i| format!("{}: t{i}", if i < 4 { "datapath" } else { "runtime" }))
            .collect();
        assert_eq!(
            notes(["time limit reached".to_string()].iter(), &failures),
            "time limit reached; 6 tests failed (datapath 4, runtime 2)"
        );
        assert_eq!(notes([].iter(), &failures[..1]), "failed: datapath: t0");
    }

    #[test]
    fn series_of_a_release() {
        assert_eq!(series("6.12.117+deb12-cloud-amd64"), "6.12");
        assert_eq!(series("6.1.0-56-amd64"), "6.1");
        assert_eq!(series("6.18.44-fc-v669"), "6.18");
    }
}
