//! libxdp's `XDP_RUN_CONFIG` metadata, read from an object's BTF.
//!
//! A program `prog` may carry a BTF variable `_prog` in DATASEC
//! `.xdp_run_config`: a struct whose members encode values as array
//! lengths (`__uint(priority, 20)` is `int (*priority)[20]`), with
//! `priority` and one member per XDP action to chain on
//! (`__uint(XDP_PASS, 1)`). The values exist only in BTF: in an object
//! built without it (clang without -g) the variable is there, its values
//! are not.
use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

use crate::btf::{Btf, KIND_ARRAY, KIND_DATASEC, KIND_PTR, KIND_STRUCT, KIND_VAR, u32_at};

/// What the object says about one program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunConfig {
    /// Priority, if given.
    pub priority: Option<u32>,
    /// Proceed-on mask (`1 << action`), if any action member was given.
    pub proceed_on: Option<u32>,
}

const ACTIONS: [&str; 5] = [
    "XDP_ABORTED",
    "XDP_DROP",
    "XDP_PASS",
    "XDP_TX",
    "XDP_REDIRECT",
];

/// The section libxdp's `XDP_RUN_CONFIG` puts its variables in.
const SECTION: &str = ".xdp_run_config";

/// `int (*member)[N]` -> N.
fn encoded_value(btf: &Btf, member_type: u32) -> Option<u32> {
    let ptr = btf.resolve(member_type)?;
    if ptr.kind != KIND_PTR {
        return None;
    }
    let arr = btf.resolve(ptr.size_or_type)?;
    if arr.kind != KIND_ARRAY {
        return None;
    }
    u32_at(arr.extra, 8)
}

/// What an object says about one program's run config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    /// No `XDP_RUN_CONFIG` for the program.
    None,
    /// Its values.
    Config(RunConfig),
    /// The variable is there, but the object has no BTF to read its
    /// values from.
    WithoutBtf,
}

/// Reads `prog`'s run config from an ELF object.
pub(crate) fn find(elf: &[u8], prog: &str) -> Found {
    if let Some(cfg) = read(elf, prog) {
        return Found::Config(cfg);
    }
    let Ok(file) = object::File::parse(elf) else {
        return Found::None;
    };
    if file.section_by_name(".BTF").is_some() {
        return Found::None;
    }
    let wanted = format!("_{prog}");
    let declared = file.symbols().any(|s| {
        s.name() == Ok(wanted.as_str())
            && s.section_index()
                .and_then(|i| file.section_by_index(i).ok())
                .is_some_and(|sec| sec.name() == Ok(SECTION))
    });
    if declared {
        Found::WithoutBtf
    } else {
        Found::None
    }
}

/// Reads `prog`'s run config from an ELF object's BTF, if it has one.
fn read(elf: &[u8], prog: &str) -> Option<RunConfig> {
    let file = object::File::parse(elf).ok()?;
    let section = file.section_by_name(".BTF")?;
    let data = section.data().ok()?;
    let btf = Btf::parse(data)?;
    let wanted = format!("_{prog}");
    let datasec = btf
        .types
        .iter()
        .find(|t| t.kind == KIND_DATASEC && btf.name(t.name_off) == SECTION)?;
    for i in 0..datasec.vlen {
        let var_id = u32_at(datasec.extra, i * 12)?;
        let var = btf.get(var_id)?;
        if var.kind != KIND_VAR || btf.name(var.name_off) != wanted {
            continue;
        }
        let st = btf.resolve(var.size_or_type)?;
        if st.kind != KIND_STRUCT {
            return None;
        }
        let mut cfg = RunConfig::default();
        for m in 0..st.vlen {
            let name = btf.name(u32_at(st.extra, m * 12)?);
            let Some(value) = encoded_value(&btf, u32_at(st.extra, m * 12 + 4)?) else {
                continue;
            };
            if name == "priority" {
                cfg.priority = Some(value);
            } else if let Some(action) = ACTIONS.iter().position(|a| *a == name) {
                let mask = cfg.proceed_on.get_or_insert(0);
                if value != 0 {
                    *mask |= 1 << action;
                }
            }
        }
        return Some(cfg);
    }
    None
}
