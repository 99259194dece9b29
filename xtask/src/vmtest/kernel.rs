//! Debian kernels for the VM suite: the package is chosen with apt-cache,
//! downloaded once with `apt-get download` into
//! `~/.cache/xdp-slots/kernels/<package>_<version>/` and unpacked there with
//! `dpkg -x`; the modules the tests need are decompressed next to it.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

/// Kernels booted when none is named.
pub const DEFAULT: &[&str] = &["6.1", "6.12"];

/// Modules the tests need (with their dependencies), loaded in this order.
const MODULES: &[&str] = &["veth"];

#[derive(Clone)]
pub struct Kernel {
    /// What it was asked for by: `6.1`, `6.12` or a package name.
    pub label: String,
    pub package: String,
    /// Debian version of the package, e.g. `6.1.192-2`.
    pub version: String,
    /// The kernel release (`uname -r`, the modules directory).
    pub release: String,
    pub vmlinuz: PathBuf,
    /// Uncompressed modules, dependencies first.
    pub modules: Vec<PathBuf>,
}

pub fn prepare(spec: &str) -> Result<Kernel> {
    let package = resolve(spec)?;
    let dir = fetch(&package)?;
    let version = std::fs::read_to_string(dir.join("version"))?
        .trim()
        .to_string();
    let root = dir.join("root");
    let release = only_entry(&root.join("lib/modules"))?;
    let vmlinuz = root.join("boot").join(format!("vmlinuz-{release}"));
    if !vmlinuz.is_file() {
        bail!("{package} has no {}", vmlinuz.display());
    }
    let modules = modules(
        &root.join("lib/modules").join(&release),
        &dir.join("modules"),
    )?;
    eprintln!("vmtest: {spec}: {package} {version} ({release})");
    Ok(Kernel {
        label: label(spec),
        package,
        version,
        release,
        vmlinuz,
        modules,
    })
}

/// A short name for directories and messages: `6.1`, `6.12`, or the
/// package name without `linux-image-`.
fn label(spec: &str) -> String {
    spec.trim_start_matches("linux-image-").to_string()
}

/// The package for `spec`: `6.1` is what bookworm's `linux-image-amd64`
/// depends on; `X.Y` is the newest `linux-image-X.Y.*-cloud-amd64`; a name
/// starting with `linux-image-` is taken as it is.
fn resolve(spec: &str) -> Result<String> {
    if spec.starts_with("linux-image-") {
        return Ok(spec.to_string());
    }
    if !spec
        .split('.')
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        bail!(
            "unknown kernel {spec:?}: expected 6.1, 6.12 (a version X.Y) or a linux-image-* package name"
        );
    }
    let mut found = resolve_from_lists(spec)?;
    if found.is_none() {
        eprintln!("vmtest: no package for {spec} in the apt lists; running apt-get update");
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        found = resolve_from_lists(spec)?;
    }
    found.with_context(|| format!("no Debian kernel package found for {spec}"))
}

fn resolve_from_lists(spec: &str) -> Result<Option<String>> {
    if spec == "6.1" {
        let out = output(Command::new("apt-cache").args(["depends", "linux-image-amd64"]))?;
        return Ok(out
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .find(|d| d.starts_with("linux-image-6.1."))
            .map(str::to_string));
    }
    let prefix = format!("linux-image-{spec}.");
    let out = output(Command::new("apt-cache").args(["pkgnames", &prefix]))?;
    Ok(out
        .lines()
        .filter(|n| n.ends_with("-cloud-amd64"))
        .max_by_key(|n| version_key(n))
        .map(str::to_string))
}

/// The numbers in a name, for "newest" comparisons (6.12.117 > 6.12.99).
fn version_key(s: &str) -> Vec<u64> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Where downloads are kept: `$XDG_CACHE_HOME/xdp-slots/kernels` or
/// `~/.cache/xdp-slots/kernels`.
fn cache_dir() -> Result<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .context("neither XDG_CACHE_HOME nor HOME is set")?;
    Ok(base.join("xdp-slots/kernels"))
}

/// Returns the cache directory of the candidate version of `package`,
/// downloading and unpacking it if it is not there yet. Without a candidate
/// (or when the download fails) the newest cached version is used.
fn fetch(package: &str) -> Result<PathBuf> {
    let cache = cache_dir()?;
    let candidate = output(Command::new("apt-cache").args(["policy", package]))
        .ok()
        .and_then(|out| {
            out.lines()
                .filter_map(|l| l.trim().strip_prefix("Candidate: "))
                .next()
                .map(str::to_string)
        })
        .filter(|v| v != "(none)");
    if let Some(version) = &candidate {
        let dir = cache.join(format!("{package}_{version}"));
        if dir.join("version").is_file() {
            return Ok(dir);
        }
        match download(package, version, &dir) {
            Ok(()) => return Ok(dir),
            Err(e) => eprintln!("vmtest: downloading {package} {version}: {e:#}"),
        }
    }
    // Fall back to what is cached.
    let mut cached: Vec<PathBuf> = std::fs::read_dir(&cache)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.join("version").is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{package}_")))
        })
        .collect();
    cached.sort_by_key(|p| version_key(&p.to_string_lossy()));
    match cached.pop() {
        Some(dir) => {
            eprintln!("vmtest: using the cached {}", dir.display());
            Ok(dir)
        }
        None => bail!(
            "cannot download {package} and it is not cached in {}",
            cache.display()
        ),
    }
}

fn download(package: &str, version: &str, dir: &Path) -> Result<()> {
    eprintln!("vmtest: downloading {package} {version}");
    let tmp = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    run(Command::new("apt-get")
        .args(["download", "-qq", "-o", "APT::Sandbox::User=root"])
        .arg(format!("{package}={version}"))
        .current_dir(&tmp))?;
    let deb = std::fs::read_dir(&tmp)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download left no .deb")?;
    run(Command::new("dpkg")
        .arg("-x")
        .arg(&deb)
        .arg(tmp.join("root")))?;
    std::fs::write(tmp.join("version"), format!("{version}\n"))?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&tmp, dir)?;
    Ok(())
}

/// The uncompressed files of [`MODULES`] and their dependencies, in load
/// order, decompressed into `out` (once).
fn modules(moddir: &Path, out: &Path) -> Result<Vec<PathBuf>> {
    let mut index = HashMap::new();
    index_modules(&moddir.join("kernel"), &mut index)?;
    let mut order = Vec::new();
    for m in MODULES {
        add_module(m, &index, out, &mut order)?;
    }
    Ok(order)
}

fn add_module(
    name: &str,
    index: &HashMap<String, PathBuf>,
    out: &Path,
    order: &mut Vec<PathBuf>,
) -> Result<()> {
    let name = name.replace('-', "_");
    let dst = out.join(format!("{name}.ko"));
    if order.contains(&dst) {
        return Ok(());
    }
    let src = index
        .get(&name)
        .with_context(|| format!("module {name} not found (built in?)"))?;
    if !dst.is_file() {
        std::fs::create_dir_all(out)?;
        let data = decompress(src)?;
        std::fs::write(&dst, data)?;
    }
    let data = std::fs::read(&dst)?;
    for dep in modinfo(&data, "depends")
        .split(',')
        .filter(|d| !d.is_empty())
    {
        add_module(dep, index, out, order)?;
    }
    order.push(dst);
    Ok(())
}

/// Module name (with `_`) → file, for every module under `dir`.
fn index_modules(dir: &Path, index: &mut HashMap<String, PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            index_modules(&path, index)?;
        } else if let Some(name) = path.file_name().and_then(|n| n.to_str())
            && let Some((stem, _)) = name.split_once(".ko")
        {
            index.insert(stem.replace('-', "_"), path.clone());
        }
    }
    Ok(())
}

fn decompress(path: &Path) -> Result<Vec<u8>> {
    let tool = match path.extension().and_then(|e| e.to_str()) {
        Some("ko") => return Ok(std::fs::read(path)?),
        Some("xz") => "xz",
        Some("zst") => "zstd",
        Some("gz") => "gzip",
        _ => bail!("unknown module compression: {}", path.display()),
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .with_context(|| format!("running {tool}"))?;
    if !out.status.success() {
        bail!(
            "{tool} -dc {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// A `key=value` of a module's .modinfo section (NUL-separated strings).
fn modinfo(data: &[u8], key: &str) -> String {
    let pat = format!("\0{key}=");
    data.windows(pat.len())
        .position(|w| w == pat.as_bytes())
        .map(|i| {
            let rest = &data[i + pat.len()..];
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            String::from_utf8_lossy(&rest[..end]).into_owned()
        })
        .unwrap_or_default()
}

fn only_entry(dir: &Path) -> Result<String> {
    let names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    match names.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "expected one kernel release in {}, found {names:?}",
            dir.display()
        ),
    }
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}
