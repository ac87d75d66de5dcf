//! Validation of captured EPCIS 2.0 JSON / JSON-LD.
//!
//! The official EPCIS 2.0 JSON Schema is not part of the binary: it is loaded at run time from a
//! directory ([`EpcisValidator::load`], [`EpcisValidator::discover`]) and compiled once. Every
//! `$ref` between its files is resolved offline from the files themselves (by their `$id`); a
//! reference to anything else fails the load.
//!
//! [`EpcisValidator::validate_capture`] accepts what the EPCIS 2.0 capture interface accepts:
//! an `EPCISDocument`, an `EPCISQueryDocument` (the REST binding's `POST /capture` "should
//! support both") or a single event (`POST /events`, which must then carry its own `@context`).
//! On top of the schema it checks what a JSON Schema cannot express (see [`ValidationErrorKind`]).
//!
//! When a body has several problems, the one reported is the first in *document order*: the
//! order in which `serde_json` iterates the instance (the text order when `serde_json` has its
//! `preserve_order` feature, otherwise keys sorted), array items by index, a missing required
//! field after the fields its object has, and a problem inside a value before a problem about
//! that value as a whole (the more specific one). On the same location the checks of this module
//! come before the schema's, then the schema's in their own (deterministic) order.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use chrono::DateTime;
use serde_json::{Map, Value};

/// Environment variable naming the directory that holds `EPCIS-JSON-Schema-root.json`.
pub const SCHEMA_DIR_ENV: &str = "TRELLIS_EPCIS_SCHEMA_DIR";

/// File of the capture schema (dispatches on `type`: documents and each event type).
pub const CAPTURE_SCHEMA_FILE: &str = "EPCIS-JSON-Schema-root.json";

/// File of the schema of an EPCIS query definition (the `query` of `POST /queries`).
pub const QUERY_SCHEMA_FILE: &str = "EPCIS-Query-JSON-Schema-root.json";

/// The five EPCIS 2.0 event types this product stores and queries.
pub const EVENT_TYPES: [&str; 5] = [
    "ObjectEvent",
    "AggregationEvent",
    "TransactionEvent",
    "TransformationEvent",
    "AssociationEvent",
];

/// Prefixes defined by the standard EPCIS 2.0 JSON-LD context (`epcis-context.jsonld`), which
/// extension fields may use without declaring them.
pub const STANDARD_PREFIXES: [(&str, &str); 8] = [
    ("epcis", "https://ref.gs1.org/epcis/"),
    ("cbv", "https://ref.gs1.org/cbv/"),
    ("cbvmda", "urn:epcglobal:cbv:mda:"),
    ("gs1", "https://gs1.org/voc/"),
    ("rdfs", "http://www.w3.org/2000/01/rdf-schema#"),
    ("owl", "http://www.w3.org/2002/07/owl#"),
    ("xsd", "http://www.w3.org/2001/XMLSchema#"),
    ("dcterms", "http://purl.org/dc/terms/"),
];

/// What a valid capture body was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CaptureKind {
    /// An `EPCISDocument`; its events are `epcisBody.eventList`.
    Document,
    /// An `EPCISQueryDocument` (query results re-captured, e.g. from another repository); its
    /// events are `epcisBody.queryResults.resultsBody.eventList`.
    QueryDocument,
    /// A single event with its own `@context`.
    Event,
}

/// Why the schema directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file or directory could not be read.
    #[error("cannot read the EPCIS schema at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A schema file is not JSON.
    #[error("EPCIS schema file {path} is not valid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// One of the two root files is missing from the directory.
    #[error("EPCIS schema directory {dir} has no {file}")]
    MissingRoot { dir: PathBuf, file: &'static str },
    /// A file declares a `$schema` this validator does not implement.
    #[error(
        "EPCIS schema file {path} declares $schema {declared:?}, which is not a supported JSON Schema draft"
    )]
    UnsupportedDraft { path: PathBuf, declared: String },
    /// Two files claim the same `$id`.
    #[error("EPCIS schema files {first} and {second} have the same $id {id}")]
    DuplicateId {
        id: String,
        first: PathBuf,
        second: PathBuf,
    },
    /// The schema does not compile (bad keyword, unresolvable `$ref`, bad pattern…).
    #[error("EPCIS schema {file} does not compile: {message}")]
    Compile { file: &'static str, message: String },
}

impl LoadError {
    /// Stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            LoadError::Io { .. } => "epcis_schema_unreadable",
            LoadError::Json { .. } => "epcis_schema_not_json",
            LoadError::MissingRoot { .. } => "epcis_schema_root_missing",
            LoadError::UnsupportedDraft { .. } => "epcis_schema_draft_unsupported",
            LoadError::DuplicateId { .. } => "epcis_schema_duplicate_id",
            LoadError::Compile { .. } => "epcis_schema_compile",
        }
    }
}

/// The class of a [`ValidationError`]; each has a stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ValidationErrorKind {
    /// The body is not a JSON object.
    NotAnObject,
    /// `type` is not `EPCISDocument`, `EPCISQueryDocument` or an event type.
    UnsupportedDocumentType,
    /// A required field is absent (the pointer names the missing field).
    MissingField,
    /// A field has the wrong JSON type.
    WrongType,
    /// A string is not a valid URI / date-time / … as its field requires.
    InvalidFormat,
    /// A value is outside what its field allows.
    InvalidValue,
    /// A vocabulary value (bizStep, disposition, business transaction type, …) is neither a
    /// standard CBV 2.0 term nor a URI.
    InvalidVocabulary,
    /// A field that is neither an EPCIS field nor an extension (URI or CURIE).
    UnknownField,
    /// A list that must not repeat entries does.
    DuplicateEntry,
    /// A timestamp is not RFC 3339 with a time-zone offset.
    InvalidTimestamp,
    /// An extension event type (or anything not one of the five event types).
    EventTypeUnsupported,
    /// Two events of one document share an `eventID`.
    DuplicateEventId,
    /// An extension field uses a namespace prefix the `@context` does not declare.
    UndeclaredPrefix,
    /// `schemaVersion` is not 2.x.
    SchemaVersionUnsupported,
    /// Any other schema violation.
    SchemaViolation,
}

impl ValidationErrorKind {
    /// Stable error code.
    pub fn code(self) -> &'static str {
        match self {
            ValidationErrorKind::NotAnObject => "epcis_not_an_object",
            ValidationErrorKind::UnsupportedDocumentType => "epcis_capture_type_unsupported",
            ValidationErrorKind::MissingField => "epcis_field_missing",
            ValidationErrorKind::WrongType => "epcis_field_type",
            ValidationErrorKind::InvalidFormat => "epcis_field_format",
            ValidationErrorKind::InvalidValue => "epcis_field_value",
            ValidationErrorKind::InvalidVocabulary => "epcis_vocabulary_invalid",
            ValidationErrorKind::UnknownField => "epcis_field_unknown",
            ValidationErrorKind::DuplicateEntry => "epcis_list_duplicate",
            ValidationErrorKind::InvalidTimestamp => "epcis_timestamp_invalid",
            ValidationErrorKind::EventTypeUnsupported => "epcis_event_type_unsupported",
            ValidationErrorKind::DuplicateEventId => "epcis_event_id_duplicate",
            ValidationErrorKind::UndeclaredPrefix => "epcis_extension_prefix_undeclared",
            ValidationErrorKind::SchemaVersionUnsupported => "epcis_schema_version_unsupported",
            ValidationErrorKind::SchemaViolation => "epcis_schema_violation",
        }
    }
}

/// The first problem of a rejected body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} (at {pointer:?})")]
pub struct ValidationError {
    /// RFC 6901 JSON pointer of the offending field ("" is the whole body). For a missing
    /// required field it points at where the field should be.
    pub pointer: String,
    /// Human-readable explanation.
    pub reason: String,
    /// Class of the problem.
    pub kind: ValidationErrorKind,
}

impl ValidationError {
    fn new(
        pointer: impl Into<String>,
        kind: ValidationErrorKind,
        reason: impl Into<String>,
    ) -> Self {
        ValidationError {
            pointer: pointer.into(),
            reason: reason.into(),
            kind,
        }
    }

    /// Stable error code.
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }
}

/// The compiled EPCIS 2.0 schemas. Cheap to share (`Send + Sync`); compile once per process.
#[derive(Debug)]
pub struct EpcisValidator {
    capture: jsonschema::Validator,
    query: jsonschema::Validator,
    schema_dir: PathBuf,
}

impl EpcisValidator {
    /// Loads and compiles every `*.json` schema under `schema_dir` (recursively). Files are
    /// registered under their `$id`; files without one are ignored (nothing can reference
    /// them). Nothing is fetched from the network.
    pub fn load(schema_dir: &Path) -> Result<Self, LoadError> {
        let mut files = Vec::new();
        collect_json_files(schema_dir, &mut files)?;
        files.sort();

        let mut resources: Vec<(String, Value)> = Vec::new();
        let mut ids: HashMap<String, PathBuf> = HashMap::new();
        let mut capture_root = None;
        let mut query_root = None;
        for path in files {
            let text = fs::read_to_string(&path).map_err(|source| LoadError::Io {
                path: path.clone(),
                source,
            })?;
            let schema: Value = serde_json::from_str(&text).map_err(|source| LoadError::Json {
                path: path.clone(),
                source,
            })?;
            let is_capture_root = path.parent() == Some(schema_dir)
                && path.file_name().is_some_and(|n| n == CAPTURE_SCHEMA_FILE);
            let is_query_root = path.parent() == Some(schema_dir)
                && path.file_name().is_some_and(|n| n == QUERY_SCHEMA_FILE);
            if is_capture_root || is_query_root || schema.get("$schema").is_some() {
                declared_draft(&path, &schema)?;
            }
            if is_capture_root {
                capture_root = Some(schema.clone());
            }
            if is_query_root {
                query_root = Some(schema.clone());
            }
            let Some(id) = schema.get("$id").and_then(Value::as_str) else {
                continue;
            };
            let id = id.trim_end_matches('#').to_owned();
            if let Some(first) = ids.get(&id) {
                return Err(LoadError::DuplicateId {
                    id,
                    first: first.clone(),
                    second: path,
                });
            }
            ids.insert(id.clone(), path);
            resources.push((id, schema));
        }
        let capture_root = capture_root.ok_or_else(|| LoadError::MissingRoot {
            dir: schema_dir.to_path_buf(),
            file: CAPTURE_SCHEMA_FILE,
        })?;
        let query_root = query_root.ok_or_else(|| LoadError::MissingRoot {
            dir: schema_dir.to_path_buf(),
            file: QUERY_SCHEMA_FILE,
        })?;
        let capture_draft = declared_draft(&schema_dir.join(CAPTURE_SCHEMA_FILE), &capture_root)?;
        let query_draft = declared_draft(&schema_dir.join(QUERY_SCHEMA_FILE), &query_root)?;

        let registry = jsonschema::Registry::new()
            .extend(resources)
            .and_then(|builder| builder.prepare())
            .map_err(|e| LoadError::Compile {
                file: CAPTURE_SCHEMA_FILE,
                message: e.to_string(),
            })?;
        let compile = |schema: &Value, draft, file: &'static str| {
            jsonschema::options()
                .with_draft(draft)
                .with_registry(&registry)
                .should_validate_formats(true)
                .offline()
                .build(schema)
                .map_err(|e| LoadError::Compile {
                    file,
                    message: e.to_string(),
                })
        };
        let capture = compile(&capture_root, capture_draft, CAPTURE_SCHEMA_FILE)?;
        let query = compile(&query_root, query_draft, QUERY_SCHEMA_FILE)?;
        Ok(EpcisValidator {
            capture,
            query,
            schema_dir: schema_dir.to_path_buf(),
        })
    }

    /// Finds the schema directory: `$TRELLIS_EPCIS_SCHEMA_DIR` when set (returned as is, so a
    /// wrong setting fails loudly in [`EpcisValidator::load`]), else the first
    /// `shared/conformance/epcis/schema` holding the capture schema under an ancestor `a` of the
    /// current directory or of the running executable, as `a/shared/…` or `a/../shared/…`.
    pub fn discover() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os(SCHEMA_DIR_ENV) {
            return Some(PathBuf::from(dir));
        }
        let mut starts = Vec::new();
        if let Ok(dir) = std::env::current_dir() {
            starts.push(dir);
        }
        if let Some(dir) = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_path_buf))
        {
            starts.push(dir);
        }
        let relative = Path::new("shared")
            .join("conformance")
            .join("epcis")
            .join("schema");
        starts.iter().find_map(|start| {
            start.ancestors().find_map(|ancestor| {
                [
                    ancestor.join(&relative),
                    ancestor.join("..").join(&relative),
                ]
                .into_iter()
                .find(|dir| dir.join(CAPTURE_SCHEMA_FILE).is_file())
            })
        })
    }

    /// The directory the schemas were loaded from.
    pub fn schema_dir(&self) -> &Path {
        &self.schema_dir
    }

    /// Validates a capture body: an `EPCISDocument`, an `EPCISQueryDocument` or a single event.
    pub fn validate_capture(&self, body: &Value) -> Result<CaptureKind, ValidationError> {
        let Some(object) = body.as_object() else {
            return Err(ValidationError::new(
                "",
                ValidationErrorKind::NotAnObject,
                format!(
                    "a capture body must be a JSON object (EPCISDocument or event), not {}",
                    json_type_name(body)
                ),
            ));
        };
        let kind = match object.get("type") {
            None => {
                return Err(ValidationError::new(
                    "/type",
                    ValidationErrorKind::MissingField,
                    "required field `type` is missing (EPCISDocument, EPCISQueryDocument or an event type)",
                ));
            }
            Some(Value::String(t)) if t == "EPCISDocument" => CaptureKind::Document,
            Some(Value::String(t)) if t == "EPCISQueryDocument" => CaptureKind::QueryDocument,
            Some(Value::String(t)) if EVENT_TYPES.contains(&t.as_str()) => CaptureKind::Event,
            Some(Value::String(t)) => {
                let (kind, reason) = if t.contains(':') {
                    (
                        ValidationErrorKind::EventTypeUnsupported,
                        format!(
                            "extension event type {} is not supported; use one of {}",
                            quoted(t),
                            EVENT_TYPES.join(", ")
                        ),
                    )
                } else {
                    (
                        ValidationErrorKind::UnsupportedDocumentType,
                        format!(
                            "{} is not a capture document type: expected EPCISDocument, EPCISQueryDocument or one of {}",
                            quoted(t),
                            EVENT_TYPES.join(", ")
                        ),
                    )
                };
                return Err(ValidationError::new("/type", kind, reason));
            }
            Some(other) => {
                return Err(ValidationError::new(
                    "/type",
                    ValidationErrorKind::WrongType,
                    format!("`type` must be a string, not {}", json_type_name(other)),
                ));
            }
        };

        let mut issues = Vec::new();
        semantic_checks(body, kind, &mut issues);
        if !issues.is_empty() || !self.capture.is_valid(body) {
            issues.extend(
                self.capture
                    .iter_errors(body)
                    .map(|e| from_schema_error(&e, body)),
            );
        }
        match first_in_document_order(body, issues) {
            Some(error) => Err(error),
            None => Ok(kind),
        }
    }

    /// Validates an EPCIS query definition (the `query` object of the REST binding's
    /// `POST /queries`) against `EPCIS-Query-JSON-Schema-root.json`.
    pub fn validate_query_definition(&self, query: &Value) -> Result<(), ValidationError> {
        if self.query.is_valid(query) {
            return Ok(());
        }
        let issues = self
            .query
            .iter_errors(query)
            .map(|e| from_schema_error(&e, query))
            .collect();
        match first_in_document_order(query, issues) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// The events of a capture body: `epcisBody.eventList` of an `EPCISDocument`,
/// `epcisBody.queryResults.resultsBody.eventList` of an `EPCISQueryDocument`, or the body itself
/// when it is a single event. Events are returned as they are (without the document's
/// `@context`; see [`events_with_context`]).
pub fn split_events(doc: &Value) -> Vec<Value> {
    match event_list(doc) {
        EventList::List(events) => events.to_vec(),
        EventList::Single => vec![doc.clone()],
        EventList::None => Vec::new(),
    }
}

/// Like [`split_events`], but each event carries the document's `@context` (followed by its own
/// `@context` entries, if any), so that an event stored on its own keeps the namespaces of its
/// user extensions.
pub fn events_with_context(doc: &Value) -> Vec<Value> {
    let doc_context = match event_list(doc) {
        EventList::List(_) => document_context(doc),
        _ => None,
    };
    split_events(doc)
        .into_iter()
        .map(|mut event| {
            if let (Some(doc_ctx), Some(object)) = (doc_context, event.as_object_mut()) {
                let merged = match object.remove("@context") {
                    None => doc_ctx.clone(),
                    Some(own) => {
                        let mut items = context_items(doc_ctx);
                        items.extend(context_items(&own));
                        Value::Array(items)
                    }
                };
                object.insert("@context".to_owned(), merged);
            }
            event
        })
        .collect()
}

/// The document's (or single event's) JSON-LD `@context`, as captured.
pub fn document_context(doc: &Value) -> Option<&Value> {
    doc.get("@context")
}

/// Namespace prefixes declared inline in a JSON-LD `@context` value (string, object or array):
/// prefix → IRI. Remote contexts (URLs) are not fetched, so their terms are not included; see
/// [`STANDARD_PREFIXES`] for those of the standard EPCIS context.
pub fn context_namespaces(context: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for item in context_items(context) {
        if let Value::Object(terms) = item {
            for (term, definition) in terms {
                if term.starts_with('@') {
                    continue;
                }
                let iri = match definition {
                    Value::String(iri) => Some(iri.clone()),
                    Value::Object(def) => def.get("@id").and_then(Value::as_str).map(str::to_owned),
                    _ => None,
                };
                if let Some(iri) = iri {
                    out.insert(term.clone(), iri);
                }
            }
        }
    }
    out
}

enum EventList<'a> {
    List(&'a [Value]),
    Single,
    None,
}

fn event_list(doc: &Value) -> EventList<'_> {
    let list = match doc.get("type").and_then(Value::as_str) {
        Some("EPCISDocument") => doc.pointer("/epcisBody/eventList"),
        Some("EPCISQueryDocument") => doc.pointer("/epcisBody/queryResults/resultsBody/eventList"),
        Some(_) if doc.get("eventTime").is_some() => return EventList::Single,
        Some(t) if EVENT_TYPES.contains(&t) => return EventList::Single,
        _ => None,
    };
    match list.and_then(Value::as_array) {
        Some(events) => EventList::List(events),
        None => EventList::None,
    }
}

fn context_items(context: &Value) -> Vec<Value> {
    match context {
        Value::Array(items) => items.clone(),
        other => vec![other.clone()],
    }
}

// ---------------------------------------------------------------------------------------------
// Loading

fn collect_json_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    let entries = fs::read_dir(dir).map_err(|source| LoadError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| LoadError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        if path.is_dir() {
            collect_json_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
    Ok(())
}

fn declared_draft(path: &Path, schema: &Value) -> Result<jsonschema::Draft, LoadError> {
    let declared = schema.get("$schema").and_then(Value::as_str).unwrap_or("");
    let normalized = declared
        .trim_end_matches('#')
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let draft = match normalized {
        "json-schema.org/draft-04/schema" => jsonschema::Draft::Draft4,
        "json-schema.org/draft-06/schema" => jsonschema::Draft::Draft6,
        "json-schema.org/draft-07/schema" => jsonschema::Draft::Draft7,
        "json-schema.org/draft/2019-09/schema" => jsonschema::Draft::Draft201909,
        "json-schema.org/draft/2020-12/schema" => jsonschema::Draft::Draft202012,
        _ => {
            return Err(LoadError::UnsupportedDraft {
                path: path.to_path_buf(),
                declared: declared.to_owned(),
            });
        }
    };
    Ok(draft)
}

// ---------------------------------------------------------------------------------------------
// Checks the schema cannot express

fn semantic_checks(body: &Value, kind: CaptureKind, issues: &mut Vec<ValidationError>) {
    if kind != CaptureKind::Event
        && let Some(Value::String(version)) = body.get("schemaVersion")
        && version.split('.').next() != Some("2")
    {
        issues.push(ValidationError::new(
            "/schemaVersion",
            ValidationErrorKind::SchemaVersionUnsupported,
            format!(
                "schemaVersion {} is not supported; expected 2.x",
                quoted(version)
            ),
        ));
    }
    let (base, events): (&str, &[Value]) = match kind {
        CaptureKind::Event => ("", std::slice::from_ref(body)),
        CaptureKind::Document => (
            "/epcisBody/eventList",
            body.pointer("/epcisBody/eventList")
                .and_then(Value::as_array)
                .map_or(&[], Vec::as_slice),
        ),
        CaptureKind::QueryDocument => (
            "/epcisBody/queryResults/resultsBody/eventList",
            body.pointer("/epcisBody/queryResults/resultsBody/eventList")
                .and_then(Value::as_array)
                .map_or(&[], Vec::as_slice),
        ),
    };
    let mut event_ids: HashMap<&str, String> = HashMap::new();
    for (index, event) in events.iter().enumerate() {
        let pointer = if kind == CaptureKind::Event {
            String::new()
        } else {
            format!("{base}/{index}")
        };
        if let Some(object) = event.as_object() {
            check_event(object, &pointer, &mut event_ids, issues);
        }
    }
    check_prefixes(body, issues);
}

fn check_event<'a>(
    event: &'a Map<String, Value>,
    pointer: &str,
    event_ids: &mut HashMap<&'a str, String>,
    issues: &mut Vec<ValidationError>,
) {
    let event_type = event.get("type").and_then(Value::as_str);
    if let Some(t) = event_type
        && !EVENT_TYPES.contains(&t)
    {
        issues.push(ValidationError::new(
            format!("{pointer}/type"),
            ValidationErrorKind::EventTypeUnsupported,
            format!(
                "event type {} is not supported; expected one of {}",
                quoted(t),
                EVENT_TYPES.join(", ")
            ),
        ));
    }
    if let Some(id) = event.get("eventID").and_then(Value::as_str) {
        match event_ids.get(id) {
            Some(first) => issues.push(ValidationError::new(
                format!("{pointer}/eventID"),
                ValidationErrorKind::DuplicateEventId,
                format!(
                    "eventID {} is already used by the event at {first:?}",
                    quoted(id)
                ),
            )),
            None => {
                event_ids.insert(id, pointer.to_owned());
            }
        }
    }
    for field in ["eventTime", "recordTime"] {
        check_timestamp(event.get(field), &format!("{pointer}/{field}"), issues);
    }
    if let Some(Value::Object(declaration)) = event.get("errorDeclaration") {
        check_timestamp(
            declaration.get("declarationTime"),
            &format!("{pointer}/errorDeclaration/declarationTime"),
            issues,
        );
    }
    let action = event.get("action").and_then(Value::as_str);
    if event_type == Some("AggregationEvent")
        && matches!(action, Some("ADD" | "DELETE"))
        && !event.contains_key("parentID")
    {
        issues.push(ValidationError::new(
            format!("{pointer}/parentID"),
            ValidationErrorKind::MissingField,
            format!(
                "required field `parentID` is missing: an AggregationEvent with action {} must name its parent",
                action.unwrap_or_default()
            ),
        ));
    }
    if event_type == Some("ObjectEvent") && event.contains_key("ilmd") && action != Some("ADD") {
        issues.push(ValidationError::new(
            format!("{pointer}/ilmd"),
            ValidationErrorKind::InvalidValue,
            "`ilmd` (instance/lot master data) is only allowed in an ObjectEvent whose action is ADD",
        ));
    }
    if let Some(Value::Array(elements)) = event.get("sensorElementList") {
        for (i, element) in elements.iter().enumerate() {
            let Some(meta) = element.get("sensorMetadata") else {
                continue;
            };
            let start = meta
                .get("startTime")
                .and_then(Value::as_str)
                .and_then(parse_time);
            let end = meta
                .get("endTime")
                .and_then(Value::as_str)
                .and_then(parse_time);
            if let (Some(start), Some(end)) = (start, end)
                && start > end
            {
                issues.push(ValidationError::new(
                    format!("{pointer}/sensorElementList/{i}/sensorMetadata/endTime"),
                    ValidationErrorKind::InvalidValue,
                    "sensorMetadata `endTime` is before its `startTime`",
                ));
            }
        }
    }
}

fn check_timestamp(value: Option<&Value>, pointer: &str, issues: &mut Vec<ValidationError>) {
    if let Some(Value::String(text)) = value
        && parse_time(text).is_none()
    {
        issues.push(ValidationError::new(
                pointer,
                ValidationErrorKind::InvalidTimestamp,
                format!(
                    "{} is not an RFC 3339 date-time with a time-zone offset (e.g. 2005-04-03T20:33:31.116-06:00)",
                    quoted(text)
                ),
            ));
    }
}

fn parse_time(text: &str) -> Option<DateTime<chrono::FixedOffset>> {
    DateTime::parse_from_rfc3339(text).ok()
}

/// Extension fields written as CURIEs (`prefix:name`) must use a prefix the `@context` declares
/// (inline, by an enclosing object's `@context`, or by the standard EPCIS context). When the
/// context names a remote context other than the standard EPCIS one, its terms are unknown
/// offline and the check is skipped.
fn check_prefixes(body: &Value, issues: &mut Vec<ValidationError>) {
    let mut declared: HashSet<String> = STANDARD_PREFIXES
        .iter()
        .map(|(prefix, _)| (*prefix).to_owned())
        .collect();
    if let Some(context) = body.get("@context")
        && !add_declared_terms(context, &mut declared)
    {
        return;
    }
    let mut pointer = String::new();
    walk_prefixes(body, &declared, &mut pointer, issues);
}

/// Adds the terms of `context` to `declared`; false when it references an unknown remote context.
fn add_declared_terms(context: &Value, declared: &mut HashSet<String>) -> bool {
    let mut known = true;
    for item in context_items(context) {
        match item {
            Value::Object(terms) => declared.extend(terms.keys().cloned()),
            Value::String(url) => known &= is_standard_context(&url),
            _ => {}
        }
    }
    known
}

fn is_standard_context(url: &str) -> bool {
    url.ends_with("epcis-context.jsonld")
        && (url.contains("://ref.gs1.org/") || url.contains("://gs1.github.io/"))
}

fn walk_prefixes(
    value: &Value,
    declared: &HashSet<String>,
    pointer: &mut String,
    issues: &mut Vec<ValidationError>,
) {
    match value {
        Value::Object(object) => {
            let mut extended;
            let declared = match object.get("@context") {
                Some(context) if !pointer.is_empty() => {
                    extended = declared.clone();
                    if !add_declared_terms(context, &mut extended) {
                        return;
                    }
                    &extended
                }
                _ => declared,
            };
            for (key, child) in object {
                if key == "@context" {
                    continue;
                }
                let len = pointer.len();
                pointer.push('/');
                push_escaped(pointer, key);
                if let Some(prefix) = curie_prefix(key)
                    && !declared.contains(prefix)
                {
                    issues.push(ValidationError::new(
                            pointer.clone(),
                            ValidationErrorKind::UndeclaredPrefix,
                            format!(
                                "extension field {} uses the namespace prefix {} that the @context does not declare",
                                quoted(key),
                                quoted(prefix)
                            ),
                        ));
                }
                walk_prefixes(child, declared, pointer, issues);
                pointer.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&i.to_string());
                walk_prefixes(child, declared, pointer, issues);
                pointer.truncate(len);
            }
        }
        _ => {}
    }
}

/// The prefix of a compact IRI key (`ex:field`), or None for plain keys and absolute IRIs.
fn curie_prefix(key: &str) -> Option<&str> {
    let (prefix, rest) = key.split_once(':')?;
    if rest.starts_with("//") || matches!(prefix, "http" | "https" | "urn") {
        return None;
    }
    let mut chars = prefix.chars();
    let first = chars.next()?;
    let valid = (first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    valid.then_some(prefix)
}

// ---------------------------------------------------------------------------------------------
// Schema errors → ValidationError

fn from_schema_error(error: &jsonschema::ValidationError<'_>, root: &Value) -> ValidationError {
    use jsonschema::error::ValidationErrorKind as K;
    let at = error.instance_path().as_str().to_owned();
    let instance = error.instance();
    let field = last_segment(&at);
    match error.kind() {
        K::Required { property } => {
            let name = property
                .as_str()
                .map_or_else(|| property.to_string(), str::to_owned);
            let mut pointer = at;
            pointer.push('/');
            push_escaped(&mut pointer, &name);
            ValidationError::new(
                pointer,
                ValidationErrorKind::MissingField,
                format!("required field `{name}` is missing"),
            )
        }
        K::Type { kind } => {
            let expected = match kind {
                jsonschema::error::TypeKind::Single(t) => t.to_string(),
                jsonschema::error::TypeKind::Multiple(set) => set
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(" or "),
            };
            ValidationError::new(
                at,
                ValidationErrorKind::WrongType,
                format!(
                    "{} must be of type {expected}, not {}",
                    field_label(&field),
                    json_type_name(instance)
                ),
            )
        }
        K::Format { format } => {
            let what = match format.as_str() {
                "uri" => "an absolute URI (e.g. urn:epc:id:sgtin:0614141.107346.2017 or https://…)",
                "date-time" => "an RFC 3339 date-time with a time-zone offset",
                other => other,
            };
            let kind = if format == "date-time" {
                ValidationErrorKind::InvalidTimestamp
            } else {
                ValidationErrorKind::InvalidFormat
            };
            ValidationError::new(at, kind, format!("{} is not {what}", value_label(instance)))
        }
        K::Enum { options } => ValidationError::new(
            at,
            ValidationErrorKind::InvalidValue,
            format!(
                "{} is not allowed for {}; expected one of {}",
                value_label(instance),
                field_label(&field),
                options
            ),
        ),
        K::Pattern { pattern } => {
            let reason = if field == "eventTimeZoneOffset" {
                format!(
                    "{} is not a time-zone offset of the form +hh:mm or -hh:mm between -14:00 and +14:00",
                    value_label(instance)
                )
            } else {
                format!(
                    "{} is not allowed for {} (must match {pattern})",
                    value_label(instance),
                    field_label(&field)
                )
            };
            ValidationError::new(at, ValidationErrorKind::InvalidValue, reason)
        }
        K::AnyOf { context } | K::OneOfNotValid { context } => {
            let location = error
                .absolute_keyword_location()
                .map(|uri| uri.as_str().to_owned())
                .unwrap_or_default();
            if let Some(vocabulary) = vocabulary_name(&location) {
                ValidationError::new(
                    at,
                    ValidationErrorKind::InvalidVocabulary,
                    format!(
                        "{} is neither a standard CBV 2.0 {vocabulary} nor a URI",
                        value_label(instance)
                    ),
                )
            } else {
                let alternatives = missing_alternatives(context);
                if alternatives.is_empty() {
                    ValidationError::new(
                        at,
                        ValidationErrorKind::SchemaViolation,
                        format!(
                            "{} does not match any of the forms the EPCIS schema allows here",
                            field_label(&field)
                        ),
                    )
                } else {
                    ValidationError::new(
                        at,
                        ValidationErrorKind::MissingField,
                        format!("the event needs one of: {}", alternatives.join(", ")),
                    )
                }
            }
        }
        K::PropertyNames { error: inner } => {
            let name = inner
                .instance()
                .as_str()
                .map_or_else(|| inner.instance().to_string(), str::to_owned);
            let mut pointer = at;
            pointer.push('/');
            push_escaped(&mut pointer, &name);
            ValidationError::new(
                pointer,
                ValidationErrorKind::UnknownField,
                format!(
                    "unknown field `{name}`: not an EPCIS field here, and not an extension field (a URI, or a CURIE whose prefix the @context declares)"
                ),
            )
        }
        K::AdditionalProperties { unexpected } => {
            let object = resolve(root, &at);
            let name = unexpected
                .iter()
                .min_by_key(|name| position(object, name))
                .cloned()
                .unwrap_or_default();
            let mut pointer = at;
            pointer.push('/');
            push_escaped(&mut pointer, &name);
            ValidationError::new(
                pointer,
                ValidationErrorKind::UnknownField,
                format!("unknown field `{name}` in {}", field_label(&field)),
            )
        }
        K::UniqueItems => ValidationError::new(
            at,
            ValidationErrorKind::DuplicateEntry,
            format!(
                "{} must not contain the same entry twice",
                field_label(&field)
            ),
        ),
        K::MinItems { limit } => ValidationError::new(
            at,
            ValidationErrorKind::InvalidValue,
            format!(
                "{} needs at least {limit} entr{}",
                field_label(&field),
                if *limit == 1 { "y" } else { "ies" }
            ),
        ),
        K::Not { .. } | K::FalseSchema => ValidationError::new(
            at,
            ValidationErrorKind::InvalidValue,
            format!("{} is not allowed here", field_label(&field)),
        ),
        _ => ValidationError::new(
            at,
            ValidationErrorKind::SchemaViolation,
            truncate(&error.to_string()),
        ),
    }
}

fn vocabulary_name(keyword_location: &str) -> Option<&'static str> {
    const VOCABULARIES: [(&str, &str); 8] = [
        ("bizStep-JSON-Schema", "business step"),
        ("disposition-JSON-Schema", "disposition"),
        (
            "bizTransaction-type-JSON-Schema",
            "business transaction type",
        ),
        ("source-dest-type-JSON-Schema", "source/destination type"),
        ("error-reason-JSON-Schema", "error reason"),
        ("measurement-type-JSON-Schema", "measurement type"),
        ("sensor-alert-type-JSON-Schema", "sensor alert type"),
        ("component-JSON-Schema", "component"),
    ];
    VOCABULARIES
        .iter()
        .find(|(file, _)| keyword_location.contains(file))
        .map(|(_, name)| *name)
}

/// For an `anyOf` whose branches each failed on a missing field ("one of epcList or
/// quantityList"), the names of those fields, in schema order.
fn missing_alternatives(context: &[Vec<jsonschema::ValidationError<'static>>]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for branch in context {
        let missing = branch.iter().find_map(|e| match e.kind() {
            jsonschema::error::ValidationErrorKind::Required { property } => {
                property.as_str().map(str::to_owned)
            }
            _ => None,
        });
        match missing {
            Some(name) if !names.contains(&name) => names.push(name),
            Some(_) => {}
            None => return Vec::new(),
        }
    }
    names
}

// ---------------------------------------------------------------------------------------------
// Pointers and document order

fn first_in_document_order(root: &Value, issues: Vec<ValidationError>) -> Option<ValidationError> {
    issues
        .into_iter()
        .min_by(|a, b| document_order(root, &a.pointer, &b.pointer))
}

/// Orders two JSON pointers by where they occur in `root`: the first differing segment decides
/// by its position in the parent (object iteration order, array index); when one pointer
/// contains the other, the deeper (more specific) one comes first.
fn document_order(root: &Value, a: &str, b: &str) -> Ordering {
    let sa = split_pointer(a);
    let sb = split_pointer(b);
    let mut node = Some(root);
    for (x, y) in sa.iter().zip(sb.iter()) {
        if x != y {
            return position(node, x)
                .cmp(&position(node, y))
                .then_with(|| x.cmp(y));
        }
        node = node.and_then(|n| child(n, x));
    }
    sb.len().cmp(&sa.len())
}

fn position(node: Option<&Value>, segment: &str) -> usize {
    match node {
        Some(Value::Object(map)) => map.keys().position(|k| k == segment).unwrap_or(usize::MAX),
        Some(Value::Array(_)) => segment.parse().unwrap_or(usize::MAX),
        _ => usize::MAX,
    }
}

fn child<'a>(node: &'a Value, segment: &str) -> Option<&'a Value> {
    match node {
        Value::Object(map) => map.get(segment),
        Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    }
}

fn resolve<'a>(root: &'a Value, pointer: &str) -> Option<&'a Value> {
    split_pointer(pointer)
        .iter()
        .try_fold(root, |node, segment| child(node, segment))
}

fn split_pointer(pointer: &str) -> Vec<String> {
    if pointer.is_empty() {
        return Vec::new();
    }
    pointer
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect()
}

fn last_segment(pointer: &str) -> String {
    split_pointer(pointer).pop().unwrap_or_default()
}

fn push_escaped(pointer: &mut String, segment: &str) {
    for c in segment.chars() {
        match c {
            '~' => pointer.push_str("~0"),
            '/' => pointer.push_str("~1"),
            c => pointer.push(c),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Messages

fn field_label(field: &str) -> String {
    if field.is_empty() {
        "the document".to_owned()
    } else if field.parse::<usize>().is_ok() {
        format!("list entry {field}")
    } else {
        format!("`{field}`")
    }
}

fn value_label(value: &Value) -> String {
    match value {
        Value::String(s) => quoted(s),
        other => truncate(&other.to_string()),
    }
}

fn quoted(text: &str) -> String {
    truncate(&format!("{text:?}"))
}

fn truncate(text: &str) -> String {
    const MAX: usize = 120;
    if text.chars().count() <= MAX {
        text.to_owned()
    } else {
        let mut short: String = text.chars().take(MAX).collect();
        short.push('…');
        short
    }
}

fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::OnceLock;

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

    fn validator() -> &'static EpcisValidator {
        static VALIDATOR: OnceLock<EpcisValidator> = OnceLock::new();
        VALIDATOR.get_or_init(|| {
            let dir = conformance_dir().join("epcis").join("schema");
            EpcisValidator::load(&dir).unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()))
        })
    }

    fn example_files() -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in fs::read_dir(dir).expect("read examples dir") {
                let path = entry.expect("dir entry").path();
                if path.is_dir() {
                    walk(&path, out);
                } else if path
                    .extension()
                    .is_some_and(|e| e == "jsonld" || e == "json")
                {
                    out.push(path);
                }
            }
        }
        let mut out = Vec::new();
        walk(&conformance_dir().join("epcis").join("examples"), &mut out);
        out.sort();
        assert!(!out.is_empty(), "no EPCIS examples found");
        out
    }

    fn example(relative: &str) -> Value {
        let path = conformance_dir()
            .join("epcis")
            .join("examples")
            .join(relative);
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[track_caller]
    fn assert_rejected(body: &Value, pointer: &str, code: &str, reason_part: &str) {
        let error = validator()
            .validate_capture(body)
            .expect_err("body should be rejected");
        assert_eq!(error.pointer, pointer, "pointer of {error:?}");
        assert_eq!(error.code(), code, "code of {error:?}");
        assert!(
            error.reason.contains(reason_part),
            "reason {:?} should mention {reason_part:?}",
            error.reason
        );
    }

    #[test]
    fn every_example_validates() {
        let mut seen = 0;
        for path in example_files() {
            let text = fs::read_to_string(&path).expect("read example");
            let body: Value = serde_json::from_str(&text).expect("example is JSON");
            let expected = match body.get("type").and_then(Value::as_str) {
                Some("EPCISDocument") => CaptureKind::Document,
                Some("EPCISQueryDocument") => CaptureKind::QueryDocument,
                _ => CaptureKind::Event,
            };
            match validator().validate_capture(&body) {
                Ok(kind) => assert_eq!(kind, expected, "{}", path.display()),
                Err(e) => panic!("{} rejected: {e} [{}]", path.display(), e.code()),
            }
            assert!(!split_events(&body).is_empty(), "{}", path.display());
            seen += 1;
        }
        assert!(seen >= 40, "only {seen} examples");
    }

    #[test]
    fn every_example_event_validates_on_its_own() {
        for path in example_files() {
            let text = fs::read_to_string(&path).expect("read example");
            let body: Value = serde_json::from_str(&text).expect("example is JSON");
            for (i, event) in events_with_context(&body).into_iter().enumerate() {
                let result = validator().validate_capture(&event);
                assert_eq!(
                    result,
                    Ok(CaptureKind::Event),
                    "{} event {i}",
                    path.display()
                );
            }
        }
    }

    #[test]
    fn query_document_is_a_valid_capture_and_is_split() {
        let doc = example("EPCISQueryDocument.jsonld");
        assert_eq!(
            validator().validate_capture(&doc),
            Ok(CaptureKind::QueryDocument)
        );
        let events = split_events(&doc);
        assert_eq!(events.len(), 2);
        assert_eq!(events[1]["bizStep"], "receiving");
        // The query *definition* schema describes `POST /queries` bodies, not result documents.
        let error = validator()
            .validate_query_definition(&doc)
            .expect_err("a query document is not a query definition");
        assert_eq!(error.code(), "epcis_field_unknown");
        // A broken event inside the query results is reported at its pointer.
        let mut broken = doc.clone();
        broken["epcisBody"]["queryResults"]["resultsBody"]["eventList"][1]["action"] =
            json!("KEEP");
        assert_rejected(
            &broken,
            "/epcisBody/queryResults/resultsBody/eventList/1/action",
            "epcis_field_value",
            "\"KEEP\"",
        );
    }

    #[test]
    fn query_definitions_are_checked_against_the_query_schema() {
        let query = json!({
            "eventType": ["ObjectEvent"],
            "EQ_bizStep": ["shipping", "receiving"],
            "GE_eventTime": "2005-04-03T00:00:00.000Z",
            "MATCH_epc": ["urn:epc:id:sgtin:0614141.107346.2017"],
            "EQ_bizTransaction_po": ["http://transaction.acme.com/po/12345678"],
            "GE_value_CEL": 8,
            "orderBy": "eventTime",
            "orderDirection": "ASC"
        });
        assert_eq!(validator().validate_query_definition(&query), Ok(()));
        let bad = json!({"EQ_action": ["KEEP"]});
        let error = validator()
            .validate_query_definition(&bad)
            .expect_err("bad action");
        assert_eq!(error.pointer, "/EQ_action/0");
        let unknown = json!({"EQ_colour": ["red"]});
        let error = validator()
            .validate_query_definition(&unknown)
            .expect_err("unknown");
        assert_eq!(error.pointer, "/EQ_colour");
        assert_eq!(error.code(), "epcis_field_unknown");
    }

    #[test]
    fn wrong_type_is_reported_at_the_field() {
        let mut doc = example("Example_9.6.1-ObjectEvent.jsonld");
        doc["epcisBody"]["eventList"][1]["epcList"] = json!("urn:epc:id:sgtin:0614141.107346.2018");
        assert_rejected(
            &doc,
            "/epcisBody/eventList/1/epcList",
            "epcis_field_type",
            "array",
        );
        let mut doc = example("Example_9.6.3-AggregationEvent.jsonld");
        doc["epcisBody"]["eventList"][0]["childQuantityList"][0]["quantity"] = json!("ten");
        assert_rejected(
            &doc,
            "/epcisBody/eventList/0/childQuantityList/0/quantity",
            "epcis_field_type",
            "number",
        );
    }

    #[test]
    fn closed_objects_and_unique_lists() {
        let mut doc = example("Example_9.6.2-ObjectEvent.jsonld");
        doc["epcisBody"]["eventList"][0]["quantityList"][0]["colour"] = json!("red");
        assert_rejected(
            &doc,
            "/epcisBody/eventList/0/quantityList/0/colour",
            "epcis_field_unknown",
            "`colour`",
        );
        let mut doc = example("Example_9.6.1-ObjectEvent.jsonld");
        doc["epcisBody"]["eventList"][0]["epcList"] = json!([
            "urn:epc:id:sgtin:0614141.107346.2017",
            "urn:epc:id:sgtin:0614141.107346.2017"
        ]);
        assert_rejected(
            &doc,
            "/epcisBody/eventList/0/epcList",
            "epcis_list_duplicate",
            "same entry twice",
        );
        let mut doc = example("Example_9.6.1-ObjectEvent.jsonld");
        doc["epcisBody"]["eventList"][0]["readPoint"] = json!({"id": "warehouse 7"});
        assert_rejected(
            &doc,
            "/epcisBody/eventList/0/readPoint/id",
            "epcis_field_format",
            "URI",
        );
    }

    #[test]
    fn bad_vocabulary_values_are_rejected() {
        let mut doc = example("Example_9.6.1-ObjectEvent.jsonld");
        doc["epcisBody"]["eventList"][0]["bizStep"] = json!("shiping");
        assert_rejected(
            &doc,
            "/epcisBody/eventList/0/bizStep",
            "epcis_vocabulary_invalid",
            "business step",
        );
        // The CBV 1.x URN form is not the EPCIS 2.0 JSON form of a standard value.
        doc["epcisBody"]["eventList"][0]["bizStep"] = json!("urn:epcglobal:cbv:bizstep:shipping");
        assert_rejected(
            &doc,
            "/epcisBody/eventList/0/bizStep",
            "epcis_vocabulary_invalid",
            "business step",
        );
        // A custom URI is fine.
        doc["epcisBody"]["eventList"][0]["bizStep"] = json!("https://example.com/steps/weighing");
        assert_eq!(
            validator().validate_capture(&doc),
            Ok(CaptureKind::Document)
        );

        let mut doc = example("Example_9.6.1-ObjectEvent.jsonld");
        doc["epcisBody"]["eventList"][1]["disposition"] = json!("lost in space");
        assert_rejected(
            &doc,
            "/epcisBody/eventList/1/disposition",
            "epcis_vocabulary_invalid",
            "disposition",
        );
        let mut doc = example("Example_9.6.1-ObjectEvent.jsonld");
        doc["epcisBody"]["eventList"][1]["bizTransactionList"][1]["type"] = json!("purchase order");
        assert_rejected(
            &doc,
            "/epcisBody/eventList/1/bizTransactionList/1/type",
            "epcis_vocabulary_invalid",
            "business transaction type",
        );
    }

    #[test]
    fn missing_required_fields_point_at_the_field() {
        let mut doc = example("Example_9.6.1-ObjectEvent.jsonld");
        remove(&mut doc["epcisBody"]["eventList"][1], "action");
        assert_rejected(
            &doc,
            "/epcisBody/eventList/1/action",
            "epcis_field_missing",
            "`action`",
        );
        let mut doc = example("Example_9.6.1-ObjectEvent.jsonld");
        remove(&mut doc["epcisBody"]["eventList"][0], "eventTime");
        assert_rejected(
            &doc,
            "/epcisBody/eventList/0/eventTime",
            "epcis_field_missing",
            "`eventTime`",
        );
        let mut doc = example("Example_9.6.1-ObjectEvent.jsonld");
        remove(&mut doc, "creationDate");
        assert_rejected(
            &doc,
            "/creationDate",
            "epcis_field_missing",
            "`creationDate`",
        );
        // Neither epcList nor quantityList (nor sensor data with a readPoint).
        let mut doc = example("Example_9.6.2-ObjectEvent.jsonld");
        remove(&mut doc["epcisBody"]["eventList"][0], "quantityList");
        remove(&mut doc["epcisBody"]["eventList"][0], "epcList");
        assert_rejected(
            &doc,
            "/epcisBody/eventList/0",
            "epcis_field_missing",
            "epcList",
        );
        // An AggregationEvent that adds children must say to what.
        let mut doc = example("Example_9.6.3-AggregationEvent.jsonld");
        doc["epcisBody"]["eventList"][0]["action"] = json!("ADD");
        remove(&mut doc["epcisBody"]["eventList"][0], "parentID");
        assert_rejected(
            &doc,
            "/epcisBody/eventList/0/parentID",
            "epcis_field_missing",
            "parentID",
        );
    }

    #[test]
    fn bad_times_are_rejected() {
        let mut doc = example("Example_9.6.1-ObjectEvent.jsonld");
        doc["epcisBody"]["eventList"][1]["eventTime"] = json!("2005-04-04 20:33");
        assert_rejected(
            &doc,
            "/epcisBody/eventList/1/eventTime",
            "epcis_timestamp_invalid",
            "RFC 3339",
        );
        doc["epcisBody"]["eventList"][1]["eventTime"] = json!("2005-02-30T20:33:31.116-06:00");
        assert_rejected(
            &doc,
            "/epcisBody/eventList/1/eventTime",
            "epcis_timestamp_invalid",
            "2005-02-30",
        );
        // No offset.
        doc["epcisBody"]["eventList"][1]["eventTime"] = json!("2005-04-04T20:33:31.116");
        assert_rejected(
            &doc,
            "/epcisBody/eventList/1/eventTime",
            "epcis_timestamp_invalid",
            "offset",
        );
        let mut doc = example("Example_9.6.1-ObjectEvent.jsonld");
        doc["epcisBody"]["eventList"][0]["eventTimeZoneOffset"] = json!("-6:00");
        assert_rejected(
            &doc,
            "/epcisBody/eventList/0/eventTimeZoneOffset",
            "epcis_field_value",
            "+hh:mm",
        );
        doc["epcisBody"]["eventList"][0]["eventTimeZoneOffset"] = json!("+14:30");
        assert_rejected(
            &doc,
            "/epcisBody/eventList/0/eventTimeZoneOffset",
            "epcis_field_value",
            "+14:00",
        );
        let mut doc = example("WithSensorData/SensorDataExample1.jsonld");
        doc["epcisBody"]["eventList"][0]["sensorElementList"][1]["sensorMetadata"]["startTime"] =
            json!("2019-04-02T15:00:00.000+01:00");
        doc["epcisBody"]["eventList"][0]["sensorElementList"][1]["sensorMetadata"]["endTime"] =
            json!("2019-04-02T14:00:00.000+01:00");
        assert_rejected(
            &doc,
            "/epcisBody/eventList/0/sensorElementList/1/sensorMetadata/endTime",
            "epcis_field_value",
            "before",
        );
    }

    #[test]
    fn semantic_rules() {
        // Duplicate eventID: the second occurrence is reported.
        let mut doc = example("Example_9.6.1-ObjectEvent.jsonld");
        let first = doc["epcisBody"]["eventList"][0]["eventID"].clone();
        doc["epcisBody"]["eventList"][1]["eventID"] = first;
        assert_rejected(
            &doc,
            "/epcisBody/eventList/1/eventID",
            "epcis_event_id_duplicate",
            "/epcisBody/eventList/0",
        );
        // Unknown event type inside a document.
        let mut doc = example("Example_9.6.1-ObjectEvent.jsonld");
        doc["epcisBody"]["eventList"][0]["type"] = json!("QuantityEvent");
        assert_rejected(
            &doc,
            "/epcisBody/eventList/0/type",
            "epcis_event_type_unsupported",
            "QuantityEvent",
        );
        // Extension event types are not accepted either.
        doc["epcisBody"]["eventList"][0]["type"] = json!("https://example.com/MyEvent");
        assert_rejected(
            &doc,
            "/epcisBody/eventList/0/type",
            "epcis_event_type_unsupported",
            "MyEvent",
        );
        // Undeclared extension prefix.
        let mut doc = example("Example_9.6.1-ObjectEvent.jsonld");
        let event = doc["epcisBody"]["eventList"][1]
            .as_object_mut()
            .expect("event");
        event.insert("acme:colour".to_owned(), json!("red"));
        assert_rejected(
            &doc,
            "/epcisBody/eventList/1/acme:colour",
            "epcis_extension_prefix_undeclared",
            "\"acme\"",
        );
        // Unknown plain field.
        let mut doc = example("Example_9.6.1-ObjectEvent.jsonld");
        let event = doc["epcisBody"]["eventList"][0]
            .as_object_mut()
            .expect("event");
        event.insert("colour".to_owned(), json!("red"));
        assert_rejected(
            &doc,
            "/epcisBody/eventList/0/colour",
            "epcis_field_unknown",
            "`colour`",
        );
        // ilmd on an OBSERVE ObjectEvent.
        let mut doc = example("Example_9.6.1-ObjectEvent.jsonld");
        doc["epcisBody"]["eventList"][0]["ilmd"] = json!({"example:lot": "1"});
        assert_rejected(
            &doc,
            "/epcisBody/eventList/0/ilmd",
            "epcis_field_value",
            "ADD",
        );
        // schemaVersion 1.2 is not EPCIS 2.0 JSON.
        let mut doc = example("Example_9.6.1-ObjectEvent.jsonld");
        doc["schemaVersion"] = json!("1.2");
        assert_rejected(
            &doc,
            "/schemaVersion",
            "epcis_schema_version_unsupported",
            "1.2",
        );
    }

    #[test]
    fn document_shapes() {
        assert_rejected(&json!([1, 2]), "", "epcis_not_an_object", "array");
        assert_rejected(&json!({"a": 1}), "/type", "epcis_field_missing", "`type`");
        assert_rejected(
            &json!({"type": "EPCISMasterDataDocument"}),
            "/type",
            "epcis_capture_type_unsupported",
            "EPCISMasterDataDocument",
        );
        // A single event needs its own @context.
        let doc = example("Example_9.6.2-ObjectEvent.jsonld");
        let mut event = split_events(&doc).remove(0);
        remove(&mut event, "example:myField");
        assert_rejected(&event, "/@context", "epcis_field_missing", "`@context`");
        let with_context = events_with_context(&doc).remove(0);
        assert_eq!(
            validator().validate_capture(&with_context),
            Ok(CaptureKind::Event)
        );
        assert_eq!(document_context(&with_context), document_context(&doc));
    }

    #[test]
    fn first_error_is_first_in_document_order() {
        let mut doc = example("Example_9.6.1-ObjectEvent.jsonld");
        doc["epcisBody"]["eventList"][1]["bizStep"] = json!("nope");
        doc["epcisBody"]["eventList"][0]["disposition"] = json!("nope");
        doc["epcisBody"]["eventList"][0]["action"] = json!("NOPE");
        let error = validator().validate_capture(&doc).expect_err("invalid");
        // Event 0 before event 1; within event 0, `action` precedes `disposition` in both the
        // text order and the sorted key order.
        assert_eq!(error.pointer, "/epcisBody/eventList/0/action");
        for _ in 0..5 {
            assert_eq!(validator().validate_capture(&doc), Err(error.clone()));
        }
    }

    #[test]
    fn context_namespaces_lists_inline_prefixes() {
        let doc = example("WithFullCombinationOfFields/object_event_all_possible_fields.jsonld");
        let namespaces = context_namespaces(document_context(&doc).expect("context"));
        assert_eq!(
            namespaces.get("ext1").map(String::as_str),
            Some("http://example.com/ext1/")
        );
        assert_eq!(namespaces.len(), 3);
    }

    #[test]
    fn load_errors_have_codes() {
        let missing = Path::new("/nonexistent/epcis/schema");
        let error = EpcisValidator::load(missing).expect_err("no dir");
        assert_eq!(error.code(), "epcis_schema_unreadable");
        let examples = conformance_dir().join("epcis").join("examples");
        let error = EpcisValidator::load(&examples).expect_err("no schema there");
        assert_eq!(error.code(), "epcis_schema_root_missing");
    }

    #[test]
    fn event_hash_corpus_documents_validate() {
        let dir = conformance_dir().join("epcis").join("event-hash");
        let mut files: Vec<PathBuf> = fs::read_dir(&dir)
            .expect("read event-hash dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonld"))
            .collect();
        files.sort();
        assert!(files.len() >= 20, "only {} documents", files.len());
        for path in files {
            let body: Value =
                serde_json::from_str(&fs::read_to_string(&path).expect("read")).expect("JSON");
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let result = validator().validate_capture(&body);
            if name.contains("HavingEventWithIgnoreFields") {
                // These hash vectors repeat one eventID on purpose (the events differ only in
                // fields the hash ignores); a repository must not accept that.
                let error = result.expect_err("duplicate eventID");
                assert_eq!(error.code(), "epcis_event_id_duplicate", "{name}");
            } else {
                assert!(result.is_ok(), "{name}: {result:?}");
            }
        }
    }

    #[test]
    fn discover_finds_the_schema_directory() {
        let dir = EpcisValidator::discover().expect("schema directory discovered");
        assert!(dir.join(CAPTURE_SCHEMA_FILE).is_file(), "{}", dir.display());
        assert_eq!(
            EpcisValidator::load(&dir)
                .map(|v| v.schema_dir().to_path_buf())
                .ok(),
            Some(dir)
        );
    }

    #[test]
    fn validator_is_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<EpcisValidator>();
    }

    /// A scratch schema directory with the two root files.
    fn scratch_schema_dir(tag: &str, capture: &Value) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("trellis-epcis-schema-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create scratch dir");
        let query = json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "$id": "https://example.com/query.json",
            "type": "object"
        });
        fs::write(dir.join(CAPTURE_SCHEMA_FILE), capture.to_string()).expect("write");
        fs::write(dir.join(QUERY_SCHEMA_FILE), query.to_string()).expect("write");
        dir
    }

    #[test]
    fn references_are_never_fetched_and_drafts_are_checked() {
        let dir = scratch_schema_dir(
            "offline",
            &json!({
                "$schema": "http://json-schema.org/draft-07/schema#",
                "$id": "https://example.com/root.json",
                "$ref": "https://gs1.github.io/EPCIS/JSON-Schema/EPCIS-Document-JSON-Schema.json"
            }),
        );
        let error = EpcisValidator::load(&dir).expect_err("unresolvable $ref");
        assert_eq!(error.code(), "epcis_schema_compile", "{error}");
        let _ = fs::remove_dir_all(&dir);
        let dir = scratch_schema_dir(
            "draft",
            &json!({"$schema": "https://example.com/my-meta-schema", "type": "object"}),
        );
        let error = EpcisValidator::load(&dir).expect_err("unknown draft");
        assert_eq!(error.code(), "epcis_schema_draft_unsupported", "{error}");
        let _ = fs::remove_dir_all(&dir);
    }

    fn remove(value: &mut Value, key: &str) {
        value.as_object_mut().expect("object").remove(key);
    }

    /// A document of `n` events made from the examples (all event types, sensor data,
    /// extensions), each with its own eventID.
    fn big_document(n: usize) -> Value {
        let mut templates = Vec::new();
        for file in [
            "Example_9.6.1-ObjectEvent.jsonld",
            "Example_9.6.3-AggregationEvent.jsonld",
            "Example_9.6.4-TransformationEvent.jsonld",
            "Example-TransactionEvents-2020_07_03y.jsonld",
            "AssociationEvent/AssociationEvent-a.jsonld",
            "WithSensorData/SensorDataExample1.jsonld",
        ] {
            templates.extend(events_with_context(&example(file)));
        }
        let events: Vec<Value> = (0..n)
            .map(|i| {
                let mut event = templates[i % templates.len()].clone();
                event["eventID"] = json!(format!("urn:uuid:00000000-0000-4000-8000-{i:012}"));
                event
            })
            .collect();
        let mut doc = example("Example_9.6.1-ObjectEvent.jsonld");
        doc["epcisBody"]["eventList"] = Value::Array(events);
        doc
    }

    #[test]
    fn capture_throughput() {
        let doc = big_document(1_000);
        assert_eq!(
            validator().validate_capture(&doc),
            Ok(CaptureKind::Document),
            "{:?}",
            doc.pointer("/epcisBody/eventList/0")
        );
        let rounds = 5;
        let start = std::time::Instant::now();
        for _ in 0..rounds {
            assert!(validator().validate_capture(&doc).is_ok());
        }
        let elapsed = start.elapsed();
        let per_second = (rounds * 1_000) as f64 / elapsed.as_secs_f64();
        println!("validate_capture: {per_second:.0} events/s (1,000-event document, one thread)");
    }
}
