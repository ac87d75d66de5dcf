//! Genesis: the consortium's founding document. Its hash (the genesis block hash) identifies the
//! chain; its validator set is the root of trust for light verification.

use serde::{Deserialize, Serialize};

use crate::contract::{
    BlockInfo, CallContext, ContractError, ContractRegistry, StateRead, WriteSet,
};
use crate::crypto::{Digest, PublicKey, SigAlg, SigningKey, Suite};
use crate::merkle;
use crate::system::{self, GenesisMember, GenesisOrg, GovernanceParams, NewAdmin};
use crate::types::{BlockHeader, Validator, ValidatorSet};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenesisValidator {
    pub name: String,
    pub public_key: PublicKey,
    pub power: u64,
    /// Consensus network address (used by multi-validator deployments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Genesis {
    pub chain_id: String,
    pub suite: Suite,
    pub genesis_time_ms: u64,
    pub validators: Vec<GenesisValidator>,
    pub organisations: Vec<GenesisOrg>,
    #[serde(default)]
    pub governance: GovernanceParams,
}

#[derive(Debug, thiserror::Error)]
pub enum GenesisError {
    #[error("invalid genesis: {0}")]
    Invalid(String),
}

struct Empty;
impl StateRead for Empty {
    fn get(&self, _: &[u8]) -> Result<Option<Vec<u8>>, String> {
        Ok(None)
    }
}

impl Genesis {
    pub fn validator_set(&self) -> Result<ValidatorSet, GenesisError> {
        ValidatorSet::new(
            self.validators
                .iter()
                .map(|v| Validator {
                    public_key: v.public_key.clone(),
                    power: v.power,
                })
                .collect(),
        )
        .map_err(|e| GenesisError::Invalid(e.to_string()))
    }

    pub fn validate(&self) -> Result<(), GenesisError> {
        if self.chain_id.is_empty()
            || self.chain_id.len() > crate::types::MAX_CHAIN_ID_LEN
            || !self
                .chain_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err(GenesisError::Invalid(
                "chain_id must be 1-64 of [A-Za-z0-9._-]".into(),
            ));
        }
        let alg = self.suite.sig();
        let keys = self.validators.iter().map(|v| &v.public_key).chain(
            self.organisations.iter().flat_map(|o| {
                o.admins
                    .iter()
                    .map(|a| &a.public_key)
                    .chain(o.members.iter().map(|m| &m.public_key))
            }),
        );
        for k in keys {
            if k.alg() != alg {
                return Err(GenesisError::Invalid(format!(
                    "key {k} does not belong to suite {}",
                    self.suite
                )));
            }
        }
        if self.organisations.is_empty() {
            return Err(GenesisError::Invalid(
                "at least one organisation is required".into(),
            ));
        }
        self.validator_set()?;
        Ok(())
    }

    /// Genesis state writes and the height-0 header.
    pub fn build(
        &self,
        registry: &ContractRegistry,
    ) -> Result<(WriteSet, BlockHeader), GenesisError> {
        self.validate()?;
        let hash = self.suite.hash();
        let block = BlockInfo {
            chain_id: self.chain_id.clone(),
            height: 0,
            time_ms: self.genesis_time_ms,
            prev_hash: Digest::zero(hash),
        };
        let set = self.validator_set()?;
        let proposer = set.validators()[0].public_key.clone();
        let empty_writes = WriteSet::new();
        let mut ctx = CallContext::new(
            &block,
            Digest::zero(hash),
            proposer.clone(),
            system::NAME,
            &Empty,
            &empty_writes,
            registry,
        );
        let contracts = registry.latest();
        system::genesis(
            &mut ctx,
            &self.organisations,
            set.validators(),
            &contracts,
            &self.governance,
        )
        .map_err(|e| match e {
            ContractError::Rejected { code, message } => {
                GenesisError::Invalid(format!("{code}: {message}"))
            }
            ContractError::Fatal(m) => GenesisError::Invalid(m),
        })?;
        let (writes, _events) = ctx.into_parts();
        let header = BlockHeader {
            chain_id: self.chain_id.clone(),
            height: 0,
            time_ms: self.genesis_time_ms,
            tx_count: 0,
            prev_hash: Digest::zero(hash),
            tx_root: merkle::root::<Vec<u8>>(hash, &[]),
            receipt_root: merkle::root::<Vec<u8>>(hash, &[]),
            // filled in by the caller once the state tree is computed
            state_root: Digest::zero(hash),
            validator_set_hash: set.hash(hash),
            proposer,
        };
        Ok((writes, header))
    }
}

/// Keys of a demo consortium, derived from labels so that `trellis init --demo` is reproducible
/// in tests. Production keys come from `trellis keygen` (random) instead.
pub struct DemoKeys {
    pub validator: (String, SigningKey),
    pub admins: Vec<(String, String, SigningKey)>,
    /// The carrier's IoT gateway (member `swiftcold/gateway`, role `iot.gateway`), when the demo
    /// runs one.
    pub gateway: Option<SigningKey>,
}

/// A four-organisation demo consortium: a manufacturer, a logistics company, a retailer and the
/// market regulator; one validator run by the first.
pub fn demo(chain_id: &str, suite: Suite, time_ms: u64, keys: &DemoKeys) -> Genesis {
    let orgs = [
        ("acme", "Acme Dairy Co."),
        ("swiftcold", "SwiftCold Logistics"),
        ("freshmart", "FreshMart Retail"),
        ("samr", "Market Regulator"),
    ];
    Genesis {
        chain_id: chain_id.to_string(),
        suite,
        genesis_time_ms: time_ms,
        validators: vec![GenesisValidator {
            name: keys.validator.0.clone(),
            public_key: keys.validator.1.public_key(),
            power: 1,
            address: None,
        }],
        organisations: orgs
            .iter()
            .map(|(id, name)| {
                let admins: Vec<NewAdmin> = keys
                    .admins
                    .iter()
                    .filter(|(org, _, _)| org == id)
                    .map(|(_, n, k)| NewAdmin {
                        name: n.clone(),
                        public_key: k.public_key(),
                    })
                    .collect();
                // The cold-chain carrier runs the demo's IoT gateway.
                let members: Vec<GenesisMember> = match (&keys.gateway, *id) {
                    (Some(k), "swiftcold") => vec![GenesisMember {
                        name: "gateway".into(),
                        public_key: k.public_key(),
                        roles: vec!["iot.gateway".into()],
                    }],
                    _ => Vec::new(),
                };
                GenesisOrg {
                    id: id.to_string(),
                    name: name.to_string(),
                    admins,
                    members,
                }
            })
            .collect(),
        governance: GovernanceParams::default(),
    }
}

/// Fresh random keys for the demo consortium (validator + one admin per organisation).
pub fn demo_keys(alg: SigAlg) -> DemoKeys {
    DemoKeys {
        validator: ("acme-validator".into(), SigningKey::generate(alg)),
        admins: ["acme", "swiftcold", "freshmart", "samr"]
            .iter()
            .map(|o| {
                (
                    o.to_string(),
                    "admin".to_string(),
                    SigningKey::generate(alg),
                )
            })
            .collect(),
        gateway: Some(SigningKey::generate(alg)),
    }
}
