//! GS1 identification keys: check digits, the typed keys Trellis stores (GTIN, GLN, SSCC, serial
//! and lot numbers, SGTIN, LGTIN), and the conversion between EPC URIs (GS1 EPC Tag Data Standard
//! 2.x pure identities, class and pattern URIs) and GS1 Digital Link URIs for every key EPCIS uses.
//!
//! Positions in error messages are 1-based character positions in the value as given.

use std::fmt;
use std::str::FromStr;

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::digital_link::{DigitalLink, PrimaryKey, Qualifier};

/// Errors of GS1 key validation and EPC URI conversion.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Gs1Error {
    #[error("{kind} {value:?} has {actual} digits, expected {expected}")]
    Length {
        kind: &'static str,
        value: String,
        expected: String,
        actual: usize,
    },
    #[error("{kind} {value:?} has the non-digit {found:?} at position {position}")]
    NonDigit {
        kind: &'static str,
        value: String,
        position: usize,
        found: char,
    },
    #[error("check digit of {kind} {value} is {found}, expected {expected} (position {position})")]
    CheckDigit {
        kind: &'static str,
        value: String,
        found: u8,
        expected: u8,
        position: usize,
    },
    #[error(
        "{field} {value:?} has {found:?} at position {position}, which is not in GS1 character set {charset}"
    )]
    Charset {
        field: &'static str,
        value: String,
        position: usize,
        found: char,
        charset: &'static str,
    },
    #[error("{field} {value:?} is {actual} characters long, allowed {min} to {max}")]
    FieldLength {
        field: &'static str,
        value: String,
        actual: usize,
        min: usize,
        max: usize,
    },
    #[error(
        "a GS1 company prefix of {gcp_len} digits does not fit {kind} {value} (allowed {min} to {max})"
    )]
    CompanyPrefix {
        kind: &'static str,
        value: String,
        gcp_len: usize,
        min: usize,
        max: usize,
    },
    #[error("unsupported EPC URI {uri:?}: {reason}")]
    UnsupportedScheme { uri: String, reason: String },
    #[error("malformed EPC URI {uri:?}: {reason}")]
    MalformedUri { uri: String, reason: String },
    #[error("{what} has no EPC URI: {reason}")]
    NotRepresentable { what: String, reason: String },
}

impl Gs1Error {
    /// Stable machine-readable code of the error kind.
    pub fn code(&self) -> &'static str {
        match self {
            Gs1Error::Length { .. } => "gs1_length",
            Gs1Error::NonDigit { .. } => "gs1_non_digit",
            Gs1Error::CheckDigit { .. } => "gs1_check_digit",
            Gs1Error::Charset { .. } => "gs1_charset",
            Gs1Error::FieldLength { .. } => "gs1_field_length",
            Gs1Error::CompanyPrefix { .. } => "gs1_company_prefix",
            Gs1Error::UnsupportedScheme { .. } => "epc_unsupported_scheme",
            Gs1Error::MalformedUri { .. } => "epc_malformed_uri",
            Gs1Error::NotRepresentable { .. } => "epc_not_representable",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Check digits and character sets
// ---------------------------------------------------------------------------------------------

/// The GS1 mod-10 check digit of `body` (all digits of a key except its check digit).
///
/// Weights alternate 3, 1, 3, … starting from the rightmost digit of the body, so the same
/// function serves GTIN-8 to SSCC and the numeric prefixes of GRAI, GDTI, SGCN and ITIP.
pub fn check_digit(body: &str) -> Result<u8, Gs1Error> {
    require_digits("GS1 key", body)?;
    Ok(check_digit_of_digits(body.as_bytes()))
}

fn check_digit_of_digits(body: &[u8]) -> u8 {
    let sum: u32 = body
        .iter()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 0 { d * 3 } else { d }
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

fn require_digits(kind: &'static str, value: &str) -> Result<(), Gs1Error> {
    match value.chars().enumerate().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, found)) => Err(Gs1Error::NonDigit {
            kind,
            value: value.to_owned(),
            position: i + 1,
            found,
        }),
        None => Ok(()),
    }
}

/// Checks that `value` is all digits, has one of `lengths`, and that its last digit is the check
/// digit of the others.
fn validate_numeric_key(
    kind: &'static str,
    value: &str,
    lengths: &[usize],
    expected: &'static str,
) -> Result<(), Gs1Error> {
    require_digits(kind, value)?;
    if !lengths.contains(&value.len()) {
        return Err(Gs1Error::Length {
            kind,
            value: value.to_owned(),
            expected: expected.to_owned(),
            actual: value.len(),
        });
    }
    verify_check_digit(kind, value, value.len())
}

/// A fixed-length all-digit key whose last digit is its check digit (GSRN, GSIN, …).
pub(crate) fn validate_fixed_key(
    kind: &'static str,
    value: &str,
    len: usize,
) -> Result<(), Gs1Error> {
    require_digits(kind, value)?;
    if value.len() != len {
        return Err(Gs1Error::Length {
            kind,
            value: value.to_owned(),
            expected: len.to_string(),
            actual: value.len(),
        });
    }
    verify_check_digit(kind, value, len)
}

/// Keys that start with `numeric_len` digits ending in a check digit, optionally followed by
/// more characters (GRAI, GDTI, GCN, ITIP). Returns the rest after the numeric head.
pub(crate) fn validate_numeric_head<'a>(
    kind: &'static str,
    value: &'a str,
    numeric_len: usize,
) -> Result<&'a str, Gs1Error> {
    // Checking characters before slicing keeps byte offsets on char boundaries.
    let head_chars = value.chars().take(numeric_len);
    if let Some((i, found)) = head_chars.enumerate().find(|(_, c)| !c.is_ascii_digit()) {
        return Err(Gs1Error::NonDigit {
            kind,
            value: value.to_owned(),
            position: i + 1,
            found,
        });
    }
    if value.len() < numeric_len {
        return Err(Gs1Error::Length {
            kind,
            value: value.to_owned(),
            expected: format!("at least {numeric_len}"),
            actual: value.len(),
        });
    }
    verify_check_digit(kind, value, numeric_len)?;
    Ok(&value[numeric_len..])
}

/// Verifies the check digit at 1-based `position` of an all-digit `value` over the digits before it.
fn verify_check_digit(kind: &'static str, value: &str, position: usize) -> Result<(), Gs1Error> {
    let bytes = value.as_bytes();
    let expected = check_digit_of_digits(&bytes[..position - 1]);
    let found = bytes[position - 1] - b'0';
    if found == expected {
        Ok(())
    } else {
        Err(Gs1Error::CheckDigit {
            kind,
            value: value.to_owned(),
            found,
            expected,
            position,
        })
    }
}

/// GS1 AI encodable character set 82 (GS1 General Specifications figure 7.11-1), used by lot and
/// serial numbers and most alphanumeric key components.
pub fn is_cset82(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '!' | '"'
                | '%'
                | '&'
                | '\''
                | '('
                | ')'
                | '*'
                | '+'
                | ','
                | '-'
                | '.'
                | '/'
                | ':'
                | ';'
                | '<'
                | '='
                | '>'
                | '?'
                | '_'
        )
}

/// GS1 AI encodable character set 39 (digits, upper-case letters, `#`, `-`, `/`), used by the
/// component/part identifier (CPID, AI 8010).
pub fn is_cset39(c: char) -> bool {
    c.is_ascii_digit() || c.is_ascii_uppercase() || matches!(c, '#' | '-' | '/')
}

/// Validates an alphanumeric field against a character set and a length range.
pub(crate) fn validate_chars(
    field: &'static str,
    value: &str,
    min: usize,
    max: usize,
    charset: &'static str,
    allowed: fn(char) -> bool,
) -> Result<(), Gs1Error> {
    if let Some((i, found)) = value.chars().enumerate().find(|(_, c)| !allowed(*c)) {
        return Err(Gs1Error::Charset {
            field,
            value: value.to_owned(),
            position: i + 1,
            found,
            charset,
        });
    }
    let actual = value.chars().count();
    if actual < min || actual > max {
        return Err(Gs1Error::FieldLength {
            field,
            value: value.to_owned(),
            actual,
            min,
            max,
        });
    }
    Ok(())
}

pub(crate) fn validate_cset82(
    field: &'static str,
    value: &str,
    min: usize,
    max: usize,
) -> Result<(), Gs1Error> {
    validate_chars(field, value, min, max, "82", is_cset82)
}

/// Validates a variable-length numeric field (e.g. AI 8011, AI 255's serial component).
pub(crate) fn validate_numeric_field(
    field: &'static str,
    value: &str,
    min: usize,
    max: usize,
) -> Result<(), Gs1Error> {
    require_digits(field, value)?;
    if value.len() < min || value.len() > max {
        return Err(Gs1Error::FieldLength {
            field,
            value: value.to_owned(),
            actual: value.len(),
            min,
            max,
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Typed keys
// ---------------------------------------------------------------------------------------------

/// Implements `Display`, `FromStr`, `AsRef<str>` and string serde for a type with `parse` and
/// `as_str`.
macro_rules! string_type {
    ($name:ident) => {
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $name {
            type Err = Gs1Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = String::deserialize(deserializer)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// Global Trade Item Number, kept normalised to 14 digits (GTIN-8/12/13 are left-padded with
/// zeros, which does not change the check digit).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Gtin(String);

impl Gtin {
    /// Parses a GTIN-8, GTIN-12, GTIN-13 or GTIN-14 and normalises it to 14 digits.
    pub fn parse(s: &str) -> Result<Self, Gs1Error> {
        validate_numeric_key("GTIN", s, &[8, 12, 13, 14], "8, 12, 13 or 14")?;
        Ok(Gtin(format!("{s:0>14}")))
    }

    /// The 14-digit form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The indicator digit (first digit of the GTIN-14; 0 for GTIN-8/12/13).
    pub fn indicator(&self) -> char {
        char::from(self.0.as_bytes()[0])
    }

    /// The shortest standard form: GTIN-8, -12 or -13 when the leading digits are zeros.
    pub fn to_shortest(&self) -> &str {
        let s = self.as_str();
        s.strip_prefix("000000")
            .or_else(|| s.strip_prefix("00"))
            .or_else(|| s.strip_prefix('0'))
            .unwrap_or(s)
    }
}
string_type!(Gtin);

/// Global Location Number (13 digits), used for physical locations (AI 414) and parties (AI 417).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Gln(String);

impl Gln {
    pub fn parse(s: &str) -> Result<Self, Gs1Error> {
        validate_numeric_key("GLN", s, &[13], "13")?;
        Ok(Gln(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}
string_type!(Gln);

/// Serial Shipping Container Code (18 digits), the key of a logistic unit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sscc(String);

impl Sscc {
    pub fn parse(s: &str) -> Result<Self, Gs1Error> {
        validate_numeric_key("SSCC", s, &[18], "18")?;
        Ok(Sscc(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}
string_type!(Sscc);

/// Serial number (AI 21): 1 to 20 characters of GS1 character set 82.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SerialNumber(String);

impl SerialNumber {
    pub fn parse(s: &str) -> Result<Self, Gs1Error> {
        validate_cset82("serial number", s, 1, 20)?;
        Ok(SerialNumber(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}
string_type!(SerialNumber);

/// Batch or lot number (AI 10): 1 to 20 characters of GS1 character set 82.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Lot(String);

impl Lot {
    pub fn parse(s: &str) -> Result<Self, Gs1Error> {
        validate_cset82("lot number", s, 1, 20)?;
        Ok(Lot(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}
string_type!(Lot);

/// A serialised trade item: GTIN + serial number. Its string form is the canonical GS1 Digital
/// Link URI (`https://id.gs1.org/01/{gtin14}/21/{serial}`); parsing also accepts any Digital Link
/// domain and `urn:epc:id:sgtin:` URIs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sgtin {
    pub gtin: Gtin,
    pub serial: SerialNumber,
}

impl Sgtin {
    pub fn new(gtin: Gtin, serial: SerialNumber) -> Self {
        Sgtin { gtin, serial }
    }

    pub fn to_digital_link(&self) -> DigitalLink {
        DigitalLink::canonical_for(PrimaryKey::Gtin(self.gtin.clone()))
            .with_validated_qualifier(Qualifier::Serial, self.serial.as_str())
    }

    /// `urn:epc:id:sgtin:…`, which needs the length of the GTIN's GS1 company prefix.
    pub fn to_epc_urn(&self, gcp_len: usize) -> Result<String, Gs1Error> {
        self.to_digital_link().to_epc_urn(gcp_len)
    }
}

impl fmt::Display for Sgtin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_digital_link().fmt(f)
    }
}

impl FromStr for Sgtin {
    type Err = Gs1Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let dl = parse_key_uri(s, "SGTIN")?;
        match (dl.key(), dl.qualifier(Qualifier::Serial)) {
            (PrimaryKey::Gtin(gtin), Some(serial)) => Ok(Sgtin {
                gtin: gtin.clone(),
                serial: SerialNumber::parse(serial)?,
            }),
            _ => Err(Gs1Error::MalformedUri {
                uri: s.to_owned(),
                reason: "an SGTIN needs a GTIN (AI 01) and a serial number (AI 21)".to_owned(),
            }),
        }
    }
}

/// A lot (class level) of a trade item: GTIN + lot number. Its string form is the canonical GS1
/// Digital Link URI (`https://id.gs1.org/01/{gtin14}/10/{lot}`); parsing also accepts any Digital
/// Link domain and `urn:epc:class:lgtin:` URIs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Lgtin {
    pub gtin: Gtin,
    pub lot: Lot,
}

impl Lgtin {
    pub fn new(gtin: Gtin, lot: Lot) -> Self {
        Lgtin { gtin, lot }
    }

    pub fn to_digital_link(&self) -> DigitalLink {
        DigitalLink::canonical_for(PrimaryKey::Gtin(self.gtin.clone()))
            .with_validated_qualifier(Qualifier::Lot, self.lot.as_str())
    }

    /// `urn:epc:class:lgtin:…`, which needs the length of the GTIN's GS1 company prefix.
    pub fn to_epc_urn(&self, gcp_len: usize) -> Result<String, Gs1Error> {
        self.to_digital_link().to_epc_urn(gcp_len)
    }
}

impl fmt::Display for Lgtin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_digital_link().fmt(f)
    }
}

impl FromStr for Lgtin {
    type Err = Gs1Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let dl = parse_key_uri(s, "LGTIN")?;
        match (
            dl.key(),
            dl.qualifier(Qualifier::Lot),
            dl.qualifier(Qualifier::Serial),
        ) {
            (PrimaryKey::Gtin(gtin), Some(lot), None) => Ok(Lgtin {
                gtin: gtin.clone(),
                lot: Lot::parse(lot)?,
            }),
            _ => Err(Gs1Error::MalformedUri {
                uri: s.to_owned(),
                reason: "an LGTIN needs a GTIN (AI 01) and a lot (AI 10), and no serial number"
                    .to_owned(),
            }),
        }
    }
}

macro_rules! display_serde {
    ($name:ident) => {
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = String::deserialize(deserializer)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
display_serde!(Sgtin);
display_serde!(Lgtin);

/// Parses an EPC URI or a GS1 Digital Link URI into a Digital Link.
fn parse_key_uri(s: &str, what: &str) -> Result<DigitalLink, Gs1Error> {
    if s.get(..4)
        .is_some_and(|head| head.eq_ignore_ascii_case("urn:"))
    {
        epc_urn_to_digital_link(s)
    } else {
        DigitalLink::parse(s).map_err(|e| match e.into_gs1() {
            Ok(gs1) => gs1,
            Err(dl) => Gs1Error::MalformedUri {
                uri: s.to_owned(),
                reason: format!("not a {what} Digital Link URI: {dl}"),
            },
        })
    }
}

// ---------------------------------------------------------------------------------------------
// EPC URI → GS1 Digital Link
// ---------------------------------------------------------------------------------------------

/// Characters that TDS requires to be percent-escaped inside EPC URI components; everything else
/// of set 82 (and set 39) stands for itself.
const EPC_URI_ESCAPES: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'&')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?');

/// Converts an EPC pure identity URI (`urn:epc:id:…`), EPC class URI (`urn:epc:class:lgtin:…`)
/// or EPC pattern URI (`urn:epc:idpat:…:….*`, class-level patterns only) to the equivalent GS1
/// Digital Link URI on `id.gs1.org`. Percent-escapes in URI components are decoded; the Digital
/// Link re-encodes the values by its own rules when displayed.
pub fn epc_urn_to_digital_link(uri: &str) -> Result<DigitalLink, Gs1Error> {
    let malformed = |reason: &str| Gs1Error::MalformedUri {
        uri: uri.to_owned(),
        reason: reason.to_owned(),
    };
    let lower_head: String = uri
        .chars()
        .take(14)
        .collect::<String>()
        .to_ascii_lowercase();
    let (kind, rest) = if lower_head.starts_with("urn:epc:id:") {
        (UrnKind::Id, &uri[11..])
    } else if lower_head.starts_with("urn:epc:class:") {
        (UrnKind::Class, &uri[14..])
    } else if lower_head.starts_with("urn:epc:idpat:") {
        (UrnKind::Pattern, &uri[14..])
    } else {
        return Err(Gs1Error::UnsupportedScheme {
            uri: uri.to_owned(),
            reason: "expected urn:epc:id:, urn:epc:class: or urn:epc:idpat:".to_owned(),
        });
    };
    let (scheme, body) = rest
        .split_once(':')
        .ok_or_else(|| malformed("missing ':' after the EPC scheme name"))?;
    let unsupported = || Gs1Error::UnsupportedScheme {
        uri: uri.to_owned(),
        reason: format!("EPC scheme {scheme:?} is not supported here"),
    };
    let parts = Parts { uri, body };
    let (key, qualifiers): (PrimaryKey, Vec<(Qualifier, String)>) = match (kind, scheme) {
        (UrnKind::Id, "sgtin") => {
            let (cp, ir, serial) = parts.three()?;
            let gtin = gtin_from_parts(uri, cp, ir)?;
            let serial = parts.decode("serial number", serial)?;
            validate_cset82("serial number", &serial, 1, 20)?;
            (PrimaryKey::Gtin(gtin), vec![(Qualifier::Serial, serial)])
        }
        (UrnKind::Class, "lgtin") => {
            let (cp, ir, lot) = parts.three()?;
            let gtin = gtin_from_parts(uri, cp, ir)?;
            let lot = parts.decode("lot number", lot)?;
            validate_cset82("lot number", &lot, 1, 20)?;
            (PrimaryKey::Gtin(gtin), vec![(Qualifier::Lot, lot)])
        }
        (UrnKind::Pattern, "sgtin") => {
            let (cp, ir) = parts.pattern2()?;
            (PrimaryKey::Gtin(gtin_from_parts(uri, cp, ir)?), vec![])
        }
        (UrnKind::Id, "sscc") => {
            let (cp, sr) = parts.two()?;
            company_prefix(uri, cp)?;
            expect_digits(uri, "serial reference", sr, 17 - cp.len())?;
            let body = format!("{}{}{}", &sr[..1], cp, &sr[1..]);
            (PrimaryKey::Sscc(Sscc(with_check_digit(&body))), vec![])
        }
        (UrnKind::Id, "sgln") => {
            let (cp, lr, ext) = parts.three()?;
            let gln = gln_from_parts(uri, cp, lr, "location reference")?;
            let ext = parts.decode("GLN extension", ext)?;
            validate_cset82("GLN extension", &ext, 1, 20)?;
            // TDS: extension "0" means the location has no extension component.
            let qualifiers = if ext == "0" {
                vec![]
            } else {
                vec![(Qualifier::GlnExtension, ext)]
            };
            (PrimaryKey::Gln(gln), qualifiers)
        }
        (UrnKind::Id, "pgln") => {
            let (cp, pr) = parts.two()?;
            (
                PrimaryKey::Party(gln_from_parts(uri, cp, pr, "party reference")?),
                vec![],
            )
        }
        (UrnKind::Id, "grai") => {
            let (cp, at, serial) = parts.three()?;
            let serial = parts.decode("GRAI serial", serial)?;
            validate_cset82("GRAI serial", &serial, 1, 16)?;
            (PrimaryKey::Grai(grai_value(uri, cp, at, &serial)?), vec![])
        }
        (UrnKind::Pattern, "grai") => {
            let (cp, at) = parts.pattern2()?;
            (PrimaryKey::Grai(grai_value(uri, cp, at, "")?), vec![])
        }
        (UrnKind::Id, "giai") => {
            let (cp, ar) = parts.two()?;
            company_prefix(uri, cp)?;
            let ar = parts.decode("individual asset reference", ar)?;
            validate_cset82("individual asset reference", &ar, 1, 30 - cp.len())?;
            (PrimaryKey::Giai(format!("{cp}{ar}")), vec![])
        }
        (UrnKind::Id, "gsrn") | (UrnKind::Id, "gsrnp") => {
            let (cp, sr) = parts.two()?;
            company_prefix(uri, cp)?;
            expect_digits(uri, "service reference", sr, 17 - cp.len())?;
            let value = with_check_digit(&format!("{cp}{sr}"));
            let key = if scheme == "gsrn" {
                PrimaryKey::Gsrn(value)
            } else {
                PrimaryKey::Gsrnp(value)
            };
            (key, vec![])
        }
        (UrnKind::Id, "gdti") => {
            let (cp, dt, serial) = parts.three()?;
            let serial = parts.decode("GDTI serial", serial)?;
            validate_cset82("GDTI serial", &serial, 1, 17)?;
            (
                PrimaryKey::Gdti(format!("{}{serial}", numeric13(uri, cp, dt)?)),
                vec![],
            )
        }
        (UrnKind::Pattern, "gdti") => {
            let (cp, dt) = parts.pattern2()?;
            (PrimaryKey::Gdti(numeric13(uri, cp, dt)?), vec![])
        }
        (UrnKind::Id, "sgcn") => {
            let (cp, cr, serial) = parts.three()?;
            validate_numeric_field("coupon serial", serial, 1, 12)?;
            (
                PrimaryKey::Gcn(format!("{}{serial}", numeric13(uri, cp, cr)?)),
                vec![],
            )
        }
        (UrnKind::Pattern, "sgcn") => {
            let (cp, cr) = parts.pattern2()?;
            (PrimaryKey::Gcn(numeric13(uri, cp, cr)?), vec![])
        }
        (UrnKind::Id, "cpi") => {
            let (cp, rest) = parts.two()?;
            let (cpr, serial) = rest.rsplit_once('.').ok_or_else(|| {
                malformed("a CPI needs company prefix, part reference and serial")
            })?;
            company_prefix(uri, cp)?;
            let cpr = parts.decode("component/part reference", cpr)?;
            validate_chars(
                "component/part reference",
                &cpr,
                1,
                30 - cp.len(),
                "39",
                is_cset39,
            )?;
            validate_numeric_field("component/part serial", serial, 1, 12)?;
            (
                PrimaryKey::Cpid(format!("{cp}{cpr}")),
                vec![(Qualifier::ComponentSerial, serial.to_owned())],
            )
        }
        (UrnKind::Pattern, "cpi") => {
            let (cp, cpr) = parts.pattern2()?;
            company_prefix(uri, cp)?;
            let cpr = parts.decode("component/part reference", cpr)?;
            validate_chars(
                "component/part reference",
                &cpr,
                1,
                30 - cp.len(),
                "39",
                is_cset39,
            )?;
            (PrimaryKey::Cpid(format!("{cp}{cpr}")), vec![])
        }
        (UrnKind::Id, "ginc") => {
            let (cp, cr) = parts.two()?;
            company_prefix(uri, cp)?;
            let cr = parts.decode("consignment reference", cr)?;
            validate_cset82("consignment reference", &cr, 1, 30 - cp.len())?;
            (PrimaryKey::Ginc(format!("{cp}{cr}")), vec![])
        }
        (UrnKind::Id, "gsin") => {
            let (cp, sr) = parts.two()?;
            company_prefix(uri, cp)?;
            expect_digits(uri, "shipper reference", sr, 16 - cp.len())?;
            (
                PrimaryKey::Gsin(with_check_digit(&format!("{cp}{sr}"))),
                vec![],
            )
        }
        (UrnKind::Id, "itip") => {
            let (cp, ir, piece, total, serial) = parts.five()?;
            let value = itip_value(uri, cp, ir, piece, total)?;
            let serial = parts.decode("serial number", serial)?;
            validate_cset82("serial number", &serial, 1, 20)?;
            (PrimaryKey::Itip(value), vec![(Qualifier::Serial, serial)])
        }
        (UrnKind::Pattern, "itip") => {
            let (cp, ir, piece, total) = parts.pattern4()?;
            (
                PrimaryKey::Itip(itip_value(uri, cp, ir, piece, total)?),
                vec![],
            )
        }
        (UrnKind::Id, "upui") => {
            let (cp, ir, tpx) = parts.three()?;
            let gtin = gtin_from_parts(uri, cp, ir)?;
            let tpx = parts.decode("third party controlled serial extension", tpx)?;
            validate_cset82("third party controlled serial extension", &tpx, 1, 28)?;
            (PrimaryKey::Gtin(gtin), vec![(Qualifier::Tpx, tpx)])
        }
        _ => return Err(unsupported()),
    };
    let mut dl = DigitalLink::canonical_for(key);
    for (q, v) in qualifiers {
        dl = dl.with_validated_qualifier(q, &v);
    }
    Ok(dl)
}

#[derive(Clone, Copy)]
enum UrnKind {
    Id,
    Class,
    Pattern,
}

/// The dot-separated body of an EPC URI.
struct Parts<'a> {
    uri: &'a str,
    body: &'a str,
}

impl<'a> Parts<'a> {
    fn malformed(&self, reason: String) -> Gs1Error {
        Gs1Error::MalformedUri {
            uri: self.uri.to_owned(),
            reason,
        }
    }

    fn split(&self, n: usize) -> Result<Vec<&'a str>, Gs1Error> {
        // The last component may itself contain '.', which set 82 allows in serials.
        let parts: Vec<&str> = self.body.splitn(n, '.').collect();
        if parts.len() == n {
            Ok(parts)
        } else {
            Err(self.malformed(format!(
                "expected {n} '.'-separated components, found {}",
                parts.len()
            )))
        }
    }

    fn two(&self) -> Result<(&'a str, &'a str), Gs1Error> {
        let p = self.split(2)?;
        Ok((p[0], p[1]))
    }

    fn three(&self) -> Result<(&'a str, &'a str, &'a str), Gs1Error> {
        let p = self.split(3)?;
        Ok((p[0], p[1], p[2]))
    }

    fn five(&self) -> Result<(&'a str, &'a str, &'a str, &'a str, &'a str), Gs1Error> {
        let p = self.split(5)?;
        Ok((p[0], p[1], p[2], p[3], p[4]))
    }

    fn strip_star(&self) -> Result<&'a str, Gs1Error> {
        self.body
            .strip_suffix(".*")
            .ok_or_else(|| self.malformed("a pattern URI must end in \".*\"".to_owned()))
    }

    fn pattern2(&self) -> Result<(&'a str, &'a str), Gs1Error> {
        let inner = self.strip_star()?;
        match inner.split_once('.') {
            Some((a, b)) if !b.contains('.') => Ok((a, b)),
            _ => Err(self
                .malformed("expected company prefix and one reference before \".*\"".to_owned())),
        }
    }

    fn pattern4(&self) -> Result<(&'a str, &'a str, &'a str, &'a str), Gs1Error> {
        let inner = self.strip_star()?;
        let p: Vec<&str> = inner.split('.').collect();
        if p.len() == 4 {
            Ok((p[0], p[1], p[2], p[3]))
        } else {
            Err(self.malformed(
                "expected company prefix, item reference, piece and total before \".*\"".to_owned(),
            ))
        }
    }

    /// Decodes TDS percent-escapes in a component. Characters TDS requires to be escaped must not
    /// appear raw, and every '%' must start a two-hex-digit escape.
    fn decode(&self, field: &'static str, raw: &str) -> Result<String, Gs1Error> {
        let bytes = raw.as_bytes();
        for (i, c) in raw.char_indices() {
            if c == '%' {
                let ok = bytes.len() >= i + 3
                    && bytes[i + 1].is_ascii_hexdigit()
                    && bytes[i + 2].is_ascii_hexdigit();
                if !ok {
                    return Err(self.malformed(format!(
                        "{field} {raw:?} has a '%' that does not start a %XX escape (position {})",
                        raw[..i].chars().count() + 1
                    )));
                }
            } else if matches!(c, '"' | '&' | '/' | '<' | '>' | '?' | '#') {
                return Err(self.malformed(format!(
                    "{field} {raw:?} has {c:?} at position {}, which must be percent-escaped in an EPC URI",
                    raw[..i].chars().count() + 1
                )));
            }
        }
        percent_decode_str(raw)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| self.malformed(format!("{field} {raw:?} decodes to invalid UTF-8")))
    }
}

fn company_prefix(uri: &str, cp: &str) -> Result<(), Gs1Error> {
    require_digits("GS1 company prefix", cp)?;
    if !(6..=12).contains(&cp.len()) {
        return Err(Gs1Error::MalformedUri {
            uri: uri.to_owned(),
            reason: format!(
                "GS1 company prefix {cp:?} has {} digits, expected 6 to 12",
                cp.len()
            ),
        });
    }
    Ok(())
}

fn expect_digits(uri: &str, what: &'static str, value: &str, len: usize) -> Result<(), Gs1Error> {
    require_digits(what, value)?;
    if value.len() != len {
        return Err(Gs1Error::MalformedUri {
            uri: uri.to_owned(),
            reason: format!(
                "{what} {value:?} has {} digits; with this company prefix it needs {len}",
                value.len()
            ),
        });
    }
    Ok(())
}

fn with_check_digit(body: &str) -> String {
    format!("{body}{}", check_digit_of_digits(body.as_bytes()))
}

/// GTIN-14 from a company prefix and an indicator+item reference (together 13 digits).
fn gtin_from_parts(uri: &str, cp: &str, ir: &str) -> Result<Gtin, Gs1Error> {
    company_prefix(uri, cp)?;
    expect_digits(uri, "indicator and item reference", ir, 13 - cp.len())?;
    Ok(Gtin(with_check_digit(&format!(
        "{}{}{}",
        &ir[..1],
        cp,
        &ir[1..]
    ))))
}

fn gln_from_parts(
    uri: &str,
    cp: &str,
    reference: &str,
    what: &'static str,
) -> Result<Gln, Gs1Error> {
    company_prefix(uri, cp)?;
    expect_digits(uri, what, reference, 12 - cp.len())?;
    Ok(Gln(with_check_digit(&format!("{cp}{reference}"))))
}

/// The 13-digit numeric part (company prefix + reference + check digit) of GDTI and GCN.
fn numeric13(uri: &str, cp: &str, reference: &str) -> Result<String, Gs1Error> {
    company_prefix(uri, cp)?;
    expect_digits(uri, "document/coupon reference", reference, 12 - cp.len())?;
    Ok(with_check_digit(&format!("{cp}{reference}")))
}

/// AI 8003 value: a leading 0, the 13-digit GRAI numeric part, then the optional serial.
fn grai_value(uri: &str, cp: &str, asset_type: &str, serial: &str) -> Result<String, Gs1Error> {
    company_prefix(uri, cp)?;
    expect_digits(uri, "asset type", asset_type, 12 - cp.len())?;
    Ok(format!(
        "{}{serial}",
        with_check_digit(&format!("0{cp}{asset_type}"))
    ))
}

/// AI 8006 value: GTIN-14, piece number (2 digits) and total count (2 digits).
fn itip_value(uri: &str, cp: &str, ir: &str, piece: &str, total: &str) -> Result<String, Gs1Error> {
    let gtin = gtin_from_parts(uri, cp, ir)?;
    expect_digits(uri, "piece number", piece, 2)?;
    expect_digits(uri, "total count", total, 2)?;
    Ok(format!("{}{piece}{total}", gtin.as_str()))
}

// ---------------------------------------------------------------------------------------------
// GS1 Digital Link → EPC URI
// ---------------------------------------------------------------------------------------------

impl DigitalLink {
    /// The EPC URI of this Digital Link's key: a pure identity URI (`urn:epc:id:…`) for
    /// instance-level keys, `urn:epc:class:lgtin:…` for GTIN + lot, and `urn:epc:idpat:…:….*` for
    /// class-level keys without a serial. EPC URIs carry the split between GS1 company prefix and
    /// reference, which a Digital Link does not, so the prefix length (6 to 12) must be given.
    /// The consumer product variant (AI 22) and data attributes have no place in an EPC URI and
    /// are rejected, not dropped.
    pub fn to_epc_urn(&self, gcp_len: usize) -> Result<String, Gs1Error> {
        let what = || self.to_canonical().to_string();
        let not_representable = |reason: &str| Gs1Error::NotRepresentable {
            what: what(),
            reason: reason.to_owned(),
        };
        if self.qualifier(Qualifier::Cpv).is_some() {
            return Err(not_representable(
                "the consumer product variant (AI 22) has no EPC URI form",
            ));
        }
        if self.qualifier(Qualifier::Srin).is_some() {
            return Err(not_representable(
                "the service relation instance number (AI 8019) has no EPC URI form",
            ));
        }
        let esc = |s: &str| utf8_percent_encode(s, EPC_URI_ESCAPES).to_string();
        let lot = self.qualifier(Qualifier::Lot);
        let serial = self.qualifier(Qualifier::Serial);
        let key = self.key();
        let split = |kind: &'static str, digits: &str, max_cp: usize| -> Result<(), Gs1Error> {
            if (6..=max_cp).contains(&gcp_len) && gcp_len <= digits.len() {
                Ok(())
            } else {
                Err(Gs1Error::CompanyPrefix {
                    kind,
                    value: digits.to_owned(),
                    gcp_len,
                    min: 6,
                    max: max_cp,
                })
            }
        };
        // Splits a GTIN-14 into (company prefix, indicator + item reference).
        let gtin_split = |gtin: &str| -> Result<(String, String), Gs1Error> {
            split("GTIN", gtin, 12)?;
            let cp = &gtin[1..1 + gcp_len];
            let ir = format!("{}{}", &gtin[..1], &gtin[1 + gcp_len..13]);
            Ok((cp.to_owned(), ir))
        };
        let urn = match key {
            PrimaryKey::Gtin(gtin) => {
                let (cp, ir) = gtin_split(gtin.as_str())?;
                match (lot, serial, self.qualifier(Qualifier::Tpx)) {
                    (_, Some(serial), None) => {
                        format!("urn:epc:id:sgtin:{cp}.{ir}.{}", esc(serial))
                    }
                    (Some(lot), None, None) => {
                        format!("urn:epc:class:lgtin:{cp}.{ir}.{}", esc(lot))
                    }
                    (None, None, Some(tpx)) => format!("urn:epc:id:upui:{cp}.{ir}.{}", esc(tpx)),
                    (None, None, None) => format!("urn:epc:idpat:sgtin:{cp}.{ir}.*"),
                    _ => {
                        return Err(not_representable(
                            "TPX (AI 235) cannot be combined with lot or serial",
                        ));
                    }
                }
            }
            PrimaryKey::Sscc(sscc) => {
                let s = sscc.as_str();
                split("SSCC", s, 12)?;
                format!(
                    "urn:epc:id:sscc:{}.{}{}",
                    &s[1..1 + gcp_len],
                    &s[..1],
                    &s[1 + gcp_len..17]
                )
            }
            PrimaryKey::Gln(gln) => {
                let g = gln.as_str();
                split("GLN", g, 12)?;
                let ext = self
                    .qualifier(Qualifier::GlnExtension)
                    .map_or_else(|| "0".to_owned(), esc);
                format!(
                    "urn:epc:id:sgln:{}.{}.{ext}",
                    &g[..gcp_len],
                    &g[gcp_len..12]
                )
            }
            PrimaryKey::Party(gln) => {
                let g = gln.as_str();
                split("GLN", g, 12)?;
                format!("urn:epc:id:pgln:{}.{}", &g[..gcp_len], &g[gcp_len..12])
            }
            PrimaryKey::Grai(v) => {
                split("GRAI", v, 12)?;
                let (cp, at, serial) = (&v[1..1 + gcp_len], &v[1 + gcp_len..13], &v[14..]);
                if serial.is_empty() {
                    format!("urn:epc:idpat:grai:{cp}.{at}.*")
                } else {
                    format!("urn:epc:id:grai:{cp}.{at}.{}", esc(serial))
                }
            }
            PrimaryKey::Giai(v) => {
                split("GIAI", v, 12)?;
                require_digits("GS1 company prefix", &v[..gcp_len])?;
                format!("urn:epc:id:giai:{}.{}", &v[..gcp_len], esc(&v[gcp_len..]))
            }
            PrimaryKey::Gsrn(v) | PrimaryKey::Gsrnp(v) => {
                split("GSRN", v, 12)?;
                let scheme = if matches!(key, PrimaryKey::Gsrn(_)) {
                    "gsrn"
                } else {
                    "gsrnp"
                };
                format!("urn:epc:id:{scheme}:{}.{}", &v[..gcp_len], &v[gcp_len..17])
            }
            PrimaryKey::Gdti(v) | PrimaryKey::Gcn(v) => {
                let (kind, scheme) = if matches!(key, PrimaryKey::Gdti(_)) {
                    ("GDTI", "gdti")
                } else {
                    ("GCN", "sgcn")
                };
                split(kind, v, 12)?;
                let (cp, reference, serial) = (&v[..gcp_len], &v[gcp_len..12], &v[13..]);
                if serial.is_empty() {
                    format!("urn:epc:idpat:{scheme}:{cp}.{reference}.*")
                } else {
                    format!("urn:epc:id:{scheme}:{cp}.{reference}.{}", esc(serial))
                }
            }
            PrimaryKey::Cpid(v) => {
                split("CPID", v, 12)?;
                require_digits("GS1 company prefix", &v[..gcp_len])?;
                let (cp, cpr) = (&v[..gcp_len], esc(&v[gcp_len..]));
                match self.qualifier(Qualifier::ComponentSerial) {
                    Some(serial) => format!("urn:epc:id:cpi:{cp}.{cpr}.{serial}"),
                    None => format!("urn:epc:idpat:cpi:{cp}.{cpr}.*"),
                }
            }
            PrimaryKey::Ginc(v) => {
                split("GINC", v, 12)?;
                require_digits("GS1 company prefix", &v[..gcp_len])?;
                format!("urn:epc:id:ginc:{}.{}", &v[..gcp_len], esc(&v[gcp_len..]))
            }
            PrimaryKey::Gsin(v) => {
                split("GSIN", v, 12)?;
                format!("urn:epc:id:gsin:{}.{}", &v[..gcp_len], &v[gcp_len..16])
            }
            PrimaryKey::Itip(v) => {
                let (cp, ir) = gtin_split(&v[..14])?;
                let (piece, total) = (&v[14..16], &v[16..18]);
                match (lot, serial) {
                    (_, Some(serial)) => {
                        format!("urn:epc:id:itip:{cp}.{ir}.{piece}.{total}.{}", esc(serial))
                    }
                    (None, None) => format!("urn:epc:idpat:itip:{cp}.{ir}.{piece}.{total}.*"),
                    (Some(_), None) => {
                        return Err(not_representable(
                            "an ITIP with a lot but no serial has no EPC URI",
                        ));
                    }
                }
            }
        };
        Ok(urn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn check_digits_of_known_keys() {
        assert_eq!(check_digit("401234599999").unwrap(), 0);
        assert_eq!(check_digit("0401234511111111").unwrap(), 9);
        assert_eq!(check_digit("40A").unwrap_err().code(), "gs1_non_digit");
        assert!(Gtin::parse("4012345999990").is_ok());
        assert!(Gtin::parse("04012345999990").is_ok());
        assert!(Gtin::parse("96385074").is_ok());
        assert!(Gtin::parse("614141000036").is_ok());
        assert!(Gln::parse("4012345000115").is_ok());
        assert!(Sscc::parse("340123451111111111").is_ok());
    }

    #[test]
    fn gtin_errors_name_the_failing_digit() {
        let e = Gtin::parse("4012345000008").unwrap_err();
        assert_eq!(e.code(), "gs1_check_digit");
        assert_eq!(
            e.to_string(),
            "check digit of GTIN 4012345000008 is 8, expected 9 (position 13)"
        );
        let e = Gtin::parse("40123A5000009").unwrap_err();
        assert_eq!(e.code(), "gs1_non_digit");
        assert!(e.to_string().contains("position 6"), "{e}");
        let e = Gtin::parse("401234500000").unwrap_err();
        assert_eq!(e.code(), "gs1_check_digit");
        let e = Gtin::parse("40123450").unwrap_err();
        assert_eq!(e.code(), "gs1_check_digit");
        let e = Gtin::parse("4012345").unwrap_err();
        assert_eq!(e.code(), "gs1_length");
        assert!(e.to_string().contains("7 digits"), "{e}");
    }

    #[test]
    fn gtins_normalise_to_14_digits() {
        assert_eq!(Gtin::parse("96385074").unwrap().as_str(), "00000096385074");
        assert_eq!(
            Gtin::parse("614141000036").unwrap().as_str(),
            "00614141000036"
        );
        assert_eq!(
            Gtin::parse("4012345999990").unwrap().as_str(),
            "04012345999990"
        );
        assert_eq!(
            Gtin::parse("4012345999990").unwrap().to_shortest(),
            "4012345999990"
        );
        assert_eq!(Gtin::parse("96385074").unwrap().to_shortest(), "96385074");
    }

    #[test]
    fn serial_and_lot_use_set_82() {
        assert!(SerialNumber::parse("!\"%&'()*+,-./:;<=>?_").is_ok());
        assert!(Lot::parse("Az09").is_ok());
        let e = SerialNumber::parse("AB 1").unwrap_err();
        assert_eq!(e.code(), "gs1_charset");
        assert!(e.to_string().contains("position 3"), "{e}");
        assert_eq!(
            SerialNumber::parse("ABé").unwrap_err().code(),
            "gs1_charset"
        );
        assert_eq!(Lot::parse("").unwrap_err().code(), "gs1_field_length");
        assert_eq!(
            Lot::parse(&"1".repeat(21)).unwrap_err().code(),
            "gs1_field_length"
        );
        assert!(Lot::parse(&"1".repeat(20)).is_ok());
    }

    #[test]
    fn typed_values_display_parse_and_serde() {
        let sgtin: Sgtin = "urn:epc:id:sgtin:0614141.812345.6789%2F%26%25%22!%3F()"
            .parse()
            .unwrap();
        assert_eq!(sgtin.gtin.as_str(), "80614141123458");
        assert_eq!(sgtin.serial.as_str(), "6789/&%\"!?()");
        let s = sgtin.to_string();
        assert_eq!(
            s,
            "https://id.gs1.org/01/80614141123458/21/6789%2F%26%25%22%21%3F%28%29"
        );
        assert_eq!(s.parse::<Sgtin>().unwrap(), sgtin);
        assert_eq!(
            sgtin.to_epc_urn(7).unwrap(),
            "urn:epc:id:sgtin:0614141.812345.6789%2F%26%25%22!%3F()"
        );
        let json = serde_json::to_string(&sgtin).unwrap();
        assert_eq!(serde_json::from_str::<Sgtin>(&json).unwrap(), sgtin);

        let lgtin: Lgtin = "https://example.com/01/4012345123456/10/Lot987"
            .parse()
            .unwrap();
        assert_eq!(
            lgtin.to_string(),
            "https://id.gs1.org/01/04012345123456/10/Lot987"
        );
        assert_eq!(
            lgtin.to_epc_urn(7).unwrap(),
            "urn:epc:class:lgtin:4012345.012345.Lot987"
        );
        let gtin: Gtin = serde_json::from_str("\"4012345999990\"").unwrap();
        assert_eq!(serde_json::to_string(&gtin).unwrap(), "\"04012345999990\"");
        assert!(serde_json::from_str::<Gln>("\"4012345000116\"").is_err());
        assert!(
            "https://id.gs1.org/01/04012345123456"
                .parse::<Sgtin>()
                .is_err()
        );
    }

    /// EPC URI → canonical Digital Link for every EPC scheme EPCIS uses (values from the CBV
    /// event-hash examples).
    #[test]
    fn epc_urns_convert_to_digital_links() {
        let cases = [
            (
                "urn:epc:id:sgtin:4012345.011111.9876",
                "https://id.gs1.org/01/04012345111118/21/9876",
            ),
            (
                "urn:epc:id:sgtin:415056789012.0.987654",
                "https://id.gs1.org/01/04150567890128/21/987654",
            ),
            (
                "urn:epc:id:sgtin:4012345.011111.98%22",
                "https://id.gs1.org/01/04012345111118/21/98%22",
            ),
            (
                "urn:epc:id:sscc:4012345.3111111111",
                "https://id.gs1.org/00/340123451111111111",
            ),
            (
                "urn:epc:id:sgln:4012345.00005.122",
                "https://id.gs1.org/414/4012345000054/254/122",
            ),
            (
                "urn:epc:id:sgln:4012345.00005.0",
                "https://id.gs1.org/414/4012345000054",
            ),
            (
                "urn:epc:id:grai:4012345.00022.334455",
                "https://id.gs1.org/8003/04012345000221334455",
            ),
            (
                "urn:epc:id:giai:4012345.ABC345",
                "https://id.gs1.org/8004/4012345ABC345",
            ),
            (
                "urn:epc:id:gsrn:4012345.0000006765",
                "https://id.gs1.org/8018/401234500000067657",
            ),
            (
                "urn:epc:id:gsrnp:4012345.0000000007",
                "https://id.gs1.org/8017/401234500000000074",
            ),
            (
                "urn:epc:id:gdti:4012345.00009.PO-4711",
                "https://id.gs1.org/253/4012345000092PO-4711",
            ),
            (
                "urn:epc:id:gdti:987659999999..9",
                "https://id.gs1.org/253/98765999999929",
            ),
            (
                "urn:epc:id:cpi:0614141.11111111111111-A%23%2F.1234",
                "https://id.gs1.org/8010/061414111111111111111-A%23%2F/8011/1234",
            ),
            (
                "urn:epc:id:sgcn:4012345.99999.44",
                "https://id.gs1.org/255/401234599999044",
            ),
            (
                "urn:epc:id:ginc:0614141.xyz47%2F11",
                "https://id.gs1.org/401/0614141xyz47%2F11",
            ),
            (
                "urn:epc:id:gsin:4012345.222333444",
                "https://id.gs1.org/402/40123452223334442",
            ),
            (
                "urn:epc:id:itip:4012345.011111.01.02.987",
                "https://id.gs1.org/8006/040123451111180102/21/987",
            ),
            (
                "urn:epc:id:upui:1234567.098765.51qIgY)%3C%26Jp3*j7'SDB",
                "https://id.gs1.org/01/01234567987651/235/51qIgY%29%3C%26Jp3%2Aj7'SDB",
            ),
            (
                "urn:epc:id:pgln:4000001.00000",
                "https://id.gs1.org/417/4000001000005",
            ),
            (
                "urn:epc:id:pgln:999999999999.",
                "https://id.gs1.org/417/9999999999994",
            ),
            (
                "urn:epc:class:lgtin:4012345.012345.Lot987",
                "https://id.gs1.org/01/04012345123456/10/Lot987",
            ),
            (
                "urn:epc:idpat:sgtin:4054739.099914.*",
                "https://id.gs1.org/01/04054739999148",
            ),
            (
                "urn:epc:idpat:grai:4012345.66666.*",
                "https://id.gs1.org/8003/04012345666663",
            ),
            (
                "urn:epc:idpat:gdti:4012345.55555.*",
                "https://id.gs1.org/253/4012345555554",
            ),
            (
                "urn:epc:idpat:sgcn:4012345.99999.*",
                "https://id.gs1.org/255/4012345999990",
            ),
            (
                "urn:epc:idpat:cpi:4012345.ABC.*",
                "https://id.gs1.org/8010/4012345ABC",
            ),
            (
                "urn:epc:idpat:itip:4012345.012345.01.02.*",
                "https://id.gs1.org/8006/040123451234560102",
            ),
        ];
        for (urn, dl) in cases {
            let got = epc_urn_to_digital_link(urn).unwrap_or_else(|e| panic!("{urn}: {e}"));
            assert_eq!(got.to_string(), dl, "{urn}");
            let gcp_len = urn
                .rsplit(':')
                .next()
                .unwrap()
                .split('.')
                .next()
                .unwrap()
                .len();
            // Back to the URN; TDS escapes are re-applied, so compare decoded forms.
            let back = got
                .to_epc_urn(gcp_len)
                .unwrap_or_else(|e| panic!("{dl}: {e}"));
            let decode = |s: &str| percent_decode_str(s).decode_utf8().unwrap().into_owned();
            assert_eq!(decode(&back), decode(urn), "{dl}");
        }
    }

    #[test]
    fn unsupported_and_malformed_epc_uris_are_errors() {
        let code = |s: &str| epc_urn_to_digital_link(s).unwrap_err().code();
        assert_eq!(
            code("urn:epc:id:usdod:2S194.12345678901"),
            "epc_unsupported_scheme"
        );
        assert_eq!(
            code("urn:epc:id:adi:2S194..12345678901"),
            "epc_unsupported_scheme"
        );
        assert_eq!(
            code("urn:epc:tag:sgtin-96:3.0614141.812345.6789"),
            "epc_unsupported_scheme"
        );
        assert_eq!(code("https://example.com"), "epc_unsupported_scheme");
        assert_eq!(code("urn:epc:id:sgtin:0614141.812345"), "epc_malformed_uri");
        assert_eq!(
            code("urn:epc:id:sgtin:0614141.81234.6789"),
            "epc_malformed_uri"
        );
        assert_eq!(
            code("urn:epc:id:sgtin:06141.8123456.6789"),
            "epc_malformed_uri"
        );
        assert_eq!(
            code("urn:epc:id:sgtin:0614141.812345.67/89"),
            "epc_malformed_uri"
        );
        assert_eq!(
            code("urn:epc:id:sgtin:0614141.812345.67%G9"),
            "epc_malformed_uri"
        );
        assert_eq!(code("urn:epc:id:sgtin:0614141.812345.67 89"), "gs1_charset");
        assert_eq!(code("urn:epc:id:sgtin:0614141.812345."), "gs1_field_length");
        assert_eq!(code("urn:epc:id:sgtin:061414A.812345.1"), "gs1_non_digit");
        assert_eq!(
            code("urn:epc:idpat:sgtin:0614141.812345.1"),
            "epc_malformed_uri"
        );
    }

    #[test]
    fn digital_link_to_urn_needs_a_fitting_prefix_length() {
        let dl = DigitalLink::parse("https://id.gs1.org/01/04012345111118/21/9876").unwrap();
        assert_eq!(
            dl.to_epc_urn(7).unwrap(),
            "urn:epc:id:sgtin:4012345.011111.9876"
        );
        assert_eq!(
            dl.to_epc_urn(9).unwrap(),
            "urn:epc:id:sgtin:401234511.0111.9876"
        );
        assert_eq!(dl.to_epc_urn(5).unwrap_err().code(), "gs1_company_prefix");
        assert_eq!(dl.to_epc_urn(13).unwrap_err().code(), "gs1_company_prefix");
        let cpv = DigitalLink::parse("https://id.gs1.org/01/04012345111118/22/2A/21/9876").unwrap();
        assert_eq!(
            cpv.to_epc_urn(7).unwrap_err().code(),
            "epc_not_representable"
        );
    }

    fn gtin_strategy() -> impl Strategy<Value = String> {
        proptest::collection::vec(0u8..10, 13).prop_map(|d| {
            let body: String = d.iter().map(|x| char::from(b'0' + x)).collect();
            with_check_digit(&body)
        })
    }

    fn cset82_string(max: usize) -> impl Strategy<Value = String> {
        let chars: Vec<char> = (0u8..128)
            .map(char::from)
            .filter(|c| is_cset82(*c))
            .collect();
        proptest::collection::vec(proptest::sample::select(chars), 1..=max)
            .prop_map(|v| v.into_iter().collect())
    }

    proptest! {
        #[test]
        fn sgtin_urn_round_trips(gtin in gtin_strategy(), serial in cset82_string(20), gcp_len in 6usize..=12) {
            let sgtin = Sgtin::new(Gtin::parse(&gtin).unwrap(), SerialNumber::parse(&serial).unwrap());
            let urn = sgtin.to_epc_urn(gcp_len).unwrap();
            let back: Sgtin = urn.parse().unwrap();
            prop_assert_eq!(&back, &sgtin);
            let via_dl: Sgtin = sgtin.to_string().parse().unwrap();
            prop_assert_eq!(via_dl, sgtin);
        }

        #[test]
        fn any_single_digit_change_is_detected(gtin in gtin_strategy(), pos in 0usize..14, delta in 1u8..10) {
            let mut bytes = gtin.into_bytes();
            bytes[pos] = b'0' + (bytes[pos] - b'0' + delta) % 10;
            let changed = String::from_utf8(bytes).unwrap();
            prop_assert_eq!(Gtin::parse(&changed).unwrap_err().code(), "gs1_check_digit");
        }
    }
}
