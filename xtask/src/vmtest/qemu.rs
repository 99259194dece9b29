//! Boots one kernel with its initramfs under QEMU (software emulation, no
//! network device) and records the serial console.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use super::kernel::Kernel;

const MEMORY_MB: u32 = 4096;
const CPUS: u32 = 2;

pub struct Boot {
    pub log: PathBuf,
    pub elapsed: Duration,
    /// QEMU's exit status; `None` when it was killed at the time limit.
    pub status: Option<ExitStatus>,
}

/// Boots `kernel`, writes the console to `log` (and progress to stderr) and
/// returns when the VM powers off or `timeout` passes.
pub fn boot(
    kernel: &Kernel,
    initrd: &Path,
    log: &Path,
    timeout: Duration,
    verbose: bool,
) -> Result<Boot> {
    let label = &kernel.label;
    let mut file =
        std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = Command::new("qemu-system-x86_64");
    // One host thread runs every vCPU (`thread=single`): with a thread per
    // vCPU, a vCPU may still run code another has just rewritten. The
    // kernel rewrites its XDP dispatcher (int3 patching) whenever an XDP
    // program changes, and a packet on the other vCPU then trapped on a
    // stale int3 ("Oops: int3" in bpf_dispatcher_xdp_func, seen once in
    // an upgrade under traffic on 6.12). This host has two cores for two
    // VMs, so a thread per vCPU bought no speed.
    cmd.args([
        "-accel",
        "tcg,thread=single",
        "-cpu",
        "max",
        "-smp",
        &CPUS.to_string(),
        "-m",
        &MEMORY_MB.to_string(),
    ])
    .args(["-nographic", "-no-reboot", "-nic", "none"])
    .arg("-kernel")
    .arg(&kernel.vmlinuz)
    .arg("-initrd")
    .arg(initrd)
    .args(["-append", "console=ttyS0 quiet panic=-1"])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    writeln!(file, "# {cmd:?}")?;
    eprintln!(
        "vmtest: {label}: booting {} {} ({}), console in {}",
        kernel.package,
        kernel.version,
        kernel.release,
        super::show(log)
    );
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .context("running qemu-system-x86_64 (cargo xtask setup installs it)")?;
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let status = std::thread::scope(|s| -> Result<Option<ExitStatus>> {
        let err = s.spawn(move || {
            let mut text = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                text += &line;
                text.push('\n');
            }
            text
        });
        let out = s.spawn(move || -> Result<()> {
            let mut reader = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                if reader.read_until(b'\n', &mut buf)? == 0 {
                    return Ok(());
                }
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end_matches(['\r', '\n']);
                writeln!(file, "{line}")?;
                if verbose || interesting(line) {
                    let line = printable(line);
                    eprintln!("[{label} {:>4}s] {line}", started.elapsed().as_secs());
                }
            }
        });
        let deadline = started + timeout;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break Some(status);
            }
            if Instant::now() >= deadline {
                eprintln!(
                    "vmtest: {label}: no power-off after {} s; stopping the VM",
                    timeout.as_secs()
                );
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        out.join().expect("console reader panicked")?;
        let err = err.join().expect("stderr reader panicked");
        if !err.trim().is_empty() {
            eprintln!("vmtest: {label}: qemu: {}", err.trim());
        }
        Ok(status)
    })?;
    Ok(Boot {
        log: log.to_path_buf(),
        elapsed: started.elapsed(),
        status,
    })
}

/// Console lines worth showing while the VM runs.
fn interesting(line: &str) -> bool {
    line.contains("VMTEST-")
        || line.starts_with("test result:")
        || line.ends_with(" FAILED")
        || line.contains("Kernel panic")
        || line.starts_with("running ")
}

/// `line` without terminal escape sequences and control characters (the
/// firmware clears the screen).
fn printable(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters final-byte; other escapes: one more char.
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else if c == '\t' || !c.is_control() {
            out.push(c);
        }
    }
    out
}
