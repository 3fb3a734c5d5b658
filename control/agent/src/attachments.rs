//! The CNI attachments on this node: addresses handed out and the interfaces
//! the CNI plugin registered. Persisted on every change before the agent
//! answers, so a restarted agent knows every local endpoint (its snapshot to
//! the engine then keeps them) and never hands out an address twice.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sluice_api::agent::{host_ifname, Attachment, PodRef, RegisteredEndpoint};
use sluice_tables::Cidr;

use crate::ipam::{self, IpamError};
use crate::persist;

/// One attachment: what Allocate handed out and, once wired, what Register reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentRecord {
    pub attachment: Attachment,
    pub pod: Option<PodRef>,
    pub netns: String,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    pub host_ifname: String,
    pub registered: Option<RegisteredEndpoint>,
}

impl AttachmentRecord {
    /// `namespace/pod`, or the container id when the runtime named no pod.
    pub fn name(&self) -> String {
        match &self.pod {
            Some(p) => format!("{}/{}", p.namespace, p.name),
            None => self.attachment.container_id.clone(),
        }
    }
}

/// The pod CIDRs this node allocates from (at most one per family).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodCidrs {
    pub ipv4: Option<Cidr>,
    pub ipv6: Option<Cidr>,
}

impl PodCidrs {
    pub fn from_list(list: &[Cidr]) -> PodCidrs {
        PodCidrs {
            ipv4: list.iter().find(|c| c.addr.is_ipv4()).copied(),
            ipv6: list.iter().find(|c| c.addr.is_ipv6()).copied(),
        }
    }

    pub fn list(&self) -> Vec<Cidr> {
        self.ipv4.iter().chain(self.ipv6.iter()).copied().collect()
    }
}

/// On disk: the records as a list (JSON map keys must be strings).
#[derive(Debug, Default, Serialize, Deserialize)]
struct OnDisk {
    records: Vec<AttachmentRecord>,
    last_ipv4: Option<Ipv4Addr>,
    last_ipv6: Option<Ipv6Addr>,
}

#[derive(Clone, Debug, Default)]
pub struct Attachments {
    records: BTreeMap<Attachment, AttachmentRecord>,
    last_ipv4: Option<Ipv4Addr>,
    last_ipv6: Option<Ipv6Addr>,
    path: Option<PathBuf>,
}

impl Attachments {
    pub fn in_memory() -> Attachments {
        Attachments::default()
    }

    /// Loads the attachments from `path` (none when the file does not exist).
    pub fn open(path: PathBuf) -> anyhow::Result<Attachments> {
        let disk: OnDisk = persist::load(&path)?;
        Ok(Attachments {
            records: disk
                .records
                .into_iter()
                .map(|r| (r.attachment.clone(), r))
                .collect(),
            last_ipv4: disk.last_ipv4,
            last_ipv6: disk.last_ipv6,
            path: Some(path),
        })
    }

    /// Writes the state file (no-op in memory). Called before answering.
    pub fn save(&self) -> anyhow::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        persist::store(
            path,
            &OnDisk {
                records: self.records.values().cloned().collect(),
                last_ipv4: self.last_ipv4,
                last_ipv6: self.last_ipv6,
            },
        )
    }

    pub fn get(&self, attachment: &Attachment) -> Option<&AttachmentRecord> {
        self.records.get(attachment)
    }

    pub fn iter(&self) -> impl Iterator<Item = &AttachmentRecord> {
        self.records.values()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn in_use(&self) -> BTreeSet<IpAddr> {
        self.records
            .values()
            .flat_map(|r| {
                r.ipv4
                    .map(IpAddr::V4)
                    .into_iter()
                    .chain(r.ipv6.map(IpAddr::V6))
            })
            .collect()
    }

    /// Addresses for `attachment`: the ones it already has, or new ones from
    /// every configured family. Nothing is recorded unless all families succeed.
    pub fn allocate(
        &mut self,
        attachment: &Attachment,
        pod: Option<PodRef>,
        netns: &str,
        cidrs: &PodCidrs,
    ) -> Result<&AttachmentRecord, IpamError> {
        if self.records.contains_key(attachment) {
            return Ok(&self.records[attachment]);
        }
        if cidrs.ipv4.is_none() && cidrs.ipv6.is_none() {
            return Err(IpamError::NoPodCidr);
        }
        let in_use = self.in_use();
        let ipv4 = match &cidrs.ipv4 {
            Some(c) => match ipam::allocate(c, &in_use, self.last_ipv4.map(IpAddr::V4))? {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(_) => None,
            },
            None => None,
        };
        let ipv6 = match &cidrs.ipv6 {
            Some(c) => match ipam::allocate(c, &in_use, self.last_ipv6.map(IpAddr::V6))? {
                IpAddr::V6(v6) => Some(v6),
                IpAddr::V4(_) => None,
            },
            None => None,
        };
        self.last_ipv4 = ipv4.or(self.last_ipv4);
        self.last_ipv6 = ipv6.or(self.last_ipv6);
        let record = AttachmentRecord {
            attachment: attachment.clone(),
            pod,
            netns: netns.to_string(),
            ipv4,
            ipv6,
            host_ifname: host_ifname(attachment),
            registered: None,
        };
        self.records.insert(attachment.clone(), record);
        Ok(&self.records[attachment])
    }

    /// Records the wired interface; `false` when the attachment is unknown.
    pub fn register(&mut self, endpoint: RegisteredEndpoint) -> bool {
        match self.records.get_mut(&endpoint.attachment) {
            Some(record) => {
                record.registered = Some(endpoint);
                true
            }
            None => false,
        }
    }

    /// Forgets the attachment and frees its addresses; `false` if it was unknown.
    pub fn release(&mut self, attachment: &Attachment) -> bool {
        self.records.remove(attachment).is_some()
    }

    /// Releases every attachment not in `valid`; returns the released ones.
    pub fn retain_valid(&mut self, valid: &[Attachment]) -> Vec<Attachment> {
        let valid: BTreeSet<&Attachment> = valid.iter().collect();
        let gone: Vec<Attachment> = self
            .records
            .keys()
            .filter(|a| !valid.contains(a))
            .cloned()
            .collect();
        for a in &gone {
            self.records.remove(a);
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn att(id: &str) -> Attachment {
        Attachment {
            container_id: id.into(),
            ifname: "eth0".into(),
        }
    }

    fn cidrs(v4: &str) -> PodCidrs {
        PodCidrs::from_list(&[
            Cidr::parse(v4).unwrap(),
            Cidr::parse("fd00:9::/64").unwrap(),
        ])
    }

    #[test]
    fn allocations_survive_a_restart_and_are_never_handed_out_twice() {
        let dir = std::env::temp_dir().join(format!("sluice-att-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("attachments.json");
        let c = cidrs("10.9.0.0/24");
        let mut a = Attachments::open(path.clone()).unwrap();
        let first = a
            .allocate(&att("c1"), None, "/proc/1/ns/net", &c)
            .unwrap()
            .clone();
        assert_eq!(first.ipv4, Some("10.9.0.2".parse().unwrap()));
        assert_eq!(first.ipv6, Some("fd00:9::1".parse().unwrap()));
        // Asking again returns the same addresses.
        assert_eq!(a.allocate(&att("c1"), None, "x", &c).unwrap(), &first);
        a.save().unwrap();
        let mut b = Attachments::open(path).unwrap();
        let second = b.allocate(&att("c2"), None, "y", &c).unwrap().clone();
        assert_eq!(second.ipv4, Some("10.9.0.3".parse().unwrap()));
        assert!(b.release(&att("c1")));
        assert!(!b.release(&att("c1")), "DEL is idempotent");
        // The cursor keeps going: c1's old address is not reused at once.
        let third = b.allocate(&att("c3"), None, "z", &c).unwrap().clone();
        assert_eq!(third.ipv4, Some("10.9.0.4".parse().unwrap()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn exhaustion_records_nothing_and_gc_keeps_only_valid() {
        let c = cidrs("10.9.0.0/30");
        let mut a = Attachments::in_memory();
        a.allocate(&att("c1"), None, "x", &c).unwrap();
        let err = a.allocate(&att("c2"), None, "x", &c).unwrap_err();
        assert_eq!(
            err.to_string(),
            "pod CIDR 10.9.0.0/30 has no free IPv4 address (1 in use)"
        );
        assert_eq!(a.len(), 1);
        a.allocate(&att("c3"), None, "x", &cidrs("10.9.1.0/24"))
            .unwrap();
        let gone = a.retain_valid(&[att("c3")]);
        assert_eq!(gone, vec![att("c1")]);
        assert_eq!(a.len(), 1);
        assert!(a.get(&att("c3")).is_some());
    }
}
