//! [`StoreReceipt`]: what a successful fenced store hands back, and the only thing that
//! confirms a vote's store in the core (`StoreTicket::confirmed`).
//!
//! A receipt names the lease it was written under (identity and the lock's revision, the
//! fencing token), the revision of the write, and the SHA-256 digest of the exact bytes
//! written. Its constructor is private to this crate and called only by the three
//! storages' `store`, after the write succeeded; so a driver cannot confirm a store it did
//! not make, and a receipt for one store cannot confirm another tower or another fence
//! ([`StoreReceipt::covers`]).
//!
//! ```compile_fail,E0451
//! // Outside this crate a receipt cannot be made: the fields and `new` are private.
//! let r = huione_tower_storage::StoreReceipt {
//!     identity: huione_keys::Pubkey::from_seed_byte(1),
//!     lease_revision: 7,
//!     revision: 8,
//!     digest: [0; 32],
//! };
//! ```
//!
//! ```compile_fail,E0624
//! // Nor with its constructor, which is private too.
//! # fn f(lease: &huione_tower_storage::Lease) {
//! let r = huione_tower_storage::StoreReceipt::new(lease, b"tower bytes", 8);
//! # }
//! ```

use huione_keys::Pubkey;
use huione_tower::SavedTower;
use sha2::{Digest, Sha256};

use crate::{Lease, Revision};

/// Proof that storage durably wrote a tower under a lease. Made only by a successful
/// [`crate::TowerStorage::store`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreReceipt {
    identity: Pubkey,
    lease_revision: Revision,
    revision: Revision,
    digest: [u8; 32],
}

/// Why a receipt does not confirm a store: it was made for another fence or other bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the store receipt does not match the store it should confirm: {0} (a driver bug: the \
     vote stays withheld)"
)]
pub struct ReceiptMismatch(pub String);

impl StoreReceipt {
    /// After a successful write of `bytes` under `lease` at `revision`.
    pub(crate) fn new(lease: &Lease, bytes: &[u8], revision: Revision) -> Self {
        StoreReceipt {
            identity: lease.identity(),
            lease_revision: lease.revision(),
            revision,
            digest: digest(bytes),
        }
    }

    /// The identity whose tower was written.
    pub fn identity(&self) -> Pubkey {
        self.identity
    }

    /// The fencing token the write was guarded by (the lease's revision).
    pub fn lease_revision(&self) -> Revision {
        self.lease_revision
    }

    /// The revision of the write.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// SHA-256 of the bytes written.
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// Whether this receipt is for `tower` (its exact bytes) written under the lock of
    /// `identity` acquired at `lease_revision`.
    pub fn covers(
        &self,
        identity: &Pubkey,
        lease_revision: Revision,
        tower: &SavedTower,
    ) -> Result<(), ReceiptMismatch> {
        if self.identity != *identity || self.lease_revision != lease_revision {
            return Err(ReceiptMismatch(format!(
                "it is for {} under the lock acquired at revision {}, the store was for {} \
                 at revision {}",
                self.identity, self.lease_revision, identity, lease_revision
            )));
        }
        if self.digest != digest(&tower.to_bytes()) {
            return Err(ReceiptMismatch(format!(
                "it is for other tower bytes than the ones to store for {identity} \
                 (write revision {})",
                self.revision
            )));
        }
        Ok(())
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}
