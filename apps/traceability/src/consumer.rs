//! The consumer page: this node is a GS1 Digital Link resolver. `GET /01/{gtin}[/10/{lot}]
//! [/21/{serial}]` (the URI in the QR code on the pack) opens a mobile-first page with the
//! product, its origin, the journey, the cold chain, certificates, a status banner and a proof
//! of the lot record that the phone's browser checks itself.

use std::collections::HashMap;

use axum::extract::Extension;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::CookieJar;
use chain_core::node::now_ms;
use frontend::components::*;
use frontend::i18n::{Lang, t};
use frontend::web::Viewer;
use leptos::prelude::*;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::app::TraceShared;
use crate::contract::NAME;
use crate::digital_link::{DigitalLink, PrimaryKey, Qualifier};
use crate::domain::*;
use crate::store::{trace_cert, trace_event, trace_event_epc, trace_reading};

/// Cookie that tells scanners apart for the counterfeit rule (random, no personal data).
pub const SCANNER_COOKIE: &str = "trellis_scanner";
/// Journey entries shown on the page (the newest are kept).
const MAX_JOURNEY: u64 = 50;
/// Readings in the chart (the newest are kept).
const MAX_READINGS: u64 = 500;

/// What the resolver was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scanned {
    pub gtin: String,
    pub lot: Option<String>,
    pub serial: Option<String>,
}

/// Parses the request path as a GS1 Digital Link (any host; the path is what matters).
pub fn parse_path(path_and_query: &str) -> Result<Scanned, String> {
    let link = DigitalLink::parse(&format!("https://resolver.invalid{path_and_query}"))
        .map_err(|e| e.to_string())?;
    let PrimaryKey::Gtin(g) = link.key() else {
        return Err("this resolver answers GTIN links (/01/…)".into());
    };
    Ok(Scanned {
        gtin: g.as_str().to_string(),
        lot: link.qualifier(Qualifier::Lot).map(str::to_string),
        serial: link.qualifier(Qualifier::Serial).map(str::to_string),
    })
}

/// The banner's verdict, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Recalled,
    NonConformant,
    Expired,
    Ok,
    Unknown,
}

pub fn verdict(lot: Option<&Lot>, now: u64) -> Verdict {
    match lot {
        None => Verdict::Unknown,
        Some(l) if l.status == LotStatus::Recalled => Verdict::Recalled,
        Some(l) if l.status == LotStatus::NonConformant => Verdict::NonConformant,
        Some(l) if l.expiry_ms.is_some_and(|e| e < now) => Verdict::Expired,
        Some(_) => Verdict::Ok,
    }
}

/// A CBV business step as the consumer reads it.
pub fn biz_step_label(step: &str) -> String {
    let key: Option<&'static str> = match step {
        "commissioning" => Some("trace.step.commissioning"),
        "shipping" | "departing" => Some("trace.step.shipping"),
        "receiving" | "arriving" | "accepting" => Some("trace.step.receiving"),
        "transforming" | "creating_class_instance" => Some("trace.step.transforming"),
        "packing" => Some("trace.step.packing"),
        "storing" => Some("trace.step.storing"),
        "retail_selling" => Some("trace.step.retail_selling"),
        "inspecting" => Some("trace.step.inspecting"),
        "loading" => Some("trace.step.loading"),
        "unloading" => Some("trace.step.unloading"),
        "sensor_reporting" => Some("trace.step.sensor_reporting"),
        "destroying" | "decommissioning" => Some("trace.step.decommissioning"),
        _ => None,
    };
    match key {
        Some(k) => t(k).to_string(),
        None if step.is_empty() => t("trace.step.event").to_string(),
        None => step.replace('_', " "),
    }
}

/// The GLN of a canonical location key (`https://id.gs1.org/414/{gln}…`).
pub fn gln_of(key: &str) -> Option<String> {
    let rest = key.strip_prefix("https://id.gs1.org/414/")?;
    Some(rest.split('/').next()?.to_string())
}

/// The canonical identifier key of a lot (as the read model indexes class-level EPCs).
pub fn lot_epc_key(gtin: &str, lot: &str) -> String {
    crate::epcis::query::epc_key(&format!("https://id.gs1.org/01/{gtin}/10/{lot}"))
}

pub fn item_epc_key(gtin: &str, serial: &str) -> String {
    crate::epcis::query::epc_key(&format!("https://id.gs1.org/01/{gtin}/21/{serial}"))
}

pub fn unit_epc_key(sscc: &str) -> String {
    crate::epcis::query::epc_key(&format!("https://id.gs1.org/00/{sscc}"))
}

/// Location names by GLN, read once per page.
pub struct Places<'a> {
    app: &'a TraceShared,
    cache: HashMap<String, Option<Location>>,
}

impl<'a> Places<'a> {
    pub fn new(app: &'a TraceShared) -> Self {
        Self {
            app,
            cache: HashMap::new(),
        }
    }

    pub async fn get(&mut self, gln: &str) -> Option<Location> {
        if let Some(l) = self.cache.get(gln) {
            return l.clone();
        }
        let l: Option<Location> = self
            .app
            .node
            .state_json(NAME, &location_key(gln))
            .await
            .ok()
            .flatten();
        self.cache.insert(gln.to_string(), l.clone());
        l
    }

    pub async fn name(&mut self, key: Option<&str>) -> Option<String> {
        let gln = gln_of(key?)?;
        Some(match self.get(&gln).await {
            Some(l) => l.name,
            None => gln,
        })
    }
}

/// Organisation names by id (from the system contract), read once per page.
#[derive(Default)]
pub struct OrgNames(HashMap<String, String>);

impl OrgNames {
    pub async fn name(&mut self, node: &chain_core::node::Node, id: &str) -> String {
        if let Some(n) = self.0.get(id) {
            return n.clone();
        }
        let org: Option<chain_core::system::Organisation> = node
            .state_json(chain_core::system::NAME, &format!("org/{id}"))
            .await
            .ok()
            .flatten();
        let name = org.map(|o| o.name).unwrap_or_else(|| id.to_string());
        self.0.insert(id.to_string(), name.clone());
        name
    }
}

/// Journey of a lot (and an item, and the units that carried them), oldest first.
pub async fn journey(
    app: &TraceShared,
    keys: Vec<String>,
    limit: u64,
) -> Result<Vec<trace_event::Model>, sea_orm::DbErr> {
    let seqs: Vec<i64> = trace_event_epc::Entity::find()
        .filter(trace_event_epc::Column::Epc.is_in(keys))
        .select_only()
        .column(trace_event_epc::Column::EventSeq)
        .order_by_desc(trace_event_epc::Column::EventSeq)
        .limit(limit * 4)
        .into_tuple()
        .all(&app.db)
        .await?;
    if seqs.is_empty() {
        return Ok(Vec::new());
    }
    let mut rows = trace_event::Entity::find()
        .filter(trace_event::Column::Seq.is_in(seqs))
        .order_by_desc(trace_event::Column::EventTimeMs)
        .limit(limit)
        .all(&app.db)
        .await?;
    rows.reverse();
    Ok(rows)
}

pub async fn readings(
    app: &TraceShared,
    lot_key: &str,
    limit: u64,
) -> Result<Vec<trace_reading::Model>, sea_orm::DbErr> {
    let mut rows = trace_reading::Entity::find()
        .filter(trace_reading::Column::LotKey.eq(lot_key))
        .order_by_desc(trace_reading::Column::TimeMs)
        .limit(limit)
        .all(&app.db)
        .await?;
    rows.reverse();
    Ok(rows)
}

pub async fn certificates(app: &TraceShared, subjects: Vec<String>) -> Vec<Certificate> {
    let rows = trace_cert::Entity::find()
        .filter(trace_cert::Column::Subject.is_in(subjects))
        .order_by_asc(trace_cert::Column::Height)
        .limit(20)
        .all(&app.db)
        .await
        .unwrap_or_default();
    let mut out = Vec::new();
    for r in rows {
        if let Ok(Some(c)) = app
            .node
            .state_json::<Certificate>(NAME, &certificate_key(&r.id))
            .await
        {
            out.push(c);
        }
    }
    out
}

// ------------------------------------------------------------------------------ chart

/// A temperature chart with the allowed band shaded; handles values below zero (frozen goods),
/// which the shell's general line chart does not.
#[component]
pub fn ColdChainChart(
    #[prop(into)] title: String,
    // (time ms, °C)
    points: Vec<(i64, f64)>,
    band: Option<(f64, f64)>,
) -> impl IntoView {
    if points.is_empty() {
        return view! { <EmptyState message=t("trace.no_readings")/> }.into_any();
    }
    const W: f64 = 600.0;
    const H: f64 = 220.0;
    const L: f64 = 44.0;
    const B: f64 = 22.0;
    const T: f64 = 10.0;
    let mut lo = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let mut hi = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    if let Some((a, b)) = band {
        lo = lo.min(a);
        hi = hi.max(b);
    }
    lo = (lo - 1.0).floor();
    hi = (hi + 1.0).ceil();
    let (t0, t1) = (points[0].0, points[points.len() - 1].0);
    let span_t = ((t1 - t0).max(1)) as f64;
    let x = |tm: i64| L + (W - L - 4.0) * ((tm - t0) as f64 / span_t);
    let y = |v: f64| T + (H - B - T) * (1.0 - (v - lo) / (hi - lo));
    let band_view = band.map(|(a, b)| {
        view! {
            <rect class="band" x=L y=y(b) width=W - L - 4.0 height=(y(a) - y(b)).max(0.0)></rect>
        }
    });
    let path = points
        .iter()
        .map(|(tm, v)| format!("{:.1},{:.1}", x(*tm), y(*v)))
        .collect::<Vec<_>>()
        .join(" ");
    let outside = points
        .iter()
        .filter(|(_, v)| band.is_some_and(|(a, b)| *v < a || *v > b))
        .map(|(tm, v)| {
            let tip = format!("{}: {v:.1} °C", format_time(*tm as u64));
            view! {
                <circle class="point point-bad" cx=x(*tm) cy=y(*v) r="3.5">
                    <title>{tip}</title>
                </circle>
            }
        })
        .collect_view();
    let grid = (0..=4)
        .map(|i| {
            let v = lo + (hi - lo) * f64::from(i) / 4.0;
            let yy = y(v);
            view! {
                <line class="grid" x1=L x2=W y1=yy y2=yy></line>
                <text class="axis" x=L - 6.0 y=yy + 4.0 text-anchor="end">{format!("{v:.0}")}</text>
            }
        })
        .collect_view();
    let first = format_time(t0 as u64);
    let last = format_time(t1 as u64);
    let vb = format!("0 0 {W} {H}");
    view! {
        <figure class="chart cold-chart">
            <figcaption>{title.clone()}</figcaption>
            <svg viewBox=vb role="img" aria-label=title preserveAspectRatio="none">
                {grid}
                {band_view}
                <polyline class="line" points=path fill="none"></polyline>
                {outside}
                <text class="axis" x=L y=H - 4.0>{first}</text>
                <text class="axis" x=W y=H - 4.0 text-anchor="end">{last}</text>
            </svg>
        </figure>
    }
    .into_any()
}

// ------------------------------------------------------------------------------ page

/// The scanner's identity and, when the browser has none yet, the cookie to give it. Without
/// the cookie (first scan, or cookies blocked) the address and browser stand in, so the same
/// phone is not counted twice either way.
fn scanner_id(jar: &CookieJar, headers: &HeaderMap, v: &Viewer) -> (String, Option<String>) {
    if let Some(c) = jar.get(SCANNER_COOKIE)
        && c.value().len() == 32
        && c.value().bytes().all(|b| b.is_ascii_hexdigit())
    {
        return (c.value().to_string(), None);
    }
    use sha2::{Digest as _, Sha256};
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let mut h = Sha256::new();
    h.update(v.ip.to_string().as_bytes());
    h.update([0]);
    h.update(ua.as_bytes());
    let id = hex::encode(&h.finalize()[..16]);
    (id.clone(), Some(id))
}

fn status_banner(verdict: Verdict, lot: Option<&Lot>) -> AnyView {
    let (class, title, detail) = match verdict {
        Verdict::Recalled => (
            "banner banner-bad",
            t("trace.banner.recalled"),
            t("trace.banner.recalled_detail"),
        ),
        Verdict::NonConformant => (
            "banner banner-bad",
            t("trace.banner.non_conformant"),
            t("trace.banner.non_conformant_detail"),
        ),
        Verdict::Expired => (
            "banner banner-warn",
            t("trace.banner.expired"),
            t("trace.banner.expired_detail"),
        ),
        Verdict::Ok => (
            "banner banner-ok",
            t("trace.banner.ok"),
            t("trace.banner.ok_detail"),
        ),
        Verdict::Unknown => (
            "banner banner-warn",
            t("trace.banner.unknown"),
            t("trace.banner.unknown_detail"),
        ),
    };
    let reason = lot.and_then(|l| l.recall.clone());
    view! {
        <div class=class role="status" data-verdict=format!("{verdict:?}").to_lowercase()>
            <p class="banner-title">{title}</p>
            <p>{detail}</p>
            {reason.map(|r| view! { <p class="muted">{r}</p> })}
        </div>
    }
    .into_any()
}

/// One step of the journey as the page shows it.
#[derive(Debug, Clone)]
pub struct JourneyStep {
    pub time_ms: i64,
    pub biz_step: String,
    pub place: Option<String>,
    /// The disposition says the goods were lost to the market (damaged, recalled…).
    pub bad: bool,
}

/// Everything the consumer page shows about a code except the scan verdict, in no particular
/// language: gathered once and shared by the scans of the next second.
pub struct Snapshot {
    pub product: Option<Product>,
    pub lot_no: Option<String>,
    pub lot: Option<Lot>,
    pub lot_state_key: Option<String>,
    pub journey: Vec<JourneyStep>,
    pub points: Vec<(i64, f64)>,
    pub band: Option<(f64, f64)>,
    pub origin: Option<Location>,
    pub certs: Vec<Certificate>,
    pub producer: Option<String>,
    pub custodian: Option<String>,
    /// The validator set the phone checks the proof against (hex), as this node knows it.
    pub trusted: Option<String>,
}

/// How long a snapshot serves scans: a QR code on a shelf is scanned in bursts, and a page a
/// second behind the chain is as good as current to the person holding the pack.
const SNAPSHOT_TTL: std::time::Duration = std::time::Duration::from_secs(1);
const SNAPSHOT_CACHE_MAX: usize = 10_000;

/// (GTIN, lot and serial as scanned).
type SnapshotKey = (String, Option<String>, Option<String>);
type SnapshotCache = HashMap<SnapshotKey, (std::time::Instant, std::sync::Arc<Snapshot>)>;

static SNAPSHOTS: std::sync::LazyLock<parking_lot::Mutex<SnapshotCache>> =
    std::sync::LazyLock::new(|| parking_lot::Mutex::new(HashMap::new()));

/// The page data of a scanned code; `None` when the chain knows neither product nor lot.
pub async fn snapshot(
    app: &TraceShared,
    scanned: &Scanned,
) -> Result<Option<std::sync::Arc<Snapshot>>, String> {
    let key = (
        scanned.gtin.clone(),
        scanned.lot.clone(),
        scanned.serial.clone(),
    );
    if let Some((at, snap)) = SNAPSHOTS.lock().get(&key)
        && at.elapsed() < SNAPSHOT_TTL
    {
        return Ok(Some(snap.clone()));
    }
    let Some(snap) = gather(app, scanned).await? else {
        return Ok(None);
    };
    let snap = std::sync::Arc::new(snap);
    let mut cache = SNAPSHOTS.lock();
    if cache.len() >= SNAPSHOT_CACHE_MAX {
        cache.retain(|_, (at, _)| at.elapsed() < SNAPSHOT_TTL);
        if cache.len() >= SNAPSHOT_CACHE_MAX {
            cache.clear();
        }
    }
    cache.insert(key, (std::time::Instant::now(), snap.clone()));
    Ok(Some(snap))
}

async fn gather(app: &TraceShared, scanned: &Scanned) -> Result<Option<Snapshot>, String> {
    let node = &app.node;
    let product: Option<Product> = node
        .state_json(NAME, &product_key(&scanned.gtin))
        .await
        .map_err(|e| e.to_string())?;
    // A serial without a lot in the link: the chain knows the item's lot.
    let item: Option<Item> = match &scanned.serial {
        Some(s) => node
            .state_json(NAME, &item_key(&scanned.gtin, s))
            .await
            .map_err(|e| e.to_string())?,
        None => None,
    };
    let lot_no = scanned
        .lot
        .clone()
        .or_else(|| item.as_ref().and_then(|i| i.lot.clone()));
    let lot: Option<Lot> = match &lot_no {
        Some(l) => node
            .state_json(NAME, &lot_key(&scanned.gtin, l))
            .await
            .map_err(|e| e.to_string())?,
        None => None,
    };
    if product.is_none() && lot.is_none() {
        return Ok(None);
    }
    let lot_state_key = lot_no.as_ref().map(|l| lot_key(&scanned.gtin, l));
    let mut keys = Vec::new();
    if let Some(l) = &lot_no {
        keys.push(lot_epc_key(&scanned.gtin, l));
    }
    if let Some(s) = &scanned.serial {
        keys.push(item_epc_key(&scanned.gtin, s));
    }
    if let Some(l) = &lot {
        keys.extend(l.units.iter().map(|u| unit_epc_key(u)));
    }
    let events = if keys.is_empty() {
        Vec::new()
    } else {
        journey(app, keys, MAX_JOURNEY)
            .await
            .map_err(|e| e.to_string())?
    };
    let mut places = Places::new(app);
    let mut steps = Vec::with_capacity(events.len());
    for e in &events {
        let place = places
            .name(e.biz_location.as_deref().or(e.read_point.as_deref()))
            .await;
        steps.push(JourneyStep {
            time_ms: e.event_time_ms,
            biz_step: e.biz_step.clone().unwrap_or_default(),
            place,
            bad: matches!(
                e.disposition.as_deref(),
                Some("recalled" | "damaged" | "destroyed" | "non_sellable_other" | "expired")
            ),
        });
    }
    let readings = match &lot_state_key {
        Some(k) => readings(app, k, MAX_READINGS)
            .await
            .map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    let points: Vec<(i64, f64)> = readings
        .iter()
        .filter_map(|r| r.temperature.map(|c| (r.time_ms, c as f64 / 100.0)))
        .collect();
    let band = product
        .as_ref()
        .and_then(|p| p.temperature)
        .map(|r| (r.min as f64 / 100.0, r.max as f64 / 100.0));
    let mut subjects = vec![scanned.gtin.clone()];
    if let Some(l) = &lot_no {
        subjects.push(format!("{}/{l}", scanned.gtin));
    }
    let origin = match lot.as_ref().and_then(|l| l.location.clone()) {
        Some(gln) => places.get(&gln).await,
        None => None,
    };
    let certs = certificates(app, subjects).await;
    let mut orgs = OrgNames::default();
    let producer = match lot
        .as_ref()
        .map(|l| l.owner.clone())
        .or_else(|| product.as_ref().map(|p| p.owner.clone()))
    {
        Some(id) => Some(orgs.name(node, &id).await),
        None => None,
    };
    let custodian = match lot.as_ref() {
        Some(l) => Some(orgs.name(node, &l.custodian).await),
        None => None,
    };
    let trusted = match node.validator_set_at(node.tip().height).await {
        Ok(Some(set)) => Some(hex::encode(set.encode())),
        _ => None,
    };
    Ok(Some(Snapshot {
        product,
        lot_no,
        lot,
        lot_state_key,
        journey: steps,
        points,
        band,
        origin,
        certs,
        producer,
        custodian,
        trusted,
    }))
}

pub async fn resolve(
    Extension(app): Extension<TraceShared>,
    v: Viewer,
    jar: CookieJar,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let path = uri.path().to_string();
    let scanned = match parse_path(&path) {
        Ok(s) => s,
        Err(e) => {
            return v.error(StatusCode::BAD_REQUEST, "trace.bad_link", Some(e));
        }
    };
    let node = app.node.clone();
    let now = now_ms();
    let snap = match snapshot(&app, &scanned).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return v.error(
                StatusCode::NOT_FOUND,
                "trace.unknown_product",
                Some(scanned.gtin.clone()),
            );
        }
        Err(e) => return internal(&v, e),
    };
    // Counterfeit rule: serialised codes only (a lot code is shared by many genuine packs).
    let (scanner, new_cookie) = scanner_id(&jar, &headers, &v);
    let scan = match &scanned.serial {
        Some(serial) => Some(
            app.scans
                .scan(
                    &format!("{}/{serial}", scanned.gtin),
                    snap.lot_state_key
                        .as_deref()
                        .unwrap_or(&product_key(&scanned.gtin)),
                    &scanner,
                    now as i64,
                )
                .await,
        ),
        None => None,
    };
    let product = snap.product.clone();
    let lot = snap.lot.clone();
    let lot_no = snap.lot_no.clone();
    let lot_state_key = snap.lot_state_key.clone();
    let verdict = verdict(lot.as_ref(), now);
    let mut timeline: Vec<TimelineItem> = snap
        .journey
        .iter()
        .map(|j| TimelineItem {
            time: Some(format_time(j.time_ms.max(0) as u64)),
            title: biz_step_label(&j.biz_step),
            detail: j.place.clone(),
            tone: if j.bad { Tone::Bad } else { Tone::Ok },
        })
        .collect();
    if let Some(l) = &lot
        && !l.excursions.is_empty()
    {
        timeline.push(TimelineItem {
            time: l.excursions.last().map(|x| format_time(x.time_ms)),
            title: t("trace.excursion").to_string(),
            detail: Some(format!(
                "{} × {}",
                l.excursion_count,
                t("trace.out_of_range")
            )),
            tone: Tone::Bad,
        });
    }
    let points = snap.points.clone();
    let band = snap.band;
    let origin = snap.origin.clone();
    let certs = snap.certs.clone();
    let producer = snap.producer.clone();
    let lang = v.lang;
    let name = product
        .as_ref()
        .map(|p| {
            if lang == Lang::ZhCn && !p.name_zh.is_empty() {
                p.name_zh.clone()
            } else {
                p.name.clone()
            }
        })
        .unwrap_or_else(|| scanned.gtin.clone());
    let proof_url = lot_state_key.as_ref().map(|k| {
        format!(
            "/api/v1/state/{NAME}/{}?key_encoding=hex",
            hex::encode(k.as_bytes())
        )
    });
    let trusted = snap.trusted.clone();
    let ed25519 = node.info.suite == chain_core::crypto::Suite::Ed25519Sha256;
    let title = name.clone();
    let gtin = scanned.gtin.clone();
    let serial = scanned.serial.clone();
    let suspicious = scan.is_some_and(|s| s.suspicious);
    let expiry = lot
        .as_ref()
        .and_then(|l| l.expiry_ms)
        .map(|e| format_time(e)[..10].to_string());
    let produced = lot
        .as_ref()
        .and_then(|l| l.produced_ms)
        .map(|e| format_time(e)[..10].to_string());
    let custodian = snap.custodian.clone();
    let range_text = band.map(|(a, b)| format!("{a:.1} – {b:.1} °C"));
    let excursions = lot.as_ref().map(|l| l.excursion_count).unwrap_or(0);
    let brand = product
        .as_ref()
        .map(|p| p.brand.clone())
        .unwrap_or_default();
    let description = product
        .as_ref()
        .map(|p| p.description.clone())
        .unwrap_or_default();
    let country = product
        .as_ref()
        .map(|p| p.origin.clone())
        .unwrap_or_default();
    let mut resp = v.page(&title, move || {
        let facts = {
            let mut rows: Vec<(&'static str, AnyView)> = vec![(
                "trace.gtin",
                view! { <code>{gtin.clone()}</code> }.into_any(),
            )];
            if let Some(l) = lot_no.clone() {
                rows.push(("trace.lot", view! { <code>{l}</code> }.into_any()));
            }
            if let Some(s) = serial.clone() {
                rows.push(("trace.serial", view! { <code>{s}</code> }.into_any()));
            }
            if let Some(p) = producer.clone() {
                rows.push(("trace.producer", view! { <span>{p}</span> }.into_any()));
            }
            if let Some(o) = origin.clone() {
                let text = if o.country.is_empty() {
                    o.name.clone()
                } else {
                    format!("{} ({})", o.name, o.country)
                };
                rows.push(("trace.origin", view! { <span>{text}</span> }.into_any()));
            } else if !country.is_empty() {
                rows.push(("trace.origin", view! { <span>{country.clone()}</span> }.into_any()));
            }
            if let Some(p) = produced.clone() {
                rows.push(("trace.produced", view! { <span>{p}</span> }.into_any()));
            }
            if let Some(e) = expiry.clone() {
                rows.push(("trace.expiry", view! { <span>{e}</span> }.into_any()));
            }
            if let Some(c) = custodian.clone() {
                rows.push(("trace.custodian", view! { <span>{c}</span> }.into_any()));
            }
            rows
        };
        let certs_view = if certs.is_empty() {
            view! { <EmptyState message=t("trace.no_certificates")/> }.into_any()
        } else {
            certs
                .iter()
                .map(|c| {
                    let valid = c
                        .valid_until_ms
                        .map(|v| format!("{} {}", t("trace.valid_until"), &format_time(v)[..10]));
                    let kind = c.kind.clone();
                    let issuer = c.issuer.clone();
                    let hash = c.hash.clone();
                    view! {
                        <li class="cert">
                            <strong>{kind}</strong> " · " {issuer}
                            {valid.map(|v| view! { <span class="muted">" · " {v}</span> })}
                            <br/>
                            <HashText value=hash/>
                        </li>
                    }
                })
                .collect_view()
                .into_any()
        };
        let verify = match (proof_url.clone(), ed25519) {
            (Some(url), true) => view! {
                <section class="verify card" aria-labelledby="verify-h">
                    <h2 id="verify-h">{t("trace.verified_on_chain")}</h2>
                    <p class="muted">{t("trace.verify_explain")}</p>
                    <button
                        type="button"
                        class="btn"
                        id="verify-lot"
                        data-verify-url=url
                        data-verify-trusted-set=trusted.clone()
                        data-verify-output="verify-lot-out"
                        data-verify-auto=""
                        data-label-ok=t("verify.ok")
                        data-label-fail=t("verify.fail")
                        data-label-unavailable=t("verify.unavailable")
                    >
                        {t("verify.button")}
                    </button>
                    <div id="verify-lot-out" class="verify-out" aria-live="polite"></div>
                </section>
            }
            .into_any(),
            (Some(_), false) => view! { <Notice tone=Tone::Warn message=t("verify.sm2")/> }.into_any(),
            (None, _) => view! { <span></span> }.into_any(),
        };
        view! {
            <article class="consumer">
                {status_banner(verdict, lot.as_ref())}
                {suspicious.then(|| view! {
                    <div class="banner banner-bad" role="alert" data-counterfeit="true">
                        <p class="banner-title">{t("trace.counterfeit_title")}</p>
                        <p>{t("trace.counterfeit_detail")}</p>
                    </div>
                })}
                <h1>{name.clone()}</h1>
                {(!brand.is_empty()).then(|| view! { <p class="muted">{brand.clone()}</p> })}
                {(!description.is_empty()).then(|| view! { <p>{description.clone()}</p> })}
                <Facts rows=facts/>
                <section>
                    <h2>{t("trace.journey")}</h2>
                    <Timeline items=timeline/>
                </section>
                <section>
                    <h2>{t("trace.cold_chain")}</h2>
                    {range_text.clone().map(|r| view! { <p class="muted">{t("trace.allowed_range")} " " {r}</p> })}
                    {(excursions > 0).then(|| view! {
                        <p><Badge tone=Tone::Bad label=format!("{excursions} × {}", t("trace.out_of_range"))/></p>
                    })}
                    <ColdChainChart title=t("trace.temperature").to_string() points=points band=band/>
                </section>
                <section>
                    <h2>{t("trace.certificates")}</h2>
                    <ul class="certs">{certs_view}</ul>
                </section>
                {verify}
            </article>
        }
        .into_any()
    });
    if let Some(c) = new_cookie {
        // A year: the rule counts phones over weeks, and the value says nothing about anyone.
        let secure = if v.state.secure_cookies {
            "; Secure"
        } else {
            ""
        };
        let cookie = format!(
            "{SCANNER_COOKIE}={c}; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax{secure}"
        );
        if let Ok(h) = HeaderValue::from_str(&cookie) {
            resp.headers_mut().append(header::SET_COOKIE, h);
        }
    }
    resp.into_response()
}

fn internal(v: &Viewer, e: impl std::fmt::Display) -> Response {
    tracing::error!("consumer page: {e}");
    v.error(StatusCode::INTERNAL_SERVER_ERROR, "state.error", None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolver_paths_parse_with_check_digits_and_qualifier_order() {
        let s = parse_path("/01/09521234000013/10/M1/21/A%2F1").unwrap();
        assert_eq!(s.gtin, "09521234000013");
        assert_eq!(s.lot.as_deref(), Some("M1"));
        assert_eq!(s.serial.as_deref(), Some("A/1"));
        assert!(
            parse_path("/01/09521234000014/10/M1")
                .unwrap_err()
                .contains("check digit")
        );
        assert!(parse_path("/01/09521234000013/21/S/10/L").is_err());
        assert!(parse_path("/00/095212340000000016").is_err());
    }

    #[test]
    fn the_worst_state_wins_the_banner() {
        let mut lot = Lot {
            gtin: "09521234000013".into(),
            lot: "L".into(),
            owner: "acme".into(),
            custodian: "acme".into(),
            status: LotStatus::Ok,
            produced_ms: None,
            expiry_ms: Some(10),
            location: None,
            quantity: None,
            inputs: vec![],
            outputs: vec![],
            units: vec![],
            excursions: vec![],
            excursion_count: 0,
            recall: None,
            disposition: String::new(),
            created_height: 1,
        };
        assert_eq!(verdict(Some(&lot), 5), Verdict::Ok);
        assert_eq!(verdict(Some(&lot), 50), Verdict::Expired);
        lot.status = LotStatus::NonConformant;
        assert_eq!(verdict(Some(&lot), 50), Verdict::NonConformant);
        lot.status = LotStatus::Recalled;
        assert_eq!(verdict(Some(&lot), 50), Verdict::Recalled);
        assert_eq!(verdict(None, 0), Verdict::Unknown);
    }
}
