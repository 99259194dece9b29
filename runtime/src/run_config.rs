//! libxdp's `XDP_RUN_CONFIG` metadata, read from an object's BTF.
//!
//! A program `prog` may carry a BTF variable `_prog` in DATASEC
//! `.xdp_run_config`: a struct whose members encode values as array
//! lengths (`__uint(priority, 20)` is `int (*priority)[20]`), with
//! `priority` and one member per XDP action to chain on
//! (`__uint(XDP_PASS, 1)`). aya-obj keeps its BTF types private, so this
//! reads the few kinds it needs itself.
use object::{Object as _, ObjectSection as _};

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

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

struct Type<'a> {
    name_off: u32,
    kind: u32,
    vlen: usize,
    size_or_type: u32,
    extra: &'a [u8],
}

struct Btf<'a> {
    types: Vec<Type<'a>>,
    strings: &'a [u8],
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

impl<'a> Btf<'a> {
    fn parse(data: &'a [u8]) -> Option<Self> {
        if data.get(..2)? != [0x9f, 0xeb] {
            return None; // not little-endian BTF
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let (type_off, type_len) = (u32_at(data, 8)? as usize, u32_at(data, 12)? as usize);
        let (str_off, str_len) = (u32_at(data, 16)? as usize, u32_at(data, 20)? as usize);
        let types_data = data.get(hdr_len + type_off..hdr_len + type_off + type_len)?;
        let strings = data.get(hdr_len + str_off..hdr_len + str_off + str_len)?;
        let mut types = Vec::new();
        let mut off = 0;
        while off + 12 <= types_data.len() {
            let name_off = u32_at(types_data, off)?;
            let info = u32_at(types_data, off + 4)?;
            let size_or_type = u32_at(types_data, off + 8)?;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let extra_len = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                _ => 0,
            };
            let extra = types_data.get(off + 12..off + 12 + extra_len)?;
            types.push(Type {
                name_off,
                kind,
                vlen,
                size_or_type,
                extra,
            });
            off += 12 + extra_len;
        }
        Some(Self { types, strings })
    }

    fn name(&self, off: u32) -> &str {
        let s = self.strings.get(off as usize..).unwrap_or_default();
        let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        std::str::from_utf8(&s[..end]).unwrap_or("")
    }

    /// Type `id` (1-based), with typedef/const/volatile peeled off.
    fn resolve(&self, mut id: u32) -> Option<&Type<'a>> {
        for _ in 0..32 {
            let t = self.types.get((id as usize).checked_sub(1)?)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type
                }
                _ => return Some(t),
            }
        }
        None
    }

    /// `int (*member)[N]` -> N.
    fn encoded_value(&self, member_type: u32) -> Option<u32> {
        let ptr = self.resolve(member_type)?;
        if ptr.kind != KIND_PTR {
            return None;
        }
        let arr = self.resolve(ptr.size_or_type)?;
        if arr.kind != KIND_ARRAY {
            return None;
        }
        u32_at(arr.extra, 8)
    }
}

/// Reads `prog`'s run config from an ELF object, if it has one.
pub(crate) fn read(elf: &[u8], prog: &str) -> Option<RunConfig> {
    let file = object::File::parse(elf).ok()?;
    let section = file.section_by_name(".BTF")?;
    let data = section.data().ok()?;
    let btf = Btf::parse(data)?;
    let wanted = format!("_{prog}");
    let datasec = btf
        .types
        .iter()
        .find(|t| t.kind == KIND_DATASEC && btf.name(t.name_off) == ".xdp_run_config")?;
    for i in 0..datasec.vlen {
        let var_id = u32_at(datasec.extra, i * 12)?;
        let var = btf.types.get((var_id as usize).checked_sub(1)?)?;
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
            let Some(value) = btf.encoded_value(u32_at(st.extra, m * 12 + 4)?) else {
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
