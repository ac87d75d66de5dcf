//! The `system` contract: consortium organisations, member accounts and their keys and roles,
//! per-key nonces, the validator set, active contract versions and governance.
//!
//! State layout (all values JSON, keys UTF-8 text so explorers can show them):
//! `org/{org}`, `member/{org}/{name}`, `key/{public key text}`, `nonce/{public key text}`,
//! `validators`, `validators_pending`, `contract_version/{name}`, `governance`,
//! `proposal/{id}`, `proposal_seq`.

use serde::{Deserialize, Serialize};

use crate::contract::{CallContext, Contract, ContractError, parse_args};
use crate::crypto::PublicKey;
use crate::types::Validator;

pub const NAME: &str = "system";
/// Role that lets a member administer its organisation and vote in governance.
pub const ROLE_ORG_ADMIN: &str = "org_admin";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Active,
    Rotated,
    Revoked,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Organisation {
    pub id: String,
    pub name: String,
    pub status: Status,
    pub admitted_height: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Member {
    pub org: String,
    pub name: String,
    pub roles: Vec<String>,
    pub keys: Vec<PublicKey>,
    pub status: Status,
}

impl Member {
    pub fn id(&self) -> String {
        format!("{}/{}", self.org, self.name)
    }
    pub fn has_role(&self, role: &str) -> bool {
        self.status == Status::Active && self.roles.iter().any(|r| r == role)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRecord {
    pub member: String,
    pub status: Status,
    pub since_height: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GovernanceParams {
    /// A proposal passes when approving organisations * denominator >= numerator * organisations.
    pub quorum_numerator: u32,
    pub quorum_denominator: u32,
    pub voting_period_ms: u64,
}

impl Default for GovernanceParams {
    fn default() -> Self {
        Self {
            quorum_numerator: 2,
            quorum_denominator: 3,
            voting_period_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingValidators {
    pub effective_height: u64,
    pub validators: Vec<Validator>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewAdmin {
    pub name: String,
    pub public_key: PublicKey,
}

/// What a governance proposal does once approved.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ProposalAction {
    AdmitOrganisation {
        id: String,
        name: String,
        admin: NewAdmin,
    },
    SetValidators {
        validators: Vec<Validator>,
    },
    SetContractVersion {
        contract: String,
        version: u32,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ProposalStatus {
    Open,
    Approved,
    Rejected,
    Expired,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Proposal {
    pub id: u64,
    pub action: ProposalAction,
    pub description: String,
    pub proposer: String,
    pub created_height: u64,
    pub deadline_ms: u64,
    pub approvals: Vec<String>,
    pub rejections: Vec<String>,
    pub status: ProposalStatus,
}

/// Blocks after approval before a validator-set change takes effect, so every node learns the
/// next set before it has to use it.
pub const VALIDATOR_CHANGE_DELAY: u64 = 2;

/// Identifiers of organisations and members: lower-case letters, digits, `-`, `_`.
pub fn valid_ident(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && s.as_bytes()[0].is_ascii_alphanumeric()
}

pub fn valid_role(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
}

// ---- read helpers usable from any contract (the permission-check API) ----

pub fn key_record(
    ctx: &CallContext<'_>,
    key: &PublicKey,
) -> Result<Option<KeyRecord>, ContractError> {
    ctx.get_json_in(NAME, &format!("key/{key}"))
}

pub fn member(ctx: &CallContext<'_>, member_id: &str) -> Result<Option<Member>, ContractError> {
    ctx.get_json_in(NAME, &format!("member/{member_id}"))
}

/// The active member behind the transaction's sender key, or `not_permitted`.
pub fn sender_member(ctx: &CallContext<'_>) -> Result<Member, ContractError> {
    if let Some(m) = ctx.cached_sender_member() {
        return Ok(m.clone());
    }
    let rec = key_record(ctx, &ctx.sender)?
        .ok_or_else(|| ContractError::not_permitted("the sender key belongs to no member"))?;
    if rec.status != Status::Active {
        return Err(ContractError::new(
            "key_revoked",
            format!("the sender key is {:?}", rec.status).to_lowercase(),
        ));
    }
    let m = member(ctx, &rec.member)?
        .ok_or_else(|| ContractError::not_permitted("member record missing"))?;
    if m.status != Status::Active {
        return Err(ContractError::not_permitted("the member is not active"));
    }
    ctx.cache_sender_member(&m);
    Ok(m)
}

/// Permission check for contracts: the sender must be an active member holding `role`.
pub fn require_role(ctx: &CallContext<'_>, role: &str) -> Result<Member, ContractError> {
    let m = sender_member(ctx)?;
    if m.has_role(role) {
        Ok(m)
    } else {
        Err(ContractError::not_permitted(format!(
            "member {} lacks role `{role}`",
            m.id()
        )))
    }
}

fn active_orgs(ctx: &CallContext<'_>) -> Result<Vec<String>, ContractError> {
    Ok(ctx.get_json::<Vec<String>>("orgs")?.unwrap_or_default())
}

fn put_member(ctx: &mut CallContext<'_>, m: &Member) -> Result<(), ContractError> {
    ctx.set_json(&format!("member/{}", m.id()), m)
}

fn put_key(
    ctx: &mut CallContext<'_>,
    key: &PublicKey,
    rec: &KeyRecord,
) -> Result<(), ContractError> {
    ctx.set_json(&format!("key/{key}"), rec)
}

fn require_suite_key(ctx: &CallContext<'_>, key: &PublicKey) -> Result<(), ContractError> {
    if key.alg() != ctx.sender.alg() {
        return Err(ContractError::invalid_args(format!(
            "keys on this chain use {}",
            ctx.sender.alg().name()
        )));
    }
    Ok(())
}

fn add_member(
    ctx: &mut CallContext<'_>,
    org: &str,
    name: &str,
    key: &PublicKey,
    roles: Vec<String>,
) -> Result<Member, ContractError> {
    if !valid_ident(name, 64) {
        return Err(ContractError::invalid_args(
            "member name must be 1-64 of [a-z0-9_-]",
        ));
    }
    if let Some(r) = roles.iter().find(|r| !valid_role(r)) {
        return Err(ContractError::invalid_args(format!(
            "invalid role `{r}` (use [a-z0-9_.])"
        )));
    }
    require_suite_key(ctx, key)?;
    let id = format!("{org}/{name}");
    if member(ctx, &id)?.is_some() {
        return Err(ContractError::new(
            "already_exists",
            format!("member {id} exists"),
        ));
    }
    if key_record(ctx, key)?.is_some() {
        return Err(ContractError::new(
            "key_in_use",
            "this public key is already registered",
        ));
    }
    let mut roles = roles;
    roles.sort();
    roles.dedup();
    let m = Member {
        org: org.to_string(),
        name: name.to_string(),
        roles,
        keys: vec![key.clone()],
        status: Status::Active,
    };
    put_member(ctx, &m)?;
    let rec = KeyRecord {
        member: id,
        status: Status::Active,
        since_height: ctx.block.height,
    };
    put_key(ctx, key, &rec)?;
    Ok(m)
}

fn admit_org(
    ctx: &mut CallContext<'_>,
    id: &str,
    name: &str,
    admin: &NewAdmin,
) -> Result<(), ContractError> {
    check_admission(ctx, id, name, admin)?;
    let org = Organisation {
        id: id.to_string(),
        name: name.to_string(),
        status: Status::Active,
        admitted_height: ctx.block.height,
    };
    ctx.set_json(&format!("org/{id}"), &org)?;
    let mut orgs = active_orgs(ctx)?;
    orgs.push(id.to_string());
    orgs.sort();
    ctx.set_json("orgs", &orgs)?;
    add_member(
        ctx,
        id,
        &admin.name,
        &admin.public_key,
        vec![ROLE_ORG_ADMIN.to_string()],
    )?;
    ctx.emit("organisation_admitted", &org)
}

/// Sender must be org admin of `org` (or the chain has no such org).
fn require_admin_of(ctx: &CallContext<'_>, org: &str) -> Result<Member, ContractError> {
    let m = require_role(ctx, ROLE_ORG_ADMIN)?;
    if m.org != org {
        return Err(ContractError::not_permitted(format!(
            "{} administers {}, not {org}",
            m.id(),
            m.org
        )));
    }
    Ok(m)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterMember {
    name: String,
    public_key: PublicKey,
    #[serde(default)]
    roles: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetRoles {
    member: String,
    roles: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateKey {
    old_public_key: PublicKey,
    new_public_key: PublicKey,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeKey {
    public_key: PublicKey,
    #[serde(default)]
    reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Propose {
    action: ProposalAction,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Vote {
    proposal_id: u64,
    approve: bool,
}

pub struct SystemContract;

impl Contract for SystemContract {
    fn name(&self) -> &'static str {
        NAME
    }
    fn methods(&self) -> &'static [&'static str] {
        &[
            "register_member",
            "set_roles",
            "rotate_key",
            "revoke_key",
            "propose",
            "vote",
        ]
    }
    fn call(
        &self,
        ctx: &mut CallContext<'_>,
        method: &str,
        args: &[u8],
    ) -> Result<(), ContractError> {
        match method {
            "register_member" => {
                let a: RegisterMember = parse_args(args)?;
                let admin = require_role(ctx, ROLE_ORG_ADMIN)?;
                let m = add_member(ctx, &admin.org, &a.name, &a.public_key, a.roles)?;
                ctx.emit(
                    "member_registered",
                    &serde_json::json!({"member": m.id(), "roles": m.roles, "public_key": a.public_key}),
                )
            }
            "set_roles" => {
                let a: SetRoles = parse_args(args)?;
                let mut m = member(ctx, &a.member)?
                    .ok_or_else(|| ContractError::not_found(format!("no member {}", a.member)))?;
                require_admin_of(ctx, &m.org)?;
                if let Some(r) = a.roles.iter().find(|r| !valid_role(r)) {
                    return Err(ContractError::invalid_args(format!("invalid role `{r}`")));
                }
                let mut roles = a.roles;
                roles.sort();
                roles.dedup();
                m.roles = roles;
                put_member(ctx, &m)?;
                ctx.emit(
                    "roles_changed",
                    &serde_json::json!({"member": m.id(), "roles": m.roles}),
                )
            }
            "rotate_key" => {
                let a: RotateKey = parse_args(args)?;
                let rec = key_record(ctx, &a.old_public_key)?
                    .ok_or_else(|| ContractError::not_found("the old key is not registered"))?;
                if rec.status != Status::Active {
                    return Err(ContractError::new(
                        "key_revoked",
                        "the old key is not active",
                    ));
                }
                let mut m = member(ctx, &rec.member)?
                    .ok_or_else(|| ContractError::not_found("member record missing"))?;
                if ctx.sender != a.old_public_key {
                    require_admin_of(ctx, &m.org)?;
                } else {
                    sender_member(ctx)?;
                }
                require_suite_key(ctx, &a.new_public_key)?;
                if key_record(ctx, &a.new_public_key)?.is_some() {
                    return Err(ContractError::new(
                        "key_in_use",
                        "the new key is already registered",
                    ));
                }
                let h = ctx.block.height;
                put_key(
                    ctx,
                    &a.old_public_key,
                    &KeyRecord {
                        member: m.id(),
                        status: Status::Rotated,
                        since_height: h,
                    },
                )?;
                put_key(
                    ctx,
                    &a.new_public_key,
                    &KeyRecord {
                        member: m.id(),
                        status: Status::Active,
                        since_height: h,
                    },
                )?;
                m.keys.push(a.new_public_key.clone());
                put_member(ctx, &m)?;
                ctx.emit(
                    "key_rotated",
                    &serde_json::json!({"member": m.id(), "old": a.old_public_key, "new": a.new_public_key}),
                )
            }
            "revoke_key" => {
                let a: RevokeKey = parse_args(args)?;
                let rec = key_record(ctx, &a.public_key)?
                    .ok_or_else(|| ContractError::not_found("the key is not registered"))?;
                let m = member(ctx, &rec.member)?
                    .ok_or_else(|| ContractError::not_found("member record missing"))?;
                if ctx.sender != a.public_key {
                    require_admin_of(ctx, &m.org)?;
                } else {
                    sender_member(ctx)?;
                }
                if rec.status == Status::Revoked {
                    return Err(ContractError::new(
                        "key_revoked",
                        "the key is already revoked",
                    ));
                }
                put_key(
                    ctx,
                    &a.public_key,
                    &KeyRecord {
                        member: rec.member.clone(),
                        status: Status::Revoked,
                        since_height: ctx.block.height,
                    },
                )?;
                ctx.emit(
                    "key_revoked",
                    &serde_json::json!({"member": rec.member, "public_key": a.public_key, "reason": a.reason}),
                )
            }
            "propose" => {
                let a: Propose = parse_args(args)?;
                let admin = require_role(ctx, ROLE_ORG_ADMIN)?;
                validate_action(ctx, &a.action)?;
                if a.description.len() > 4000 {
                    return Err(ContractError::invalid_args(
                        "description is limited to 4000 bytes",
                    ));
                }
                let params: GovernanceParams = ctx.get_json("governance")?.unwrap_or_default();
                let id = ctx.get_json::<u64>("proposal_seq")?.unwrap_or(0) + 1;
                ctx.set_json("proposal_seq", &id)?;
                let mut p = Proposal {
                    id,
                    action: a.action,
                    description: a.description,
                    proposer: admin.id(),
                    created_height: ctx.block.height,
                    deadline_ms: ctx.block.time_ms.saturating_add(params.voting_period_ms),
                    approvals: vec![admin.org.clone()],
                    rejections: vec![],
                    status: ProposalStatus::Open,
                };
                ctx.emit(
                    "proposal_created",
                    &serde_json::json!({"id": id, "proposer": p.proposer, "action": p.action}),
                )?;
                tally(ctx, &mut p, &params)?;
                ctx.set_json(&format!("proposal/{id}"), &p)
            }
            "vote" => {
                let a: Vote = parse_args(args)?;
                let admin = require_role(ctx, ROLE_ORG_ADMIN)?;
                let key = format!("proposal/{}", a.proposal_id);
                let mut p: Proposal = ctx.get_json(&key)?.ok_or_else(|| {
                    ContractError::not_found(format!("no proposal {}", a.proposal_id))
                })?;
                if p.status != ProposalStatus::Open {
                    return Err(ContractError::new(
                        "proposal_closed",
                        format!("proposal {} is {:?}", p.id, p.status).to_lowercase(),
                    ));
                }
                if ctx.block.time_ms > p.deadline_ms {
                    p.status = ProposalStatus::Expired;
                    ctx.set_json(&key, &p)?;
                    ctx.emit("proposal_expired", &serde_json::json!({"id": p.id}))?;
                    return Ok(());
                }
                if p.approvals.contains(&admin.org) || p.rejections.contains(&admin.org) {
                    return Err(ContractError::new(
                        "already_voted",
                        format!("organisation {} has already voted", admin.org),
                    ));
                }
                if a.approve {
                    p.approvals.push(admin.org.clone());
                } else {
                    p.rejections.push(admin.org.clone());
                }
                ctx.emit(
                    "vote_cast",
                    &serde_json::json!({"id": p.id, "org": admin.org, "approve": a.approve}),
                )?;
                let params: GovernanceParams = ctx.get_json("governance")?.unwrap_or_default();
                tally(ctx, &mut p, &params)?;
                ctx.set_json(&key, &p)
            }
            other => Err(ContractError::new(
                "unknown_method",
                format!("system has no method {other}"),
            )),
        }
    }
}

/// Everything `admit_org` will require, checked up front so an approved proposal can always be
/// applied.
fn check_admission(
    ctx: &CallContext<'_>,
    id: &str,
    name: &str,
    admin: &NewAdmin,
) -> Result<(), ContractError> {
    if !valid_ident(id, 32) {
        return Err(ContractError::invalid_args(
            "organisation id must be 1-32 of [a-z0-9_-]",
        ));
    }
    if name.trim().is_empty() || name.len() > 200 {
        return Err(ContractError::invalid_args(
            "organisation name must be 1-200 bytes",
        ));
    }
    if ctx.get(format!("org/{id}").as_bytes())?.is_some() {
        return Err(ContractError::new(
            "already_exists",
            format!("organisation {id} exists"),
        ));
    }
    if !valid_ident(&admin.name, 64) {
        return Err(ContractError::invalid_args(
            "member name must be 1-64 of [a-z0-9_-]",
        ));
    }
    require_suite_key(ctx, &admin.public_key)?;
    if key_record(ctx, &admin.public_key)?.is_some() {
        return Err(ContractError::new(
            "key_in_use",
            "this public key is already registered",
        ));
    }
    Ok(())
}

fn validate_action(ctx: &CallContext<'_>, action: &ProposalAction) -> Result<(), ContractError> {
    match action {
        ProposalAction::AdmitOrganisation { id, name, admin } => {
            check_admission(ctx, id, name, admin)
        }
        ProposalAction::SetValidators { validators } => {
            crate::types::ValidatorSet::new(validators.clone())
                .map_err(|e| ContractError::invalid_args(e.to_string()))?;
            for v in validators {
                require_suite_key(ctx, &v.public_key)?;
            }
            Ok(())
        }
        ProposalAction::SetContractVersion { contract, version } => {
            if !ctx.contract_available(contract, *version) {
                return Err(ContractError::new(
                    "unknown_contract_version",
                    format!("this node software has no {contract} v{version}"),
                ));
            }
            Ok(())
        }
    }
}

/// Decide a proposal once enough organisations voted either way, and apply it when approved.
fn tally(
    ctx: &mut CallContext<'_>,
    p: &mut Proposal,
    params: &GovernanceParams,
) -> Result<(), ContractError> {
    let n = active_orgs(ctx)?.len() as u64;
    let num = params.quorum_numerator as u64;
    let den = params.quorum_denominator.max(1) as u64;
    let reached = |votes: u64| votes * den >= num * n;
    if reached(p.approvals.len() as u64) {
        // State may have changed while the proposal was open (e.g. the admin key got
        // registered meanwhile): close it as failed instead of leaving it open with every
        // deciding vote reverting.
        match validate_action(ctx, &p.action) {
            Err(ContractError::Rejected { code, message }) => {
                p.status = ProposalStatus::Rejected;
                return ctx.emit(
                    "proposal_failed",
                    &serde_json::json!({"id": p.id, "code": code, "message": message}),
                );
            }
            Err(e) => return Err(e),
            Ok(()) => {}
        }
        p.status = ProposalStatus::Approved;
        apply(ctx, &p.action)?;
        ctx.emit("proposal_approved", &serde_json::json!({"id": p.id}))?;
    } else if !reached(n.saturating_sub(p.rejections.len() as u64)) {
        p.status = ProposalStatus::Rejected;
        ctx.emit("proposal_rejected", &serde_json::json!({"id": p.id}))?;
    }
    Ok(())
}

fn apply(ctx: &mut CallContext<'_>, action: &ProposalAction) -> Result<(), ContractError> {
    match action {
        ProposalAction::AdmitOrganisation { id, name, admin } => admit_org(ctx, id, name, admin),
        ProposalAction::SetValidators { validators } => {
            let pending = PendingValidators {
                effective_height: ctx.block.height + VALIDATOR_CHANGE_DELAY,
                validators: validators.clone(),
            };
            ctx.set_json("validators_pending", &pending)?;
            ctx.emit("validator_set_scheduled", &pending)
        }
        ProposalAction::SetContractVersion { contract, version } => {
            ctx.set_json(&format!("contract_version/{contract}"), version)?;
            ctx.emit(
                "contract_version_changed",
                &serde_json::json!({"contract": contract, "version": version}),
            )
        }
    }
}

/// Genesis organisations and their first admins.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenesisOrg {
    pub id: String,
    pub name: String,
    pub admins: Vec<NewAdmin>,
    /// Further members created at genesis (name, key, roles).
    #[serde(default)]
    pub members: Vec<GenesisMember>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenesisMember {
    pub name: String,
    pub public_key: PublicKey,
    #[serde(default)]
    pub roles: Vec<String>,
}

/// Build the genesis state of the system contract by running its own rules in a context at
/// height 0, so genesis can never create a state the contract itself would refuse.
pub fn genesis(
    ctx: &mut CallContext<'_>,
    orgs: &[GenesisOrg],
    validators: &[Validator],
    contracts: &[(&'static str, u32)],
    params: &GovernanceParams,
) -> Result<(), ContractError> {
    ctx.set_json("governance", params)?;
    ctx.set_json("validators", &validators)?;
    for (name, version) in contracts {
        ctx.set_json(&format!("contract_version/{name}"), version)?;
    }
    for o in orgs {
        let first = o.admins.first().ok_or_else(|| {
            ContractError::invalid_args(format!("organisation {} has no admin", o.id))
        })?;
        admit_org(ctx, &o.id, &o.name, first)?;
        for a in &o.admins[1..] {
            add_member(
                ctx,
                &o.id,
                &a.name,
                &a.public_key,
                vec![ROLE_ORG_ADMIN.into()],
            )?;
        }
        for m in &o.members {
            add_member(ctx, &o.id, &m.name, &m.public_key, m.roles.clone())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::contract::{BlockInfo, ContractRegistry, StateRead, WriteSet, state_key};
    use crate::crypto::{Digest, HashAlg, SigAlg, SigningKey};

    struct Map(BTreeMap<Vec<u8>, Vec<u8>>);

    impl StateRead for Map {
        fn get(&self, full_key: &[u8]) -> Result<Option<Vec<u8>>, String> {
            Ok(self.0.get(full_key).cloned())
        }
    }

    #[test]
    fn sender_member_sees_the_system_contracts_own_writes() {
        let key = SigningKey::from_label(SigAlg::Ed25519, "member").public_key();
        let member = Member {
            org: "acme".into(),
            name: "alice".into(),
            roles: vec!["clerk".into()],
            keys: vec![key.clone()],
            status: Status::Active,
        };
        let record = KeyRecord {
            member: member.id(),
            status: Status::Active,
            since_height: 0,
        };
        let mut state = BTreeMap::new();
        for (k, v) in [
            (format!("key/{key}"), serde_json::to_vec(&record).unwrap()),
            (
                format!("member/{}", member.id()),
                serde_json::to_vec(&member).unwrap(),
            ),
        ] {
            state.insert(state_key(NAME, k.as_bytes()), v);
        }
        let base = Map(state);
        let block = BlockInfo {
            chain_id: "t".into(),
            height: 1,
            time_ms: 1,
            prev_hash: Digest {
                alg: HashAlg::Sha256,
                bytes: [0; 32],
            },
        };
        let writes = WriteSet::new();
        let registry = ContractRegistry::new();
        let mut ctx = CallContext::new(
            &block,
            block.prev_hash,
            key.clone(),
            NAME,
            &base,
            &writes,
            &registry,
        );
        assert!(require_role(&ctx, "clerk").is_ok());
        // Looked up once and remembered: a second check gives the same member.
        assert_eq!(sender_member(&ctx).map(|m| m.id()).ok(), Some(member.id()));
        // A write of the system contract (here: the member suspended) is seen at once.
        let suspended = Member {
            status: Status::Revoked,
            ..member.clone()
        };
        ctx.set_json(&format!("member/{}", member.id()), &suspended)
            .unwrap();
        let refused = sender_member(&ctx).unwrap_err();
        assert!(
            matches!(&refused, ContractError::Rejected { code, .. } if code == "not_permitted"),
            "{refused:?}"
        );
    }
}
