//! Declarative claims: the persistent claims of a node as a TOML file
//! ([`Runtime::export`]), and such files made true ([`Runtime::apply`]).
//! The protocol is docs/design.md, "Apply".
//!
//! Apply first reads and checks every file and every object they name
//! (nothing changes if one is wrong), then reads the node and plans one
//! step per claim, then takes the steps one by one, each under its
//! interface's lock as the single operations do: a claim, a replace, a
//! re-claim (a release, then a claim), a release. Every step is one of the
//! crash-safe operations, so apply killed anywhere leaves a state the next
//! run finishes. A claim apply makes is marked in its origin entry; only
//! such claims are released when no file names them any more (all
//! persistent claims with `prune`).
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    AttachOptions, Backend, ClaimRequest, ClaimState, ProgramSource, Runtime, SlotRef,
    claim::{self, Prepared},
    crash,
    error::{self, Error, Result},
    iface::Iface,
    mappins::MapPins,
    origins::{self, Hash},
    status::{mask_names, parse_mask},
};

/// The default map pin policy's name in a file.
const PIN_MAPS_SCOPED: &str = "scoped";

fn scoped() -> String {
    PIN_MAPS_SCOPED.into()
}

/// A map pin policy as a file writes it: `scoped`, `shared`, or an
/// absolute directory on bpffs.
fn pin_maps_name(pins: &MapPins) -> String {
    match pins {
        MapPins::Dir(d) => d.display().to_string(),
        p => p.as_str().into(),
    }
}

/// Reads a file's `pin_maps`; a directory is checked (on bpffs) as a
/// claim would.
fn parse_pin_maps(s: &str) -> std::result::Result<MapPins, String> {
    match s {
        "scoped" => Ok(MapPins::Scoped),
        "shared" => Ok(MapPins::Shared),
        d if d.starts_with('/') => {
            crate::mappins::check(&MapPins::Dir(d.into())).map_err(|e| error::chain(&e))
        }
        other => Err(format!(
            "pin_maps = {other:?} is not a map pin policy: use \"scoped\", \"shared\" or an absolute directory on bpffs"
        )),
    }
}

/// One claim a file asks for: a `[[claim]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DesiredClaim {
    /// The interface (as `ip link` names it).
    pub interface: String,
    /// The claim's name, unique on its interface. Default: the program's
    /// name, as a claim would take it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The object file. A relative path is relative to the file's
    /// directory.
    pub object: PathBuf,
    /// The program in the object, if it has several XDP programs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// Lower runs first. Default: the program's XDP_RUN_CONFIG, else 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// Verdicts after which the next slot runs (`["pass", "drop"]`).
    /// Default: the program's XDP_RUN_CONFIG, else pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proceed_on: Option<Vec<String>>,
    /// `tailcall` or `freplace`. Default: the interface's backend (and,
    /// where apply attaches the dispatcher, the first the kernel allows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// Where the program's maps pinned by name go: `scoped` (the claim's
    /// own, removed with it), `shared` (libbpf's place, the top of bpffs)
    /// or an absolute directory on bpffs.
    #[serde(default = "scoped")]
    pub pin_maps: String,
    /// Where the claim was read: `file:line`.
    #[serde(skip)]
    pub at: String,
}

impl DesiredClaim {
    /// A claim of `object`'s only XDP program on `interface`, every other
    /// field at its default.
    pub fn new(interface: impl Into<String>, object: impl Into<PathBuf>) -> Self {
        Self {
            interface: interface.into(),
            name: None,
            object: object.into(),
            program: None,
            priority: None,
            proceed_on: None,
            backend: None,
            pin_maps: scoped(),
            at: String::new(),
        }
    }
}

/// A file: its claims.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIn {
    #[serde(default)]
    claim: Vec<toml::Spanned<DesiredClaim>>,
}

#[derive(Serialize)]
struct FileOut<'a> {
    claim: &'a [DesiredClaim],
}

/// What the node should run: the claims of one or more files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Desired {
    /// The claims, in the files' order.
    pub claims: Vec<DesiredClaim>,
}

/// `file:line` of byte `offset` in `text`.
fn at(file: &Path, text: &str, offset: usize) -> (String, usize) {
    let line = text[..offset.min(text.len())].matches('\n').count() + 1;
    (file.display().to_string(), line)
}

fn bad(file: &Path, text: &str, offset: usize, why: impl Into<String>) -> Error {
    let (file, line) = at(file, text, offset);
    Error::BadDesired {
        file,
        line,
        why: why.into(),
    }
}

impl Desired {
    /// Parses one file's text; `file` names it in messages, and relative
    /// object paths are taken from its directory.
    pub fn parse(text: &str, file: &Path) -> Result<Self> {
        let parsed: FileIn = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            bad(file, text, offset, e.message().trim().replace('\n', " "))
        })?;
        let dir = file.parent().unwrap_or(Path::new("."));
        let claims = parsed
            .claim
            .into_iter()
            .map(|sp| {
                let offset = sp.span().start;
                let mut c = sp.into_inner();
                let (f, line) = at(file, text, offset);
                c.at = format!("{f}:{line}");
                if c.object.is_relative() {
                    // Absolute, so that the recorded path (and an export
                    // of it) does not depend on the working directory.
                    let joined = dir.join(&c.object);
                    c.object = std::path::absolute(&joined).unwrap_or(joined);
                }
                c
            })
            .collect();
        Ok(Self { claims })
    }

    /// Reads files, or directories (their `*.toml` files, by name), in
    /// order.
    pub fn read(paths: &[PathBuf]) -> Result<Self> {
        let mut all = Self::default();
        for path in paths {
            let files = if path.is_dir() {
                let mut v: Vec<PathBuf> = std::fs::read_dir(path)
                    .map_err(|e| Error::io(format!("listing {}", path.display()), e))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
                    .collect();
                v.sort();
                v
            } else {
                vec![path.clone()]
            };
            for f in files {
                let text = std::fs::read_to_string(&f)
                    .map_err(|e| Error::io(format!("reading {}", f.display()), e))?;
                all.claims.extend(Self::parse(&text, &f)?.claims);
            }
        }
        Ok(all)
    }

    /// The claims as a file [`Desired::parse`] reads.
    pub fn to_toml(&self) -> String {
        toml::to_string(&FileOut {
            claim: &self.claims,
        })
        .unwrap_or_else(|e| format!("# cannot be written as TOML: {e}\n"))
    }
}

/// The node's persistent claims as a file, and what was left out.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Exported {
    /// The persistent claims.
    pub desired: Desired,
    /// Claims left out, and why (held claims belong to running processes).
    pub skipped: Vec<String>,
}

impl Exported {
    /// The file: a comment per claim left out, then the claims.
    pub fn to_toml(&self) -> String {
        let mut s = String::from(
            "# Persistent claims, as 'slotctl apply' reads them (written by 'slotctl export').\n",
        );
        for skipped in &self.skipped {
            s.push_str(&format!("# not exported: {skipped}\n"));
        }
        s.push('\n');
        s.push_str(&self.desired.to_toml());
        s
    }
}

/// What a step of apply does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Action {
    /// The claim is as the files say: nothing to do.
    Keep,
    /// No such claim: claim it (attaching the dispatcher if needed).
    Claim,
    /// Its object, program or object's content changed: replace the
    /// program at its run position.
    Replace,
    /// Its priority, proceed-on verdicts or backend changed: release it
    /// and claim it anew (it misses the packets in between).
    Reclaim,
    /// No file names it any more: release it.
    Release,
    /// No file names it, and apply did not make it: left in place (unless
    /// `prune`).
    Leave,
}

impl Action {
    /// The action's name in the plan.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Keep => "keep",
            Self::Claim => "claim",
            Self::Replace => "replace",
            Self::Reclaim => "reclaim",
            Self::Release => "release",
            Self::Leave => "leave",
        }
    }
}

/// One step of a plan.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Step {
    /// What it does.
    pub action: Action,
    /// The interface.
    pub iface: String,
    /// The claim's name.
    pub name: String,
    /// Why, in a few words.
    pub why: String,
    /// The claim's program id before the step, if it exists.
    pub prog_id: Option<u32>,
    /// The claim's program id after the step (filled in as steps are
    /// taken; a kept claim's is its current one).
    pub new_prog_id: Option<u32>,
    /// The wanted claim (index into the checked claims).
    #[serde(skip)]
    want: Option<usize>,
    /// The existing claim's `apply` mark.
    #[serde(skip)]
    applied: bool,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}: {}",
            self.action.as_str(),
            self.iface,
            self.name,
            self.why
        )
    }
}

/// The steps that make the node match the files, in order: releases,
/// then claims, replaces and re-claims in run order (by priority, the
/// files' order among equal priorities), keeps and leaves shown where they
/// fall.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Plan {
    /// The steps.
    pub steps: Vec<Step>,
}

impl Plan {
    /// Does the plan change nothing?
    pub fn is_noop(&self) -> bool {
        self.steps
            .iter()
            .all(|s| matches!(s.action, Action::Keep | Action::Leave))
    }
}

/// Options of [`Runtime::apply`].
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct ApplyOptions {
    /// Release every persistent claim no file names, not only those apply
    /// made.
    pub prune: bool,
    /// Plan only: change nothing.
    pub dry_run: bool,
}

/// A claim of the files, checked: its object read and inspected.
struct Want {
    claim: DesiredClaim,
    src: ProgramSource,
    prep: Prepared,
    hash: Hash,
    backend: Option<Backend>,
    pin_maps: MapPins,
}

fn hex(h: &Hash) -> String {
    h.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// Checks every claim of `desired`: names, values, objects and programs.
/// The first problem is an error naming its `file:line`.
fn check(desired: &Desired) -> Result<Vec<Want>> {
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    let mut wants = Vec::new();
    for c in &desired.claims {
        let (file, line) =
            c.at.rsplit_once(':')
                .and_then(|(f, l)| Some((f.to_string(), l.parse().ok()?)))
                .unwrap_or_else(|| ("(desired)".into(), 0));
        let bad = |why: String| Error::BadDesired {
            file: file.clone(),
            line,
            why,
        };
        let pin_maps = parse_pin_maps(&c.pin_maps).map_err(&bad)?;
        let backend = c
            .backend
            .as_deref()
            .map(str::parse::<Backend>)
            .transpose()
            .map_err(|e| bad(format!("backend: {e}")))?;
        let proceed_on = c
            .proceed_on
            .as_ref()
            .map(|v| parse_mask(&v.join(",")))
            .transpose()
            .map_err(|e| bad(format!("proceed_on: {e}")))?;
        if proceed_on == Some(0) {
            return Err(bad(
                "proceed_on is empty: name at least one verdict (e.g. [\"pass\"])".into(),
            ));
        }
        let src = ProgramSource::file(&c.object, c.program.as_deref())
            .map_err(|e| bad(error::chain(&e)))?;
        let mut req = ClaimRequest::new(src.clone());
        req.prio = c.priority;
        req.proceed_on = proceed_on;
        req.name = c.name.clone();
        req.persistent = true;
        req.backend = backend;
        req.pin_maps = pin_maps.clone();
        let prep = claim::prepare(&req).map_err(|e| bad(error::chain(&e)))?;
        if !seen.insert((c.interface.clone(), prep.name.clone())) {
            return Err(bad(format!(
                "{} {} is named twice (a claim name is unique on its interface)",
                c.interface, prep.name
            )));
        }
        let mut claim = c.clone();
        claim.name = Some(prep.name.clone());
        wants.push(Want {
            claim,
            hash: origins::hash(&src.bytes),
            src,
            prep,
            backend,
            pin_maps,
        });
    }
    Ok(wants)
}

/// A claim on the node, with its origin.
struct Have {
    slot: usize,
    prog_id: u32,
    prio: u32,
    proceed_on: u32,
    backend: Backend,
    state: ClaimState,
    origin: Option<origins::Origin>,
}

/// The claims of every interface of this network namespace with the
/// dispatcher, by interface and name.
fn read_node(rt: &Runtime) -> Result<BTreeMap<String, BTreeMap<String, Have>>> {
    let mut node = BTreeMap::new();
    for (iface, st) in rt.status_all()? {
        let st = st?;
        let dir = PathBuf::from(&st.dir);
        // A stale record (an unfinished claim or replace, a dead holder's
        // claim) is freed by the next operation on the interface; while a
        // replace is unfinished its name is on two records, and the claim
        // is the one with a run position.
        let claims = st
            .claims
            .into_iter()
            .filter(|c| c.state != ClaimState::Stale)
            .map(|c| {
                let origin = origins::read(&dir, c.slot, c.prog_id);
                let proceed_on = parse_mask(&c.proceed_on.join(",")).unwrap_or(0);
                (
                    c.name,
                    Have {
                        slot: c.slot,
                        prog_id: c.prog_id,
                        prio: c.prio,
                        proceed_on,
                        backend: c.backend,
                        state: c.state,
                        origin,
                    },
                )
            })
            .collect();
        node.insert(iface, claims);
    }
    Ok(node)
}

/// Plans the steps that make the node match `wants`.
fn plan(rt: &Runtime, wants: &[Want], prune: bool) -> Result<Plan> {
    for w in wants {
        Iface::resolve(&w.claim.interface)?;
    }
    let node = read_node(rt)?;
    let mut releases = Vec::new();
    let mut steps = Vec::new();
    let named: BTreeSet<(&str, &str)> = wants
        .iter()
        .map(|w| (w.claim.interface.as_str(), w.prep.name.as_str()))
        .collect();
    for (iface, claims) in &node {
        for (name, have) in claims {
            if have.state != ClaimState::Persistent
                || named.contains(&(iface.as_str(), name.as_str()))
            {
                continue;
            }
            let applied = have.origin.as_ref().is_some_and(|o| o.applied);
            let (action, why) = match (applied, prune) {
                (true, _) => (Action::Release, "made by apply, named by no file"),
                (false, true) => (Action::Release, "named by no file (--prune)"),
                (false, false) => (
                    Action::Leave,
                    "named by no file, not made by apply (--prune releases it)",
                ),
            };
            releases.push(Step {
                action,
                iface: iface.clone(),
                name: name.clone(),
                why: why.into(),
                prog_id: Some(have.prog_id),
                new_prog_id: None,
                want: None,
                applied,
            });
        }
    }
    // Claims in run order (priority; the files' order among equals, which
    // is also their run order): each then gets the slot the dispatcher
    // tests first at its run position (`dispatcher_common::in_order_slot`).
    let mut in_run_order: Vec<usize> = (0..wants.len()).collect();
    in_run_order.sort_by_key(|&i| wants[i].prep.prio);
    for i in in_run_order {
        let w = &wants[i];
        let iface = &w.claim.interface;
        let have = node.get(iface).and_then(|c| c.get(&w.prep.name));
        let step = |action, why: String, have: Option<&Have>| Step {
            action,
            iface: iface.clone(),
            name: w.prep.name.clone(),
            why,
            prog_id: have.map(|h| h.prog_id),
            new_prog_id: None,
            want: Some(i),
            applied: have
                .and_then(|h| h.origin.as_ref())
                .is_none_or(|o| o.applied),
        };
        let Some(have) = have else {
            steps.push(step(
                Action::Claim,
                format!(
                    "{} program {}, priority {}, proceed on {}",
                    w.src.label,
                    w.prep.ins.name,
                    w.prep.prio,
                    mask_names(w.prep.proceed_on).join(",")
                ),
                None,
            ));
            continue;
        };
        if have.state != ClaimState::Persistent {
            return Err(Error::NameTaken {
                iface: iface.clone(),
                name: w.prep.name.clone(),
                slot: have.slot,
            });
        }
        let mut changed = Vec::new();
        if have.prio != w.prep.prio {
            changed.push(format!("priority {} -> {}", have.prio, w.prep.prio));
        }
        if have.proceed_on != w.prep.proceed_on {
            changed.push(format!(
                "proceed on {} -> {}",
                mask_names(have.proceed_on).join(","),
                mask_names(w.prep.proceed_on).join(",")
            ));
        }
        if let Some(b) = w.backend.filter(|b| *b != have.backend) {
            changed.push(format!("backend {} -> {b}", have.backend));
        }
        // New pins are a new claim's maps. An origin without a policy was
        // written by a version that pinned at the top of bpffs (no origin
        // at all: a claim apply takes over by a replace, below).
        let had_pins = have
            .origin
            .as_ref()
            .map(|o| o.map_pins.clone().unwrap_or(MapPins::Shared));
        if let Some(had_pins) = had_pins.filter(|p| *p != w.pin_maps) {
            changed.push(format!(
                "pin_maps {} -> {}",
                pin_maps_name(&had_pins),
                pin_maps_name(&w.pin_maps)
            ));
        }
        if !changed.is_empty() {
            steps.push(step(Action::Reclaim, changed.join(", "), Some(have)));
            continue;
        }
        let why = match &have.origin {
            None => "its object is not recorded".to_string(),
            Some(o) if o.object != w.src.label => format!("object {} -> {}", o.object, w.src.label),
            Some(o) if o.program != w.prep.ins.name => {
                format!("program {} -> {}", o.program, w.prep.ins.name)
            }
            Some(o) if o.hash != Some(w.hash) => format!(
                "{} changed (sha256 {} -> {})",
                w.src.label,
                o.hash.as_ref().map_or("unknown".into(), hex),
                hex(&w.hash)
            ),
            Some(_) => {
                let mut s = step(
                    Action::Keep,
                    format!("program {}", have.prog_id),
                    Some(have),
                );
                s.new_prog_id = Some(have.prog_id);
                steps.push(s);
                continue;
            }
        };
        steps.push(step(Action::Replace, why, Some(have)));
    }
    releases.extend(steps);
    Ok(Plan { steps: releases })
}

impl Runtime {
    /// The persistent claims of `iface` (or of every interface of this
    /// network namespace with the dispatcher) as a [`Desired`]. Held
    /// claims belong to running processes and are left out, as are claims
    /// whose object is not recorded; [`Exported::skipped`] says which.
    pub fn export(&self, iface: Option<&str>) -> Result<Exported> {
        let all = match iface {
            Some(i) => vec![(i.to_string(), self.status(i))],
            None => self.status_all()?,
        };
        let mut desired = Desired::default();
        let mut skipped = Vec::new();
        for (iface, st) in all {
            let st = st?;
            let dir = PathBuf::from(&st.dir);
            for c in st.claims {
                let origin = origins::read(&dir, c.slot, c.prog_id);
                if c.state != ClaimState::Persistent {
                    skipped.push(format!(
                        "{iface} {} ({} by pid {}: belongs to a running process)",
                        c.name, c.state, c.owner
                    ));
                    continue;
                }
                let Some(origin) = origin else {
                    skipped.push(format!(
                        "{iface} {} (persistent, its object is not recorded)",
                        c.name
                    ));
                    continue;
                };
                desired.claims.push(DesiredClaim {
                    interface: iface.clone(),
                    name: Some(c.name),
                    object: origin.object.into(),
                    program: Some(origin.program),
                    priority: Some(c.prio),
                    proceed_on: Some(c.proceed_on.iter().map(|s| s.to_string()).collect()),
                    backend: Some(c.backend.to_string()),
                    pin_maps: pin_maps_name(&origin.map_pins.unwrap_or(MapPins::Shared)),
                    at: String::new(),
                });
            }
        }
        Ok(Exported { desired, skipped })
    }

    /// Makes the node match `desired`: claims what is missing, replaces a
    /// claim whose object changed, re-claims one whose priority, verdicts
    /// or backend changed, releases what no file names (only claims apply
    /// made, unless `prune`), and keeps the rest untouched. Every claim of
    /// `desired` is checked (its object read, its program found) before
    /// anything changes. Returns the plan, with the new program ids of the
    /// steps taken; with `dry_run`, only the plan.
    pub fn apply(&self, desired: &Desired, opts: ApplyOptions) -> Result<Plan> {
        let wants = check(desired)?;
        let mut plan = plan(self, &wants, opts.prune)?;
        if opts.dry_run {
            return Ok(plan);
        }
        for step in &mut plan.steps {
            let want = step.want.map(|i| &wants[i]);
            let taken = match (step.action, want) {
                (Action::Keep | Action::Leave, _) => continue,
                (Action::Release, _) => {
                    self.release_planned(step)?;
                    None
                }
                (Action::Claim, Some(w)) => Some(self.claim_wanted(w, true)?),
                (Action::Replace, Some(w)) => {
                    // A claim whose origin was never recorded is one a
                    // killed apply made (its maps pinned as the file
                    // says), or one made before origins were kept: apply
                    // takes it over. A recorded policy equals the file's
                    // here (a change is a reclaim).
                    let r = self.replace_marked(
                        &w.claim.interface,
                        &SlotRef::Name(w.prep.name.clone()),
                        &w.src,
                        Some(step.applied),
                        Some(&w.pin_maps),
                    )?;
                    Some(r.new_prog_id)
                }
                (Action::Reclaim, Some(w)) => {
                    self.release_planned(step)?;
                    Some(self.claim_wanted(w, step.applied)?)
                }
                (_, None) => unreachable!("only releases have no wanted claim"),
            };
            step.new_prog_id = taken;
            crash::point("apply::stepped")?;
        }
        Ok(plan)
    }

    fn claim_wanted(&self, w: &Want, applied: bool) -> Result<u32> {
        let mut req = ClaimRequest::new(w.src.clone());
        req.prio = Some(w.prep.prio);
        req.proceed_on = Some(w.prep.proceed_on);
        req.name = Some(w.prep.name.clone());
        req.persistent = true;
        req.backend = w.backend;
        req.pin_maps = w.pin_maps.clone();
        let attach = AttachOptions {
            backend: w.backend,
            ..Default::default()
        };
        let claim = self.claim_marked(&w.claim.interface, &req, attach, applied)?;
        Ok(claim.prog_id)
    }

    /// Releases the planned claim if it is still the one planned (same
    /// program); one another process released or replaced meanwhile is
    /// left alone.
    fn release_planned(&self, step: &Step) -> Result<()> {
        let iface = Iface::resolve(&step.iface)?;
        let (_lock, mut state) = self.open(&iface, true)?;
        let records = crate::objects::Objects::records(&state)?;
        let Some(n) = records
            .iter()
            .position(|r| !r.is_free() && r.name == step.name && Some(r.prog_id) == step.prog_id)
        else {
            log::info!(
                "{} {}: changed by another process since the plan; left alone",
                step.iface,
                step.name
            );
            return Ok(());
        };
        crate::release::release(&mut state, &SlotRef::Slot(n), false)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_reads_with_the_line_of_each_claim_and_objects_from_its_directory() {
        let text = "# comment\n\n[[claim]]\ninterface = \"eth0\"\nobject = \"fw.o\"\n\n[[claim]]\ninterface = \"eth1\"\nname = \"lb\"\nobject = \"/srv/lb.o\"\npriority = 7\nproceed_on = [\"pass\", \"drop\"]\n";
        let d = Desired::parse(text, Path::new("/etc/xdp-slots/node.toml")).unwrap();
        assert_eq!(d.claims.len(), 2);
        assert_eq!(d.claims[0].at, "/etc/xdp-slots/node.toml:3");
        assert_eq!(d.claims[0].object, Path::new("/etc/xdp-slots/fw.o"));
        assert_eq!(d.claims[0].pin_maps, "scoped");
        assert_eq!(d.claims[1].at, "/etc/xdp-slots/node.toml:7");
        assert_eq!(d.claims[1].priority, Some(7));
        // What export writes reads back as the same claims.
        let again = Desired::parse(&d.to_toml(), Path::new("/x/y.toml")).unwrap();
        let strip = |d: &Desired| {
            d.claims
                .iter()
                .map(|c| DesiredClaim {
                    at: String::new(),
                    ..c.clone()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(&again), strip(&d));
    }

    #[test]
    fn a_syntax_error_names_its_line() {
        let e = Desired::parse(
            "[[claim]]\ninterface = \"eth0\"\nobject = \n",
            Path::new("f.toml"),
        )
        .unwrap_err();
        match e {
            Error::BadDesired { file, line, .. } => {
                assert_eq!((file.as_str(), line), ("f.toml", 3))
            }
            other => panic!("{other}"),
        }
    }
}
