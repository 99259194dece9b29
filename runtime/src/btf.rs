//! A reader of the few parts of an object's BTF (`.BTF`) and BTF.ext
//! (`.BTF.ext`) sections the runtime looks at itself: aya-obj keeps its
//! parsed BTF types private. Little-endian only (BPF objects for this
//! machine). Used to read `XDP_RUN_CONFIG` (`run_config.rs`) and to narrow
//! an object to one program (`narrow.rs`).

pub(crate) const KIND_INT: u32 = 1;
pub(crate) const KIND_PTR: u32 = 2;
pub(crate) const KIND_ARRAY: u32 = 3;
pub(crate) const KIND_STRUCT: u32 = 4;
pub(crate) const KIND_UNION: u32 = 5;
pub(crate) const KIND_ENUM: u32 = 6;
pub(crate) const KIND_TYPEDEF: u32 = 8;
pub(crate) const KIND_VOLATILE: u32 = 9;
pub(crate) const KIND_CONST: u32 = 10;
pub(crate) const KIND_RESTRICT: u32 = 11;
pub(crate) const KIND_FUNC_PROTO: u32 = 13;
pub(crate) const KIND_VAR: u32 = 14;
pub(crate) const KIND_DATASEC: u32 = 15;
pub(crate) const KIND_DECL_TAG: u32 = 17;
pub(crate) const KIND_TYPE_TAG: u32 = 18;
pub(crate) const KIND_ENUM64: u32 = 19;

/// Size of a `btf_type` record before its kind-specific part.
const TYPE_HEADER: usize = 12;
/// Size of one `btf_var_secinfo` (a DATASEC entry).
pub(crate) const SECINFO: usize = 12;

/// One BTF type record.
pub(crate) struct Type<'a> {
    pub name_off: u32,
    pub kind: u32,
    pub vlen: usize,
    pub size_or_type: u32,
    /// The kind-specific part (members, entries, ...).
    pub extra: &'a [u8],
    /// Where the record starts in the type section.
    pub offset: usize,
}

/// A parsed `.BTF` section.
pub(crate) struct Btf<'a> {
    /// The header, as it is (its length is the header's own `hdr_len`).
    pub header: &'a [u8],
    /// The type section.
    pub type_data: &'a [u8],
    /// Type `id` is `types[id - 1]`.
    pub types: Vec<Type<'a>>,
    /// The string section.
    pub strings: &'a [u8],
}

pub(crate) fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}

impl<'a> Btf<'a> {
    pub fn parse(data: &'a [u8]) -> Option<Self> {
        if data.get(..2)? != [0x9f, 0xeb] {
            return None; // not little-endian BTF
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let (type_off, type_len) = (u32_at(data, 8)? as usize, u32_at(data, 12)? as usize);
        let (str_off, str_len) = (u32_at(data, 16)? as usize, u32_at(data, 20)? as usize);
        let header = data.get(..hdr_len)?;
        let type_data = data.get(hdr_len + type_off..hdr_len + type_off + type_len)?;
        let strings = data.get(hdr_len + str_off..hdr_len + str_off + str_len)?;
        let mut types = Vec::new();
        let mut off = 0;
        while off + TYPE_HEADER <= type_data.len() {
            let name_off = u32_at(type_data, off)?;
            let info = u32_at(type_data, off + 4)?;
            let size_or_type = u32_at(type_data, off + 8)?;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let extra_len = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                _ => 0,
            };
            let extra = type_data.get(off + TYPE_HEADER..off + TYPE_HEADER + extra_len)?;
            types.push(Type {
                name_off,
                kind,
                vlen,
                size_or_type,
                extra,
                offset: off,
            });
            off += TYPE_HEADER + extra_len;
        }
        Some(Self {
            header,
            type_data,
            types,
            strings,
        })
    }

    /// The string at `off` in the string section.
    pub fn name(&self, off: u32) -> &'a str {
        string_at(self.strings, off)
    }

    /// Type `id` (1-based), as it is.
    pub fn get(&self, id: u32) -> Option<&Type<'a>> {
        self.types.get((id as usize).checked_sub(1)?)
    }

    /// Type `id` (1-based), with typedef/const/volatile peeled off.
    pub fn resolve(&self, mut id: u32) -> Option<&Type<'a>> {
        for _ in 0..32 {
            let t = self.get(id)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type
                }
                _ => return Some(t),
            }
        }
        None
    }

    /// The DATASEC named `name`.
    pub fn datasec(&self, name: &str) -> Option<&Type<'a>> {
        self.types
            .iter()
            .find(|t| t.kind == KIND_DATASEC && self.name(t.name_off) == name)
    }

    /// The offset of `s` in the string section, if it is there as a whole
    /// string.
    pub fn find_string(&self, s: &str) -> Option<u32> {
        let mut want = s.as_bytes().to_vec();
        want.push(0);
        let mut off = 0;
        while off < self.strings.len() {
            if self.strings[off..].starts_with(&want) {
                return u32::try_from(off).ok();
            }
            let end = self.strings[off..].iter().position(|&b| b == 0)?;
            off += end + 1;
        }
        None
    }

    /// A BTF section with the same header fields, these types and these
    /// strings (type section first, string section right after it).
    pub fn rebuild(&self, type_data: &[u8], strings: &[u8]) -> Vec<u8> {
        let mut out = self.header.to_vec();
        out[8..12].copy_from_slice(&0u32.to_le_bytes());
        out[12..16].copy_from_slice(&(type_data.len() as u32).to_le_bytes());
        out[16..20].copy_from_slice(&(type_data.len() as u32).to_le_bytes());
        out[20..24].copy_from_slice(&(strings.len() as u32).to_le_bytes());
        out.extend_from_slice(type_data);
        out.extend_from_slice(strings);
        out
    }
}

/// The NUL-terminated string at `off` of a string table.
pub(crate) fn string_at(strings: &[u8], off: u32) -> &str {
    let s = strings.get(off as usize..).unwrap_or_default();
    let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
    std::str::from_utf8(&s[..end]).unwrap_or("")
}

/// One of `.BTF.ext`'s record lists (func_info, line_info, CO-RE
/// relocations): a record size, then per ELF section its name (a BTF
/// string) and its records.
pub(crate) struct ExtInfo<'a> {
    pub rec_size: u32,
    /// (section name offset, number of records, the records).
    pub sections: Vec<(u32, u32, &'a [u8])>,
}

impl<'a> ExtInfo<'a> {
    fn parse(data: &'a [u8]) -> Option<Self> {
        if data.is_empty() {
            return Some(Self {
                rec_size: 0,
                sections: Vec::new(),
            });
        }
        let rec_size = u32_at(data, 0)?;
        let mut sections = Vec::new();
        let mut off = 4;
        while off < data.len() {
            let name = u32_at(data, off)?;
            let n = u32_at(data, off + 4)?;
            let len = (n as usize).checked_mul(rec_size as usize)?;
            let records = data.get(off + 8..off + 8 + len)?;
            sections.push((name, n, records));
            off += 8 + len;
        }
        Some(Self { rec_size, sections })
    }

    fn write(&self, out: &mut Vec<u8>) {
        if self.rec_size == 0 && self.sections.is_empty() {
            return;
        }
        out.extend_from_slice(&self.rec_size.to_le_bytes());
        for (name, n, records) in &self.sections {
            out.extend_from_slice(&name.to_le_bytes());
            out.extend_from_slice(&n.to_le_bytes());
            out.extend_from_slice(records);
        }
    }
}

/// A parsed `.BTF.ext` section.
pub(crate) struct BtfExt<'a> {
    header: &'a [u8],
    /// func_info, line_info and, when the header has them, CO-RE
    /// relocations.
    pub infos: Vec<ExtInfo<'a>>,
}

impl<'a> BtfExt<'a> {
    pub fn parse(data: &'a [u8]) -> Option<Self> {
        if data.get(..2)? != [0x9f, 0xeb] {
            return None;
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let header = data.get(..hdr_len)?;
        // (offset, length) pairs after the first 8 bytes: func_info and
        // line_info always, CO-RE relocations in the longer header.
        let lists = if hdr_len >= 32 { 3 } else { 2 };
        let mut infos = Vec::new();
        for i in 0..lists {
            let off = u32_at(data, 8 + 8 * i)? as usize;
            let len = u32_at(data, 12 + 8 * i)? as usize;
            infos.push(ExtInfo::parse(
                data.get(hdr_len + off..hdr_len + off + len)?,
            )?);
        }
        Some(Self { header, infos })
    }

    /// The section, laid out again: the header as it was with new offsets,
    /// then each list in order.
    pub fn write(&self) -> Vec<u8> {
        let mut out = self.header.to_vec();
        let mut body = Vec::new();
        for (i, info) in self.infos.iter().enumerate() {
            let start = body.len() as u32;
            info.write(&mut body);
            let len = body.len() as u32 - start;
            out[8 + 8 * i..12 + 8 * i].copy_from_slice(&start.to_le_bytes());
            out[12 + 8 * i..16 + 8 * i].copy_from_slice(&len.to_le_bytes());
        }
        out.extend_from_slice(&body);
        out
    }
}
