//! The identifier rules the `trace` contract applies, as contract errors with stable codes:
//! GS1 keys with check digits, EPC URIs and Digital Links reduced to what the contract keys
//! state by, and CBV 2.0 event hash IDs.

use chain_core::contract::ContractError;
use serde_json::Value;

use crate::digital_link::{DigitalLink, PrimaryKey, Qualifier};
use crate::domain::LotRef;
use crate::epcis::hash::{self, Context, HashError};
use crate::gs1::{self, Gln, Gs1Error, Gtin, Lot};

fn gs1_error(e: Gs1Error) -> ContractError {
    ContractError::new(e.code(), e.to_string())
}

fn hash_error(e: HashError) -> ContractError {
    ContractError::new(e.code(), e.to_string())
}

/// A GTIN-8/12/13/14 with a valid check digit, as its 14-digit form.
pub fn gtin14(s: &str) -> Result<String, ContractError> {
    Gtin::parse(s.trim())
        .map(|g| g.as_str().to_string())
        .map_err(gs1_error)
}

/// A 13-digit GLN with a valid check digit.
pub fn gln13(s: &str) -> Result<String, ContractError> {
    Gln::parse(s.trim())
        .map(|g| g.as_str().to_string())
        .map_err(gs1_error)
}

/// A lot number (AI 10): 1 to 20 characters of GS1 character set 82.
pub fn check_lot(s: &str) -> Result<(), ContractError> {
    Lot::parse(s).map(|_| ()).map_err(gs1_error)
}

/// What an EPC in an event names, as far as the contract's rules care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Epc {
    /// A serialised trade item (SGTIN).
    Item { gtin: String, serial: String },
    /// A lot of a product (LGTIN class).
    Lot(LotRef),
    /// A logistic unit (SSCC).
    Unit { sscc: String },
    /// A product class without a lot (GTIN pattern).
    Product { gtin: String },
    /// Any other identifier (GRAI, GIAI, a location, a non-GS1 IRI): anchored, but no rules apply.
    Other,
}

/// Parses an EPC URI (`urn:epc:id:sgtin:…`, `urn:epc:class:lgtin:…`, `urn:epc:id:sscc:…`,
/// `urn:epc:idpat:sgtin:….*`) or a GS1 Digital Link. A GS1 identifier with a wrong check digit
/// or bad characters is an error; identifiers outside GS1's schemes are [`Epc::Other`].
pub fn parse_epc(s: &str) -> Result<Epc, ContractError> {
    let lower: String = s.chars().take(14).collect::<String>().to_ascii_lowercase();
    let link = if lower.starts_with("urn:epc:") {
        match gs1::epc_urn_to_digital_link(s) {
            Ok(link) => link,
            // A scheme this module does not convert (e.g. ADI, GID, USDoD) names no trade item.
            Err(Gs1Error::UnsupportedScheme { .. }) => return Ok(Epc::Other),
            Err(e) => return Err(gs1_error(e)),
        }
    } else if lower.starts_with("http://") || lower.starts_with("https://") {
        match DigitalLink::parse(s) {
            Ok(link) => link,
            // Web IRIs that are not Digital Links are valid EPCIS identifiers too.
            Err(e) if e.code().starts_with("dl_") => return Ok(Epc::Other),
            Err(e) => return Err(ContractError::new(e.code(), e.to_string())),
        }
    } else {
        return Ok(Epc::Other);
    };
    Ok(match link.key() {
        PrimaryKey::Gtin(g) => {
            let gtin = g.as_str().to_string();
            match (
                link.qualifier(Qualifier::Lot),
                link.qualifier(Qualifier::Serial),
            ) {
                (_, Some(serial)) => Epc::Item {
                    gtin,
                    serial: serial.to_string(),
                },
                (Some(lot), None) => Epc::Lot(LotRef {
                    gtin,
                    lot: lot.to_string(),
                }),
                (None, None) => Epc::Product { gtin },
            }
        }
        PrimaryKey::Sscc(s) => Epc::Unit {
            sscc: s.as_str().to_string(),
        },
        _ => Epc::Other,
    })
}

/// The CBV 2.0 event hash ID (`ni:///sha-256;…?ver=CBV2.0`) of an event captured in a document
/// whose `@context` is `context` and which declared `ignore_fields` as not part of its events.
/// The event's own `@context`, if any, extends the document's.
pub fn event_hash_id(
    event: &Value,
    context: &Value,
    ignore_fields: &[String],
) -> Result<String, ContractError> {
    let mut ctx = Context::new().with_context(context);
    for f in ignore_fields {
        ctx = ctx.ignore_field(f);
    }
    if let Some(own) = event.get("@context") {
        ctx = ctx.with_context(own);
    }
    hash::event_hash_id(event, &ctx).map_err(hash_error)
}

/// The hex digest inside a hash ID, which keys the anchor in state.
pub fn hash_hex(hash_id: &str) -> Result<String, ContractError> {
    let hex = hash_id
        .strip_prefix("ni:///sha-256;")
        .map(|rest| rest.split('?').next().unwrap_or(rest))
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| {
            ContractError::new(
                "epcis_hash_id",
                format!("{hash_id:?} is not a SHA-256 event hash ID"),
            )
        })?;
    Ok(hex.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epcs_reduce_to_items_lots_and_units() {
        assert_eq!(
            parse_epc("urn:epc:id:sgtin:0614141.107346.2017").unwrap(),
            Epc::Item {
                // The item reference's first digit is the GTIN's indicator digit.
                gtin: "10614141073464".into(),
                serial: "2017".into()
            }
        );
        assert_eq!(
            parse_epc("https://id.gs1.org/01/09521234000013/10/L1").unwrap(),
            Epc::Lot(LotRef {
                gtin: "09521234000013".into(),
                lot: "L1".into()
            })
        );
        assert!(matches!(
            parse_epc("urn:epc:id:sscc:0614141.1234567890").unwrap(),
            Epc::Unit { .. }
        ));
        assert_eq!(parse_epc("urn:uuid:1234").unwrap(), Epc::Other);
        assert_eq!(
            parse_epc("https://example.com/asset/7").unwrap(),
            Epc::Other
        );
        let bad = parse_epc("https://id.gs1.org/01/09521234000014/21/7").unwrap_err();
        assert!(bad.to_string().contains("check digit"), "{bad}");
    }

    #[test]
    fn hash_hex_needs_a_sha256_id() {
        let id = format!("ni:///sha-256;{}?ver=CBV2.0", "Ab".repeat(32));
        assert_eq!(hash_hex(&id).unwrap(), "ab".repeat(32));
        assert!(hash_hex("ni:///sha-256;zz?ver=CBV2.0").is_err());
    }
}
