//! ARP: the engine answers requests for the gateway address, nothing else.

use sluice_wire::ethernet::HEADER_LEN as ETH_LEN;
use sluice_wire::{arp::PACKET_LEN, ArpOperation, ArpPacket, EthernetFrame};

use crate::ingress::Ingress;
use crate::{DropReason, Verdict};

/// Turns a request for the gateway into the reply, in place, back to the pod.
pub(crate) fn handle(frame: &mut [u8], ctx: &Ingress<'_>) -> Result<Verdict, DropReason> {
    let gateway = &ctx.tables.gateway;
    let body = frame
        .get_mut(ETH_LEN..ctx.len)
        .ok_or(DropReason::InvalidArp)?;
    let mut arp = ArpPacket::new_checked(body).map_err(|_| DropReason::InvalidArp)?;
    match arp.operation().map_err(|_| DropReason::InvalidArp)? {
        ArpOperation::Request => {}
        ArpOperation::Reply => return Err(DropReason::ArpNotForGateway),
    }
    let sender_mac = arp.sender_hardware_addr();
    let sender_ip = arp.sender_protocol_addr();
    if sender_mac != ctx.endpoint.mac.0 {
        return Err(DropReason::SpoofedSourceMac);
    }
    // An ARP probe (RFC 5227) carries 0.0.0.0 as the sender.
    if Some(sender_ip) != ctx.endpoint.ipv4 && !sender_ip.is_unspecified() {
        return Err(DropReason::SpoofedSourceIp);
    }
    if arp.target_protocol_addr() != gateway.ipv4 {
        return Err(DropReason::ArpNotForGateway);
    }
    arp.set_operation(ArpOperation::Reply);
    arp.set_sender_hardware_addr(gateway.mac.0);
    arp.set_sender_protocol_addr(gateway.ipv4);
    arp.set_target_hardware_addr(sender_mac);
    arp.set_target_protocol_addr(sender_ip);
    let mut eth = EthernetFrame::new_checked(&mut *frame).map_err(|_| DropReason::Truncated)?;
    eth.set_dst(sender_mac);
    eth.set_src(gateway.mac.0);
    Ok(Verdict::Forward {
        ifindex: ctx.ifindex,
        len: ETH_LEN + PACKET_LEN,
    })
}
