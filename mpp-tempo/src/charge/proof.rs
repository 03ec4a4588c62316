//! Zero-amount charges: an EIP-712 proof that the payer controls its `source` account
//! (charge.md §6c). Domain `{name: "MPP", version: "3", chainId}`, type
//! `Proof(address account,string challengeId,string realm)`.

use alloy::primitives::{Address, B256, Signature};
use alloy::sol_types::{Eip712Domain, SolStruct, eip712_domain};

alloy::sol! {
    /// The signed proof message (v3, as mppx and `mpp` sign it).
    #[derive(Debug)]
    struct Proof {
        address account;
        string challengeId;
        string realm;
    }
}

/// The EIP-712 domain of proofs on `chain_id`.
pub fn proof_domain(chain_id: u64) -> Eip712Domain {
    eip712_domain! {
        name: "MPP",
        version: "3",
        chain_id: chain_id,
    }
}

/// The digest a payer signs to prove control of `account` for one challenge.
pub fn proof_digest(chain_id: u64, account: Address, challenge_id: &str, realm: &str) -> B256 {
    Proof {
        account,
        challengeId: challenge_id.to_owned(),
        realm: realm.to_owned(),
    }
    .eip712_signing_hash(&proof_domain(chain_id))
}

/// The signer of a 65-byte `r || s || v` signature over `digest`, if it parses and recovers.
pub fn recover_proof_signer(digest: &B256, signature: &[u8]) -> Option<Address> {
    let signature = Signature::from_raw(signature).ok()?;
    signature.recover_address_from_prehash(digest).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::keccak256;
    use alloy::sol_types::SolStruct;

    #[test]
    fn typehash_matches_the_spec() {
        let proof = Proof {
            account: Address::ZERO,
            challengeId: String::new(),
            realm: String::new(),
        };
        assert_eq!(
            proof.eip712_type_hash(),
            keccak256("Proof(address account,string challengeId,string realm)")
        );
        assert_eq!(
            proof.eip712_type_hash().to_string(),
            "0x2b28baf137d62921565067a537df5458031448411120925bd6f753e0dcd50683"
        );
    }
}
