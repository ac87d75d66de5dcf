//! The EPCIS 2.0 REST query parameters of `GET /epcis/events`, their evaluation on EPCIS 2.0
//! JSON events, and the keys the storage layer indexes on.
//!
//! # Parameter values
//!
//! * Pairs are taken as the HTTP layer decoded them (`application/x-www-form-urlencoded`).
//! * A parameter may be repeated and a value may be a list separated by `|` (the OpenAPI
//!   binding's `pipeDelimited` style) or `,`: every form means OR. In URI-valued parameters a
//!   comma only starts a new value when the text after it has a URI scheme (`urn:`, `https:`,
//!   `ex:`…), so `geo:42.69,23.31` stays one value. Scalar parameters (times, limits, order)
//!   may be given once.
//! * Vocabulary values (bizStep, disposition, business transaction / source / destination types,
//!   error reasons) are compared in a normal form: a standard CBV 2.0 term written as a bare
//!   word (`shipping`), a CBV 1.x URN (`urn:epcglobal:cbv:bizstep:shipping`), a CBV 2.0 Web URI
//!   (`https://ref.gs1.org/cbv/BizStep-shipping`) or a CURIE (`cbv:BizStep-shipping`) all become
//!   the bare word; anything else is compared as written. A bare word that is no standard term
//!   is rejected.
//! * Timestamps are RFC 3339 with an offset. A `+` that the form decoding turned into a space
//!   (`…T10:00:00 01:00`) is read back as `+`.
//!
//! # Identifiers (EPCs, classes, locations, parties)
//!
//! Both sides of a comparison are reduced by [`epc_key`] to one canonical text: EPC URNs of the
//! GS1 schemes sgtin, lgtin (class), sgtin patterns naming one GTIN (class), sscc, sgln, pgln,
//! grai, giai, gsrn and gdti, and GS1 Digital Link URIs on any host (any path prefix before the
//! primary key; query string ignored), all become the canonical Digital Link URI on
//! `https://id.gs1.org/` with the AI values percent-decoded and re-encoded (all but `A-Z a-z 0-9
//! - . _ ~`). Anything else is compared as written (trimmed).
//!
//! `MATCH_*` values may be EPC pattern URIs (`urn:epc:idpat:sgtin:4012345.012345.*`,
//! `…:4012345.*.*`, `…:*.*.*`; wildcards trailing only). For the GS1 schemes above they match
//! both URN and Digital Link identifiers: a pattern naming one GTIN/GLN/GRAI/GDTI matches every
//! identifier under it (serials, lots, extensions); a pattern naming only a company prefix
//! matches the keys whose value carries that prefix at the scheme's position (a Digital Link
//! does not say how long the company prefix is, so `401234.*.*` also matches GTINs of company
//! `4012345`). A Digital Link of a bare GTIN (`…/01/{gtin}`), or the class pattern of one, used
//! as a `MATCH_*` value acts as that GTIN's pattern. Patterns of other schemes are compared
//! field by field on URNs only.
//!
//! # Semantics
//!
//! All given parameters must hold (AND); the values of one parameter are alternatives (OR).
//! Fields follow EPCIS 2.0 §8.2.7.1: `MATCH_epc` looks at `epcList` and `childEPCs`,
//! `MATCH_parentID` at `parentID`, `MATCH_inputEPC`/`MATCH_outputEPC` at the transformation
//! lists, `MATCH_anyEPC` at all of them; `MATCH_epcClass` at `quantityList` and
//! `childQuantityList`, the input/output variants at the transformation quantity lists,
//! `MATCH_anyEPCClass` at all four. Sensor parameters hold when some sensor element
//! (metadata or report) satisfies that parameter; each parameter is checked on its own, and a
//! `GE_`/`LT_` pair on one field (`GE_time`&`LT_time`, …) must hold on the same value. Value
//! parameters with a unit (`GE_value_CEL`) only look at reports in that unit (no conversion).
//! `WD_readPoint`/`WD_bizLocation` use a [`LocationHierarchy`] given to
//! [`EventQuery::matches_with`]; [`EventQuery::matches`] knows no hierarchy, so there they equal
//! `EQ_…`. Not supported (error `epcis_query_parameter_unsupported`): the parameters on
//! extension fields, ILMD, inner fields, master-data attributes (`EQ_fieldname`,
//! `EQ_ILMD_…`, `EQ_INNER_…`, `EQ_readPoint_attr`, `HASATTR_…`, `EQ_ATTR_…`,
//! `…_ERROR_DECLARATION_…`, `…_SENSORELEMENT_…`) and `orderBy` on an extension field.

use std::cmp::Ordering;

use chrono::{DateTime, FixedOffset};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde_json::{Map, Value};

/// A point in time with the offset it was written with.
pub type Timestamp = DateTime<FixedOffset>;

/// Host of the canonical Digital Link form produced by [`epc_key`].
pub const CANONICAL_DL_PREFIX: &str = "https://id.gs1.org/";

// ---------------------------------------------------------------------------------------------
// Errors

/// A rejected query (the standard's `QueryParameterException`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// Not an EPCIS query parameter.
    #[error("unknown query parameter `{name}`")]
    UnknownParameter { name: String },
    /// An EPCIS query parameter (or value) this repository does not implement.
    #[error("query parameter `{name}` is not supported by this repository: {reason}")]
    UnsupportedParameter { name: String, reason: String },
    /// A time parameter that is not RFC 3339 with an offset.
    #[error(
        "query parameter `{name}`: {value:?} is not an RFC 3339 date-time with a time-zone offset"
    )]
    InvalidTimestamp { name: String, value: String },
    /// Any other bad value.
    #[error("query parameter `{name}`: {reason}")]
    InvalidValue { name: String, reason: String },
    /// A single-valued parameter given twice.
    #[error("query parameter `{name}` may be given only once")]
    DuplicateParameter { name: String },
    /// Parameters that exclude each other.
    #[error("{reason}")]
    Conflict { reason: String },
}

impl QueryError {
    /// Stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            QueryError::UnknownParameter { .. } => "epcis_query_parameter_unknown",
            QueryError::UnsupportedParameter { .. } => "epcis_query_parameter_unsupported",
            QueryError::InvalidTimestamp { .. } => "epcis_query_timestamp_invalid",
            QueryError::InvalidValue { .. } => "epcis_query_parameter_invalid",
            QueryError::DuplicateParameter { .. } => "epcis_query_parameter_duplicate",
            QueryError::Conflict { .. } => "epcis_query_parameter_conflict",
        }
    }

    /// The parameter at fault, if one.
    pub fn parameter(&self) -> Option<&str> {
        match self {
            QueryError::UnknownParameter { name }
            | QueryError::UnsupportedParameter { name, .. }
            | QueryError::InvalidTimestamp { name, .. }
            | QueryError::InvalidValue { name, .. }
            | QueryError::DuplicateParameter { name } => Some(name),
            QueryError::Conflict { .. } => None,
        }
    }

    /// The EPCIS exception this error is (for the RFC 7807 `type`).
    pub fn epcis_exception(&self) -> &'static str {
        "QueryParameterException"
    }
}

fn invalid(name: &str, reason: impl Into<String>) -> QueryError {
    QueryError::InvalidValue {
        name: name.to_owned(),
        reason: reason.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// The query

/// `EQ_action` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Add,
    Observe,
    Delete,
}

impl Action {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Add => "ADD",
            Action::Observe => "OBSERVE",
            Action::Delete => "DELETE",
        }
    }
}

/// `orderBy` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderBy {
    EventTime,
    RecordTime,
}

/// `orderDirection` values (default `DESC`, as the standard says).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OrderDirection {
    Asc,
    #[default]
    Desc,
}

/// A numeric comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Comparison {
    /// Equal to one of.
    Eq(Vec<f64>),
    Gt(f64),
    Ge(f64),
    Lt(f64),
    Le(f64),
}

impl Comparison {
    /// Whether `x` satisfies the comparison.
    pub fn holds(&self, x: f64) -> bool {
        match self {
            Comparison::Eq(values) => values.contains(&x),
            Comparison::Gt(v) => x > *v,
            Comparison::Ge(v) => x >= *v,
            Comparison::Lt(v) => x < *v,
            Comparison::Le(v) => x <= *v,
        }
    }
}

/// `EQ_quantity`, `GT_quantity_KGM`, …: some quantity element (any of the four quantity lists)
/// has a `quantity` satisfying `cmp` (and, with a unit, that `uom`).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantityFilter {
    pub uom: Option<String>,
    pub cmp: Comparison,
}

/// `GE_value_CEL`, `LT_maxValue_A93`, `GE_percRank`, …: some sensor report has the numeric
/// `field` satisfying `cmp` (and, with a unit, that `uom`).
#[derive(Debug, Clone, PartialEq)]
pub struct SensorValueFilter {
    /// `value`, `minValue`, `maxValue`, `meanValue`, `sDev`, `percValue` or `percRank`.
    pub field: &'static str,
    pub uom: Option<String>,
    pub cmp: Comparison,
}

/// A half-open time range `[ge, lt)`; either bound may be absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimeRange {
    pub ge: Option<Timestamp>,
    pub lt: Option<Timestamp>,
}

impl TimeRange {
    /// True when neither bound is set.
    pub fn is_unbounded(&self) -> bool {
        self.ge.is_none() && self.lt.is_none()
    }

    /// Whether `t` lies in the range.
    pub fn contains(&self, t: &Timestamp) -> bool {
        self.ge.is_none_or(|ge| *t >= ge) && self.lt.is_none_or(|lt| *t < lt)
    }
}

/// `EQ_bizTransaction_{type}`, `EQ_source_{type}`, `EQ_destination_{type}`: an entry of that
/// (normalised) type whose value is one of `values` (canonical keys, see [`epc_key`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypedFilter {
    pub kind: String,
    pub values: Vec<String>,
}

/// The sensor parameters.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SensorFilters {
    /// `EXISTS_sensorElementList`.
    pub exists: bool,
    /// `EQ_type` (measurement types, bare words for the GS1 ones).
    pub types: Vec<String>,
    /// `EQ_deviceID`, `EQ_dataProcessingMethod`, `EQ_microorganism`, `EQ_chemicalSubstance`,
    /// `EQ_bizRules`, `EQ_stringValue`, `EQ_hexBinaryValue`, `EQ_uriValue`: (attribute, values).
    pub attributes: Vec<(&'static str, Vec<String>)>,
    /// `EQ_booleanValue`.
    pub boolean_value: Option<bool>,
    /// `GE_time`/`LT_time` (metadata or report `time`).
    pub time: TimeRange,
    /// `GE_startTime`/`LT_startTime`.
    pub start_time: TimeRange,
    /// `GE_endTime`/`LT_endTime`.
    pub end_time: TimeRange,
    /// Numeric value filters.
    pub values: Vec<SensorValueFilter>,
}

/// A parsed `GET /events` query. Empty lists and `None` mean "no constraint".
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventQuery {
    /// `eventType` (standard names, or extension type URIs as written).
    pub event_types: Vec<String>,
    /// `GE_eventTime` / `LT_eventTime`.
    pub event_time: TimeRange,
    /// `GE_recordTime` / `LT_recordTime`.
    pub record_time: TimeRange,
    /// `EQ_action`.
    pub actions: Vec<Action>,
    /// `EQ_bizStep` (normalised, see the module docs).
    pub biz_steps: Vec<String>,
    /// `EQ_disposition`.
    pub dispositions: Vec<String>,
    /// `EQ_persistentDisposition_set`.
    pub persistent_disposition_set: Vec<String>,
    /// `EQ_persistentDisposition_unset`.
    pub persistent_disposition_unset: Vec<String>,
    /// `EQ_readPoint` (canonical keys).
    pub read_points: Vec<String>,
    /// `WD_readPoint` (canonical keys).
    pub read_points_within: Vec<String>,
    /// `EQ_bizLocation` (canonical keys).
    pub biz_locations: Vec<String>,
    /// `WD_bizLocation` (canonical keys).
    pub biz_locations_within: Vec<String>,
    /// `MATCH_epc`.
    pub match_epc: Vec<EpcPattern>,
    /// `MATCH_parentID`.
    pub match_parent_id: Vec<EpcPattern>,
    /// `MATCH_inputEPC`.
    pub match_input_epc: Vec<EpcPattern>,
    /// `MATCH_outputEPC`.
    pub match_output_epc: Vec<EpcPattern>,
    /// `MATCH_anyEPC`.
    pub match_any_epc: Vec<EpcPattern>,
    /// `MATCH_epcClass`.
    pub match_epc_class: Vec<EpcPattern>,
    /// `MATCH_inputEPCClass`.
    pub match_input_epc_class: Vec<EpcPattern>,
    /// `MATCH_outputEPCClass`.
    pub match_output_epc_class: Vec<EpcPattern>,
    /// `MATCH_anyEPCClass`.
    pub match_any_epc_class: Vec<EpcPattern>,
    /// `EQ_quantity`, `GT_quantity`, … and their `_{uom}` forms.
    pub quantities: Vec<QuantityFilter>,
    /// `EQ_transformationID` (as written).
    pub transformation_ids: Vec<String>,
    /// `EQ_eventID` (as written).
    pub event_ids: Vec<String>,
    /// `EXISTS_errorDeclaration`.
    pub exists_error_declaration: bool,
    /// `GE_errorDeclarationTime` / `LT_errorDeclarationTime`.
    pub error_declaration_time: TimeRange,
    /// `EQ_errorReason` (normalised).
    pub error_reasons: Vec<String>,
    /// `EQ_correctiveEventID`.
    pub corrective_event_ids: Vec<String>,
    /// `EQ_bizTransaction_{type}`.
    pub biz_transactions: Vec<TypedFilter>,
    /// `EQ_source_{type}`.
    pub sources: Vec<TypedFilter>,
    /// `EQ_destination_{type}`.
    pub destinations: Vec<TypedFilter>,
    /// Sensor parameters.
    pub sensor: SensorFilters,
    /// `orderBy`.
    pub order_by: Option<OrderBy>,
    /// `orderDirection`.
    pub order_direction: OrderDirection,
    /// `eventCountLimit` (requires `orderBy`; excludes `maxEventCount`).
    pub event_count_limit: Option<u64>,
    /// `maxEventCount`.
    pub max_event_count: Option<u64>,
    /// `perPage` (at least 1).
    pub per_page: Option<u32>,
    /// `nextPageToken` (opaque).
    pub next_page_token: Option<String>,
}

/// Where a location sits in the master-data hierarchy (for `WD_readPoint`/`WD_bizLocation`).
/// Both arguments are canonical keys ([`epc_key`]).
pub trait LocationHierarchy {
    /// Whether `location` is a direct or indirect descendant of `ancestor`.
    fn is_descendant(&self, location: &str, ancestor: &str) -> bool;
}

/// No master data: no location has descendants.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHierarchy;

impl LocationHierarchy for NoHierarchy {
    fn is_descendant(&self, _location: &str, _ancestor: &str) -> bool {
        false
    }
}

impl EventQuery {
    /// Parses the query-string pairs of `GET /events`.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<EventQuery, QueryError> {
        let mut q = EventQuery::default();
        let mut seen_scalars: Vec<&str> = Vec::new();
        for (name, value) in pairs {
            let name = name.as_str();
            let value = value.as_str();
            if is_scalar(name) {
                if seen_scalars.contains(&name) {
                    return Err(QueryError::DuplicateParameter {
                        name: name.to_owned(),
                    });
                }
                seen_scalars.push(name);
            }
            q.apply(name, value)?;
        }
        if q.event_count_limit.is_some() && q.max_event_count.is_some() {
            return Err(QueryError::Conflict {
                reason: "eventCountLimit and maxEventCount exclude each other".to_owned(),
            });
        }
        if q.event_count_limit.is_some() && q.order_by.is_none() {
            return Err(QueryError::Conflict {
                reason: "eventCountLimit needs orderBy".to_owned(),
            });
        }
        Ok(q)
    }

    fn apply(&mut self, name: &str, value: &str) -> Result<(), QueryError> {
        match name {
            "eventType" => {
                for t in list(name, value, false)? {
                    let t = normalize_event_type(&t);
                    if !is_standard_event_type(&t) && !has_scheme(&t) {
                        return Err(invalid(
                            name,
                            format!(
                                "{t:?} is not an event type (ObjectEvent, AggregationEvent, TransactionEvent, TransformationEvent, AssociationEvent or an extension type URI)"
                            ),
                        ));
                    }
                    self.event_types.push(t);
                }
            }
            "GE_eventTime" => self.event_time.ge = Some(timestamp(name, value)?),
            "LT_eventTime" => self.event_time.lt = Some(timestamp(name, value)?),
            "GE_recordTime" => self.record_time.ge = Some(timestamp(name, value)?),
            "LT_recordTime" => self.record_time.lt = Some(timestamp(name, value)?),
            "EQ_action" => {
                for a in list(name, value, false)? {
                    let action = match a.as_str() {
                        "ADD" => Action::Add,
                        "OBSERVE" => Action::Observe,
                        "DELETE" => Action::Delete,
                        _ => {
                            return Err(invalid(
                                name,
                                format!("{a:?} is not an action (ADD, OBSERVE or DELETE)"),
                            ));
                        }
                    };
                    self.actions.push(action);
                }
            }
            "EQ_bizStep" => vocab_list(name, value, Vocabulary::BizStep, &mut self.biz_steps)?,
            "EQ_disposition" => {
                vocab_list(name, value, Vocabulary::Disposition, &mut self.dispositions)?;
            }
            "EQ_persistentDisposition_set" => vocab_list(
                name,
                value,
                Vocabulary::Disposition,
                &mut self.persistent_disposition_set,
            )?,
            "EQ_persistentDisposition_unset" => vocab_list(
                name,
                value,
                Vocabulary::Disposition,
                &mut self.persistent_disposition_unset,
            )?,
            "EQ_readPoint" => key_list(name, value, &mut self.read_points)?,
            "WD_readPoint" => key_list(name, value, &mut self.read_points_within)?,
            "EQ_bizLocation" => key_list(name, value, &mut self.biz_locations)?,
            "WD_bizLocation" => key_list(name, value, &mut self.biz_locations_within)?,
            "MATCH_epc" => patterns(name, value, &mut self.match_epc)?,
            "MATCH_parentID" => patterns(name, value, &mut self.match_parent_id)?,
            "MATCH_inputEPC" => patterns(name, value, &mut self.match_input_epc)?,
            "MATCH_outputEPC" => patterns(name, value, &mut self.match_output_epc)?,
            "MATCH_anyEPC" => patterns(name, value, &mut self.match_any_epc)?,
            "MATCH_epcClass" => patterns(name, value, &mut self.match_epc_class)?,
            "MATCH_inputEPCClass" => patterns(name, value, &mut self.match_input_epc_class)?,
            "MATCH_outputEPCClass" => patterns(name, value, &mut self.match_output_epc_class)?,
            "MATCH_anyEPCClass" => patterns(name, value, &mut self.match_any_epc_class)?,
            "EQ_transformationID" => self.transformation_ids.extend(uri_list(name, value)?),
            "EQ_eventID" => self.event_ids.extend(uri_list(name, value)?),
            "EXISTS_errorDeclaration" => self.exists_error_declaration = flag(name, value)?,
            "GE_errorDeclarationTime" | "GE_errorDeclaration_Time" => {
                self.error_declaration_time.ge = Some(timestamp(name, value)?);
            }
            "LT_errorDeclarationTime" | "LT_errorDeclaration_Time" => {
                self.error_declaration_time.lt = Some(timestamp(name, value)?);
            }
            "EQ_errorReason" => {
                vocab_list(
                    name,
                    value,
                    Vocabulary::ErrorReason,
                    &mut self.error_reasons,
                )?;
            }
            "EQ_correctiveEventID" => self.corrective_event_ids.extend(uri_list(name, value)?),
            "orderBy" => {
                self.order_by = Some(match value {
                    "eventTime" => OrderBy::EventTime,
                    "recordTime" => OrderBy::RecordTime,
                    other if other.contains(':') => {
                        return Err(QueryError::UnsupportedParameter {
                            name: name.to_owned(),
                            reason: format!(
                                "ordering by the extension field {other:?} is not implemented; use eventTime or recordTime"
                            ),
                        });
                    }
                    other => {
                        return Err(invalid(
                            name,
                            format!("{other:?} is not eventTime or recordTime"),
                        ));
                    }
                });
            }
            "orderDirection" => {
                self.order_direction = match value {
                    "ASC" => OrderDirection::Asc,
                    "DESC" => OrderDirection::Desc,
                    other => {
                        return Err(invalid(name, format!("{other:?} is not ASC or DESC")));
                    }
                };
            }
            "eventCountLimit" => self.event_count_limit = Some(count(name, value)?),
            "maxEventCount" => self.max_event_count = Some(count(name, value)?),
            "perPage" => {
                let n = value
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| invalid(name, format!("{value:?} is not a positive integer")))?;
                self.per_page = Some(n);
            }
            "nextPageToken" => self.next_page_token = Some(value.to_owned()),
            "EXISTS_sensorElementList" => self.sensor.exists = flag(name, value)?,
            "EQ_type" => {
                for t in list(name, value, false)? {
                    let t = normalize_measurement_type(&t);
                    if !has_scheme(&t) && !t.chars().all(|c| c.is_ascii_alphanumeric()) {
                        return Err(invalid(
                            name,
                            format!("{t:?} is neither a GS1 measurement type nor a URI"),
                        ));
                    }
                    self.sensor.types.push(t);
                }
            }
            "EQ_deviceID"
            | "EQ_dataProcessingMethod"
            | "EQ_microorganism"
            | "EQ_chemicalSubstance"
            | "EQ_bizRules"
            | "EQ_uriValue" => {
                let attribute = sensor_attribute(name);
                let mut values = uri_list(name, value)?;
                if attribute == "deviceID" {
                    values = values.iter().map(|v| epc_key(v)).collect();
                }
                self.sensor.attributes.push((attribute, values));
            }
            "EQ_stringValue" | "EQ_hexBinaryValue" => {
                let attribute = sensor_attribute(name);
                self.sensor
                    .attributes
                    .push((attribute, list(name, value, false)?));
            }
            "EQ_booleanValue" => {
                self.sensor.boolean_value = Some(match value {
                    "true" => true,
                    "false" => false,
                    other => {
                        return Err(invalid(name, format!("{other:?} is not true or false")));
                    }
                });
            }
            "GE_time" => self.sensor.time.ge = Some(timestamp(name, value)?),
            "LT_time" => self.sensor.time.lt = Some(timestamp(name, value)?),
            "GE_startTime" => self.sensor.start_time.ge = Some(timestamp(name, value)?),
            "LT_startTime" => self.sensor.start_time.lt = Some(timestamp(name, value)?),
            "GE_endTime" => self.sensor.end_time.ge = Some(timestamp(name, value)?),
            "LT_endTime" => self.sensor.end_time.lt = Some(timestamp(name, value)?),
            _ => self.apply_patterned(name, value)?,
        }
        Ok(())
    }

    /// Parameters whose name carries a type, unit or field.
    fn apply_patterned(&mut self, name: &str, value: &str) -> Result<(), QueryError> {
        let typed = [
            ("EQ_bizTransaction_", Vocabulary::BizTransactionType),
            ("EQ_source_", Vocabulary::SourceDestType),
            ("EQ_destination_", Vocabulary::SourceDestType),
        ];
        for (prefix, vocabulary) in typed {
            if let Some(kind) = name.strip_prefix(prefix).filter(|k| !k.is_empty()) {
                let kind = normalize_vocabulary(vocabulary, kind);
                check_vocabulary(name, vocabulary, &kind)?;
                let values = uri_list(name, value)?.iter().map(|v| epc_key(v)).collect();
                let filter = TypedFilter { kind, values };
                match prefix {
                    "EQ_bizTransaction_" => self.biz_transactions.push(filter),
                    "EQ_source_" => self.sources.push(filter),
                    _ => self.destinations.push(filter),
                }
                return Ok(());
            }
        }
        if let Some((op, rest)) = name.split_once('_')
            && matches!(op, "EQ" | "GT" | "GE" | "LT" | "LE")
            && let Some(filter) = numeric_filter(name, op, rest, value)?
        {
            match filter {
                NumericFilter::Quantity(f) => self.quantities.push(f),
                NumericFilter::Sensor(f) => self.sensor.values.push(f),
            }
            return Ok(());
        }
        if is_unsupported_standard_parameter(name) {
            return Err(QueryError::UnsupportedParameter {
                name: name.to_owned(),
                reason: "queries on extension fields, ILMD, inner fields, error-declaration or sensor extensions and master-data attributes are not implemented".to_owned(),
            });
        }
        Err(QueryError::UnknownParameter {
            name: name.to_owned(),
        })
    }

    /// Whether `event` (EPCIS 2.0 JSON) satisfies the query, with no location hierarchy.
    pub fn matches(&self, event: &Value) -> bool {
        self.matches_with(event, &NoHierarchy)
    }

    /// Whether `event` satisfies the query; `WD_…` parameters consult `hierarchy`.
    pub fn matches_with(&self, event: &Value, hierarchy: &dyn LocationHierarchy) -> bool {
        let Some(e) = event.as_object() else {
            return false;
        };
        self.matches_what_when(e)
            && self.matches_where_why(e, hierarchy)
            && self.matches_identifiers(e)
            && self.matches_errors(e)
            && self.matches_sensors(e)
    }

    fn matches_what_when(&self, e: &Map<String, Value>) -> bool {
        if !self.event_types.is_empty() {
            let Some(t) = str_field(e, "type") else {
                return false;
            };
            if !self.event_types.contains(&normalize_event_type(t)) {
                return false;
            }
        }
        if !time_matches(&self.event_time, str_field(e, "eventTime"))
            || !time_matches(&self.record_time, str_field(e, "recordTime"))
        {
            return false;
        }
        if !self.actions.is_empty() {
            let action = str_field(e, "action");
            if !self.actions.iter().any(|a| Some(a.as_str()) == action) {
                return false;
            }
        }
        if !self.event_ids.is_empty()
            && !str_field(e, "eventID").is_some_and(|id| self.event_ids.iter().any(|v| v == id))
        {
            return false;
        }
        true
    }

    fn matches_where_why(&self, e: &Map<String, Value>, hierarchy: &dyn LocationHierarchy) -> bool {
        if !vocab_matches(
            &self.biz_steps,
            Vocabulary::BizStep,
            str_field(e, "bizStep"),
        ) || !vocab_matches(
            &self.dispositions,
            Vocabulary::Disposition,
            str_field(e, "disposition"),
        ) {
            return false;
        }
        for (wanted, key) in [
            (&self.persistent_disposition_set, "set"),
            (&self.persistent_disposition_unset, "unset"),
        ] {
            if wanted.is_empty() {
                continue;
            }
            let values = e
                .get("persistentDisposition")
                .and_then(|p| p.get(key))
                .map(strings)
                .unwrap_or_default();
            if !values
                .iter()
                .any(|v| wanted.contains(&normalize_vocabulary(Vocabulary::Disposition, v)))
            {
                return false;
            }
        }
        let read_point = e
            .get("readPoint")
            .and_then(|r| r.get("id"))
            .and_then(Value::as_str);
        let biz_location = e
            .get("bizLocation")
            .and_then(|r| r.get("id"))
            .and_then(Value::as_str);
        if !location_matches(&self.read_points, &[], read_point, hierarchy)
            || !location_matches(&[], &self.read_points_within, read_point, hierarchy)
            || !location_matches(&self.biz_locations, &[], biz_location, hierarchy)
            || !location_matches(&[], &self.biz_locations_within, biz_location, hierarchy)
        {
            return false;
        }
        if !self.transformation_ids.is_empty()
            && !str_field(e, "transformationID")
                .is_some_and(|id| self.transformation_ids.iter().any(|v| v == id))
        {
            return false;
        }
        typed_matches(
            &self.biz_transactions,
            e,
            "bizTransactionList",
            "bizTransaction",
            Vocabulary::BizTransactionType,
        ) && typed_matches(
            &self.sources,
            e,
            "sourceList",
            "source",
            Vocabulary::SourceDestType,
        ) && typed_matches(
            &self.destinations,
            e,
            "destinationList",
            "destination",
            Vocabulary::SourceDestType,
        )
    }

    fn matches_identifiers(&self, e: &Map<String, Value>) -> bool {
        let instance = |fields: &[&str]| -> Vec<&str> {
            let mut out = Vec::new();
            for field in fields {
                match e.get(*field) {
                    Some(Value::String(s)) => out.push(s.as_str()),
                    Some(Value::Array(items)) => out.extend(items.iter().filter_map(Value::as_str)),
                    _ => {}
                }
            }
            out
        };
        let classes = |fields: &[&str]| -> Vec<&str> {
            quantity_elements(e, fields)
                .into_iter()
                .filter_map(|q| q.get("epcClass").and_then(Value::as_str))
                .collect()
        };
        let checks: [(&[EpcPattern], Vec<&str>); 9] = [
            (&self.match_epc, instance(&["epcList", "childEPCs"])),
            (&self.match_parent_id, instance(&["parentID"])),
            (&self.match_input_epc, instance(&["inputEPCList"])),
            (&self.match_output_epc, instance(&["outputEPCList"])),
            (
                &self.match_any_epc,
                instance(&[
                    "epcList",
                    "childEPCs",
                    "parentID",
                    "inputEPCList",
                    "outputEPCList",
                ]),
            ),
            (
                &self.match_epc_class,
                classes(&["quantityList", "childQuantityList"]),
            ),
            (&self.match_input_epc_class, classes(&["inputQuantityList"])),
            (
                &self.match_output_epc_class,
                classes(&["outputQuantityList"]),
            ),
            (&self.match_any_epc_class, classes(&QUANTITY_LISTS)),
        ];
        for (wanted, candidates) in checks {
            if wanted.is_empty() {
                continue;
            }
            let keys: Vec<(&str, String)> = candidates.iter().map(|c| (*c, epc_key(c))).collect();
            if !keys
                .iter()
                .any(|(raw, key)| wanted.iter().any(|p| p.matches_key(raw, key)))
            {
                return false;
            }
        }
        self.quantities.iter().all(|filter| {
            quantity_elements(e, &QUANTITY_LISTS).into_iter().any(|q| {
                let uom_ok = filter
                    .uom
                    .as_deref()
                    .is_none_or(|u| q.get("uom").and_then(Value::as_str) == Some(u));
                uom_ok
                    && q.get("quantity")
                        .and_then(Value::as_f64)
                        .is_some_and(|x| filter.cmp.holds(x))
            })
        })
    }

    fn matches_errors(&self, e: &Map<String, Value>) -> bool {
        let declaration = e.get("errorDeclaration").and_then(Value::as_object);
        let constrained = self.exists_error_declaration
            || !self.error_declaration_time.is_unbounded()
            || !self.error_reasons.is_empty()
            || !self.corrective_event_ids.is_empty();
        if !constrained {
            return true;
        }
        let Some(declaration) = declaration else {
            return false;
        };
        if !time_matches(
            &self.error_declaration_time,
            str_field(declaration, "declarationTime"),
        ) {
            return false;
        }
        if !vocab_matches(
            &self.error_reasons,
            Vocabulary::ErrorReason,
            str_field(declaration, "reason"),
        ) {
            return false;
        }
        if !self.corrective_event_ids.is_empty() {
            let ids = declaration
                .get("correctiveEventIDs")
                .map(strings)
                .unwrap_or_default();
            if !ids.iter().any(|id| self.corrective_event_ids.contains(id)) {
                return false;
            }
        }
        true
    }

    fn matches_sensors(&self, e: &Map<String, Value>) -> bool {
        let s = &self.sensor;
        let constrained = s.exists
            || !s.types.is_empty()
            || !s.attributes.is_empty()
            || s.boolean_value.is_some()
            || !s.time.is_unbounded()
            || !s.start_time.is_unbounded()
            || !s.end_time.is_unbounded()
            || !s.values.is_empty();
        if !constrained {
            return true;
        }
        let elements: Vec<&Map<String, Value>> = e
            .get("sensorElementList")
            .and_then(Value::as_array)
            .map(|list| list.iter().filter_map(Value::as_object).collect())
            .unwrap_or_default();
        if elements.is_empty() {
            return false;
        }
        let metadata: Vec<&Map<String, Value>> = elements
            .iter()
            .filter_map(|el| el.get("sensorMetadata").and_then(Value::as_object))
            .collect();
        let reports: Vec<&Map<String, Value>> = elements
            .iter()
            .filter_map(|el| el.get("sensorReport").and_then(Value::as_array))
            .flatten()
            .filter_map(Value::as_object)
            .collect();
        if !s.types.is_empty()
            && !reports.iter().any(|r| {
                str_field(r, "type")
                    .is_some_and(|t| s.types.contains(&normalize_measurement_type(t)))
            })
        {
            return false;
        }
        for (attribute, values) in &s.attributes {
            let found = metadata.iter().chain(reports.iter()).any(|m| {
                str_field(m, attribute).is_some_and(|v| match *attribute {
                    "deviceID" => values.contains(&epc_key(v)),
                    "hexBinaryValue" => values.iter().any(|w| w.eq_ignore_ascii_case(v)),
                    _ => values.iter().any(|w| w == v),
                })
            });
            if !found {
                return false;
            }
        }
        if let Some(b) = s.boolean_value
            && !reports
                .iter()
                .any(|r| r.get("booleanValue").and_then(Value::as_bool) == Some(b))
        {
            return false;
        }
        let any_time_in = |range: &TimeRange, sources: &[&Map<String, Value>], field: &str| {
            range.is_unbounded()
                || sources.iter().any(|m| {
                    str_field(m, field)
                        .and_then(parse_time)
                        .is_some_and(|t| range.contains(&t))
                })
        };
        let mut with_time = metadata.clone();
        with_time.extend(reports.iter().copied());
        if !any_time_in(&s.time, &with_time, "time")
            || !any_time_in(&s.start_time, &metadata, "startTime")
            || !any_time_in(&s.end_time, &metadata, "endTime")
        {
            return false;
        }
        s.values.iter().all(|filter| {
            reports.iter().any(|r| {
                let uom_ok = filter
                    .uom
                    .as_deref()
                    .is_none_or(|u| str_field(r, "uom") == Some(u));
                uom_ok
                    && r.get(filter.field)
                        .and_then(Value::as_f64)
                        .is_some_and(|x| filter.cmp.holds(x))
            })
        })
    }

    /// Orders two events by `orderBy`/`orderDirection` (events lacking the field last; equal
    /// when no `orderBy`).
    pub fn compare(&self, a: &Value, b: &Value) -> Ordering {
        let Some(order_by) = self.order_by else {
            return Ordering::Equal;
        };
        let field = match order_by {
            OrderBy::EventTime => "eventTime",
            OrderBy::RecordTime => "recordTime",
        };
        let time = |e: &Value| e.get(field).and_then(Value::as_str).and_then(parse_time);
        match (time(a), time(b)) {
            (Some(x), Some(y)) => match self.order_direction {
                OrderDirection::Asc => x.cmp(&y),
                OrderDirection::Desc => y.cmp(&x),
            },
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        }
    }
}

const QUANTITY_LISTS: [&str; 4] = [
    "quantityList",
    "childQuantityList",
    "inputQuantityList",
    "outputQuantityList",
];

fn quantity_elements<'a>(
    e: &'a Map<String, Value>,
    fields: &[&str],
) -> Vec<&'a Map<String, Value>> {
    fields
        .iter()
        .filter_map(|f| e.get(*f).and_then(Value::as_array))
        .flatten()
        .filter_map(Value::as_object)
        .collect()
}

fn str_field<'a>(object: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
    object.get(field).and_then(Value::as_str)
}

fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Value::String(s) => vec![s.clone()],
        _ => Vec::new(),
    }
}

fn time_matches(range: &TimeRange, value: Option<&str>) -> bool {
    range.is_unbounded()
        || value
            .and_then(parse_time)
            .is_some_and(|t| range.contains(&t))
}

fn vocab_matches(wanted: &[String], vocabulary: Vocabulary, value: Option<&str>) -> bool {
    wanted.is_empty()
        || value.is_some_and(|v| wanted.contains(&normalize_vocabulary(vocabulary, v)))
}

fn location_matches(
    equal: &[String],
    within: &[String],
    value: Option<&str>,
    hierarchy: &dyn LocationHierarchy,
) -> bool {
    if equal.is_empty() && within.is_empty() {
        return true;
    }
    let Some(key) = value.map(epc_key) else {
        return false;
    };
    (!equal.is_empty() && equal.contains(&key))
        || within
            .iter()
            .any(|w| *w == key || hierarchy.is_descendant(&key, w))
}

fn typed_matches(
    filters: &[TypedFilter],
    e: &Map<String, Value>,
    list: &str,
    value_field: &str,
    vocabulary: Vocabulary,
) -> bool {
    if filters.is_empty() {
        return true;
    }
    let entries: Vec<(String, String)> = e
        .get(list)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|item| {
                    let kind = item.get("type")?.as_str()?;
                    let value = item.get(value_field)?.as_str()?;
                    Some((normalize_vocabulary(vocabulary, kind), epc_key(value)))
                })
                .collect()
        })
        .unwrap_or_default();
    filters.iter().all(|f| {
        entries
            .iter()
            .any(|(kind, value)| *kind == f.kind && f.values.contains(value))
    })
}

// ---------------------------------------------------------------------------------------------
// Parameter parsing helpers

fn is_scalar(name: &str) -> bool {
    matches!(
        name,
        "GE_eventTime"
            | "LT_eventTime"
            | "GE_recordTime"
            | "LT_recordTime"
            | "EXISTS_errorDeclaration"
            | "GE_errorDeclarationTime"
            | "LT_errorDeclarationTime"
            | "GE_errorDeclaration_Time"
            | "LT_errorDeclaration_Time"
            | "orderBy"
            | "orderDirection"
            | "eventCountLimit"
            | "maxEventCount"
            | "perPage"
            | "nextPageToken"
            | "EXISTS_sensorElementList"
            | "EQ_booleanValue"
            | "GE_time"
            | "LT_time"
            | "GE_startTime"
            | "LT_startTime"
            | "GE_endTime"
            | "LT_endTime"
    ) || (matches!(name.get(..3), Some("GT_" | "GE_" | "LT_" | "LE_"))
        && (name.contains("quantity")
            || name.contains("alue_")
            || name.contains("sDev_")
            || name.ends_with("percRank")))
}

/// Splits a list value (see the module docs).
fn list(name: &str, value: &str, uri_values: bool) -> Result<Vec<String>, QueryError> {
    let mut out: Vec<String> = Vec::new();
    for part in value.split('|') {
        let mut current: Option<String> = None;
        for piece in part.split(',') {
            match current.as_mut() {
                Some(c) if uri_values && !has_scheme(piece.trim_start()) => {
                    c.push(',');
                    c.push_str(piece);
                }
                _ => {
                    if let Some(done) = current.take() {
                        out.push(done);
                    }
                    current = Some(piece.to_owned());
                }
            }
        }
        out.extend(current);
    }
    let out: Vec<String> = out.into_iter().map(|v| v.trim().to_owned()).collect();
    if out.iter().any(String::is_empty) {
        return Err(invalid(name, "empty value in the list"));
    }
    Ok(out)
}

fn uri_list(name: &str, value: &str) -> Result<Vec<String>, QueryError> {
    let values = list(name, value, true)?;
    if let Some(bad) = values.iter().find(|v| !has_scheme(v)) {
        return Err(invalid(name, format!("{bad:?} is not a URI")));
    }
    Ok(values)
}

fn key_list(name: &str, value: &str, out: &mut Vec<String>) -> Result<(), QueryError> {
    out.extend(uri_list(name, value)?.iter().map(|v| epc_key(v)));
    Ok(())
}

fn patterns(name: &str, value: &str, out: &mut Vec<EpcPattern>) -> Result<(), QueryError> {
    for v in uri_list(name, value)? {
        out.push(EpcPattern::parse(&v).map_err(|reason| invalid(name, reason))?);
    }
    Ok(())
}

fn vocab_list(
    name: &str,
    value: &str,
    vocabulary: Vocabulary,
    out: &mut Vec<String>,
) -> Result<(), QueryError> {
    for v in list(name, value, false)? {
        let normal = normalize_vocabulary(vocabulary, &v);
        check_vocabulary(name, vocabulary, &normal)?;
        out.push(normal);
    }
    Ok(())
}

fn check_vocabulary(name: &str, vocabulary: Vocabulary, normal: &str) -> Result<(), QueryError> {
    if has_scheme(normal) || vocabulary.terms().contains(&normal) {
        Ok(())
    } else {
        Err(invalid(
            name,
            format!(
                "{normal:?} is neither a standard CBV 2.0 {} nor a URI",
                vocabulary.label()
            ),
        ))
    }
}

fn timestamp(name: &str, value: &str) -> Result<Timestamp, QueryError> {
    let trimmed = value.trim();
    parse_time(trimmed)
        .or_else(|| {
            // `+hh:mm` whose `+` became a space in form decoding.
            let bytes = trimmed.as_bytes();
            let n = bytes.len();
            if n > 6 && bytes[n - 6] == b' ' {
                parse_time(&format!("{}+{}", &trimmed[..n - 6], &trimmed[n - 5..]))
            } else {
                None
            }
        })
        .ok_or_else(|| QueryError::InvalidTimestamp {
            name: name.to_owned(),
            value: value.to_owned(),
        })
}

fn parse_time(text: &str) -> Option<Timestamp> {
    DateTime::parse_from_rfc3339(text).ok()
}

fn flag(name: &str, value: &str) -> Result<bool, QueryError> {
    match value.trim() {
        "" | "true" => Ok(true),
        "false" => Ok(false),
        other => Err(invalid(name, format!("{other:?} is not true or false"))),
    }
}

fn count(name: &str, value: &str) -> Result<u64, QueryError> {
    value
        .trim()
        .parse::<u64>()
        .map_err(|_| invalid(name, format!("{value:?} is not a non-negative integer")))
}

fn number(name: &str, value: &str) -> Result<f64, QueryError> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|x| x.is_finite())
        .ok_or_else(|| invalid(name, format!("{value:?} is not a number")))
}

fn sensor_attribute(name: &str) -> &'static str {
    match name {
        "EQ_deviceID" => "deviceID",
        "EQ_dataProcessingMethod" => "dataProcessingMethod",
        "EQ_microorganism" => "microorganism",
        "EQ_chemicalSubstance" => "chemicalSubstance",
        "EQ_bizRules" => "bizRules",
        "EQ_uriValue" => "uriValue",
        "EQ_stringValue" => "stringValue",
        _ => "hexBinaryValue",
    }
}

enum NumericFilter {
    Quantity(QuantityFilter),
    Sensor(SensorValueFilter),
}

/// `{OP}_quantity[_{uom}]`, `{OP}_{value|minValue|…}_{uom}`, `{OP}_percRank`.
fn numeric_filter(
    name: &str,
    op: &str,
    rest: &str,
    value: &str,
) -> Result<Option<NumericFilter>, QueryError> {
    const SENSOR_FIELDS: [&str; 6] = [
        "value",
        "minValue",
        "maxValue",
        "meanValue",
        "sDev",
        "percValue",
    ];
    let is_uom = |u: &str| {
        (2..=4).contains(&u.len())
            && u.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    };
    let cmp = |op: &str| -> Result<Comparison, QueryError> {
        Ok(match op {
            "EQ" => Comparison::Eq(
                list(name, value, false)?
                    .iter()
                    .map(|v| number(name, v))
                    .collect::<Result<_, _>>()?,
            ),
            "GT" => Comparison::Gt(number(name, value)?),
            "GE" => Comparison::Ge(number(name, value)?),
            "LT" => Comparison::Lt(number(name, value)?),
            _ => Comparison::Le(number(name, value)?),
        })
    };
    if rest == "quantity" {
        return Ok(Some(NumericFilter::Quantity(QuantityFilter {
            uom: None,
            cmp: cmp(op)?,
        })));
    }
    if let Some(uom) = rest.strip_prefix("quantity_").filter(|u| is_uom(u)) {
        return Ok(Some(NumericFilter::Quantity(QuantityFilter {
            uom: Some(uom.to_owned()),
            cmp: cmp(op)?,
        })));
    }
    if rest == "percRank" && op != "EQ" {
        return Ok(Some(NumericFilter::Sensor(SensorValueFilter {
            field: "percRank",
            uom: None,
            cmp: cmp(op)?,
        })));
    }
    for field in SENSOR_FIELDS {
        let Some(uom) = rest
            .strip_prefix(field)
            .and_then(|r| r.strip_prefix('_'))
            .filter(|u| is_uom(u))
        else {
            continue;
        };
        if op == "EQ" && field != "value" {
            return Ok(None);
        }
        return Ok(Some(NumericFilter::Sensor(SensorValueFilter {
            field,
            uom: Some(uom.to_owned()),
            cmp: cmp(op)?,
        })));
    }
    Ok(None)
}

/// Standard EPCIS query parameters (by name pattern) that this module does not implement.
fn is_unsupported_standard_parameter(name: &str) -> bool {
    const OPS: [&str; 9] = [
        "EQ_", "GT_", "GE_", "LT_", "LE_", "EXISTS_", "HASATTR_", "WD_", "EQ_ATTR_",
    ];
    const FAMILIES: [&str; 8] = [
        "INNER_",
        "ILMD_",
        "ERROR_DECLARATION_",
        "SENSORELEMENT_",
        "SENSORMETADATA_",
        "SENSORREPORT_",
        "readPoint_",
        "bizLocation_",
    ];
    if name.starts_with("EQ_ATTR_") {
        return true;
    }
    OPS.iter().any(|op| {
        name.strip_prefix(op)
            .is_some_and(|rest| rest.contains(':') || FAMILIES.iter().any(|f| rest.starts_with(f)))
    })
}

/// Whether `text` starts with a URI scheme (`letter *( letter / digit / "+" / "-" / "." ) ":"`).
fn has_scheme(text: &str) -> bool {
    let Some((scheme, _)) = text.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

// ---------------------------------------------------------------------------------------------
// Vocabularies

/// The CBV 2.0 vocabularies whose values are normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Vocabulary {
    BizStep,
    Disposition,
    BizTransactionType,
    SourceDestType,
    ErrorReason,
}

const BIZ_STEPS: [&str; 41] = [
    "accepting",
    "arriving",
    "assembling",
    "collecting",
    "commissioning",
    "consigning",
    "creating_class_instance",
    "cycle_counting",
    "decommissioning",
    "departing",
    "destroying",
    "disassembling",
    "dispensing",
    "encoding",
    "entering_exiting",
    "holding",
    "inspecting",
    "installing",
    "killing",
    "loading",
    "other",
    "packing",
    "picking",
    "receiving",
    "removing",
    "repackaging",
    "repairing",
    "replacing",
    "reserving",
    "retail_selling",
    "sampling",
    "sensor_reporting",
    "shipping",
    "staging_outbound",
    "stock_taking",
    "stocking",
    "storing",
    "transporting",
    "unloading",
    "unpacking",
    "void_shipping",
];

const DISPOSITIONS: [&str; 33] = [
    "active",
    "available",
    "completeness_inferred",
    "completeness_verified",
    "conformant",
    "container_closed",
    "container_open",
    "damaged",
    "destroyed",
    "dispensed",
    "disposed",
    "encoded",
    "expired",
    "in_progress",
    "in_transit",
    "inactive",
    "mismatch_class",
    "mismatch_instance",
    "mismatch_quantity",
    "needs_replacement",
    "no_pedigree_match",
    "non_conformant",
    "non_sellable_other",
    "partially_dispensed",
    "recalled",
    "reserved",
    "retail_sold",
    "returned",
    "sellable_accessible",
    "sellable_not_accessible",
    "stolen",
    "unavailable",
    "unknown",
];

const BIZ_TRANSACTION_TYPES: [&str; 13] = [
    "bol",
    "cert",
    "desadv",
    "inv",
    "pedigree",
    "po",
    "poc",
    "prodorder",
    "recadv",
    "rma",
    "testprd",
    "testres",
    "upevt",
];

const SOURCE_DEST_TYPES: [&str; 3] = ["owning_party", "possessing_party", "location"];

const ERROR_REASONS: [&str; 2] = ["did_not_occur", "incorrect_data"];

impl Vocabulary {
    /// The standard CBV 2.0 terms (bare words).
    pub fn terms(self) -> &'static [&'static str] {
        match self {
            Vocabulary::BizStep => &BIZ_STEPS,
            Vocabulary::Disposition => &DISPOSITIONS,
            Vocabulary::BizTransactionType => &BIZ_TRANSACTION_TYPES,
            Vocabulary::SourceDestType => &SOURCE_DEST_TYPES,
            Vocabulary::ErrorReason => &ERROR_REASONS,
        }
    }

    fn urn_prefix(self) -> &'static str {
        match self {
            Vocabulary::BizStep => "urn:epcglobal:cbv:bizstep:",
            Vocabulary::Disposition => "urn:epcglobal:cbv:disp:",
            Vocabulary::BizTransactionType => "urn:epcglobal:cbv:btt:",
            Vocabulary::SourceDestType => "urn:epcglobal:cbv:sdt:",
            Vocabulary::ErrorReason => "urn:epcglobal:cbv:er:",
        }
    }

    fn web_term_prefix(self) -> &'static str {
        match self {
            Vocabulary::BizStep => "BizStep-",
            Vocabulary::Disposition => "Disp-",
            Vocabulary::BizTransactionType => "BTT-",
            Vocabulary::SourceDestType => "SDT-",
            Vocabulary::ErrorReason => "ER-",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Vocabulary::BizStep => "business step",
            Vocabulary::Disposition => "disposition",
            Vocabulary::BizTransactionType => "business transaction type",
            Vocabulary::SourceDestType => "source/destination type",
            Vocabulary::ErrorReason => "error reason",
        }
    }
}

/// The normal form of a vocabulary value: the bare CBV 2.0 term when `value` denotes a standard
/// term in any of its spellings, else `value` as written.
pub fn normalize_vocabulary(vocabulary: Vocabulary, value: &str) -> String {
    let value = value.trim();
    let web = vocabulary.web_term_prefix();
    let candidates = [
        strip_prefix_ignore_case(value, vocabulary.urn_prefix()),
        value
            .strip_prefix("https://ref.gs1.org/cbv/")
            .or_else(|| value.strip_prefix("http://ref.gs1.org/cbv/"))
            .or_else(|| value.strip_prefix("https://ns.gs1.org/cbv/"))
            .or_else(|| value.strip_prefix("cbv:"))
            .and_then(|rest| rest.strip_prefix(web)),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|term| vocabulary.terms().contains(term))
        .map_or_else(|| value.to_owned(), str::to_owned)
}

fn strip_prefix_ignore_case<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &value[prefix.len()..])
}

/// `https://gs1.org/voc/Temperature` and `gs1:Temperature` → `Temperature`.
fn normalize_measurement_type(value: &str) -> String {
    let value = value.trim();
    value
        .strip_prefix("https://gs1.org/voc/")
        .or_else(|| value.strip_prefix("http://gs1.org/voc/"))
        .or_else(|| value.strip_prefix("gs1:"))
        .filter(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric()))
        .unwrap_or(value)
        .to_owned()
}

fn is_standard_event_type(t: &str) -> bool {
    matches!(
        t,
        "ObjectEvent"
            | "AggregationEvent"
            | "TransactionEvent"
            | "TransformationEvent"
            | "AssociationEvent"
    )
}

/// `https://ref.gs1.org/epcis/ObjectEvent` and `epcis:ObjectEvent` → `ObjectEvent`.
fn normalize_event_type(value: &str) -> String {
    let value = value.trim();
    value
        .strip_prefix("https://ref.gs1.org/epcis/")
        .or_else(|| value.strip_prefix("epcis:"))
        .filter(|t| is_standard_event_type(t))
        .unwrap_or(value)
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// Identifiers

/// Characters kept as they are in canonical Digital Link values.
const DL_ESCAPE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// GS1 Digital Link primary-key AIs recognised in paths.
const PRIMARY_AIS: [&str; 15] = [
    "00", "01", "253", "255", "401", "402", "414", "417", "8003", "8004", "8006", "8010", "8013",
    "8017", "8018",
];

/// EPC schemes converted to Digital Link: (scheme, AI, position of the company prefix in the
/// AI value, number of URN fields).
const GS1_SCHEMES: [(&str, &str, usize, usize); 9] = [
    ("sgtin", "01", 1, 3),
    ("lgtin", "01", 1, 3),
    ("sscc", "00", 1, 2),
    ("sgln", "414", 0, 3),
    ("pgln", "417", 0, 2),
    ("grai", "8003", 1, 3),
    ("giai", "8004", 0, 2),
    ("gsrn", "8018", 0, 2),
    ("gdti", "253", 0, 3),
];

fn scheme_info(scheme: &str) -> Option<(&'static str, usize, usize)> {
    GS1_SCHEMES
        .iter()
        .find(|(s, ..)| *s == scheme)
        .map(|(_, ai, offset, fields)| (*ai, *offset, *fields))
}

/// The canonical comparison key of an identifier (EPC, class, location, party, document):
/// see the module docs. Never fails: what it cannot convert is returned trimmed.
pub fn epc_key(uri: &str) -> String {
    let uri = uri.trim();
    urn_key(uri)
        .or_else(|| digital_link_key(uri))
        .unwrap_or_else(|| uri.to_owned())
}

/// `urn:epc:{id|class|idpat}:{scheme}:{body}` → (kind, scheme, body), kind and scheme lowercased.
fn split_urn(uri: &str) -> Option<(String, String, &str)> {
    let rest = strip_prefix_ignore_case(uri, "urn:epc:")?;
    let mut parts = rest.splitn(3, ':');
    let kind = parts.next()?.to_ascii_lowercase();
    let scheme = parts.next()?.to_ascii_lowercase();
    let body = parts.next()?;
    Some((kind, scheme, body))
}

fn urn_key(uri: &str) -> Option<String> {
    let (kind, scheme, body) = split_urn(uri)?;
    let (_, _, n) = scheme_info(&scheme)?;
    let fields: Vec<&str> = body.splitn(n, '.').collect();
    match (kind.as_str(), scheme.as_str()) {
        ("id", s) if s != "lgtin" => gs1_key(s, &fields),
        ("class", "lgtin") => gs1_key("lgtin", &fields),
        ("idpat", "sgtin") => match fields.as_slice() {
            [cp, ir, "*"] if *cp != "*" && *ir != "*" => Some(dl_uri(&[("01", gtin14(cp, ir)?)])),
            _ => None,
        },
        _ => None,
    }
}

fn gs1_key(scheme: &str, fields: &[&str]) -> Option<String> {
    match (scheme, fields) {
        ("sgtin", [cp, ir, serial]) => {
            Some(dl_uri(&[("01", gtin14(cp, ir)?), ("21", decode(serial)?)]))
        }
        ("lgtin", [cp, ir, lot]) => Some(dl_uri(&[("01", gtin14(cp, ir)?), ("10", decode(lot)?)])),
        ("sscc", [cp, serial_ref]) => {
            let (extension, rest) = split_first_digit(serial_ref)?;
            Some(dl_uri(&[(
                "00",
                with_check_digit(&format!("{extension}{cp}{rest}"), 17)?,
            )]))
        }
        ("sgln", [cp, location_ref, extension]) => {
            let gln = with_check_digit(&format!("{cp}{location_ref}"), 12)?;
            if *extension == "0" {
                Some(dl_uri(&[("414", gln)]))
            } else {
                Some(dl_uri(&[("414", gln), ("254", decode(extension)?)]))
            }
        }
        ("pgln", [cp, party_ref]) => Some(dl_uri(&[(
            "417",
            with_check_digit(&format!("{cp}{party_ref}"), 12)?,
        )])),
        ("grai", [cp, asset_type, serial]) => {
            let grai = with_check_digit(&format!("{cp}{asset_type}"), 12)?;
            Some(dl_uri(&[("8003", format!("0{grai}{}", decode(serial)?))]))
        }
        ("giai", [cp, asset_ref]) if all_digits(cp) => {
            Some(dl_uri(&[("8004", format!("{cp}{}", decode(asset_ref)?))]))
        }
        ("gsrn", [cp, service_ref]) => Some(dl_uri(&[(
            "8018",
            with_check_digit(&format!("{cp}{service_ref}"), 17)?,
        )])),
        ("gdti", [cp, document_type, serial]) => {
            let gdti = with_check_digit(&format!("{cp}{document_type}"), 12)?;
            Some(dl_uri(&[("253", format!("{gdti}{}", decode(serial)?))]))
        }
        _ => None,
    }
}

/// GTIN-14 from an SGTIN company prefix and item reference (indicator digit first).
fn gtin14(cp: &str, item_ref: &str) -> Option<String> {
    let (indicator, rest) = split_first_digit(item_ref)?;
    with_check_digit(&format!("{indicator}{cp}{rest}"), 13)
}

fn split_first_digit(text: &str) -> Option<(char, &str)> {
    let mut chars = text.chars();
    let first = chars.next().filter(char::is_ascii_digit)?;
    Some((first, chars.as_str()))
}

fn all_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// Appends the GS1 mod-10 check digit to `digits`, which must be `len` digits long.
fn with_check_digit(digits: &str, len: usize) -> Option<String> {
    if digits.len() != len || !all_digits(digits) {
        return None;
    }
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| u32::from(b - b'0') * if i % 2 == 0 { 3 } else { 1 })
        .sum();
    let check = (10 - sum % 10) % 10;
    Some(format!("{digits}{check}"))
}

fn decode(text: &str) -> Option<String> {
    percent_decode_str(text)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

fn dl_uri(pairs: &[(&str, String)]) -> String {
    let mut out = String::from(CANONICAL_DL_PREFIX);
    for (i, (ai, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(ai);
        out.push('/');
        out.extend(utf8_percent_encode(value, DL_ESCAPE));
    }
    out
}

fn digital_link_key(uri: &str) -> Option<String> {
    let rest = strip_prefix_ignore_case(uri, "https://")
        .or_else(|| strip_prefix_ignore_case(uri, "http://"))?;
    let rest = rest.split(['?', '#']).next()?;
    let (_host, path) = rest.split_once('/')?;
    let segments: Vec<&str> = path.split('/').collect();
    let start = segments.iter().position(|s| PRIMARY_AIS.contains(s))?;
    let mut pairs: Vec<(&str, String)> = Vec::new();
    let mut i = start;
    while i + 1 < segments.len() {
        let ai = segments[i];
        if !(2..=4).contains(&ai.len()) || !all_digits(ai) {
            return None;
        }
        pairs.push((ai, decode(segments[i + 1])?));
        i += 2;
    }
    if i < segments.len() && !segments[i].is_empty() {
        return None;
    }
    let (primary, value) = pairs.first_mut()?;
    if *primary == "01" {
        if !all_digits(value) || ![8, 12, 13, 14].contains(&value.len()) {
            return None;
        }
        *value = format!("{value:0>14}");
    }
    Some(dl_uri(&pairs))
}

/// A `MATCH_*` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EpcPattern {
    /// Identifiers whose canonical key equals this one.
    Exact(String),
    /// Identifiers whose canonical key starts with this one (everything under one GTIN, GLN,
    /// GRAI or GDTI).
    Prefix(String),
    /// GS1 keys of this AI whose value carries `company_prefix` at `offset`.
    CompanyPrefix {
        ai: &'static str,
        offset: usize,
        company_prefix: String,
    },
    /// Any GS1 key of this AI.
    AnyOfAi(&'static str),
    /// A pattern of a scheme not converted to Digital Link, matched field by field on URNs
    /// (`None` = `*`).
    Urn {
        scheme: String,
        fields: Vec<Option<String>>,
    },
}

impl EpcPattern {
    /// Parses an identifier or EPC pattern URI.
    pub fn parse(value: &str) -> Result<EpcPattern, String> {
        let value = value.trim();
        if let Some((kind, scheme, body)) = split_urn(value)
            && kind == "idpat"
        {
            return Self::parse_idpat(value, &scheme, body);
        }
        let key = epc_key(value);
        Ok(if is_gtin_class_key(&key) {
            EpcPattern::Prefix(key)
        } else {
            EpcPattern::Exact(key)
        })
    }

    fn parse_idpat(value: &str, scheme: &str, body: &str) -> Result<EpcPattern, String> {
        let info = scheme_info(scheme);
        let fields: Vec<&str> = match info {
            Some((_, _, n)) => body.splitn(n, '.').collect(),
            None => body.split('.').collect(),
        };
        if fields.iter().any(|f| f.is_empty()) {
            return Err(format!("{value:?} has an empty field"));
        }
        let concrete = fields
            .iter()
            .position(|f| *f == "*")
            .unwrap_or(fields.len());
        if fields[concrete..].iter().any(|f| *f != "*") {
            return Err(format!(
                "{value:?}: wildcards (*) may only replace the trailing fields of an EPC pattern"
            ));
        }
        if concrete == fields.len() {
            return Ok(EpcPattern::Exact(epc_key(&format!(
                "urn:epc:id:{scheme}:{body}"
            ))));
        }
        let Some((ai, offset, _)) = info else {
            return Ok(EpcPattern::Urn {
                scheme: scheme.to_owned(),
                fields: fields
                    .iter()
                    .map(|f| (*f != "*").then(|| (*f).to_owned()))
                    .collect(),
            });
        };
        if concrete == 0 {
            return Ok(EpcPattern::AnyOfAi(ai));
        }
        let cp = fields[0];
        if !all_digits(cp) {
            return Err(format!("{value:?}: the company prefix must be digits"));
        }
        if concrete == 1 {
            return Ok(EpcPattern::CompanyPrefix {
                ai,
                offset,
                company_prefix: cp.to_owned(),
            });
        }
        let second = fields[1];
        let prefix = match scheme {
            "sgtin" | "lgtin" => gtin14(cp, second).map(|g| dl_uri(&[("01", g)])),
            "sgln" => with_check_digit(&format!("{cp}{second}"), 12).map(|g| dl_uri(&[("414", g)])),
            "grai" => with_check_digit(&format!("{cp}{second}"), 12)
                .map(|g| format!("{CANONICAL_DL_PREFIX}8003/0{g}")),
            "gdti" => with_check_digit(&format!("{cp}{second}"), 12)
                .map(|g| format!("{CANONICAL_DL_PREFIX}253/{g}")),
            _ => None,
        };
        prefix
            .map(EpcPattern::Prefix)
            .ok_or_else(|| format!("{value:?} is not a valid {scheme} pattern"))
    }

    /// Whether the identifier `epc` (URN, Digital Link or other URI) matches.
    pub fn matches(&self, epc: &str) -> bool {
        self.matches_key(epc, &epc_key(epc))
    }

    fn matches_key(&self, raw: &str, key: &str) -> bool {
        match self {
            EpcPattern::Exact(k) => key == k,
            EpcPattern::Prefix(p) => key.starts_with(p.as_str()),
            EpcPattern::CompanyPrefix {
                ai,
                offset,
                company_prefix,
            } => key_value(key, ai).is_some_and(|v| {
                v.get(*offset..offset + company_prefix.len()) == Some(company_prefix.as_str())
            }),
            EpcPattern::AnyOfAi(ai) => key_value(key, ai).is_some(),
            EpcPattern::Urn { scheme, fields } => {
                split_urn(raw.trim()).is_some_and(|(_, s, body)| {
                    let candidate: Vec<&str> = body.split('.').collect();
                    s == *scheme
                        && candidate.len() == fields.len()
                        && fields
                            .iter()
                            .zip(&candidate)
                            .all(|(f, c)| f.as_deref().is_none_or(|f| f == *c))
                })
            }
        }
    }
}

/// The (still encoded) value of the primary key `ai` in a canonical Digital Link key.
fn key_value<'a>(key: &'a str, ai: &str) -> Option<&'a str> {
    key.strip_prefix(CANONICAL_DL_PREFIX)?
        .strip_prefix(ai)?
        .strip_prefix('/')?
        .split('/')
        .next()
}

fn is_gtin_class_key(key: &str) -> bool {
    key_value(key, "01").is_some_and(|v| key.len() == CANONICAL_DL_PREFIX.len() + 3 + v.len())
}

// ---------------------------------------------------------------------------------------------
// Index keys

/// Where an identifier appears in an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EpcRole {
    /// `epcList` (Object, Transaction) — `MATCH_epc`.
    Epc,
    /// `childEPCs` (Aggregation, Association) — `MATCH_epc`.
    Child,
    /// `parentID` — `MATCH_parentID`.
    Parent,
    /// `inputEPCList` — `MATCH_inputEPC`.
    Input,
    /// `outputEPCList` — `MATCH_outputEPC`.
    Output,
    /// `quantityList` — `MATCH_epcClass`.
    Class,
    /// `childQuantityList` — `MATCH_epcClass`.
    ChildClass,
    /// `inputQuantityList` — `MATCH_inputEPCClass`.
    InputClass,
    /// `outputQuantityList` — `MATCH_outputEPCClass`.
    OutputClass,
}

impl EpcRole {
    /// Stable name (for storage).
    pub fn as_str(self) -> &'static str {
        match self {
            EpcRole::Epc => "epc",
            EpcRole::Child => "child",
            EpcRole::Parent => "parent",
            EpcRole::Input => "input",
            EpcRole::Output => "output",
            EpcRole::Class => "class",
            EpcRole::ChildClass => "child_class",
            EpcRole::InputClass => "input_class",
            EpcRole::OutputClass => "output_class",
        }
    }

    /// True for instance identifiers (`MATCH_anyEPC`), false for classes (`MATCH_anyEPCClass`).
    pub fn is_instance(self) -> bool {
        matches!(
            self,
            EpcRole::Epc | EpcRole::Child | EpcRole::Parent | EpcRole::Input | EpcRole::Output
        )
    }
}

/// An identifier mentioned by an event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EpcRef {
    pub role: EpcRole,
    /// As written in the event.
    pub epc: String,
    /// [`epc_key`] of it.
    pub key: String,
}

/// A typed link (business transaction, source, destination).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TypedRef {
    /// Normalised type, if the entry has one.
    pub kind: Option<String>,
    /// [`epc_key`] of the value.
    pub key: String,
}

/// What the storage layer indexes an event by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexKeys {
    pub event_type: String,
    /// `eventTime`, milliseconds since the Unix epoch (sub-millisecond digits truncated).
    pub event_time_ms: i64,
    /// `recordTime` when the event has one (the repository sets it at capture).
    pub record_time_ms: Option<i64>,
    pub event_id: Option<String>,
    pub action: Option<String>,
    /// Normalised (see [`normalize_vocabulary`]).
    pub biz_step: Option<String>,
    /// Normalised.
    pub disposition: Option<String>,
    /// Canonical key ([`epc_key`]).
    pub read_point: Option<String>,
    /// Canonical key.
    pub biz_location: Option<String>,
    /// Every identifier the event mentions, in event order by role.
    pub epcs: Vec<EpcRef>,
    pub biz_transactions: Vec<TypedRef>,
    pub sources: Vec<TypedRef>,
    pub destinations: Vec<TypedRef>,
    pub transformation_id: Option<String>,
    pub has_error_declaration: bool,
}

/// Why an event cannot be indexed (it would not have passed validation).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    #[error("an event must be a JSON object")]
    NotAnObject,
    #[error("the event has no `type`")]
    MissingType,
    #[error("the event has no `eventTime`")]
    MissingEventTime,
    #[error("`{field}` {value:?} is not an RFC 3339 date-time with an offset")]
    InvalidTime { field: &'static str, value: String },
}

impl IndexError {
    /// Stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            IndexError::NotAnObject => "epcis_index_not_an_object",
            IndexError::MissingType => "epcis_index_type_missing",
            IndexError::MissingEventTime => "epcis_index_event_time_missing",
            IndexError::InvalidTime { .. } => "epcis_index_time_invalid",
        }
    }
}

/// The index keys of an EPCIS 2.0 JSON event.
pub fn index_keys(event: &Value) -> Result<IndexKeys, IndexError> {
    let e = event.as_object().ok_or(IndexError::NotAnObject)?;
    let event_type = normalize_event_type(str_field(e, "type").ok_or(IndexError::MissingType)?);
    let millis = |field: &'static str| -> Result<Option<i64>, IndexError> {
        match str_field(e, field) {
            None => Ok(None),
            Some(text) => parse_time(text)
                .map(|t| Some(t.timestamp_millis()))
                .ok_or_else(|| IndexError::InvalidTime {
                    field,
                    value: text.to_owned(),
                }),
        }
    };
    let event_time_ms = millis("eventTime")?.ok_or(IndexError::MissingEventTime)?;
    let record_time_ms = millis("recordTime")?;

    let mut epcs = Vec::new();
    let instance_fields = [
        ("epcList", EpcRole::Epc),
        ("childEPCs", EpcRole::Child),
        ("parentID", EpcRole::Parent),
        ("inputEPCList", EpcRole::Input),
        ("outputEPCList", EpcRole::Output),
    ];
    for (field, role) in instance_fields {
        if let Some(value) = e.get(field) {
            for epc in strings(value) {
                epcs.push(EpcRef {
                    role,
                    key: epc_key(&epc),
                    epc,
                });
            }
        }
    }
    let class_fields = [
        ("quantityList", EpcRole::Class),
        ("childQuantityList", EpcRole::ChildClass),
        ("inputQuantityList", EpcRole::InputClass),
        ("outputQuantityList", EpcRole::OutputClass),
    ];
    for (field, role) in class_fields {
        for element in quantity_elements(e, &[field]) {
            if let Some(class) = str_field(element, "epcClass") {
                epcs.push(EpcRef {
                    role,
                    key: epc_key(class),
                    epc: class.to_owned(),
                });
            }
        }
    }
    let typed = |list: &str, value_field: &str, vocabulary: Vocabulary| -> Vec<TypedRef> {
        e.get(list)
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|item| {
                        let value = item.get(value_field)?.as_str()?;
                        Some(TypedRef {
                            kind: item
                                .get("type")
                                .and_then(Value::as_str)
                                .map(|k| normalize_vocabulary(vocabulary, k)),
                            key: epc_key(value),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let location = |field: &str| {
        e.get(field)
            .and_then(|l| l.get("id"))
            .and_then(Value::as_str)
            .map(epc_key)
    };
    Ok(IndexKeys {
        event_type,
        event_time_ms,
        record_time_ms,
        event_id: str_field(e, "eventID").map(str::to_owned),
        action: str_field(e, "action").map(str::to_owned),
        biz_step: str_field(e, "bizStep").map(|v| normalize_vocabulary(Vocabulary::BizStep, v)),
        disposition: str_field(e, "disposition")
            .map(|v| normalize_vocabulary(Vocabulary::Disposition, v)),
        read_point: location("readPoint"),
        biz_location: location("bizLocation"),
        epcs,
        biz_transactions: typed(
            "bizTransactionList",
            "bizTransaction",
            Vocabulary::BizTransactionType,
        ),
        sources: typed("sourceList", "source", Vocabulary::SourceDestType),
        destinations: typed("destinationList", "destination", Vocabulary::SourceDestType),
        transformation_id: str_field(e, "transformationID").map(str::to_owned),
        has_error_declaration: e.get("errorDeclaration").is_some_and(Value::is_object),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;
    use std::path::{Path, PathBuf};

    /// `shared/conformance`: `$TRELLIS_CONFORMANCE_DIR`, else `<a>/shared/conformance` or
    /// `<a>/../shared/conformance` for an ancestor `a` of this crate.
    fn conformance_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("TRELLIS_CONFORMANCE_DIR") {
            let dir = PathBuf::from(dir);
            assert!(
                dir.is_dir(),
                "TRELLIS_CONFORMANCE_DIR={} is not a directory",
                dir.display()
            );
            return dir;
        }
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        manifest
            .ancestors()
            .flat_map(|a| {
                [
                    a.join("shared").join("conformance"),
                    a.join("..").join("shared").join("conformance"),
                ]
            })
            .find(|dir| dir.join("epcis").is_dir())
            .unwrap_or_else(|| {
                panic!(
                    "EPCIS conformance fixtures not found: set TRELLIS_CONFORMANCE_DIR or put shared/conformance/epcis beside an ancestor of {}",
                    manifest.display()
                )
            })
    }

    fn document(relative: &str) -> Value {
        let path = conformance_dir()
            .join("epcis")
            .join("examples")
            .join(relative);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn event(relative: &str, index: usize) -> Value {
        let doc = document(relative);
        let event = doc["epcisBody"]["eventList"][index].clone();
        assert!(event.is_object(), "{relative} has no event {index}");
        event
    }

    fn all_example_events() -> Vec<(String, Value)> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).expect("read examples") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    walk(&path, out);
                } else if path.extension().is_some_and(|e| e == "jsonld") {
                    out.push(path);
                }
            }
        }
        let mut files = Vec::new();
        walk(
            &conformance_dir().join("epcis").join("examples"),
            &mut files,
        );
        files.sort();
        let mut out = Vec::new();
        for path in files {
            let doc: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
            let list = doc
                .pointer("/epcisBody/eventList")
                .or_else(|| doc.pointer("/epcisBody/queryResults/resultsBody/eventList"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for (i, e) in list.into_iter().enumerate() {
                out.push((format!("{} #{i}", path.display()), e));
            }
        }
        assert!(out.len() >= 50, "only {} example events", out.len());
        out
    }

    fn query(pairs: &[(&str, &str)]) -> EventQuery {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        EventQuery::from_pairs(&pairs).unwrap_or_else(|e| panic!("{pairs:?}: {e}"))
    }

    fn query_error(pairs: &[(&str, &str)]) -> QueryError {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        EventQuery::from_pairs(&pairs).expect_err("query should be rejected")
    }

    #[track_caller]
    fn check(event: &Value, pairs: &[(&str, &str)], expected: bool) {
        assert_eq!(
            query(pairs).matches(event),
            expected,
            "{pairs:?} on {}",
            event.get("eventID").unwrap_or(&Value::Null)
        );
    }

    const OBJ: &str = "Example_9.6.1-ObjectEvent.jsonld";
    const OBJ_QTY: &str = "Example_9.6.2-ObjectEvent.jsonld";
    const AGG: &str = "Example_9.6.3-AggregationEvent.jsonld";
    const AGG_DL: &str = "WithDigitalLinkID/Example_9.6.3-AggregationEventWithDigitalLink.jsonld";
    const OBJ_DL: &str = "WithDigitalLinkID/Example_9.6.1-ObjectEventWithDigitalLink.jsonld";
    const XFORM: &str = "Example_9.6.4-TransformationEvent.jsonld";
    const ERR: &str = "WithErrorDeclaration/ErrorDeclarationAndCorrectiveEvent.jsonld";
    const ASSOC: &str = "Example-Type-sourceOrDestination,measurement,bizTransaction.jsonld";
    const PERSIST: &str = "PersistentDisposition-example.jsonld";

    #[test]
    fn empty_query_matches_every_example_and_every_event_is_indexable() {
        let empty = query(&[]);
        for (name, e) in all_example_events() {
            assert!(empty.matches(&e), "{name}");
            let keys = index_keys(&e).unwrap_or_else(|err| panic!("{name}: {err}"));
            // The event is found again by its own keys.
            let time = e["eventTime"].as_str().expect("eventTime");
            let mut pairs = vec![
                ("eventType", keys.event_type.clone()),
                ("GE_eventTime", time.to_owned()),
            ];
            if let Some(step) = &keys.biz_step {
                pairs.push(("EQ_bizStep", step.clone()));
            }
            if let Some(rp) = e.pointer("/readPoint/id").and_then(Value::as_str) {
                pairs.push(("EQ_readPoint", rp.to_owned()));
            }
            if let Some(id) = &keys.event_id {
                pairs.push(("EQ_eventID", id.clone()));
            }
            if let Some(r) = keys.epcs.iter().find(|r| r.role.is_instance()) {
                pairs.push(("MATCH_anyEPC", r.epc.clone()));
            }
            if let Some(r) = keys.epcs.iter().find(|r| !r.role.is_instance()) {
                pairs.push(("MATCH_anyEPCClass", r.epc.clone()));
            }
            let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            assert!(query(&borrowed).matches(&e), "{name}: {borrowed:?}");
        }
    }

    #[test]
    fn event_type() {
        let e = event(OBJ, 0);
        check(&e, &[("eventType", "ObjectEvent")], true);
        check(&e, &[("eventType", "AggregationEvent")], false);
        check(&e, &[("eventType", "AggregationEvent,ObjectEvent")], true);
        check(&e, &[("eventType", "AggregationEvent|ObjectEvent")], true);
        check(
            &e,
            &[
                ("eventType", "AggregationEvent"),
                ("eventType", "ObjectEvent"),
            ],
            true,
        );
        check(
            &e,
            &[("eventType", "https://ref.gs1.org/epcis/ObjectEvent")],
            true,
        );
        check(&event(AGG, 0), &[("eventType", "AggregationEvent")], true);
        let error = query_error(&[("eventType", "QuantityEvent")]);
        assert_eq!(error.code(), "epcis_query_parameter_invalid");
        assert_eq!(error.parameter(), Some("eventType"));
    }

    #[test]
    fn event_time_bounds() {
        // eventTime 2005-04-03T20:33:31.116000-06:00 = 2005-04-04T02:33:31.116Z
        let e = event(OBJ, 0);
        check(&e, &[("GE_eventTime", "2005-04-04T02:33:31.116Z")], true);
        check(&e, &[("LT_eventTime", "2005-04-04T02:33:31.116Z")], false);
        check(&e, &[("GE_eventTime", "2005-04-04T02:33:31.117Z")], false);
        check(&e, &[("LT_eventTime", "2005-04-04T02:33:31.117Z")], true);
        check(
            &e,
            &[("GE_eventTime", "2005-04-04T04:33:31.116+02:00")],
            true,
        );
        // `+02:00` whose plus became a space in form decoding.
        check(
            &e,
            &[("GE_eventTime", "2005-04-04T04:33:31.116 02:00")],
            true,
        );
        check(
            &e,
            &[
                ("GE_eventTime", "2005-04-01T00:00:00Z"),
                ("LT_eventTime", "2005-04-05T00:00:00Z"),
            ],
            true,
        );
        for name in [
            "GE_eventTime",
            "LT_eventTime",
            "GE_recordTime",
            "LT_recordTime",
        ] {
            let error = query_error(&[(name, "yesterday")]);
            assert_eq!(error.code(), "epcis_query_timestamp_invalid");
            assert_eq!(error.parameter(), Some(name));
            assert!(error.to_string().contains(name));
        }
        let error = query_error(&[("GE_eventTime", "2005-04-04T02:33:31")]);
        assert_eq!(error.code(), "epcis_query_timestamp_invalid");
        let error = query_error(&[
            ("GE_eventTime", "2005-04-04T02:33:31Z"),
            ("GE_eventTime", "2005-04-05T02:33:31Z"),
        ]);
        assert_eq!(error.code(), "epcis_query_parameter_duplicate");
    }

    #[test]
    fn record_time_bounds() {
        let e = event(ASSOC, 0); // recordTime 2019-11-06T14:05:00.000+01:00
        check(&e, &[("GE_recordTime", "2019-11-06T13:05:00Z")], true);
        check(&e, &[("LT_recordTime", "2019-11-06T13:05:00Z")], false);
        check(&e, &[("LT_recordTime", "2019-11-06T13:05:00.001Z")], true);
        // An event without recordTime never satisfies a recordTime bound.
        check(
            &event(OBJ, 0),
            &[("GE_recordTime", "2000-01-01T00:00:00Z")],
            false,
        );
    }

    #[test]
    fn action() {
        let e = event(OBJ, 0);
        check(&e, &[("EQ_action", "OBSERVE")], true);
        check(&e, &[("EQ_action", "ADD")], false);
        check(&e, &[("EQ_action", "ADD,OBSERVE")], true);
        check(&event(ASSOC, 0), &[("EQ_action", "ADD")], true);
        assert_eq!(
            query_error(&[("EQ_action", "KEEP")]).code(),
            "epcis_query_parameter_invalid"
        );
    }

    #[test]
    fn biz_step_and_disposition_in_every_spelling() {
        let e = event(OBJ, 0); // shipping, in_transit
        for spelling in [
            "shipping",
            "urn:epcglobal:cbv:bizstep:shipping",
            "https://ref.gs1.org/cbv/BizStep-shipping",
            "cbv:BizStep-shipping",
        ] {
            check(&e, &[("EQ_bizStep", spelling)], true);
        }
        check(&e, &[("EQ_bizStep", "receiving")], false);
        check(&e, &[("EQ_bizStep", "receiving,shipping")], true);
        check(
            &e,
            &[("EQ_bizStep", "https://example.com/steps/shipping")],
            false,
        );
        let mut web = e.clone();
        web["bizStep"] = json!("https://ref.gs1.org/cbv/BizStep-shipping");
        check(&web, &[("EQ_bizStep", "shipping")], true);
        let error = query_error(&[("EQ_bizStep", "shiping")]);
        assert_eq!(error.code(), "epcis_query_parameter_invalid");
        assert!(error.to_string().contains("business step"));

        check(&e, &[("EQ_disposition", "in_transit")], true);
        check(
            &e,
            &[("EQ_disposition", "urn:epcglobal:cbv:disp:in_transit")],
            true,
        );
        check(&e, &[("EQ_disposition", "in_progress")], false);
        // No disposition at all never matches.
        check(&event(XFORM, 0), &[("EQ_disposition", "active")], false);
    }

    #[test]
    fn persistent_disposition() {
        let first = event(PERSIST, 0); // set: completeness_inferred
        let second = event(PERSIST, 1); // set: completeness_verified, unset: completeness_inferred
        let set = [("EQ_persistentDisposition_set", "completeness_inferred")];
        check(&first, &set, true);
        check(&second, &set, false);
        let unset = [("EQ_persistentDisposition_unset", "completeness_inferred")];
        check(&first, &unset, false);
        check(&second, &unset, true);
        check(
            &second,
            &[(
                "EQ_persistentDisposition_set",
                "completeness_inferred|completeness_verified",
            )],
            true,
        );
        check(&event(OBJ, 0), &set, false);
    }

    struct Tree;
    impl LocationHierarchy for Tree {
        fn is_descendant(&self, location: &str, ancestor: &str) -> bool {
            location == epc_key("urn:epc:id:sgln:0012345.11111.400")
                && ancestor == epc_key("urn:epc:id:sgln:0012345.11111.0")
        }
    }

    #[test]
    fn read_point_and_biz_location() {
        let e = event(OBJ, 0); // readPoint urn:epc:id:sgln:0614141.07346.1234
        check(
            &e,
            &[("EQ_readPoint", "urn:epc:id:sgln:0614141.07346.1234")],
            true,
        );
        check(
            &e,
            &[(
                "EQ_readPoint",
                "https://id.gs1.org/414/0614141073467/254/1234",
            )],
            true,
        );
        check(
            &e,
            &[(
                "EQ_readPoint",
                "https://resolver.example.com/414/0614141073467/254/1234",
            )],
            true,
        );
        check(
            &e,
            &[("EQ_readPoint", "urn:epc:id:sgln:0614141.07346.0")],
            false,
        );
        check(
            &e,
            &[("EQ_bizLocation", "urn:epc:id:sgln:0012345.11111.0")],
            false,
        );
        let second = event(OBJ, 1); // readPoint …400, bizLocation …0
        check(
            &second,
            &[("EQ_bizLocation", "urn:epc:id:sgln:0012345.11111.0")],
            true,
        );
        check(
            &second,
            &[("EQ_bizLocation", "https://id.gs1.org/414/0012345111112")],
            true,
        );
        let within = query(&[("WD_readPoint", "urn:epc:id:sgln:0012345.11111.0")]);
        assert!(!within.matches(&second), "no hierarchy: WD is EQ");
        assert!(within.matches_with(&second, &Tree));
        assert!(!within.matches_with(&e, &Tree));
        let within = query(&[("WD_bizLocation", "urn:epc:id:sgln:0012345.11111.0")]);
        assert!(within.matches(&second), "WD includes the location itself");
        // geo: URIs keep their comma; a comma before a URI separates values.
        let geo = event("WithSensorData/SensorDataExample16.jsonld", 0);
        check(&geo, &[("EQ_readPoint", "geo:42.698334,23.319941")], true);
        check(
            &geo,
            &[(
                "EQ_readPoint",
                "urn:epc:id:sgln:0614141.07346.1234,geo:42.698334,23.319941",
            )],
            true,
        );
        check(&geo, &[("EQ_readPoint", "geo:42.698334,23.3")], false);
        assert_eq!(
            query_error(&[("EQ_readPoint", "warehouse 7")]).code(),
            "epcis_query_parameter_invalid"
        );
    }

    #[test]
    fn match_epc() {
        let e = event(OBJ, 0); // epcList sgtin 0614141.107346.2017 and .2018
        for value in [
            "urn:epc:id:sgtin:0614141.107346.2017",
            "https://id.gs1.org/01/10614141073464/21/2017",
            "https://example.com/01/10614141073464/21/2017?linkType=all",
            "urn:epc:idpat:sgtin:0614141.107346.*",
            "urn:epc:idpat:sgtin:0614141.*.*",
            "urn:epc:idpat:sgtin:*.*.*",
            "https://id.gs1.org/01/10614141073464",
            "urn:epc:id:sgtin:0614141.107346.9999,urn:epc:id:sgtin:0614141.107346.2018",
        ] {
            check(&e, &[("MATCH_epc", value)], true);
        }
        for value in [
            "urn:epc:id:sgtin:0614141.107346.9999",
            "urn:epc:idpat:sgtin:0614142.*.*",
            "urn:epc:idpat:sgtin:0614141.107347.*",
            "urn:epc:idpat:sscc:*.*",
            "https://id.gs1.org/01/10614141073464/10/2017",
        ] {
            check(&e, &[("MATCH_epc", value)], false);
        }
        // Digital Link EPCs in the event, URN and pattern values in the query.
        let dl = event(OBJ_DL, 0); // https://id.gs1.org/01/70614141123451/21/2017
        check(
            &dl,
            &[("MATCH_epc", "urn:epc:id:sgtin:0614141.712345.2017")],
            true,
        );
        check(
            &dl,
            &[("MATCH_epc", "urn:epc:idpat:sgtin:0614141.712345.*")],
            true,
        );
        check(
            &dl,
            &[("MATCH_epc", "urn:epc:idpat:sgtin:0614141.*.*")],
            true,
        );
        check(
            &dl,
            &[("MATCH_epc", "urn:epc:id:sgtin:0614141.712345.2019")],
            false,
        );
        // childEPCs of an AggregationEvent count for MATCH_epc; inputs of a transformation don't.
        check(
            &event(AGG, 0),
            &[("MATCH_epc", "urn:epc:id:sgtin:0614141.107346.2018")],
            true,
        );
        let input = [("MATCH_epc", "urn:epc:id:sgtin:4012345.011122.25")];
        check(&event(XFORM, 0), &input, false);
        let error = query_error(&[("MATCH_epc", "urn:epc:idpat:sgtin:*.107346.*")]);
        assert_eq!(error.code(), "epcis_query_parameter_invalid");
        assert_eq!(error.parameter(), Some("MATCH_epc"));
    }

    #[test]
    fn match_parent_input_output_any() {
        let agg = event(AGG, 0); // parentID urn:epc:id:sscc:0614141.1234567890
        check(
            &agg,
            &[("MATCH_parentID", "urn:epc:id:sscc:0614141.1234567890")],
            true,
        );
        check(
            &agg,
            &[("MATCH_parentID", "https://id.gs1.org/00/106141412345678908")],
            true,
        );
        check(
            &agg,
            &[("MATCH_parentID", "urn:epc:idpat:sscc:0614141.*")],
            true,
        );
        check(
            &agg,
            &[("MATCH_parentID", "urn:epc:id:sscc:0614141.1234567891")],
            false,
        );
        check(
            &agg,
            &[("MATCH_epc", "urn:epc:id:sscc:0614141.1234567890")],
            false,
        );
        check(
            &agg,
            &[("MATCH_anyEPC", "urn:epc:id:sscc:0614141.1234567890")],
            true,
        );
        check(
            &event(OBJ, 0),
            &[("MATCH_parentID", "urn:epc:idpat:sscc:*.*")],
            false,
        );

        let x = event(XFORM, 0);
        let input = "urn:epc:id:sgtin:4012345.011122.25";
        let output = "urn:epc:id:sgtin:4012345.077889.25";
        check(&x, &[("MATCH_inputEPC", input)], true);
        check(&x, &[("MATCH_outputEPC", input)], false);
        check(&x, &[("MATCH_outputEPC", output)], true);
        check(&x, &[("MATCH_inputEPC", output)], false);
        check(&x, &[("MATCH_anyEPC", input)], true);
        check(&x, &[("MATCH_anyEPC", output)], true);
        check(
            &x,
            &[("MATCH_outputEPC", "urn:epc:idpat:sgtin:4012345.077889.*")],
            true,
        );
        check(
            &x,
            &[("MATCH_anyEPC", "urn:epc:id:sgtin:4012345.077889.99")],
            false,
        );
    }

    #[test]
    fn match_epc_class() {
        let q = event(OBJ_QTY, 0); // quantityList lgtin 4012345.012345.998877
        for value in [
            "urn:epc:class:lgtin:4012345.012345.998877",
            "https://id.gs1.org/01/04012345123456/10/998877",
            "urn:epc:idpat:sgtin:4012345.012345.*",
            "https://id.gs1.org/01/04012345123456",
            "urn:epc:idpat:sgtin:4012345.*.*",
        ] {
            check(&q, &[("MATCH_epcClass", value)], true);
            check(&q, &[("MATCH_anyEPCClass", value)], true);
            check(&q, &[("MATCH_inputEPCClass", value)], false);
        }
        check(
            &q,
            &[(
                "MATCH_epcClass",
                "urn:epc:class:lgtin:4012345.012345.998878",
            )],
            false,
        );
        // An idpat class in the event matches its Digital Link GTIN.
        let agg = event(AGG, 0);
        check(
            &agg,
            &[("MATCH_epcClass", "https://id.gs1.org/01/04012345987652")],
            true,
        );
        check(
            &agg,
            &[("MATCH_epcClass", "urn:epc:idpat:sgtin:4012345.098765.*")],
            true,
        );

        let x = event(XFORM, 0);
        check(
            &x,
            &[(
                "MATCH_inputEPCClass",
                "urn:epc:class:lgtin:4012345.011111.4444",
            )],
            true,
        );
        check(
            &x,
            &[(
                "MATCH_inputEPCClass",
                "urn:epc:idpat:sgtin:4012345.066666.*",
            )],
            true,
        );
        check(
            &x,
            &[(
                "MATCH_outputEPCClass",
                "urn:epc:idpat:sgtin:4012345.066666.*",
            )],
            false,
        );
        check(
            &x,
            &[("MATCH_epcClass", "urn:epc:class:lgtin:4012345.011111.4444")],
            false,
        );
        let err = event(ERR, 0);
        check(
            &err,
            &[(
                "MATCH_outputEPCClass",
                "urn:epc:idpat:sgtin:4012345.044444.*",
            )],
            true,
        );
        check(
            &err,
            &[("MATCH_anyEPCClass", "urn:epc:idpat:sgtin:4012345.044444.*")],
            true,
        );
        check(
            &err,
            &[("MATCH_anyEPCClass", "urn:epc:idpat:sgtin:4012345.055555.*")],
            false,
        );
    }

    #[test]
    fn urn_and_digital_link_documents_index_the_same_classes() {
        let classes = |e: &Value| -> Vec<String> {
            let mut keys: Vec<String> = index_keys(e)
                .expect("keys")
                .epcs
                .into_iter()
                .filter(|r| !r.role.is_instance())
                .map(|r| r.key)
                .collect();
            keys.sort();
            keys
        };
        assert_eq!(classes(&event(AGG, 0)), classes(&event(AGG_DL, 0)));
        assert_eq!(
            epc_key("urn:epc:id:giai:4000001.111"),
            epc_key("https://id.gs1.org/8004/4000001111")
        );
        assert_eq!(
            epc_key("urn:epc:id:sgtin:0614141.712345.2017"),
            "https://id.gs1.org/01/70614141123451/21/2017"
        );
        assert_eq!(
            epc_key("urn:epc:id:sgtin:4012345.012345.A%2FB"),
            epc_key("https://id.gs1.org/01/4012345123456/21/A%2fB")
        );
        assert_eq!(epc_key(" urn:example:x "), "urn:example:x");
    }

    #[test]
    fn quantity() {
        let q = event(OBJ_QTY, 0); // 200 KGM
        check(&q, &[("EQ_quantity", "200")], true);
        check(&q, &[("EQ_quantity", "100,200")], true);
        check(&q, &[("GT_quantity", "200")], false);
        check(&q, &[("GE_quantity", "200")], true);
        check(&q, &[("LT_quantity", "200")], false);
        check(&q, &[("LE_quantity", "200")], true);
        check(&q, &[("GE_quantity_KGM", "150")], true);
        check(&q, &[("GE_quantity_LTR", "1")], false);
        check(&event(OBJ, 0), &[("GE_quantity", "0")], false);
        assert_eq!(
            query_error(&[("GE_quantity", "lots")]).code(),
            "epcis_query_parameter_invalid"
        );
    }

    #[test]
    fn transformation_and_event_ids() {
        let doc =
            document("WithFullCombinationOfFields/transformation_event_all_possible_fields.jsonld");
        let x = doc["epcisBody"]["eventList"][0].clone();
        check(
            &x,
            &[("EQ_transformationID", "urn:epc:id:gdti:0614141.12345.400")],
            true,
        );
        check(
            &x,
            &[("EQ_transformationID", "urn:epc:id:gdti:0614141.12345.401")],
            false,
        );
        check(
            &event(OBJ, 0),
            &[("EQ_transformationID", "urn:epc:id:gdti:0614141.12345.400")],
            false,
        );
        let e = event(OBJ, 0);
        let id = e["eventID"].as_str().expect("eventID").to_owned();
        check(&e, &[("EQ_eventID", &id)], true);
        check(
            &e,
            &[(
                "EQ_eventID",
                "urn:uuid:374d95fc-9457-4a51-bd6a-0bba133845a8",
            )],
            false,
        );
    }

    #[test]
    fn error_declaration() {
        let declared = event(ERR, 0);
        let corrective = event(ERR, 1);
        check(&declared, &[("EXISTS_errorDeclaration", "")], true);
        check(&declared, &[("EXISTS_errorDeclaration", "true")], true);
        check(&corrective, &[("EXISTS_errorDeclaration", "")], false);
        check(&corrective, &[("EXISTS_errorDeclaration", "false")], true);
        check(&declared, &[("EQ_errorReason", "incorrect_data")], true);
        check(
            &declared,
            &[("EQ_errorReason", "urn:epcglobal:cbv:er:incorrect_data")],
            true,
        );
        check(&declared, &[("EQ_errorReason", "did_not_occur")], false);
        let fix = "urn:uuid:404d95fc-9457-4a51-bd6a-0bba133845a8";
        check(&declared, &[("EQ_correctiveEventID", fix)], true);
        check(&corrective, &[("EQ_correctiveEventID", fix)], false);
        // declarationTime 2020-01-15T00:00:00+01:00
        check(
            &declared,
            &[("GE_errorDeclarationTime", "2020-01-14T23:00:00Z")],
            true,
        );
        check(
            &declared,
            &[("LT_errorDeclarationTime", "2020-01-14T23:00:00Z")],
            false,
        );
        check(
            &corrective,
            &[("LT_errorDeclarationTime", "2030-01-01T00:00:00Z")],
            false,
        );
    }

    #[test]
    fn business_transactions_sources_destinations() {
        let e = event(OBJ, 0); // po http://transaction.acme.com/po/12345678
        let po = "http://transaction.acme.com/po/12345678";
        check(&e, &[("EQ_bizTransaction_po", po)], true);
        check(&e, &[("EQ_bizTransaction_inv", po)], false);
        check(
            &e,
            &[("EQ_bizTransaction_po", "http://transaction.acme.com/po/1")],
            false,
        );
        check(
            &e,
            &[("EQ_bizTransaction_urn:epcglobal:cbv:btt:po", po)],
            true,
        );
        assert_eq!(
            query_error(&[("EQ_bizTransaction_purchase", po)]).code(),
            "epcis_query_parameter_invalid"
        );
        let q = event(OBJ_QTY, 0);
        check(
            &q,
            &[(
                "EQ_source_possessing_party",
                "urn:epc:id:sgln:4012345.00001.0",
            )],
            true,
        );
        check(
            &q,
            &[("EQ_source_location", "urn:epc:id:sgln:4012345.00001.0")],
            false,
        );
        check(
            &q,
            &[(
                "EQ_destination_owning_party",
                "https://id.gs1.org/414/0614141000012",
            )],
            true,
        );
        check(
            &q,
            &[("EQ_destination_location", "urn:epc:id:sgln:0614141.00001.0")],
            false,
        );
    }

    #[test]
    fn sensor_parameters() {
        let s1 = event("WithSensorData/SensorDataExample1.jsonld", 0);
        check(&s1, &[("EXISTS_sensorElementList", "")], true);
        check(&event(OBJ, 0), &[("EXISTS_sensorElementList", "")], false);
        check(&s1, &[("EQ_type", "Temperature")], true);
        check(&s1, &[("EQ_type", "gs1:Temperature")], true);
        check(&s1, &[("EQ_type", "Pressure")], false);
        check(&s1, &[("GE_value_CEL", "26.2")], true);
        check(&s1, &[("GT_value_CEL", "26.2")], false);
        check(&s1, &[("LT_value_CEL", "26")], false);
        check(&s1, &[("LE_value_CEL", "26")], true);
        check(&s1, &[("EQ_value_CEL", "26.1")], true);
        check(&s1, &[("GE_value_KGM", "0")], false);
        check(&s1, &[("EQ_deviceID", "urn:epc:id:giai:4000001.111")], true);
        check(
            &s1,
            &[("EQ_deviceID", "https://id.gs1.org/8004/4000001111")],
            true,
        );
        check(
            &s1,
            &[("EQ_deviceID", "urn:epc:id:giai:4000001.112")],
            false,
        );
        // metadata times 14:05, 14:35, 14:55 (+01:00)
        check(&s1, &[("GE_time", "2019-04-02T14:55:00.000+01:00")], true);
        check(&s1, &[("LT_time", "2019-04-02T14:05:00.000+01:00")], false);
        check(
            &s1,
            &[
                ("GE_time", "2019-04-02T14:10:00+01:00"),
                ("LT_time", "2019-04-02T14:30:00+01:00"),
            ],
            false,
        );
        check(
            &s1,
            &[
                ("GE_time", "2019-04-02T14:30:00+01:00"),
                ("LT_time", "2019-04-02T14:40:00+01:00"),
            ],
            true,
        );
        let s2 = event("WithSensorData/SensorDataExample2.jsonld", 0);
        check(
            &s2,
            &[("GE_startTime", "2019-04-02T13:55:01.000+01:00")],
            true,
        );
        check(
            &s2,
            &[("GE_startTime", "2019-04-02T13:55:02.000+01:00")],
            false,
        );
        check(
            &s2,
            &[("LT_endTime", "2019-04-02T14:55:00.000+01:00")],
            false,
        );
        check(
            &s2,
            &[("LT_endTime", "2019-04-02T14:55:00.001+01:00")],
            true,
        );
        check(&s2, &[("GE_minValue_CEL", "26")], true);
        check(&s2, &[("GT_maxValue_CEL", "26.2")], false);
        check(
            &s2,
            &[("GE_meanValue_CEL", "26.1"), ("LE_sDev_CEL", "0.1")],
            true,
        );
        check(
            &s2,
            &[("EQ_bizRules", "https://example.com/253/4012345000054987")],
            true,
        );
        let s6 = event("WithSensorData/SensorDataExample6.jsonld", 0);
        check(&s6, &[("GE_percRank", "50")], true);
        check(&s6, &[("GT_percRank", "50")], false);
        check(&s6, &[("LT_percValue_CEL", "13")], true);
        let s7 = event("WithSensorData/SensorDataExample7.jsonld", 0);
        check(&s7, &[("EQ_stringValue", "SomeString")], true);
        check(&s7, &[("EQ_stringValue", "OtherString")], false);
        check(&s7, &[("EQ_booleanValue", "true")], true);
        check(&s7, &[("EQ_booleanValue", "false")], false);
        check(&s7, &[("EQ_hexBinaryValue", "f0f0f0")], true);
        check(
            &s7,
            &[(
                "EQ_uriValue",
                "https://example.org/example/someSectorSpecificValue",
            )],
            true,
        );
        let s8 = event("WithSensorData/SensorDataExample8.jsonld", 0);
        check(
            &s8,
            &[(
                "EQ_chemicalSubstance",
                "https://identifiers.org/inchikey:CZMRCDWAGMRECN-UGDNZRGBSA-N",
            )],
            true,
        );
        check(
            &s8,
            &[(
                "EQ_dataProcessingMethod",
                "https://example.com/253/4012345000054987",
            )],
            true,
        );
        check(
            &s8,
            &[(
                "EQ_microorganism",
                "https://www.ncbi.nlm.nih.gov/taxonomy/1126011",
            )],
            true,
        );
        check(
            &s8,
            &[(
                "EQ_microorganism",
                "https://www.ncbi.nlm.nih.gov/taxonomy/1",
            )],
            false,
        );
    }

    #[test]
    fn order_limits_and_paging() {
        let q = query(&[
            ("orderBy", "eventTime"),
            ("orderDirection", "ASC"),
            ("eventCountLimit", "1"),
            ("perPage", "50"),
            ("nextPageToken", "opaque-token"),
        ]);
        assert_eq!(q.order_by, Some(OrderBy::EventTime));
        assert_eq!(q.order_direction, OrderDirection::Asc);
        assert_eq!(q.event_count_limit, Some(1));
        assert_eq!(q.per_page, Some(50));
        assert_eq!(q.next_page_token.as_deref(), Some("opaque-token"));
        let (early, late) = (event(OBJ, 0), event(OBJ, 1));
        assert_eq!(q.compare(&early, &late), Ordering::Less);
        let desc = query(&[("orderBy", "eventTime")]);
        assert_eq!(desc.order_direction, OrderDirection::Desc);
        assert_eq!(desc.compare(&early, &late), Ordering::Greater);
        assert_eq!(query(&[]).compare(&early, &late), Ordering::Equal);

        let conflict = query_error(&[("eventCountLimit", "1")]);
        assert_eq!(conflict.code(), "epcis_query_parameter_conflict");
        let conflict = query_error(&[
            ("orderBy", "eventTime"),
            ("eventCountLimit", "1"),
            ("maxEventCount", "5"),
        ]);
        assert_eq!(conflict.code(), "epcis_query_parameter_conflict");
        for (name, value) in [
            ("orderDirection", "UP"),
            ("orderBy", "quantity"),
            ("perPage", "0"),
            ("eventCountLimit", "-1"),
            ("EXISTS_errorDeclaration", "maybe"),
        ] {
            let error = query_error(&[(name, value)]);
            assert_eq!(
                error.code(),
                "epcis_query_parameter_invalid",
                "{name}={value}"
            );
            assert_eq!(error.parameter(), Some(name));
        }
        assert_eq!(
            query_error(&[("orderBy", "example:myField")]).code(),
            "epcis_query_parameter_unsupported"
        );
    }

    #[test]
    fn unknown_and_unsupported_parameters() {
        for name in [
            "EQ_colour",
            "colour",
            "MATCH_gtin",
            "GE_eventtime",
            "EQ_value_celsius",
        ] {
            let error = query_error(&[("eventType", "ObjectEvent"), (name, "x")]);
            assert_eq!(error.code(), "epcis_query_parameter_unknown", "{name}");
            assert_eq!(error.parameter(), Some(name));
            assert!(error.to_string().contains(name));
            assert_eq!(error.epcis_exception(), "QueryParameterException");
        }
        for name in [
            "EQ_example:myField",
            "EXISTS_example:myField",
            "EQ_ILMD_example:batch",
            "EQ_INNER_example:field",
            "GT_SENSORREPORT_example:cv",
            "EQ_readPoint_cbvmda:site",
            "HASATTR_example:attr",
            "EQ_ATTR_readPoint_name",
        ] {
            let error = query_error(&[(name, "x")]);
            assert_eq!(error.code(), "epcis_query_parameter_unsupported", "{name}");
            assert_eq!(error.parameter(), Some(name));
        }
        assert_eq!(
            query_error(&[("EQ_bizStep", "shipping,")]).code(),
            "epcis_query_parameter_invalid"
        );
    }

    #[test]
    fn index_keys_of_examples() {
        let agg = index_keys(&event(AGG, 0)).expect("keys");
        assert_eq!(agg.event_type, "AggregationEvent");
        assert_eq!(agg.event_time_ms, 1_370_703_536_591); // 2013-06-08T14:58:56.591Z
        assert_eq!(agg.record_time_ms, None);
        assert_eq!(agg.biz_step.as_deref(), Some("receiving"));
        assert_eq!(agg.disposition.as_deref(), Some("in_progress"));
        assert_eq!(
            agg.read_point.as_deref(),
            Some(epc_key("urn:epc:id:sgln:0614141.00777.0").as_str())
        );
        let roles: Vec<EpcRole> = agg.epcs.iter().map(|r| r.role).collect();
        assert_eq!(
            roles,
            [
                EpcRole::Child,
                EpcRole::Child,
                EpcRole::Parent,
                EpcRole::ChildClass,
                EpcRole::ChildClass
            ]
        );
        assert_eq!(agg.epcs[2].epc, "urn:epc:id:sscc:0614141.1234567890");
        assert_eq!(agg.epcs[2].key, "https://id.gs1.org/00/106141412345678908");

        let assoc = index_keys(&event(ASSOC, 0)).expect("keys");
        assert_eq!(assoc.record_time_ms, Some(1_573_045_500_000));
        assert_eq!(
            assoc
                .biz_transactions
                .iter()
                .map(|t| t.kind.as_deref().unwrap_or(""))
                .collect::<Vec<_>>(),
            ["inv", "po", "desadv"]
        );
        assert_eq!(assoc.sources[0].kind.as_deref(), Some("possessing_party"));
        let x = index_keys(&event(XFORM, 0)).expect("keys");
        assert_eq!(
            x.epcs.iter().filter(|r| r.role == EpcRole::Input).count(),
            2
        );
        assert_eq!(
            x.epcs
                .iter()
                .filter(|r| r.role == EpcRole::OutputClass)
                .count(),
            0
        );
        assert!(
            index_keys(&event(ERR, 0))
                .expect("keys")
                .has_error_declaration
        );

        assert_eq!(
            index_keys(&json!([])).expect_err("array").code(),
            "epcis_index_not_an_object"
        );
        let mut broken = event(OBJ, 0);
        broken["eventTime"] = json!("soon");
        assert_eq!(
            index_keys(&broken).expect_err("time").code(),
            "epcis_index_time_invalid"
        );
        broken.as_object_mut().expect("object").remove("eventTime");
        assert_eq!(
            index_keys(&broken).expect_err("time").code(),
            "epcis_index_event_time_missing"
        );
    }

    fn timestamp_strategy() -> impl Strategy<Value = Timestamp> {
        // 1990..2060, millisecond precision, offsets -14:00..+14:00 in whole minutes.
        (631_152_000_000i64..2_840_140_800_000i64, -840i32..=840i32).prop_map(|(ms, minutes)| {
            let offset = FixedOffset::east_opt(minutes * 60).expect("offset in range");
            DateTime::from_timestamp_millis(ms)
                .expect("in range")
                .with_timezone(&offset)
        })
    }

    proptest! {
        #[test]
        fn time_filters_agree_with_comparing_instants(
            t in timestamp_strategy(),
            ge in timestamp_strategy(),
            lt in timestamp_strategy(),
            micros in 0u32..1000,
        ) {
            let mut e = event(OBJ, 0);
            // Event time with microsecond digits, written in its own offset.
            let t = t + chrono::Duration::microseconds(i64::from(micros));
            e["eventTime"] = json!(t.to_rfc3339_opts(chrono::SecondsFormat::Micros, false));
            let ge_text = ge.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let lt_text = lt.to_rfc3339_opts(chrono::SecondsFormat::Millis, false);
            let q = query(&[("GE_eventTime", &ge_text), ("LT_eventTime", &lt_text)]);
            prop_assert_eq!(q.matches(&e), t >= ge && t < lt);
            let only_ge = query(&[("GE_eventTime", &ge_text)]);
            prop_assert_eq!(only_ge.matches(&e), t >= ge);
            let only_lt = query(&[("LT_eventTime", &lt_text)]);
            prop_assert_eq!(only_lt.matches(&e), t < lt);
            prop_assert_eq!(index_keys(&e).expect("keys").event_time_ms, t.timestamp_millis());
        }

        #[test]
        fn list_separators_all_mean_or(
            steps in proptest::sample::subsequence(BIZ_STEPS.to_vec(), 1..6),
            pipes in proptest::collection::vec(any::<bool>(), 6),
        ) {
            let mut joined = String::new();
            for (i, step) in steps.iter().enumerate() {
                if i > 0 {
                    joined.push(if pipes[i] { '|' } else { ',' });
                }
                joined.push_str(step);
            }
            let q = query(&[("EQ_bizStep", &joined)]);
            prop_assert_eq!(&q.biz_steps, &steps);
            let mut e = event(OBJ, 0);
            for step in BIZ_STEPS {
                e["bizStep"] = json!(step);
                prop_assert_eq!(q.matches(&e), steps.contains(&step));
            }
        }

        #[test]
        fn sgtin_urn_and_digital_link_are_one_key(
            cp_len in 6usize..=12,
            digits in "[0-9]{13}",
            serial in "[A-Za-z0-9]{1,20}",
        ) {
            let (cp, item) = (&digits[1..=cp_len], format!("{}{}", &digits[..1], &digits[cp_len + 1..]));
            let urn = format!("urn:epc:id:sgtin:{cp}.{item}.{serial}");
            let key = epc_key(&urn);
            let dl = key.replace(CANONICAL_DL_PREFIX, "https://brand.example.com/");
            prop_assert_eq!(&epc_key(&dl), &key);
            let gtin_pattern = format!("urn:epc:idpat:sgtin:{cp}.{item}.*");
            let company_pattern = format!("urn:epc:idpat:sgtin:{cp}.*.*");
            for pattern in [gtin_pattern.as_str(), company_pattern.as_str(), urn.as_str()] {
                let parsed = EpcPattern::parse(pattern).expect("pattern");
                prop_assert!(parsed.matches(&dl), "{} should match {}", pattern, dl);
                prop_assert!(parsed.matches(&urn), "{} should match {}", pattern, urn);
            }
        }
    }
}
