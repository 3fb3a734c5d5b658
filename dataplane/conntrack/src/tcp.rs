//! The TCP state machine, after nf_conntrack_proto_tcp's `tcp_conntracks`
//! table, as pure functions of (state, direction, flags).
//!
//! Simplifications against the kernel, all because the engine does no
//! sequence-number window tracking:
//! * SYN_SENT2 (simultaneous open) is folded into SYN_SENT: a SYN from the
//!   reply side leaves SYN_SENT as it is, and the reply's SYN-ACK moves it to
//!   SYN_RECV as in the ordinary handshake.
//! * The kernel's "invalid" and "ignore" outcomes both leave the state as it
//!   is (the packet is still forwarded; the pipeline does not drop on them).
//! * A retransmitted FIN in FIN_WAIT moves to LAST_ACK like a FIN from the
//!   other side (the kernel tells them apart by sequence numbers); the flow
//!   then lives 30 s instead of 120 s after its last packet, and any later
//!   packet refreshes it.
//! * SYN in the original direction on TIME_WAIT or CLOSE gives SYN_SENT as in
//!   the kernel; [`crate::Conntrack::observe`] turns that into "remove the old
//!   flow and let the caller create a new one" so a reopened port can be
//!   balanced afresh.

use crate::Direction;

/// TCP header flag bits as they appear in the flags byte.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;
}

/// TCP connection states, as the kernel's nf_conntrack names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TcpState {
    SynSent,
    SynRecv,
    Established,
    FinWait,
    CloseWait,
    LastAck,
    TimeWait,
    Close,
}

/// The kernel's classification of a segment (`get_conntrack_index`): RST
/// wins, then SYN (with or without ACK), then FIN, then ACK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Segment {
    Syn,
    SynAck,
    Fin,
    Ack,
    Rst,
    None,
}

fn classify(flags: u8) -> Segment {
    if flags & tcp_flags::RST != 0 {
        Segment::Rst
    } else if flags & tcp_flags::SYN != 0 {
        if flags & tcp_flags::ACK != 0 {
            Segment::SynAck
        } else {
            Segment::Syn
        }
    } else if flags & tcp_flags::FIN != 0 {
        Segment::Fin
    } else if flags & tcp_flags::ACK != 0 {
        Segment::Ack
    } else {
        Segment::None
    }
}

impl TcpState {
    /// The state of a new flow whose first packet carries `flags`, or `None`
    /// when such a packet cannot start a flow (the caller does not track it).
    /// A SYN opens SYN_SENT; a plain ACK picks up a connection already
    /// established, as the kernel does with `nf_conntrack_tcp_loose` (its
    /// default), so flows survive an engine restart.
    pub fn for_first_packet(flags: u8) -> Option<TcpState> {
        match classify(flags) {
            Segment::Syn => Some(TcpState::SynSent),
            Segment::Ack => Some(TcpState::Established),
            Segment::SynAck | Segment::Fin | Segment::Rst | Segment::None => None,
        }
    }
}

/// The state after a segment with `flags` travelling in `direction`.
pub fn next_state(state: TcpState, direction: Direction, flags: u8) -> TcpState {
    use TcpState::*;
    let segment = classify(flags);
    match (segment, direction) {
        (Segment::Rst, _) => Close,
        (Segment::None, _) => state,
        (Segment::Fin, _) => match state {
            SynRecv | Established => FinWait,
            FinWait | CloseWait | LastAck => LastAck,
            SynSent | TimeWait | Close => state,
        },
        (Segment::Ack, Direction::Original) => match state {
            SynRecv | Established => Established,
            FinWait | CloseWait => CloseWait,
            LastAck | TimeWait => TimeWait,
            SynSent | Close => state,
        },
        (Segment::Ack, Direction::Reply) => match state {
            Established => Established,
            FinWait | CloseWait => CloseWait,
            LastAck | TimeWait => TimeWait,
            // The reply side acking in SYN_RECV is its SYN-ACK retransmitted
            // without SYN: still waiting for the original's ACK.
            SynSent | SynRecv | Close => state,
        },
        (Segment::Syn, Direction::Original) => match state {
            SynSent | TimeWait | Close => SynSent,
            SynRecv | Established | FinWait | CloseWait | LastAck => state,
        },
        (Segment::Syn, Direction::Reply) => state,
        (Segment::SynAck, Direction::Reply) => match state {
            SynSent => SynRecv,
            _ => state,
        },
        (Segment::SynAck, Direction::Original) => state,
    }
}

#[cfg(test)]
mod tests {
    use super::tcp_flags::{ACK, FIN, RST, SYN};
    use super::*;
    use Direction::{Original as O, Reply as R};
    use TcpState::*;

    const PSH: u8 = 0x08;

    /// Every transition that changes the state, and the ones that must not.
    #[test]
    fn transitions_follow_the_kernel_table() {
        let table: &[(TcpState, Direction, u8, TcpState)] = &[
            // handshake
            (SynSent, O, SYN, SynSent),
            (SynSent, R, SYN | ACK, SynRecv),
            (SynRecv, O, ACK, Established),
            (SynRecv, O, ACK | PSH, Established),
            (SynSent, O, ACK, SynSent),
            (SynSent, R, ACK, SynSent),
            (SynSent, R, SYN, SynSent),
            (SynRecv, R, ACK, SynRecv),
            (SynRecv, R, SYN | ACK, SynRecv),
            // data
            (Established, O, ACK, Established),
            (Established, R, ACK | PSH, Established),
            (Established, O, SYN, Established),
            (Established, R, SYN | ACK, Established),
            (Established, O, 0, Established),
            // close initiated by either side
            (Established, O, FIN | ACK, FinWait),
            (Established, R, FIN | ACK, FinWait),
            (SynRecv, O, FIN, FinWait),
            (FinWait, R, ACK, CloseWait),
            (FinWait, O, ACK, CloseWait),
            (CloseWait, R, FIN | ACK, LastAck),
            (CloseWait, O, FIN | ACK, LastAck),
            (FinWait, R, FIN | ACK, LastAck),
            (CloseWait, O, ACK, CloseWait),
            (LastAck, O, ACK, TimeWait),
            (LastAck, R, ACK, TimeWait),
            (LastAck, R, FIN | ACK, LastAck),
            (TimeWait, O, ACK, TimeWait),
            (TimeWait, R, FIN | ACK, TimeWait),
            (SynSent, O, FIN, SynSent),
            // reset from anywhere
            (SynSent, R, RST, Close),
            (SynRecv, O, RST | ACK, Close),
            (Established, R, RST, Close),
            (Established, O, RST | ACK, Close),
            (FinWait, O, RST, Close),
            (TimeWait, R, RST, Close),
            (Close, O, ACK, Close),
            (Close, R, FIN, Close),
            // reopen: SYN from the original side on a finished flow
            (TimeWait, O, SYN, SynSent),
            (Close, O, SYN, SynSent),
            (TimeWait, R, SYN, TimeWait),
        ];
        for &(from, direction, flags, to) in table {
            assert_eq!(
                next_state(from, direction, flags),
                to,
                "{from:?} + {direction:?} flags {flags:#04x}"
            );
        }
    }

    #[test]
    fn a_full_connection_walks_through_every_closing_state() {
        let packets = [
            (O, SYN, SynSent),
            (R, SYN | ACK, SynRecv),
            (O, ACK, Established),
            (O, FIN | ACK, FinWait),
            (R, ACK, CloseWait),
            (R, FIN | ACK, LastAck),
            (O, ACK, TimeWait),
        ];
        let mut state = TcpState::for_first_packet(SYN).unwrap();
        for (direction, flags, expected) in packets {
            state = next_state(state, direction, flags);
            assert_eq!(state, expected);
        }
    }

    #[test]
    fn first_packet_opens_on_syn_or_picks_up_an_ack() {
        assert_eq!(TcpState::for_first_packet(SYN), Some(SynSent));
        assert_eq!(TcpState::for_first_packet(ACK), Some(Established));
        assert_eq!(TcpState::for_first_packet(ACK | PSH), Some(Established));
        assert_eq!(TcpState::for_first_packet(SYN | ACK), None);
        assert_eq!(TcpState::for_first_packet(RST), None);
        assert_eq!(TcpState::for_first_packet(FIN | ACK), None);
        assert_eq!(TcpState::for_first_packet(0), None);
    }
}
