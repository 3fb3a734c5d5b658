//! Network namespaces and one rtnetlink session per namespace.
//!
//! The plugin runs in the node's netns. The container side is configured from
//! a dedicated thread that enters the container's netns with setns(2) (which
//! moves only that thread) and then opens its own netlink sockets there: a
//! netlink socket belongs to the netns it was created in, and so do
//! /proc/sys/net lookups made by that thread. The thread ends with the work;
//! the calling thread never leaves its netns.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::packet_route::AddressFamily;
use sluice_tables::MacAddr;

/// ENODEV, ENOENT, ESRCH, EEXIST as netlink reports them (negated errno).
const ENOENT: i32 = 2;
const ESRCH: i32 = 3;
const ENODEV: i32 = 19;
pub const EEXIST: i32 = 17;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot open network namespace {path}: {source}")]
    OpenNetns { path: String, source: io::Error },
    #[error("cannot enter network namespace {path}: {source}")]
    EnterNetns { path: String, source: io::Error },
    #[error("{what}: {message}")]
    Netlink {
        what: String,
        /// The errno, when the kernel gave one.
        errno: Option<i32>,
        message: String,
    },
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("the thread working in network namespace {0} panicked")]
    ThreadPanicked(String),
    #[error("{0}")]
    Other(String),
}

impl NetError {
    pub fn netlink(what: impl Into<String>, source: rtnetlink::Error) -> NetError {
        let (errno, message) = match &source {
            // The kernel's refusal: its errno and strerror, not the echoed request.
            rtnetlink::Error::NetlinkError(e) => (Some(e.raw_code().abs()), e.to_io().to_string()),
            other => (None, other.to_string()),
        };
        NetError::Netlink {
            what: what.into(),
            errno,
            message,
        }
    }

    pub fn io(what: impl Into<String>, source: io::Error) -> NetError {
        NetError::Io {
            what: what.into(),
            source,
        }
    }

    pub fn errno(&self) -> Option<i32> {
        match self {
            NetError::Netlink { errno, .. } => *errno,
            NetError::Io { source, .. }
            | NetError::OpenNetns { source, .. }
            | NetError::EnterNetns { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    fn is_not_found(&self) -> bool {
        matches!(self.errno(), Some(ENODEV | ENOENT | ESRCH))
    }
}

/// An open handle on a network namespace: `/proc/<pid>/ns/net` or a
/// bind-mounted path such as `/run/netns/<name>`.
#[derive(Debug)]
pub struct Netns {
    path: String,
    file: File,
}

impl Netns {
    pub fn open(path: &str) -> Result<Netns, NetError> {
        let file = File::open(path).map_err(|source| NetError::OpenNetns {
            path: path.to_string(),
            source,
        })?;
        Ok(Netns {
            path: path.to_string(),
            file,
        })
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Runs `f` on a new thread inside this netns and waits for it. Threads
    /// spawned by `f` start in this netns too.
    pub fn run<T: Send>(
        &self,
        f: impl FnOnce() -> Result<T, NetError> + Send,
    ) -> Result<T, NetError> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    nix::sched::setns(&self.file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(
                        |errno| NetError::EnterNetns {
                            path: self.path.clone(),
                            source: io::Error::from_raw_os_error(errno as i32),
                        },
                    )?;
                    f()
                })
                .join()
                .map_err(|_| NetError::ThreadPanicked(self.path.clone()))?
        })
    }
}

/// A link as this plugin cares about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<MacAddr>,
    pub mtu: Option<u32>,
    pub up: bool,
}

impl Link {
    fn from_message(message: &LinkMessage) -> Link {
        let mut link = Link {
            index: message.header.index,
            name: String::new(),
            mac: None,
            mtu: None,
            up: message.header.flags.contains(LinkFlags::Up),
        };
        for attribute in &message.attributes {
            match attribute {
                LinkAttribute::IfName(name) => link.name = name.clone(),
                LinkAttribute::Mtu(mtu) => link.mtu = Some(*mtu),
                LinkAttribute::Address(bytes) => {
                    link.mac = <[u8; 6]>::try_from(bytes.as_slice()).ok().map(MacAddr)
                }
                _ => {}
            }
        }
        link
    }
}

/// A route of the main table, as CHECK compares them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteEntry {
    pub dst: Option<std::net::IpAddr>,
    pub prefix_len: u8,
    pub gateway: Option<std::net::IpAddr>,
    pub oif: Option<u32>,
    pub scope_link: bool,
}

/// An rtnetlink session bound to the calling thread's current netns.
pub struct Rtnl {
    runtime: tokio::runtime::Runtime,
    handle: rtnetlink::Handle,
}

impl std::fmt::Debug for Rtnl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rtnl")
    }
}

impl Rtnl {
    /// Opens the socket in the netns the calling thread is in now.
    pub fn connect() -> Result<Rtnl, NetError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| NetError::io("starting the netlink runtime", e))?;
        let handle = runtime
            .block_on(async {
                let (connection, handle, _) = rtnetlink::new_connection()?;
                tokio::spawn(connection);
                Ok::<_, io::Error>(handle)
            })
            .map_err(|e| NetError::io("opening a netlink socket", e))?;
        Ok(Rtnl { runtime, handle })
    }

    pub fn handle(&self) -> &rtnetlink::Handle {
        &self.handle
    }

    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// `None` when no link has that name.
    pub fn link_by_name(&self, name: &str) -> Result<Option<Link>, NetError> {
        let found = self.block_on(async {
            self.handle
                .link()
                .get()
                .match_name(name.to_string())
                .execute()
                .try_next()
                .await
        });
        match found {
            Ok(message) => Ok(message.as_ref().map(Link::from_message)),
            Err(e) => {
                let e = NetError::netlink(format!("looking up link {name}"), e);
                if e.is_not_found() {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    pub fn set_link(&self, what: &str, message: LinkMessage) -> Result<(), NetError> {
        self.block_on(self.handle.link().set(message).execute())
            .map_err(|e| NetError::netlink(what, e))
    }

    /// Deletes a link; `false` when it was already gone.
    pub fn delete_link(&self, index: u32) -> Result<bool, NetError> {
        match self.block_on(self.handle.link().del(index).execute()) {
            Ok(()) => Ok(true),
            Err(e) => {
                let e = NetError::netlink(format!("deleting link {index}"), e);
                if e.is_not_found() {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// `ip addr add ADDRESS/PREFIX dev INDEX [nodad]`.
    pub fn add_address(
        &self,
        index: u32,
        address: std::net::IpAddr,
        prefix_len: u8,
        nodad: bool,
    ) -> Result<(), NetError> {
        let mut request = self.handle.address().add(index, address, prefix_len);
        if nodad {
            let message = request.message_mut();
            message.header.flags |= AddressHeaderFlags::Nodad;
            message
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        self.block_on(request.execute())
            .map_err(|e| NetError::netlink(format!("adding address {address}/{prefix_len}"), e))
    }

    /// The addresses on link `index`, with their prefix lengths.
    pub fn addresses(&self, index: u32) -> Result<Vec<(std::net::IpAddr, u8)>, NetError> {
        let messages: Vec<AddressMessage> = self
            .block_on(
                self.handle
                    .address()
                    .get()
                    .set_link_index_filter(index)
                    .execute()
                    .try_collect(),
            )
            .map_err(|e| NetError::netlink("listing addresses", e))?;
        Ok(messages
            .iter()
            .filter(|m| m.header.index == index)
            .filter_map(|m| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => Some((*ip, m.header.prefix_len)),
                    _ => None,
                })
            })
            .collect())
    }

    pub fn add_route(&self, what: &str, message: RouteMessage) -> Result<(), NetError> {
        self.block_on(self.handle.route().add(message).execute())
            .map_err(|e| NetError::netlink(what, e))
    }

    /// The routes of the main table of one family.
    pub fn routes(&self, family: AddressFamily) -> Result<Vec<RouteEntry>, NetError> {
        let mut query = RouteMessage::default();
        query.header.address_family = family;
        let messages: Vec<RouteMessage> = self
            .block_on(self.handle.route().get(query).execute().try_collect())
            .map_err(|e| NetError::netlink("listing routes", e))?;
        Ok(messages
            .iter()
            .filter(|m| {
                m.header.table == rtnetlink::packet_route::route::RouteHeader::RT_TABLE_MAIN
                    || m.attributes
                        .iter()
                        .any(|a| matches!(a, RouteAttribute::Table(254)))
            })
            .map(|m| {
                let mut entry = RouteEntry {
                    dst: None,
                    prefix_len: m.header.destination_prefix_length,
                    gateway: None,
                    oif: None,
                    scope_link: m.header.scope == rtnetlink::packet_route::route::RouteScope::Link,
                };
                for a in &m.attributes {
                    match a {
                        RouteAttribute::Destination(d) => entry.dst = route_ip(d),
                        RouteAttribute::Gateway(g) => entry.gateway = route_ip(g),
                        RouteAttribute::Oif(i) => entry.oif = Some(*i),
                        _ => {}
                    }
                }
                entry
            })
            .collect())
    }
}

fn route_ip(address: &RouteAddress) -> Option<std::net::IpAddr> {
    match address {
        RouteAddress::Inet(a) => Some((*a).into()),
        RouteAddress::Inet6(a) => Some((*a).into()),
        _ => None,
    }
}
