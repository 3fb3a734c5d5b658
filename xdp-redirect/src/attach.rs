//! Loading an embedded BPF object and owning one XDP attachment.

use std::fmt;

use aya::maps::{Map, MapError};
use aya::programs::xdp::XdpLinkId;
use aya::programs::{Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};

use crate::XdpError;

/// How the program runs on the interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AttachMode {
    /// Native XDP, run by the driver (veth, most NICs): the fast path, and the default.
    /// Errors call it "driver" mode, after the kernel's `XDP_FLAGS_DRV_MODE`.
    #[default]
    Native,
    /// Generic XDP after the skb is built: works everywhere, slowly.
    Skb,
}

impl AttachMode {
    fn aya(self) -> XdpMode {
        match self {
            Self::Native => XdpMode::Driver,
            Self::Skb => XdpMode::Skb,
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Native => "driver",
            Self::Skb => "skb",
        })
    }
}

/// A network interface of the caller's network namespace, resolved once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Interface {
    pub(crate) name: String,
    pub(crate) index: u32,
}

impl Interface {
    pub(crate) fn resolve(name: &str, program: &'static str) -> Result<Self, XdpError> {
        let missing = || XdpError::NoSuchInterface {
            ifname: name.to_string(),
            program,
        };
        // if_nametoindex fails alike for a missing name and for one no kernel name can be
        // (empty, too long, NUL inside): either way no such interface.
        let index = nix::net::if_::if_nametoindex(name).map_err(|_| missing())?;
        Ok(Self {
            name: name.to_string(),
            index,
        })
    }
}

/// A BPF object loaded into the kernel with its one XDP program verified, not yet attached.
pub(crate) struct LoadedObject {
    ebpf: Ebpf,
    program: &'static str,
}

impl LoadedObject {
    pub(crate) fn load(object: &[u8], program: &'static str) -> Result<Self, XdpError> {
        let mut ebpf = EbpfLoader::new()
            .load(object)
            .map_err(|cause| XdpError::LoadObject {
                program,
                cause: Box::new(cause),
            })?;
        let xdp: &mut Xdp = ebpf
            .program_mut(program)
            .ok_or(XdpError::Missing {
                program,
                kind: "program",
                name: program,
            })?
            .try_into()
            .map_err(|cause| XdpError::LoadProgram {
                program,
                cause: Box::new(cause),
            })?;
        xdp.load().map_err(|cause| XdpError::LoadProgram {
            program,
            cause: Box::new(cause),
        })?;
        Ok(Self { ebpf, program })
    }

    /// Moves map `name` out of the object as the typed aya map `M`.
    pub(crate) fn take_map<M>(&mut self, name: &'static str, ifname: &str) -> Result<M, XdpError>
    where
        M: TryFrom<Map, Error = MapError>,
    {
        let program = self.program;
        let map = self.ebpf.take_map(name).ok_or(XdpError::Missing {
            program,
            kind: "map",
            name,
        })?;
        M::try_from(map).map_err(|cause| XdpError::Map {
            program,
            ifname: ifname.to_string(),
            map: name,
            op: "open".into(),
            cause: Box::new(cause),
        })
    }

    /// Attaches through a bpf_link: the kernel detaches it when the link fd is closed, so the
    /// program goes away with the owning process even if `Drop` never runs.
    pub(crate) fn attach(
        mut self,
        interface: Interface,
        mode: AttachMode,
    ) -> Result<Attachment, XdpError> {
        let program = self.program;
        let attach_error = |cause| XdpError::Attach {
            program,
            ifname: interface.name.clone(),
            mode,
            cause: Box::new(cause),
        };
        let link = self
            .xdp()
            .map_err(attach_error)?
            .attach_to_if_index(interface.index, mode.aya())
            .map_err(attach_error)?;
        Ok(Attachment {
            object: self,
            interface,
            mode,
            link: Some(link),
        })
    }

    fn xdp(&mut self) -> Result<&mut Xdp, aya::programs::ProgramError> {
        let program = self.program;
        self.ebpf
            .program_mut(program)
            .ok_or(aya::programs::ProgramError::NotLoaded)?
            .try_into()
    }
}

impl fmt::Debug for LoadedObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedObject")
            .field("program", &self.program)
            .finish_non_exhaustive()
    }
}

/// An XDP program attached to one interface; dropping it detaches the program.
#[derive(Debug)]
pub(crate) struct Attachment {
    object: LoadedObject,
    pub(crate) interface: Interface,
    pub(crate) mode: AttachMode,
    link: Option<XdpLinkId>,
}

impl Attachment {
    pub(crate) fn program(&self) -> &'static str {
        self.object.program
    }

    /// Context for a map error on this attachment.
    pub(crate) fn map_error(&self, map: &'static str, op: String, cause: MapError) -> XdpError {
        XdpError::Map {
            program: self.program(),
            ifname: self.interface.name.clone(),
            map,
            op,
            cause: Box::new(cause),
        }
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        let Some(link) = self.link.take() else {
            return;
        };
        let detached = self.object.xdp().and_then(|xdp| xdp.detach(link));
        if let Err(cause) = detached {
            // Closing the object's fds below still releases the bpf_link.
            tracing::warn!(
                program = self.object.program,
                ifname = %self.interface.name,
                %cause,
                "detach XDP program"
            );
        }
    }
}
