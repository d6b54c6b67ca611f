//! Newtypes for the identities and quantities that cross the wire.
//!
//! Each is a distinct type so a chunk handle can never be passed where a server id is
//! expected; `Display` spells them the way the CLI and chunk file names do.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh random (v4) identity.
            pub fn random() -> Self {
                Self(Uuid::new_v4())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.hyphenated())
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// The name of a chunk, unique in the cluster for ever.
    ChunkHandle
);
uuid_id!(
    /// A chunkserver's identity, created on its first start and kept in its data dir.
    ServerId
);
uuid_id!(
    /// One in-progress put on the master: chunks are allocated under it and it is
    /// committed (made visible) or abandoned as a whole.
    UploadId
);

/// A chunk's version: bumped at every new mutation epoch so stale replicas are detectable.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default, Serialize, Deserialize,
)]
pub struct ChunkVersion(pub u64);

impl ChunkVersion {
    /// The version of a freshly allocated chunk.
    pub const FIRST: ChunkVersion = ChunkVersion(1);
}

impl fmt::Display for ChunkVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Echoed by every reply so a caller can match replies to requests.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default, Serialize, Deserialize,
)]
pub struct RequestId(pub u64);

impl RequestId {
    /// The id after this one (wrapping: ids only need to be unique among in-flight requests).
    pub fn next(self) -> RequestId {
        RequestId(self.0.wrapping_add(1))
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}
