//! The cluster's Raft types: what an entry carries and what applying it answers.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

openraft::declare_raft_types!(
    /// The cluster's Raft types: node ids are numbers, a node is known by its address.
    pub TypeConfig:
        D = Command,
        R = Applied,
);

/// What the leader replicates: the broker's records of one change, encoded as its log encodes
/// them (the Space applies them as replay does). Also how a snapshot's bytes travel to a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command(pub Vec<u8>);

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "command of {} bytes", self.0.len())
    }
}

/// Stored as base64 inside an entry's JSON: a byte array in JSON would take three to four
/// bytes per byte.
impl Serialize for Command {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Command, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map(Command)
            .map_err(serde::de::Error::custom)
    }
}

/// What applying a command answers the client that proposed it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The index of the entry the command was applied at.
    pub index: u64,
    /// Where its records are in this node's broker log (answered to the proposer on the same
    /// node only, never sent).
    #[serde(skip)]
    pub locations: Vec<storage::Location>,
}
