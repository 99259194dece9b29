//! The initramfs of the VM suite: busybox, iproute2's `ip` (busybox's lacks
//! `netns`), bpftool for a feature probe, util-linux's `unshare` and
//! `setpriv` for the containers suite, the test executables and slotctl
//! (without debug info), every shared library they load, the kernel's
//! modules, and an `/init` that runs the tests and powers off.
use std::{
    collections::BTreeSet,
    io::{BufWriter, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use super::{Args, TestBin, cpio::Archive, kernel::Kernel};

/// Host programs copied into the VM: (path inside, candidates on the host,
/// required).
const HOST_TOOLS: &[(&str, &[&str], bool)] = &[
    (
        "/usr/sbin/ip",
        &["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"],
        true,
    ),
    (
        "/usr/sbin/bpftool",
        &["/usr/sbin/bpftool", "/usr/bin/bpftool"],
        false,
    ),
    // util-linux's: the containers suite needs `unshare --kill-child`
    // (busybox's lacks it) and `setpriv` (busybox has none).
    ("/usr/bin/unshare", &["/usr/bin/unshare"], false),
    ("/usr/bin/setpriv", &["/usr/bin/setpriv"], false),
];

const BUSYBOX: &[&str] = &["/bin/busybox", "/usr/bin/busybox"];

/// Where things go inside the VM.
const BIN_DIR: &str = "/vmtest/bin";
const SLOTCTL: &str = "/vmtest/slotctl";
const MODULE_DIR: &str = "/vmtest/modules";

/// What every kernel's initramfs shares: stripped executables and the
/// shared libraries of everything dynamic.
pub struct Stage {
    /// (name, stripped executable, its libtest filters)
    tests: Vec<(String, PathBuf, Vec<String>)>,
    slotctl: PathBuf,
    busybox: PathBuf,
    tools: Vec<(&'static str, PathBuf)>,
    libs: BTreeSet<PathBuf>,
}

impl Stage {
    pub fn new(dir: &Path, bins: &[TestBin], slotctl: &Path) -> Result<Self> {
        let _ = std::fs::remove_dir_all(dir);
        // Apart: a test executable may be named like a binary (`slotctl`).
        let (test_dir, bin_dir) = (dir.join("tests"), dir.join("bin"));
        std::fs::create_dir_all(&test_dir)?;
        std::fs::create_dir_all(&bin_dir)?;
        let mut tests = Vec::new();
        for b in bins {
            let exe = strip(&b.path, &test_dir.join(&b.name))?;
            tests.push((b.name.clone(), exe, b.filters.clone()));
        }
        let slotctl = strip(slotctl, &bin_dir.join("slotctl"))?;
        let busybox = first_existing(BUSYBOX)
            .context("busybox not found (cargo xtask setup installs busybox-static)")?;
        let mut tools = Vec::new();
        for (inside, candidates, required) in HOST_TOOLS {
            match first_existing(candidates) {
                Some(p) => tools.push((*inside, p)),
                None if *required => {
                    bail!("{inside} not found on this host (cargo xtask setup installs it)")
                }
                None => eprintln!("vmtest: {inside} not found; the VM goes without it"),
            }
        }
        let mut libs = BTreeSet::new();
        let dynamic = tests
            .iter()
            .map(|(_, p, _)| p)
            .chain([&slotctl, &busybox])
            .chain(tools.iter().map(|(_, p)| p));
        for exe in dynamic {
            libs.extend(shared_libraries(exe)?);
        }
        Ok(Self {
            tests,
            slotctl,
            busybox,
            tools,
            libs,
        })
    }
}

/// Writes the gzip-compressed initramfs for `kernel` to `out`.
pub fn build(stage: &Stage, kernel: &Kernel, args: &Args, out: &Path) -> Result<()> {
    let mut a = Archive::default();
    for d in [
        "proc", "sys", "dev", "run", "tmp", "root", "etc", "usr/bin", "sbin",
    ] {
        a.dir(d);
    }
    a.char_dev("dev/console", 5, 1);
    a.char_dev("dev/null", 1, 3);
    a.file("bin/busybox", &stage.busybox, 0o755);
    a.symlink("bin/sh", "busybox");
    for (inside, host) in &stage.tools {
        a.file(inside, host, 0o755);
    }
    for lib in &stage.libs {
        a.file(&lib.to_string_lossy(), lib, 0o755);
    }
    for (name, path, _) in &stage.tests {
        a.file(&format!("{BIN_DIR}/{name}"), path, 0o755);
    }
    a.file(SLOTCTL, &stage.slotctl, 0o755);
    let mut modules = Vec::new();
    for m in &kernel.modules {
        let name = m
            .file_name()
            .context("module without a name")?
            .to_string_lossy();
        let inside = format!("{MODULE_DIR}/{name}");
        a.file(&inside, m, 0o644);
        modules.push(inside);
    }
    a.bytes("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644);
    a.bytes("etc/group", "root:x:0:\n", 0o644);
    a.bytes("init", init_script(&stage.tests, &modules, args), 0o755);
    if !a.contains("lib64/ld-linux-x86-64.so.2") {
        bail!("no dynamic loader among the shared libraries");
    }

    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut gzip = Command::new("gzip")
        .args(["-n", "-3"])
        .stdin(Stdio::piped())
        .stdout(file)
        .spawn()
        .context("running gzip")?;
    let mut stdin = BufWriter::with_capacity(1 << 20, gzip.stdin.take().expect("piped stdin"));
    a.write(&mut stdin)?;
    stdin.flush()?;
    drop(stdin);
    if !gzip.wait()?.success() {
        bail!("gzip failed");
    }
    Ok(())
}

/// `/init`: mounts, loads the modules, probes, runs every test executable
/// and prints markers the host parses (`VMTEST-...` at the start of a line),
/// then powers off.
fn init_script(
    tests: &[(String, PathBuf, Vec<String>)],
    modules: &[String],
    args: &Args,
) -> String {
    let mut test_args: Vec<String> = Vec::new();
    // libtest refuses the option twice: arguments after `--` win.
    if !args.args.iter().any(|a| a.starts_with("--test-threads")) {
        test_args.push(format!("--test-threads={}", args.test_threads.max(1)));
    }
    test_args.extend(args.args.iter().cloned());
    test_args.extend(args.filter.iter().cloned());
    let test_args = test_args
        .iter()
        .map(|s| quote(s))
        .collect::<Vec<_>>()
        .join(" ");
    let mut s = String::from(
        r#"#!/bin/sh
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t bpf bpf /sys/fs/bpf
mkdir -p /run/netns
# Kernel messages would interleave with test output; dmesg shows them.
echo 1 >/proc/sys/kernel/printk
# busybox sh runs its own applets first: name iproute2's ip by path.
ip=/usr/sbin/ip
$ip link set lo up
echo
echo "VMTEST-KERNEL $(uname -r)"
"#,
    );
    for m in modules {
        s += &format!("insmod {m} || echo 'VMTEST-ERROR insmod {m} failed'\n");
    }
    s += r#"ext=unknown
if command -v bpftool >/dev/null; then
    if bpftool feature probe kernel 2>/dev/null | grep -q 'program_type ext is available'; then ext=yes; else ext=no; fi
fi
veth=no
if $ip netns add vmtest-probe && $ip -n vmtest-probe link add vmtest0 type veth peer name vmtest1; then veth=yes; fi
$ip netns del vmtest-probe 2>/dev/null
echo "VMTEST-SMOKE ext=$ext veth=$veth"
"#;
    s += &format!("export SLOTS_STRESS={}\n", quote(&args.size));
    s += r#"export SLOTS_TEST_BACKEND=freplace SLOTCTL=/vmtest/slotctl RUST_BACKTRACE=1
cd /tmp
total=0
failed=0
run() {
    name=$1
    shift
    total=$((total + 1))
    echo "VMTEST-BEGIN $name"
    start=$(cut -d' ' -f1 /proc/uptime)
"#;
    s += &format!(
        "    timeout -s KILL {} {BIN_DIR}/$name \"$@\"\n",
        args.test_timeout
    );
    s += r#"    rc=$?
    end=$(cut -d' ' -f1 /proc/uptime)
    [ $rc -eq 0 ] || failed=$((failed + 1))
    echo
    echo "VMTEST-END $name rc=$rc start=$start end=$end"
}
"#;
    for (name, _, filters) in tests {
        let filters: Vec<String> = filters.iter().map(|f| quote(f)).collect();
        s += &format!("run {} {test_args} {}\n", quote(name), filters.join(" "));
    }
    s += r#"if [ $failed -ne 0 ]; then
    echo "VMTEST-DMESG-BEGIN"
    dmesg | tail -n 80
    echo "VMTEST-DMESG-END"
fi
echo "VMTEST-DONE total=$total failed=$failed"
sync
poweroff -f
"#;
    s
}

/// Single-quotes a word for sh.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Copies `src` to `dst` without debug info (test executables are large).
fn strip(src: &Path, dst: &Path) -> Result<PathBuf> {
    let status = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(dst)
        .arg(src)
        .status()
        .context("running strip (binutils)")?;
    if !status.success() {
        bail!("strip {} failed", src.display());
    }
    Ok(dst.to_path_buf())
}

/// The shared libraries `exe` loads, as `ldd` resolves them (the dynamic
/// loader included); nothing for a static executable.
fn shared_libraries(exe: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(exe)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if text.contains("not a dynamic executable")
            || String::from_utf8_lossy(&out.stderr).contains("not a dynamic")
        {
            return Ok(Vec::new());
        }
        bail!(
            "ldd {} failed: {}",
            exe.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.contains("not found") {
            bail!("{}: {line}", exe.display());
        }
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.trim(),
            None => line,
        };
        let path = path.split(" (").next().unwrap_or_default().trim();
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

fn first_existing(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(PathBuf::from).find(|p| p.is_file())
}
