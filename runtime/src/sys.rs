//! The runtime's only raw system calls: what neither std nor aya offers.
//! Every `unsafe` block of the crate is here, each with its reason.
use std::{
    ffi::CString,
    io,
    mem::size_of,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

/// CAP_NET_ADMIN's bit.
pub const CAP_NET_ADMIN: u32 = 12;
/// CAP_SYS_ADMIN's bit.
pub const CAP_SYS_ADMIN: u32 = 21;
/// CAP_BPF's bit.
pub const CAP_BPF: u32 = 39;

/// This process's effective capabilities (from /proc/self/status); none
/// if they cannot be read.
pub fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Does this process have what BPF and XDP management need: CAP_BPF (or
/// CAP_SYS_ADMIN), CAP_NET_ADMIN and CAP_SYS_ADMIN (freplace, program
/// ids)?
pub fn is_privileged() -> bool {
    let eff = effective_caps();
    eff & (1 << CAP_NET_ADMIN) != 0 && eff & (1 << CAP_SYS_ADMIN) != 0
}

/// Index of interface `name` in the calling thread's network namespace.
pub fn if_index(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string for the call's duration.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
}

/// Name of interface `index` in the calling thread's network namespace.
pub fn if_name(index: u32) -> Option<String> {
    let mut buf = [0u8; libc::IF_NAMESIZE];
    // SAFETY: `buf` has IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr().cast()) };
    if p.is_null() {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}

fn socket(domain: i32, ty: i32, proto: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked before use.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Cookie of the calling thread's network namespace (never reused, unlike
/// inode numbers): the identity of "this namespace" in state paths.
pub fn netns_cookie() -> io::Result<u64> {
    let sock = socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0)?;
    let mut cookie: u64 = 0;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: `cookie` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}

/// What the kernel reports as attached to an interface's XDP hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XdpAttached {
    /// Program id (0: none).
    pub prog_id: u32,
    /// XDP_ATTACHED_* mode (0 none, 1 drv, 2 skb, 3 hw, 4 multi).
    pub mode: u8,
}

const NLMSG_HDR: usize = 16;
const IFINFO: usize = 16;
const IFLA_XDP: u16 = 43;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_FLAGS: u16 = 3;
const IFLA_XDP_PROG_ID: u16 = 4;
const NLA_F_NESTED: u16 = 1 << 15;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn push_attr(buf: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(align4(buf.len()), 0);
}

/// One rtnetlink request about `ifindex`; returns the reply's attributes
/// (GETLINK) or checks the ack (SETLINK).
fn rtnl(msg_type: u16, flags: u16, ifindex: u32, attrs: &[u8]) -> io::Result<Vec<u8>> {
    let sock = socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE)?;
    let mut msg = Vec::with_capacity(NLMSG_HDR + IFINFO + attrs.len());
    let total = (NLMSG_HDR + IFINFO + attrs.len()) as u32;
    msg.extend_from_slice(&total.to_ne_bytes());
    msg.extend_from_slice(&msg_type.to_ne_bytes());
    msg.extend_from_slice(&(flags | libc::NLM_F_REQUEST as u16).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // pid
    msg.push(libc::AF_UNSPEC as u8); // ifi_family
    msg.push(0);
    msg.extend_from_slice(&0u16.to_ne_bytes()); // ifi_type
    msg.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes()); // ifi_flags
    msg.extend_from_slice(&0u32.to_ne_bytes()); // ifi_change
    msg.extend_from_slice(attrs);
    // SAFETY: `msg` is a valid buffer of the given length.
    let n = unsafe { libc::send(sock.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 65536];
    // SAFETY: `buf` is valid for writes of its length.
    let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let buf = &buf[..n as usize];
    if buf.len() < NLMSG_HDR {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "short netlink reply",
        ));
    }
    let ty = u16::from_ne_bytes([buf[4], buf[5]]);
    if ty == libc::NLMSG_ERROR as u16 {
        let code = i32::from_ne_bytes(buf[NLMSG_HDR..NLMSG_HDR + 4].try_into().unwrap());
        return if code == 0 {
            Ok(Vec::new())
        } else {
            Err(io::Error::from_raw_os_error(-code))
        };
    }
    let len = (u32::from_ne_bytes(buf[..4].try_into().unwrap()) as usize).min(buf.len());
    Ok(buf
        .get(NLMSG_HDR + IFINFO..len)
        .unwrap_or_default()
        .to_vec())
}

/// Iterates netlink attributes: (type without flags, payload).
fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & !NLA_F_NESTED;
        if len < 4 || len > buf.len() {
            return None;
        }
        let payload = &buf[4..len];
        buf = &buf[align4(len).min(buf.len())..];
        Some((ty, payload))
    })
}

/// The XDP program the kernel has on interface `ifindex` (netlink
/// RTM_GETLINK, IFLA_XDP): sees programs attached by links and by netlink.
pub fn xdp_attached(ifindex: u32) -> io::Result<XdpAttached> {
    let reply = rtnl(libc::RTM_GETLINK, 0, ifindex, &[])?;
    let mut out = XdpAttached {
        prog_id: 0,
        mode: 0,
    };
    for (ty, payload) in attrs(&reply) {
        if ty != IFLA_XDP {
            continue;
        }
        for (ty, p) in attrs(payload) {
            match ty {
                IFLA_XDP_ATTACHED if !p.is_empty() => out.mode = p[0],
                IFLA_XDP_PROG_ID if p.len() >= 4 => {
                    out.prog_id = u32::from_ne_bytes(p[..4].try_into().unwrap())
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

/// Removes a netlink-attached XDP program from `ifindex` (for `--force`).
/// `flags` are the XDP_FLAGS_* mode it was attached in.
pub fn xdp_detach_netlink(ifindex: u32, flags: u32) -> io::Result<()> {
    let mut nested = Vec::new();
    push_attr(&mut nested, IFLA_XDP_FD, &(-1i32).to_ne_bytes());
    push_attr(&mut nested, IFLA_XDP_FLAGS, &flags.to_ne_bytes());
    let mut attrs = Vec::new();
    push_attr(&mut attrs, IFLA_XDP | NLA_F_NESTED, &nested);
    rtnl(libc::RTM_SETLINK, libc::NLM_F_ACK as u16, ifindex, &attrs).map(drop)
}

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;

/// The leading fields of `union bpf_attr` for BPF_MAP_CREATE; the kernel
/// zero-fills the rest.
#[repr(C)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
}

/// `union bpf_attr` for BPF_MAP_UPDATE_ELEM.
#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

fn bpf<T>(cmd: libc::c_long, attr: &T) -> io::Result<libc::c_long> {
    // SAFETY: bpf(2) reads `size_of::<T>()` bytes of `attr`, a live
    // `repr(C)` prefix of `union bpf_attr`; pointers in it outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *const T,
            size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

fn map_create(attr: &MapCreateAttr) -> io::Result<OwnedFd> {
    let fd = bpf(BPF_MAP_CREATE, attr)?;
    // SAFETY: BPF_MAP_CREATE returned a fresh descriptor that nothing else
    // owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits until every BPF program run that started before the call has
/// finished (the dispatcher included).
///
/// The kernel's own promise: after an update of a map-in-map, it waits for
/// running non-sleepable BPF programs (`synchronize_rcu()` in
/// `maybe_wait_bpf_programs`), so that userspace knows no program still
/// uses the old value. This updates a private one-entry array of maps,
/// which no program uses, for that wait alone.
pub fn wait_for_bpf_programs() -> io::Result<()> {
    let inner = map_create(&MapCreateAttr {
        map_type: BPF_MAP_TYPE_ARRAY,
        key_size: 4,
        value_size: 4,
        max_entries: 1,
        map_flags: 0,
        inner_map_fd: 0,
    })?;
    let outer = map_create(&MapCreateAttr {
        map_type: BPF_MAP_TYPE_ARRAY_OF_MAPS,
        key_size: 4,
        value_size: 4,
        max_entries: 1,
        map_flags: 0,
        inner_map_fd: inner.as_raw_fd() as u32,
    })?;
    let key: u32 = 0;
    let value: u32 = inner.as_raw_fd() as u32;
    bpf(
        BPF_MAP_UPDATE_ELEM,
        &MapElemAttr {
            map_fd: outer.as_raw_fd() as u32,
            _pad: 0,
            key: (&raw const key) as u64,
            value: (&raw const value) as u64,
            flags: 0,
        },
    )
    .map(drop)
}

/// The value at `key` of the map `map`, as the kernel gives it to
/// userspace (`value_size` bytes; a program array gives a program id).
/// `None`: no such entry (ENOENT).
pub fn map_lookup(map: BorrowedFd<'_>, key: u32, value_size: usize) -> io::Result<Option<Vec<u8>>> {
    const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
    let mut value = vec![0u8; value_size];
    let r = bpf(
        BPF_MAP_LOOKUP_ELEM,
        &MapElemAttr {
            map_fd: map.as_raw_fd() as u32,
            _pad: 0,
            key: (&raw const key) as u64,
            value: value.as_mut_ptr() as u64,
            flags: 0,
        },
    );
    match r {
        Ok(_) => Ok(Some(value)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `union bpf_attr` for BPF_OBJ_GET and BPF_OBJ_PIN.
#[repr(C)]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// A descriptor of the BPF object pinned at `path` (a link, for one).
pub fn obj_get(path: &std::path::Path) -> io::Result<OwnedFd> {
    const BPF_OBJ_GET: libc::c_long = 7;
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let fd = bpf(
        BPF_OBJ_GET,
        &ObjGetAttr {
            pathname: c.as_ptr() as u64,
            bpf_fd: 0,
            file_flags: 0,
        },
    )?;
    // SAFETY: BPF_OBJ_GET returned a fresh descriptor that nothing else
    // owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Pins the BPF object `fd` at `path` (BPF_OBJ_PIN).
pub fn obj_pin(fd: BorrowedFd<'_>, path: &std::path::Path) -> io::Result<()> {
    const BPF_OBJ_PIN: libc::c_long = 6;
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    bpf(
        BPF_OBJ_PIN,
        &ObjGetAttr {
            pathname: c.as_ptr() as u64,
            bpf_fd: fd.as_raw_fd() as u32,
            file_flags: 0,
        },
    )
    .map(drop)
}

/// `union bpf_attr` for BPF_LINK_UPDATE.
#[repr(C)]
struct LinkUpdateAttr {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}

/// Makes the XDP link `link` run `new` instead of `old`, in one step: every
/// packet runs one of the two (BPF_LINK_UPDATE, Linux 5.7+ for XDP links).
/// With BPF_F_REPLACE the kernel refuses (EPERM) if the link no longer
/// runs `old`.
pub fn link_update(
    link: BorrowedFd<'_>,
    new: BorrowedFd<'_>,
    old: BorrowedFd<'_>,
) -> io::Result<()> {
    const BPF_LINK_UPDATE: libc::c_long = 29;
    const BPF_F_REPLACE: u32 = 1 << 2;
    bpf(
        BPF_LINK_UPDATE,
        &LinkUpdateAttr {
            link_fd: link.as_raw_fd() as u32,
            new_prog_fd: new.as_raw_fd() as u32,
            flags: BPF_F_REPLACE,
            old_prog_fd: old.as_raw_fd() as u32,
        },
    )
    .map(drop)
}

/// Swaps the names `a` and `b` in one step (`renameat2` with
/// RENAME_EXCHANGE; bpffs allows it since Linux 5.16): whoever opens
/// either path sees one of the two directories whole, never neither.
pub fn rename_exchange(a: &std::path::Path, b: &std::path::Path) -> io::Result<()> {
    let cstr = |p: &std::path::Path| {
        CString::new(p.as_os_str().as_encoded_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
    };
    let (a, b) = (cstr(a)?, cstr(b)?);
    // SAFETY: both paths are NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Is `path` on a bpffs mount?
pub fn is_bpffs(path: &std::path::Path) -> bool {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs fills a zeroed struct we own; `c` is NUL-terminated.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    }
}

/// Ends this process at once with SIGKILL: no destructor, no flush, as a
/// crash would (see `crash`).
#[cfg(all(feature = "failpoints", not(test)))]
pub fn kill_self() -> ! {
    // SAFETY: kill(2) on our own pid; SIGKILL cannot be caught, so the call
    // does not return once it is delivered.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    unreachable!("SIGKILL was not delivered")
}

const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// `BPF_LINK_TYPE_XDP` in `enum bpf_link_type`.
const BPF_LINK_TYPE_XDP: u32 = 6;

/// `union bpf_attr` for BPF_OBJ_GET_INFO_BY_FD.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The interface an XDP link pinned at `path` is attached to: `Some(0)`
/// when its interface was deleted (the kernel detaches the link from a
/// device that goes away, and reports ifindex 0), `None` when the pin is
/// not an XDP link.
pub fn xdp_link_ifindex(path: &std::path::Path) -> io::Result<Option<u32>> {
    let fd = obj_get(path)?;
    // `struct bpf_link_info`: type, id, prog_id, then (8-byte aligned) the
    // per-type union, whose XDP member starts with the ifindex. The kernel
    // fills at most `info_len` bytes.
    let mut info = [0u8; 64];
    bpf(
        BPF_OBJ_GET_INFO_BY_FD,
        &InfoAttr {
            bpf_fd: fd.as_raw_fd() as u32,
            info_len: info.len() as u32,
            info: info.as_mut_ptr() as u64,
        },
    )?;
    let word = |at: usize| u32::from_ne_bytes(info[at..at + 4].try_into().expect("4 bytes"));
    Ok((word(0) == BPF_LINK_TYPE_XDP).then(|| word(16)))
}

/// Cookie of the network namespace `ns` (an open `/proc/<pid>/ns/net` or
/// `/run/netns/<name>`): a socket made in it tells. The `setns` happens in
/// a thread of its own that ends right after, so the caller's threads
/// never change namespace.
pub fn netns_cookie_of(ns: &std::fs::File) -> io::Result<u64> {
    let fd = ns.as_raw_fd();
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns(2) on a descriptor the caller keeps open for
            // the call; it changes only this short-lived thread.
            if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            netns_cookie()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the namespace thread panicked")))
    })
}
