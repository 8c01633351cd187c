//! Raft messages between controller voters, as rkyv archives rather than protobuf: every
//! frame from the internal listener is read with rkyv's checked access and the limits
//! below, like every other frame this broker reads (no protobuf parsing of outside input).

use raft::eraftpb::{Message, MessageType};
use rkyv::{Archive, Deserialize, Serialize};

use super::storage::{
    raft_entry, raft_snapshot, stored_entry, stored_snapshot, StoredEntry, StoredSnapshot,
};

/// The most entries one Raft message may carry.
pub const RAFT_ENTRIES_PER_MESSAGE_MAX: usize = 100_000;

/// A `raft::eraftpb::Message`, field by field.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WireMessage {
    pub msg_type: u8,
    pub to: u64,
    pub from: u64,
    pub term: u64,
    pub log_term: u64,
    pub index: u64,
    pub entries: Vec<StoredEntry>,
    pub commit: u64,
    pub commit_term: u64,
    pub snapshot: Option<StoredSnapshot>,
    pub request_snapshot: u64,
    pub reject: bool,
    pub reject_hint: u64,
    pub context: Vec<u8>,
    pub priority: i64,
}

/// Why a received Raft message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("unknown raft message type {0}")]
    UnknownType(u8),
    #[error("unknown raft entry kind {0}")]
    UnknownEntryKind(u8),
    #[error("{0} entries in one message (most {RAFT_ENTRIES_PER_MESSAGE_MAX})")]
    TooManyEntries(usize),
    #[error("a message from {from} to {to} is not for this node ({node})")]
    Misaddressed { from: u64, to: u64, node: u64 },
}

fn message_type(value: u8) -> Option<MessageType> {
    use MessageType::*;
    Some(match value {
        0 => MsgHup,
        1 => MsgBeat,
        2 => MsgPropose,
        3 => MsgAppend,
        4 => MsgAppendResponse,
        5 => MsgRequestVote,
        6 => MsgRequestVoteResponse,
        7 => MsgSnapshot,
        8 => MsgHeartbeat,
        9 => MsgHeartbeatResponse,
        10 => MsgUnreachable,
        11 => MsgSnapStatus,
        12 => MsgCheckQuorum,
        13 => MsgTransferLeader,
        14 => MsgTimeoutNow,
        15 => MsgReadIndex,
        16 => MsgReadIndexResp,
        17 => MsgRequestPreVote,
        18 => MsgRequestPreVoteResponse,
        _ => return None,
    })
}

impl WireMessage {
    pub fn from_raft(message: &Message) -> WireMessage {
        WireMessage {
            msg_type: message.get_msg_type() as u8,
            to: message.to,
            from: message.from,
            term: message.term,
            log_term: message.log_term,
            index: message.index,
            entries: message.entries.iter().map(stored_entry).collect(),
            commit: message.commit,
            commit_term: message.commit_term,
            snapshot: message
                .snapshot
                .as_ref()
                .filter(|s| s.get_metadata().index > 0 || !s.data.is_empty())
                .map(stored_snapshot),
            request_snapshot: message.request_snapshot,
            reject: message.reject,
            reject_hint: message.reject_hint,
            context: message.context.to_vec(),
            priority: message.priority,
        }
    }

    /// The raft message, for node `node`; refuses what no honest peer sends. Only the
    /// messages peers exchange are accepted: local-only types (hup, beat, unreachable,
    /// snapshot status, check quorum) are refused too.
    pub fn into_raft(self, node: u64) -> Result<Message, WireError> {
        let msg_type = message_type(self.msg_type).ok_or(WireError::UnknownType(self.msg_type))?;
        if raft::raw_node::is_local_msg(msg_type) {
            return Err(WireError::UnknownType(self.msg_type));
        }
        if self.to != node || self.from == node || self.from == 0 {
            return Err(WireError::Misaddressed {
                from: self.from,
                to: self.to,
                node,
            });
        }
        if self.entries.len() > RAFT_ENTRIES_PER_MESSAGE_MAX {
            return Err(WireError::TooManyEntries(self.entries.len()));
        }
        let mut message = Message::default();
        message.set_msg_type(msg_type);
        message.to = self.to;
        message.from = self.from;
        message.term = self.term;
        message.log_term = self.log_term;
        message.index = self.index;
        message.entries = self
            .entries
            .iter()
            .map(|e| raft_entry(e).ok_or(WireError::UnknownEntryKind(e.kind)))
            .collect::<Result<Vec<_>, _>>()?
            .into();
        message.commit = self.commit;
        message.commit_term = self.commit_term;
        if let Some(snapshot) = &self.snapshot {
            message.set_snapshot(raft_snapshot(snapshot));
        }
        message.request_snapshot = self.request_snapshot;
        message.reject = self.reject;
        message.reject_hint = self.reject_hint;
        message.context = self.context.into();
        message.priority = self.priority;
        Ok(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_round_trips_and_bad_ones_are_refused() {
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgAppend);
        message.to = 2;
        message.from = 1;
        message.term = 7;
        message.index = 10;
        let mut entry = raft::eraftpb::Entry::default();
        entry.index = 11;
        entry.term = 7;
        entry.data = b"event".to_vec().into();
        message.entries = vec![entry].into();
        let wire = WireMessage::from_raft(&message);
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&wire).unwrap();
        let back = rkyv::from_bytes::<WireMessage, rkyv::rancor::Error>(&bytes).unwrap();
        assert_eq!(back.clone().into_raft(2).unwrap(), message);
        assert!(matches!(
            back.clone().into_raft(3),
            Err(WireError::Misaddressed { .. })
        ));
        let mut local = back.clone();
        local.msg_type = MessageType::MsgHup as u8;
        assert!(local.into_raft(2).is_err());
        let mut unknown = back;
        unknown.msg_type = 77;
        assert_eq!(unknown.into_raft(2), Err(WireError::UnknownType(77)));
    }
}
