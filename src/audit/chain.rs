//! The hash chain over stored AuditEvents. Link `seq` (1, 2, 3 … without gaps) holds
//! `body_hash = sha256(stored body)` and `hash = sha256(prev_hash ‖ body_hash ‖ seq)`, over the
//! hashes as stored (64 lowercase hex characters each) and `seq` as 8 bytes big-endian; the
//! `prev_hash` of link 1 is [`GENESIS`]. An edited body breaks its `body_hash`; a removed,
//! inserted or reordered link breaks the sequence or the `prev_hash` of the next one.
//!
//! What the chain alone cannot show: the removal of the newest records together with their
//! links (the head would have to be kept somewhere else too).

use sha2::{Digest, Sha256};

use crate::store::{SqlStore, StoreResult};

/// The `prev_hash` of the first link.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// SHA-256 of the exact stored body, lowercase hex.
pub fn body_hash(body: &str) -> String {
    hex(&Sha256::digest(body.as_bytes()))
}

/// The hash of link `seq`.
pub fn link_hash(prev_hash: &str, body_hash: &str, seq: i64) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(body_hash.as_bytes());
    h.update(seq.to_be_bytes());
    hex(&h.finalize())
}

/// The result of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Links checked and found good (all of them when `broken` is `None`).
    pub records: u64,
    /// The first bad link.
    pub broken: Option<Break>,
}

/// Where and how the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    pub seq: i64,
    pub problem: String,
}

impl std::fmt::Display for Break {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "seq {}: {}", self.seq, self.problem)
    }
}

const PAGE: i64 = 1000;

/// Walks the whole chain from link 1, recomputing every hash against the stored AuditEvents,
/// and stops at the first bad link. Then checks that no stored AuditEvent is outside the chain.
pub async fn verify(store: &SqlStore) -> StoreResult<Verification> {
    let mut expected: i64 = 1;
    let mut prev = GENESIS.to_string();
    let mut records = 0u64;
    let broken = |seq: i64, problem: String, records: u64| Verification {
        records,
        broken: Some(Break { seq, problem }),
    };
    loop {
        let page = store.audit_chain_page(expected - 1, PAGE).await?;
        if page.is_empty() {
            break;
        }
        for row in page {
            let link = &row.link;
            let id = &link.resource_id;
            if link.seq != expected {
                let problem = format!(
                    "record {expected} is missing (the chain goes on at seq {})",
                    link.seq
                );
                return Ok(broken(expected, problem, records));
            }
            if link.prev_hash != prev {
                let problem = "prev_hash differs from the hash of the record before it \
                               (a record was removed, inserted or reordered)"
                    .to_string();
                return Ok(broken(link.seq, problem, records));
            }
            let Some(body) = &row.body else {
                let problem = format!("AuditEvent/{id} was removed");
                return Ok(broken(link.seq, problem, records));
            };
            if row.deleted {
                let problem = format!("AuditEvent/{id} was deleted");
                return Ok(broken(link.seq, problem, records));
            }
            if row.version != 1 {
                let problem = format!("AuditEvent/{id} was changed (version {})", row.version);
                return Ok(broken(link.seq, problem, records));
            }
            if body_hash(body) != link.body_hash {
                let problem = format!("the stored body of AuditEvent/{id} was edited");
                return Ok(broken(link.seq, problem, records));
            }
            if link_hash(&link.prev_hash, &link.body_hash, link.seq) != link.hash {
                let problem = "the link's hash does not match its contents".to_string();
                return Ok(broken(link.seq, problem, records));
            }
            prev = link.hash.clone();
            records += 1;
            expected += 1;
        }
    }
    if let Some(id) = store.audit_unchained(1).await?.into_iter().next() {
        let problem = format!(
            "AuditEvent/{id} is not in the chain (its link was removed, or it was added around \
             the audit writer)"
        );
        return Ok(broken(expected, problem, records));
    }
    Ok(Verification {
        records,
        broken: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_hashes_chain_and_depend_on_every_input() {
        assert_eq!(
            body_hash(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let b1 = body_hash(r#"{"resourceType":"AuditEvent","id":"1"}"#);
        let b2 = body_hash(r#"{"resourceType":"AuditEvent","id":"2"}"#);
        let h1 = link_hash(GENESIS, &b1, 1);
        let h2 = link_hash(&h1, &b2, 2);
        assert_eq!(h1.len(), 64);
        assert!(h1
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        // Deterministic, and by definition sha256(prev ‖ body ‖ seq as 8 bytes big-endian).
        assert_eq!(h2, link_hash(&h1, &b2, 2));
        let mut manual = Vec::new();
        manual.extend_from_slice(h1.as_bytes());
        manual.extend_from_slice(b2.as_bytes());
        manual.extend_from_slice(&2i64.to_be_bytes());
        assert_eq!(h2, hex(&Sha256::digest(&manual)));
        // Another body, position or predecessor gives another hash.
        assert_ne!(h2, link_hash(&h1, &b1, 2));
        assert_ne!(h2, link_hash(&h1, &b2, 3));
        assert_ne!(h2, link_hash(GENESIS, &b2, 2));
        assert_ne!(h1, h2);
    }
}
