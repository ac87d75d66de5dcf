//! GS1 Digital Link URIs (GS1 Digital Link Standard: URI Syntax 1.2):
//! `https://{domain}/{optional path prefix}/{primary key AI}/{value}/{qualifier AI}/{value}…?{data
//! attributes}`.
//!
//! Parsing accepts any domain, a path prefix, the numeric AIs and the short names (`gtin`, `lot`,
//! `ser`, …), percent-decodes values and validates them (check digits, character sets, the order
//! of key qualifiers). Building always writes numeric AIs and percent-encodes values.

use std::fmt;
use std::str::FromStr;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::gs1::{
    self, Gln, Gs1Error, Gtin, Lot, SerialNumber, Sscc, is_cset39, validate_chars, validate_cset82,
    validate_numeric_field,
};

/// The domain of canonical GS1 Digital Link URIs.
pub const CANONICAL_DOMAIN: &str = "id.gs1.org";

/// Characters written as themselves in path values: RFC 3986 unreserved characters plus `'`,
/// `;` and `=`, which are valid in a path segment and which the GS1 Digital Link percent-encoding
/// table does not list. Every other character of GS1 set 82 (`! " % & ( ) * + , / : < > ?`) is
/// percent-encoded, as the CBV event hash vectors show.
const PATH_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'\'')
    .remove(b';')
    .remove(b'=');

/// Query values additionally escape `=` and `;`, so a value can never be mistaken for a
/// separator.
const QUERY_VALUE: &AsciiSet = &PATH_VALUE.add(b'=').add(b';');

/// Errors of GS1 Digital Link parsing and building.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DlError {
    #[error("{uri:?} is not an http(s) URI")]
    Scheme { uri: String },
    #[error("{uri:?} has no valid domain")]
    Authority { uri: String },
    #[error("{uri:?}: {reason}")]
    PercentEncoding { uri: String, reason: String },
    #[error("path segment {segment:?} of {uri:?} has characters that must be percent-encoded")]
    PathPrefix { uri: String, segment: String },
    #[error("{uri:?} has no GS1 primary key in its path{detail}")]
    MissingPrimaryKey { uri: String, detail: String },
    #[error("{qualifier} is not a key qualifier of {key} (AI {key_ai})")]
    QualifierNotAllowed {
        qualifier: String,
        key: &'static str,
        key_ai: &'static str,
    },
    #[error("{earlier} must come before {later}")]
    QualifierOrder { earlier: String, later: String },
    #[error("{qualifier} appears twice")]
    DuplicateQualifier { qualifier: String },
    #[error("{name} (AI {ai}): {source}")]
    InvalidValue {
        ai: &'static str,
        name: &'static str,
        source: Gs1Error,
    },
    #[error("data attribute AI {ai} = {value:?}: {reason}")]
    Attribute {
        ai: String,
        value: String,
        reason: String,
    },
    #[error("data attribute AI {ai} appears twice")]
    DuplicateAttribute { ai: String },
    #[error("AI {ai} is a primary key or key qualifier and belongs in the path, not the query")]
    KeyInQuery { ai: String },
}

impl DlError {
    /// Stable machine-readable code of the error kind. Invalid key or qualifier values carry the
    /// code of the underlying GS1 error (e.g. `gs1_check_digit`).
    pub fn code(&self) -> &'static str {
        match self {
            DlError::Scheme { .. } => "dl_scheme",
            DlError::Authority { .. } => "dl_domain",
            DlError::PercentEncoding { .. } => "dl_percent_encoding",
            DlError::PathPrefix { .. } => "dl_path_prefix",
            DlError::MissingPrimaryKey { .. } => "dl_missing_primary_key",
            DlError::QualifierNotAllowed { .. } => "dl_qualifier_not_allowed",
            DlError::QualifierOrder { .. } => "dl_qualifier_order",
            DlError::DuplicateQualifier { .. } => "dl_duplicate_qualifier",
            DlError::InvalidValue { source, .. } => source.code(),
            DlError::Attribute { .. } => "dl_attribute",
            DlError::DuplicateAttribute { .. } => "dl_duplicate_attribute",
            DlError::KeyInQuery { .. } => "dl_key_in_query",
        }
    }

    /// The GS1 validation error inside, if this is one.
    pub fn into_gs1(self) -> Result<Gs1Error, DlError> {
        match self {
            DlError::InvalidValue { source, .. } => Ok(source),
            other => Err(other),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Primary keys and qualifiers
// ---------------------------------------------------------------------------------------------

/// The GS1 identification key a Digital Link URI is about. GTIN, GLN and SSCC are typed; the
/// other keys hold their AI value as a string, which [`DigitalLink::new`] validates.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PrimaryKey {
    /// AI 01, always 14 digits.
    Gtin(Gtin),
    /// AI 00.
    Sscc(Sscc),
    /// AI 414, a physical location.
    Gln(Gln),
    /// AI 417, a party.
    Party(Gln),
    /// AI 8003: `0`, the 13-digit GRAI with check digit, optional serial (up to 16).
    Grai(String),
    /// AI 8004.
    Giai(String),
    /// AI 8018.
    Gsrn(String),
    /// AI 8017.
    Gsrnp(String),
    /// AI 253: 13 digits with check digit, optional serial (up to 17).
    Gdti(String),
    /// AI 255: 13 digits with check digit, optional numeric serial (up to 12).
    Gcn(String),
    /// AI 8010.
    Cpid(String),
    /// AI 401.
    Ginc(String),
    /// AI 402.
    Gsin(String),
    /// AI 8006: GTIN-14, piece number and total count (18 digits).
    Itip(String),
}

/// (numeric AI, short name, display name) of the primary keys.
const PRIMARY_AIS: &[(&str, &str, &str)] = &[
    ("01", "gtin", "GTIN"),
    ("00", "sscc", "SSCC"),
    ("414", "gln", "GLN"),
    ("417", "party", "party GLN"),
    ("8003", "grai", "GRAI"),
    ("8004", "giai", "GIAI"),
    ("8018", "gsrn", "GSRN"),
    ("8017", "gsrnp", "GSRN-P"),
    ("253", "gdti", "GDTI"),
    ("255", "gcn", "GCN"),
    ("8010", "cpid", "CPID"),
    ("401", "ginc", "GINC"),
    ("402", "gsin", "GSIN"),
    ("8006", "itip", "ITIP"),
];

fn primary_ai(segment: &str) -> Option<(&'static str, &'static str)> {
    PRIMARY_AIS
        .iter()
        .find(|(ai, short, _)| *ai == segment || *short == segment)
        .map(|(ai, _, name)| (*ai, *name))
}

impl PrimaryKey {
    /// Parses a key from its AI (numeric or short name) and decoded value.
    pub fn parse(ai: &str, value: &str) -> Result<Self, DlError> {
        let Some((ai, name)) = primary_ai(ai) else {
            return Err(DlError::MissingPrimaryKey {
                uri: format!("/{ai}/{value}"),
                detail: format!(" ({ai:?} is not a primary key AI)"),
            });
        };
        let invalid = |source: Gs1Error| DlError::InvalidValue { ai, name, source };
        let v = value.to_owned();
        let key = match ai {
            "01" => PrimaryKey::Gtin(Gtin::parse(value).map_err(invalid)?),
            "00" => PrimaryKey::Sscc(Sscc::parse(value).map_err(invalid)?),
            "414" => PrimaryKey::Gln(Gln::parse(value).map_err(invalid)?),
            "417" => PrimaryKey::Party(Gln::parse(value).map_err(invalid)?),
            "8003" => PrimaryKey::Grai(v),
            "8004" => PrimaryKey::Giai(v),
            "8018" => PrimaryKey::Gsrn(v),
            "8017" => PrimaryKey::Gsrnp(v),
            "253" => PrimaryKey::Gdti(v),
            "255" => PrimaryKey::Gcn(v),
            "8010" => PrimaryKey::Cpid(v),
            "401" => PrimaryKey::Ginc(v),
            "402" => PrimaryKey::Gsin(v),
            _ => PrimaryKey::Itip(v),
        };
        key.validate()?;
        Ok(key)
    }

    /// The numeric AI.
    pub fn ai(&self) -> &'static str {
        match self {
            PrimaryKey::Gtin(_) => "01",
            PrimaryKey::Sscc(_) => "00",
            PrimaryKey::Gln(_) => "414",
            PrimaryKey::Party(_) => "417",
            PrimaryKey::Grai(_) => "8003",
            PrimaryKey::Giai(_) => "8004",
            PrimaryKey::Gsrn(_) => "8018",
            PrimaryKey::Gsrnp(_) => "8017",
            PrimaryKey::Gdti(_) => "253",
            PrimaryKey::Gcn(_) => "255",
            PrimaryKey::Cpid(_) => "8010",
            PrimaryKey::Ginc(_) => "401",
            PrimaryKey::Gsin(_) => "402",
            PrimaryKey::Itip(_) => "8006",
        }
    }

    /// The key's name, e.g. "GTIN".
    pub fn name(&self) -> &'static str {
        primary_ai(self.ai()).map_or("GS1 key", |(_, name)| name)
    }

    /// The AI value (a GTIN always as 14 digits).
    pub fn value(&self) -> &str {
        match self {
            PrimaryKey::Gtin(g) => g.as_str(),
            PrimaryKey::Sscc(s) => s.as_str(),
            PrimaryKey::Gln(g) | PrimaryKey::Party(g) => g.as_str(),
            PrimaryKey::Grai(v)
            | PrimaryKey::Giai(v)
            | PrimaryKey::Gsrn(v)
            | PrimaryKey::Gsrnp(v)
            | PrimaryKey::Gdti(v)
            | PrimaryKey::Gcn(v)
            | PrimaryKey::Cpid(v)
            | PrimaryKey::Ginc(v)
            | PrimaryKey::Gsin(v)
            | PrimaryKey::Itip(v) => v,
        }
    }

    /// Validates the string-valued keys (the typed ones are valid by construction).
    fn validate(&self) -> Result<(), DlError> {
        let (ai, name) = (self.ai(), self.name());
        let invalid = |source: Gs1Error| DlError::InvalidValue { ai, name, source };
        let v = self.value();
        match self {
            PrimaryKey::Gtin(_)
            | PrimaryKey::Sscc(_)
            | PrimaryKey::Gln(_)
            | PrimaryKey::Party(_) => Ok(()),
            PrimaryKey::Grai(_) => {
                let tail = gs1::validate_numeric_head(name, v, 14).map_err(invalid)?;
                if !v.starts_with('0') {
                    return Err(invalid(Gs1Error::Charset {
                        field: "GRAI (AI 8003) filler digit",
                        value: v.to_owned(),
                        position: 1,
                        found: v.chars().next().unwrap_or(' '),
                        charset: "{0}",
                    }));
                }
                validate_cset82("GRAI serial", tail, 0, 16).map_err(invalid)
            }
            PrimaryKey::Gdti(_) => {
                let tail = gs1::validate_numeric_head(name, v, 13).map_err(invalid)?;
                validate_cset82("GDTI serial", tail, 0, 17).map_err(invalid)
            }
            PrimaryKey::Gcn(_) => {
                let tail = gs1::validate_numeric_head(name, v, 13).map_err(invalid)?;
                if tail.is_empty() {
                    Ok(())
                } else {
                    validate_numeric_field("GCN serial", tail, 1, 12).map_err(invalid)
                }
            }
            PrimaryKey::Gsrn(_) | PrimaryKey::Gsrnp(_) => {
                gs1::validate_fixed_key(name, v, 18).map_err(invalid)
            }
            PrimaryKey::Gsin(_) => gs1::validate_fixed_key(name, v, 17).map_err(invalid),
            PrimaryKey::Itip(_) => {
                gs1::validate_numeric_head(name, v, 14).map_err(invalid)?;
                validate_numeric_field(name, v, 18, 18).map_err(invalid)
            }
            PrimaryKey::Giai(_) => validate_cset82(name, v, 1, 30).map_err(invalid),
            PrimaryKey::Ginc(_) => validate_cset82(name, v, 1, 30).map_err(invalid),
            PrimaryKey::Cpid(_) => validate_chars(name, v, 1, 30, "39", is_cset39).map_err(invalid),
        }
    }

    /// Key qualifiers this key takes, in the order they must appear.
    fn qualifier_order(&self) -> &'static [Qualifier] {
        match self {
            PrimaryKey::Gtin(_) => &[
                Qualifier::Cpv,
                Qualifier::Lot,
                Qualifier::Serial,
                Qualifier::Tpx,
            ],
            PrimaryKey::Itip(_) => &[Qualifier::Cpv, Qualifier::Lot, Qualifier::Serial],
            PrimaryKey::Gln(_) => &[Qualifier::GlnExtension],
            PrimaryKey::Cpid(_) => &[Qualifier::ComponentSerial],
            PrimaryKey::Gsrn(_) | PrimaryKey::Gsrnp(_) => &[Qualifier::Srin],
            _ => &[],
        }
    }
}

/// Key qualifiers: AIs that refine a primary key in the URI path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Qualifier {
    /// AI 22, consumer product variant.
    Cpv,
    /// AI 10, batch/lot.
    Lot,
    /// AI 21, serial number.
    Serial,
    /// AI 235, third party controlled serial extension of a GTIN (EPC scheme `upui`).
    Tpx,
    /// AI 254, GLN extension component.
    GlnExtension,
    /// AI 8011, component/part identifier serial number.
    ComponentSerial,
    /// AI 8019, service relation instance number.
    Srin,
}

const QUALIFIERS: &[Qualifier] = &[
    Qualifier::Cpv,
    Qualifier::Lot,
    Qualifier::Serial,
    Qualifier::Tpx,
    Qualifier::GlnExtension,
    Qualifier::ComponentSerial,
    Qualifier::Srin,
];

impl Qualifier {
    pub fn ai(self) -> &'static str {
        match self {
            Qualifier::Cpv => "22",
            Qualifier::Lot => "10",
            Qualifier::Serial => "21",
            Qualifier::Tpx => "235",
            Qualifier::GlnExtension => "254",
            Qualifier::ComponentSerial => "8011",
            Qualifier::Srin => "8019",
        }
    }

    pub fn short_name(self) -> &'static str {
        match self {
            Qualifier::Cpv => "cpv",
            Qualifier::Lot => "lot",
            Qualifier::Serial => "ser",
            Qualifier::Tpx => "tpx",
            Qualifier::GlnExtension => "glnx",
            Qualifier::ComponentSerial => "cpsn",
            Qualifier::Srin => "srin",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Qualifier::Cpv => "consumer product variant",
            Qualifier::Lot => "lot",
            Qualifier::Serial => "serial number",
            Qualifier::Tpx => "third party controlled serial extension",
            Qualifier::GlnExtension => "GLN extension",
            Qualifier::ComponentSerial => "component/part serial number",
            Qualifier::Srin => "service relation instance number",
        }
    }

    fn from_segment(segment: &str) -> Option<Self> {
        QUALIFIERS
            .iter()
            .copied()
            .find(|q| q.ai() == segment || q.short_name() == segment)
    }

    fn label(self) -> String {
        format!("{} (AI {})", self.name(), self.ai())
    }

    fn validate(self, value: &str) -> Result<(), DlError> {
        let invalid = |source: Gs1Error| DlError::InvalidValue {
            ai: self.ai(),
            name: self.name(),
            source,
        };
        match self {
            Qualifier::Cpv | Qualifier::Lot | Qualifier::Serial | Qualifier::GlnExtension => {
                validate_cset82(self.name(), value, 1, 20).map_err(invalid)
            }
            Qualifier::Tpx => validate_cset82(self.name(), value, 1, 28).map_err(invalid),
            Qualifier::ComponentSerial => {
                validate_numeric_field(self.name(), value, 1, 12).map_err(invalid)
            }
            Qualifier::Srin => validate_numeric_field(self.name(), value, 1, 10).map_err(invalid),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Data attributes
// ---------------------------------------------------------------------------------------------

/// A GS1 date (YYMMDD) as used by AIs 11–17. Day 00 means "end of the month", which the GS1
/// General Specifications allow, so this is not a calendar date type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Gs1Date {
    yy: u8,
    mm: u8,
    dd: u8,
}

impl Gs1Date {
    pub fn new(yy: u8, mm: u8, dd: u8) -> Result<Self, String> {
        if yy > 99 || !(1..=12).contains(&mm) {
            return Err(format!("{yy:02}{mm:02}{dd:02} has no month {mm}"));
        }
        // The century is chosen by a sliding window around today; years that are multiples of 4
        // are leap years throughout 2000–2099, which that window covers.
        let days = match mm {
            2 if yy.is_multiple_of(4) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        if dd > days {
            return Err(format!("{yy:02}{mm:02}{dd:02}: month {mm} has no day {dd}"));
        }
        Ok(Gs1Date { yy, mm, dd })
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        if s.len() != 6 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{s:?} is not a YYMMDD date"));
        }
        let n = |i: usize| (s.as_bytes()[i] - b'0') * 10 + (s.as_bytes()[i + 1] - b'0');
        Gs1Date::new(n(0), n(2), n(4))
    }

    pub fn year_in_century(&self) -> u8 {
        self.yy
    }
    pub fn month(&self) -> u8 {
        self.mm
    }
    /// Day of month; 0 means the last day of the month.
    pub fn day(&self) -> u8 {
        self.dd
    }
}

impl fmt::Display for Gs1Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}{:02}{:02}", self.yy, self.mm, self.dd)
    }
}

impl FromStr for Gs1Date {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Gs1Date::parse(s)
    }
}

/// Validates a data attribute value for the AIs whose format matters to Trellis (dates, measures,
/// counts); other AIs only need GS1 set 82.
fn validate_attribute(ai: &str, value: &str) -> Result<(), DlError> {
    let bad = |reason: String| DlError::Attribute {
        ai: ai.to_owned(),
        value: value.to_owned(),
        reason,
    };
    if primary_ai(ai).is_some() || QUALIFIERS.iter().any(|q| q.ai() == ai) {
        return Err(DlError::KeyInQuery { ai: ai.to_owned() });
    }
    let digits = |min: usize, max: usize| -> Result<(), DlError> {
        if (min..=max).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_digit()) {
            Ok(())
        } else if min == max {
            Err(bad(format!("expected {min} digits")))
        } else {
            Err(bad(format!("expected {min} to {max} digits")))
        }
    };
    let ai_bytes = ai.as_bytes();
    match ai {
        "11" | "12" | "13" | "15" | "16" | "17" => Gs1Date::parse(value).map(|_| ()).map_err(bad),
        "7003" => {
            digits(10, 10)?;
            Gs1Date::parse(&value[..6]).map_err(bad)?;
            let (hh, mi) = (&value[6..8], &value[8..10]);
            if hh > "23" || mi > "59" {
                return Err(bad(format!("{hh}:{mi} is not a time of day")));
            }
            Ok(())
        }
        "30" | "37" => digits(1, 8),
        // 310n–369n: trade and logistic measures, six digits with n implied decimals.
        _ if ai.len() == 4
            && ai_bytes.iter().all(u8::is_ascii_digit)
            && ai_bytes[0] == b'3'
            && (b'1'..=b'6').contains(&ai_bytes[1]) =>
        {
            digits(6, 6)
        }
        _ => validate_cset82("data attribute", value, 1, 90).map_err(|source| DlError::Attribute {
            ai: ai.to_owned(),
            value: value.to_owned(),
            reason: source.to_string(),
        }),
    }
}

fn is_attribute_ai(key: &str) -> bool {
    (2..=4).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_digit())
}

// ---------------------------------------------------------------------------------------------
// DigitalLink
// ---------------------------------------------------------------------------------------------

/// A GS1 Digital Link URI.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DigitalLink {
    https: bool,
    domain: String,
    /// Path segments before the key, kept percent-encoded as given.
    prefix: Vec<String>,
    key: PrimaryKey,
    /// Decoded qualifier values, in the standard order.
    qualifiers: Vec<(Qualifier, String)>,
    /// GS1 data attributes (numeric AI keys), decoded, in the given order.
    attributes: Vec<(String, String)>,
    /// Other query parameters (e.g. `linkType`), decoded, in the given order.
    params: Vec<(String, String)>,
}

impl DigitalLink {
    /// Starts a Digital Link on `domain`, which may carry a scheme (`https://` is the default) and
    /// a path prefix, e.g. `"example.com"`, `"https://example.com/dl"`, `"localhost:8080"`.
    pub fn new(domain: &str, key: PrimaryKey) -> Result<Self, DlError> {
        key.validate()?;
        let (https, rest) = match split_scheme(domain) {
            Some((https, rest)) => (https, rest),
            None => (true, domain),
        };
        let rest = rest.trim_end_matches('/');
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        validate_authority(domain, authority)?;
        let prefix = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| validate_prefix_segment(domain, s).map(|()| s.to_owned()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DigitalLink {
            https,
            domain: authority.to_owned(),
            prefix,
            key,
            qualifiers: Vec::new(),
            attributes: Vec::new(),
            params: Vec::new(),
        })
    }

    /// A Digital Link on `id.gs1.org` for an already valid key.
    pub(crate) fn canonical_for(key: PrimaryKey) -> Self {
        DigitalLink {
            https: true,
            domain: CANONICAL_DOMAIN.to_owned(),
            prefix: Vec::new(),
            key,
            qualifiers: Vec::new(),
            attributes: Vec::new(),
            params: Vec::new(),
        }
    }

    /// Adds a qualifier whose value the caller has already validated, keeping the standard order.
    pub(crate) fn with_validated_qualifier(mut self, qualifier: Qualifier, value: &str) -> Self {
        self.insert_qualifier(qualifier, value.to_owned());
        self
    }

    fn insert_qualifier(&mut self, qualifier: Qualifier, value: String) {
        let order = self.key.qualifier_order();
        let rank = |q: Qualifier| order.iter().position(|o| *o == q).unwrap_or(usize::MAX);
        let at = self
            .qualifiers
            .iter()
            .position(|(q, _)| rank(*q) > rank(qualifier))
            .unwrap_or(self.qualifiers.len());
        self.qualifiers.insert(at, (qualifier, value));
    }

    /// Adds a key qualifier; the builder puts qualifiers in the standard order itself.
    pub fn with_qualifier(mut self, qualifier: Qualifier, value: &str) -> Result<Self, DlError> {
        qualifier.validate(value)?;
        self.check_allowed(qualifier)?;
        if self.qualifier(qualifier).is_some() {
            return Err(DlError::DuplicateQualifier {
                qualifier: qualifier.label(),
            });
        }
        self.check_tpx_exclusive(qualifier, self.qualifiers.iter().map(|(q, _)| *q))?;
        self.insert_qualifier(qualifier, value.to_owned());
        Ok(self)
    }

    pub fn lot(self, lot: Lot) -> Result<Self, DlError> {
        self.with_qualifier(Qualifier::Lot, lot.as_str())
    }

    pub fn serial(self, serial: SerialNumber) -> Result<Self, DlError> {
        self.with_qualifier(Qualifier::Serial, serial.as_str())
    }

    pub fn cpv(self, variant: &str) -> Result<Self, DlError> {
        self.with_qualifier(Qualifier::Cpv, variant)
    }

    pub fn gln_extension(self, extension: &str) -> Result<Self, DlError> {
        self.with_qualifier(Qualifier::GlnExtension, extension)
    }

    /// Adds a GS1 data attribute (numeric AI) to the query string.
    pub fn with_attribute(mut self, ai: &str, value: &str) -> Result<Self, DlError> {
        if !is_attribute_ai(ai) {
            return Err(DlError::Attribute {
                ai: ai.to_owned(),
                value: value.to_owned(),
                reason: "a GS1 application identifier has 2 to 4 digits".to_owned(),
            });
        }
        validate_attribute(ai, value)?;
        if self.attribute(ai).is_some() {
            return Err(DlError::DuplicateAttribute { ai: ai.to_owned() });
        }
        self.attributes.push((ai.to_owned(), value.to_owned()));
        Ok(self)
    }

    /// Sets a typed date attribute, replacing an earlier value of the same AI.
    fn with_date(mut self, ai: &str, date: Gs1Date) -> Self {
        self.attributes.retain(|(a, _)| a != ai);
        self.attributes.push((ai.to_owned(), date.to_string()));
        self
    }

    /// Expiration date (AI 17).
    pub fn expiry(self, date: Gs1Date) -> Self {
        self.with_date("17", date)
    }

    /// Best before date (AI 15).
    pub fn best_before(self, date: Gs1Date) -> Self {
        self.with_date("15", date)
    }

    /// Production date (AI 11).
    pub fn production_date(self, date: Gs1Date) -> Self {
        self.with_date("11", date)
    }

    /// Net weight in kilograms (AI 310n) from a decimal string such as `"1.5"`: n is the number
    /// of decimals given (at most 5) and the value must fit six digits.
    pub fn net_weight_kg(self, kg: &str) -> Result<Self, DlError> {
        let bad = |reason: &str| DlError::Attribute {
            ai: "310n".to_owned(),
            value: kg.to_owned(),
            reason: reason.to_owned(),
        };
        let (int, frac) = kg.split_once('.').unwrap_or((kg, ""));
        if int.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(bad("expected a decimal number such as 1.5"));
        }
        if frac.len() > 5 {
            return Err(bad("at most 5 decimals"));
        }
        let digits = format!("{int}{frac}");
        let digits = digits.trim_start_matches('0');
        if digits.len() > 6 {
            return Err(bad("does not fit the six digits of AI 310n"));
        }
        let ai = format!("310{}", frac.len());
        self.with_attribute(&ai, &format!("{digits:0>6}"))
    }

    /// Adds a non-GS1 query parameter (e.g. `linkType`).
    pub fn with_param(mut self, name: &str, value: &str) -> Self {
        self.params.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The same key and qualifiers on `https://id.gs1.org`, without path prefix or query string:
    /// the canonical GS1 Digital Link URI that names the identified thing.
    pub fn to_canonical(&self) -> DigitalLink {
        DigitalLink {
            https: true,
            domain: CANONICAL_DOMAIN.to_owned(),
            prefix: Vec::new(),
            key: self.key.clone(),
            qualifiers: self.qualifiers.clone(),
            attributes: Vec::new(),
            params: Vec::new(),
        }
    }

    /// Drops a qualifier if present.
    pub fn without_qualifier(mut self, qualifier: Qualifier) -> Self {
        self.qualifiers.retain(|(q, _)| *q != qualifier);
        self
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Path segments between the domain and the key (percent-encoded as given).
    pub fn path_prefix(&self) -> &[String] {
        &self.prefix
    }

    pub fn key(&self) -> &PrimaryKey {
        &self.key
    }

    pub fn qualifier(&self, qualifier: Qualifier) -> Option<&str> {
        self.qualifiers
            .iter()
            .find(|(q, _)| *q == qualifier)
            .map(|(_, v)| v.as_str())
    }

    pub fn qualifiers(&self) -> &[(Qualifier, String)] {
        &self.qualifiers
    }

    pub fn attribute(&self, ai: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(a, _)| a == ai)
            .map(|(_, v)| v.as_str())
    }

    pub fn attributes(&self) -> &[(String, String)] {
        &self.attributes
    }

    pub fn params(&self) -> &[(String, String)] {
        &self.params
    }

    pub fn expiry_date(&self) -> Option<Gs1Date> {
        self.attribute("17").and_then(|v| Gs1Date::parse(v).ok())
    }

    fn check_allowed(&self, qualifier: Qualifier) -> Result<(), DlError> {
        if self.key.qualifier_order().contains(&qualifier) {
            Ok(())
        } else {
            Err(DlError::QualifierNotAllowed {
                qualifier: qualifier.label(),
                key: self.key.name(),
                key_ai: self.key.ai(),
            })
        }
    }

    /// AI 235 identifies a GTIN instance on its own (EPC scheme `upui`), so it takes no other
    /// qualifier.
    fn check_tpx_exclusive(
        &self,
        added: Qualifier,
        mut present: impl Iterator<Item = Qualifier>,
    ) -> Result<(), DlError> {
        let conflict = if added == Qualifier::Tpx {
            present.next()
        } else if present.any(|q| q == Qualifier::Tpx) {
            Some(Qualifier::Tpx)
        } else {
            None
        };
        match conflict {
            Some(other) if other != added => Err(DlError::QualifierNotAllowed {
                qualifier: format!("{} together with {}", added.label(), other.label()),
                key: self.key.name(),
                key_ai: self.key.ai(),
            }),
            _ => Ok(()),
        }
    }

    /// Parses a Digital Link URI (see the module documentation).
    pub fn parse(uri: &str) -> Result<Self, DlError> {
        let (https, rest) = split_scheme(uri).ok_or_else(|| DlError::Scheme {
            uri: uri.to_owned(),
        })?;
        let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
        let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = before_query.split_once('/').unwrap_or((before_query, ""));
        validate_authority(uri, authority)?;
        let mut segments: Vec<&str> = path.split('/').collect();
        if segments.last() == Some(&"") {
            segments.pop();
        }

        // Key and qualifiers are (AI, value) pairs at the end of the path; whatever precedes the
        // primary key is a path prefix of the resolver. Scanning from the right keeps a prefix
        // that happens to look like an AI from being taken for one.
        let mut end = segments.len();
        let mut found_qualifiers = Vec::new();
        let mut primary = None;
        while end >= 2 {
            let (code, value) = (segments[end - 2], segments[end - 1]);
            if let Some((ai, _)) = primary_ai(code) {
                primary = Some((ai, value));
                end -= 2;
                break;
            }
            match Qualifier::from_segment(code) {
                Some(q) => found_qualifiers.push((q, value)),
                None => break,
            }
            end -= 2;
        }
        let Some((ai, raw_value)) = primary else {
            let detail = found_qualifiers
                .last()
                .map(|(q, _)| format!(" ({} has no primary key before it)", q.label()))
                .unwrap_or_default();
            return Err(DlError::MissingPrimaryKey {
                uri: uri.to_owned(),
                detail,
            });
        };
        for segment in &segments[..end] {
            validate_prefix_segment(uri, segment)?;
        }
        let key = PrimaryKey::parse(ai, &decode(uri, raw_value)?)?;
        let mut dl = DigitalLink {
            https,
            domain: authority.to_owned(),
            prefix: segments[..end].iter().map(|s| (*s).to_owned()).collect(),
            key,
            qualifiers: Vec::new(),
            attributes: Vec::new(),
            params: Vec::new(),
        };
        let order = dl.key.qualifier_order();
        let mut last: Option<(usize, Qualifier)> = None;
        for (q, raw) in found_qualifiers.into_iter().rev() {
            dl.check_allowed(q)?;
            let rank = order.iter().position(|o| *o == q).unwrap_or(usize::MAX);
            if let Some((last_rank, last_q)) = last {
                if rank == last_rank {
                    return Err(DlError::DuplicateQualifier {
                        qualifier: q.label(),
                    });
                }
                if rank < last_rank {
                    return Err(DlError::QualifierOrder {
                        earlier: q.label(),
                        later: last_q.label(),
                    });
                }
            }
            dl.check_tpx_exclusive(q, dl.qualifiers.iter().map(|(q, _)| *q))?;
            let value = decode(uri, raw)?;
            q.validate(&value)?;
            dl.qualifiers.push((q, value));
            last = Some((rank, q));
        }

        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (decode(uri, k)?, decode(uri, v)?);
            if is_attribute_ai(&k) {
                validate_attribute(&k, &v)?;
                if dl.attribute(&k).is_some() {
                    return Err(DlError::DuplicateAttribute { ai: k });
                }
                dl.attributes.push((k, v));
            } else {
                dl.params.push((k, v));
            }
        }
        Ok(dl)
    }
}

fn split_scheme(s: &str) -> Option<(bool, &str)> {
    let lower_starts = |p: &str| s.get(..p.len()).is_some_and(|h| h.eq_ignore_ascii_case(p));
    if lower_starts("https://") {
        Some((true, &s[8..]))
    } else if lower_starts("http://") {
        Some((false, &s[7..]))
    } else {
        None
    }
}

fn validate_authority(uri: &str, authority: &str) -> Result<(), DlError> {
    let ok = !authority.is_empty()
        && authority
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':' | '[' | ']'));
    if ok {
        Ok(())
    } else {
        Err(DlError::Authority {
            uri: uri.to_owned(),
        })
    }
}

/// A prefix segment must already be a valid URI path segment (RFC 3986 pchar or %XX).
fn validate_prefix_segment(uri: &str, segment: &str) -> Result<(), DlError> {
    let pchar = |c: char| {
        c.is_ascii_alphanumeric()
            || matches!(
                c,
                '-' | '.'
                    | '_'
                    | '~'
                    | '!'
                    | '$'
                    | '&'
                    | '\''
                    | '('
                    | ')'
                    | '*'
                    | '+'
                    | ','
                    | ';'
                    | '='
                    | ':'
                    | '@'
                    | '%'
            )
    };
    if segment.chars().all(pchar) {
        decode(uri, segment).map(|_| ())
    } else {
        Err(DlError::PathPrefix {
            uri: uri.to_owned(),
            segment: segment.to_owned(),
        })
    }
}

/// Strict percent-decoding: every `%` starts a two-hex-digit escape and the result is UTF-8.
fn decode(uri: &str, raw: &str) -> Result<String, DlError> {
    let bytes = raw.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%'
            && !(i + 2 < bytes.len()
                && bytes[i + 1].is_ascii_hexdigit()
                && bytes[i + 2].is_ascii_hexdigit())
        {
            return Err(DlError::PercentEncoding {
                uri: uri.to_owned(),
                reason: format!("{raw:?} has a '%' that does not start a %XX escape"),
            });
        }
    }
    percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| DlError::PercentEncoding {
            uri: uri.to_owned(),
            reason: format!("{raw:?} decodes to invalid UTF-8"),
        })
}

impl fmt::Display for DigitalLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.domain)?;
        for segment in &self.prefix {
            write!(f, "/{segment}")?;
        }
        write!(
            f,
            "/{}/{}",
            self.key.ai(),
            utf8_percent_encode(self.key.value(), PATH_VALUE)
        )?;
        for (q, v) in &self.qualifiers {
            write!(f, "/{}/{}", q.ai(), utf8_percent_encode(v, PATH_VALUE))?;
        }
        let query = self.attributes.iter().chain(&self.params);
        for (i, (k, v)) in query.enumerate() {
            let sep = if i == 0 { '?' } else { '&' };
            write!(
                f,
                "{sep}{}={}",
                utf8_percent_encode(k, QUERY_VALUE),
                utf8_percent_encode(v, QUERY_VALUE)
            )?;
        }
        Ok(())
    }
}

impl FromStr for DigitalLink {
    type Err = DlError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DigitalLink::parse(s)
    }
}

impl Serialize for DigitalLink {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DigitalLink {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        DigitalLink::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn gtin(s: &str) -> PrimaryKey {
        PrimaryKey::Gtin(Gtin::parse(s).unwrap())
    }

    #[test]
    fn builds_gtin_lot_serial_with_attributes() {
        let dl = DigitalLink::new("example.com", gtin("9506000134352"))
            .unwrap()
            .lot(Lot::parse("ABC/1").unwrap())
            .unwrap()
            .serial(SerialNumber::parse("X(1)").unwrap())
            .unwrap()
            .expiry(Gs1Date::parse("251231").unwrap())
            .net_weight_kg("1.5")
            .unwrap();
        assert_eq!(
            dl.to_string(),
            "https://example.com/01/09506000134352/10/ABC%2F1/21/X%281%29?17=251231&3101=000015"
        );
        assert_eq!(
            dl.to_canonical().to_string(),
            "https://id.gs1.org/01/09506000134352/10/ABC%2F1/21/X%281%29"
        );
        assert_eq!(DigitalLink::parse(&dl.to_string()).unwrap(), dl);
        assert_eq!(dl.expiry_date().unwrap().month(), 12);
    }

    #[test]
    fn builder_orders_qualifiers_and_rejects_foreign_ones() {
        let dl = DigitalLink::new("https://example.com/dl/", gtin("9506000134352"))
            .unwrap()
            .serial(SerialNumber::parse("S1").unwrap())
            .unwrap()
            .cpv("2A")
            .unwrap()
            .lot(Lot::parse("L1").unwrap())
            .unwrap();
        assert_eq!(
            dl.to_string(),
            "https://example.com/dl/01/09506000134352/22/2A/10/L1/21/S1"
        );
        let sscc = PrimaryKey::Sscc(Sscc::parse("340123451111111111").unwrap());
        let e = DigitalLink::new("example.com", sscc)
            .unwrap()
            .lot(Lot::parse("L1").unwrap())
            .unwrap_err();
        assert_eq!(e.code(), "dl_qualifier_not_allowed");
        let e = dl.clone().lot(Lot::parse("L2").unwrap()).unwrap_err();
        assert_eq!(e.code(), "dl_duplicate_qualifier");
        let e = dl.with_qualifier(Qualifier::Tpx, "AB").unwrap_err();
        assert_eq!(e.code(), "dl_qualifier_not_allowed");
        assert_eq!(
            DigitalLink::new("exa mple.com", gtin("9506000134352"))
                .unwrap_err()
                .code(),
            "dl_domain"
        );
        assert_eq!(
            DigitalLink::new("example.com", PrimaryKey::Giai("4012345 A".into()))
                .unwrap_err()
                .code(),
            "gs1_charset"
        );
    }

    #[test]
    fn parses_prefix_short_names_and_query() {
        let dl = DigitalLink::parse(
            "HTTPS://example.com/some/prefix/gtin/9506000134352/lot/AB%2F1/ser/12?17=260101&linkType=gs1:pip#x",
        )
        .unwrap();
        assert_eq!(dl.domain(), "example.com");
        assert_eq!(dl.path_prefix(), ["some", "prefix"]);
        assert_eq!(dl.key().value(), "09506000134352");
        assert_eq!(dl.qualifier(Qualifier::Lot), Some("AB/1"));
        assert_eq!(dl.qualifier(Qualifier::Serial), Some("12"));
        assert_eq!(dl.attribute("17"), Some("260101"));
        assert_eq!(dl.params(), [("linkType".to_owned(), "gs1:pip".to_owned())]);
        assert_eq!(
            dl.to_string(),
            "https://example.com/some/prefix/01/09506000134352/10/AB%2F1/21/12?17=260101&linkType=gs1%3Apip"
        );
        let gln = DigitalLink::parse("https://id.gs1.org/414/4012345000115/254/987").unwrap();
        assert_eq!(gln.qualifier(Qualifier::GlnExtension), Some("987"));
        let grai = DigitalLink::parse("https://x.org/8003/04012345666663AB").unwrap();
        assert_eq!(grai.key().value(), "04012345666663AB");
    }

    #[test]
    fn parse_errors_have_stable_codes() {
        let code = |s: &str| DigitalLink::parse(s).unwrap_err().code();
        assert_eq!(code("ftp://example.com/01/09506000134352"), "dl_scheme");
        assert_eq!(code("https:///01/09506000134352"), "dl_domain");
        assert_eq!(
            code("https://example.com/10/L1/21/S1"),
            "dl_missing_primary_key"
        );
        assert_eq!(code("https://example.com/po/123"), "dl_missing_primary_key");
        assert_eq!(
            code("https://example.com/01/09506000134352/21/S1/10/L1"),
            "dl_qualifier_order"
        );
        assert_eq!(
            code("https://example.com/01/09506000134352/21/S1/21/S2"),
            "dl_duplicate_qualifier"
        );
        assert_eq!(
            code("https://example.com/00/340123451111111111/10/L1"),
            "dl_qualifier_not_allowed"
        );
        assert_eq!(
            code("https://example.com/01/09506000134353"),
            "gs1_check_digit"
        );
        assert_eq!(
            code("https://example.com/01/09506000134352/21/A%2"),
            "dl_percent_encoding"
        );
        assert_eq!(
            code("https://example.com/01/09506000134352/21/A%20B"),
            "gs1_charset"
        );
        assert_eq!(
            code("https://example.com/01/09506000134352?17=251301"),
            "dl_attribute"
        );
        assert_eq!(
            code("https://example.com/01/09506000134352?17=250230"),
            "dl_attribute"
        );
        assert_eq!(
            code("https://example.com/01/09506000134352?3103=12"),
            "dl_attribute"
        );
        assert_eq!(
            code("https://example.com/01/09506000134352?21=12"),
            "dl_key_in_query"
        );
        assert_eq!(
            code("https://example.com/01/09506000134352?17=251231&17=251231"),
            "dl_duplicate_attribute"
        );
        assert_eq!(
            code("https://example.com/bad%zz/01/09506000134352"),
            "dl_percent_encoding"
        );
        let e = DigitalLink::parse("https://example.com/01/09506000134353").unwrap_err();
        assert_eq!(
            e.to_string(),
            "GTIN (AI 01): check digit of GTIN 09506000134353 is 3, expected 2 (position 14)"
        );
        let e =
            DigitalLink::parse("https://example.com/01/09506000134352/21/S1/10/L1").unwrap_err();
        assert_eq!(
            e.to_string(),
            "lot (AI 10) must come before serial number (AI 21)"
        );
    }

    #[test]
    fn leap_days_and_day_zero() {
        assert!(Gs1Date::parse("240229").is_ok());
        assert!(Gs1Date::parse("250229").is_err());
        assert!(Gs1Date::parse("250200").is_ok());
        assert!(Gs1Date::parse("25023").is_err());
    }

    fn check_digit_appended(body: &[u8]) -> String {
        let s: String = body.iter().map(|d| char::from(b'0' + d)).collect();
        let c = gs1::check_digit(&s).unwrap();
        format!("{s}{c}")
    }

    fn key_strategy(len: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(0u8..10, len - 1).prop_map(|b| check_digit_appended(&b))
    }

    fn cset82(max: usize) -> impl Strategy<Value = String> {
        let chars: Vec<char> = (0u8..128)
            .map(char::from)
            .filter(|c| gs1::is_cset82(*c))
            .collect();
        proptest::collection::vec(proptest::sample::select(chars), 1..=max)
            .prop_map(|v| v.into_iter().collect())
    }

    proptest! {
        #[test]
        fn build_parse_round_trip(
            g in key_strategy(14),
            lot in proptest::option::of(cset82(20)),
            serial in proptest::option::of(cset82(20)),
            prefix in proptest::option::of("[a-z]{1,8}"),
        ) {
            let domain = match &prefix {
                Some(p) => format!("example.com/{p}"),
                None => "example.com".to_owned(),
            };
            let mut dl = DigitalLink::new(&domain, gtin(&g)).unwrap();
            if let Some(l) = &lot {
                dl = dl.lot(Lot::parse(l).unwrap()).unwrap();
            }
            if let Some(s) = &serial {
                dl = dl.serial(SerialNumber::parse(s).unwrap()).unwrap();
            }
            let text = dl.to_string();
            let back = DigitalLink::parse(&text).unwrap();
            prop_assert_eq!(back.qualifier(Qualifier::Lot), lot.as_deref());
            prop_assert_eq!(back.qualifier(Qualifier::Serial), serial.as_deref());
            prop_assert_eq!(back.key().value(), g.as_str());
            prop_assert_eq!(&back, &dl);
            prop_assert_eq!(back.to_string(), text);
        }

        #[test]
        fn single_digit_changes_are_detected(
            (ai, key) in prop_oneof![
                key_strategy(14).prop_map(|k| ("01", k)),
                key_strategy(13).prop_map(|k| ("414", k)),
                key_strategy(18).prop_map(|k| ("00", k)),
            ],
            pos in 0usize..18,
            delta in 1u8..10,
        ) {
            let pos = pos % key.len();
            let mut bytes = key.clone().into_bytes();
            bytes[pos] = b'0' + (bytes[pos] - b'0' + delta) % 10;
            let changed = String::from_utf8(bytes).unwrap();
            let ok = format!("https://example.com/{ai}/{key}");
            prop_assert!(DigitalLink::parse(&ok).is_ok());
            let e = DigitalLink::parse(&format!("https://example.com/{ai}/{changed}")).unwrap_err();
            prop_assert_eq!(e.code(), "gs1_check_digit");
        }
    }
}
