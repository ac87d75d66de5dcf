//! Traceability end to end, against the real `trellis` binary: EPCIS 2.0 conformance over every
//! example document and event-hash vector in `../shared/conformance/epcis` (capture through the
//! chain, query back, de-duplication, rejection of invalid documents with a JSON pointer), and
//! the consumer and enterprise pages in headless Chromium on the seeded demo chain.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use fantoccini::Locator;
use serde_json::{Value, json};
use traceability::epcis::hash::{Context, event_hash_id, events_of};
use traceability::epcis::query::EventQuery;

use crate::web::{Browser, NodeProc};

fn conformance_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TRELLIS_CONFORMANCE_DIR") {
        return PathBuf::from(d);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .flat_map(|a| {
            [
                a.join("shared/conformance"),
                a.join("../shared/conformance"),
            ]
        })
        .find(|d| d.join("epcis").is_dir())
        .expect("../shared/conformance/epcis (the official fixtures) must be present")
}

fn jsonld_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read fixture dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "jsonld") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// An EPCIS client of one node, authenticated with HTTP Basic as a demo organisation admin.
struct Epcis {
    url: String,
    auth: String,
    http: reqwest::Client,
}

impl Epcis {
    fn new(node: &NodeProc, user: &str) -> Self {
        let password = node.password_of(user);
        Epcis {
            url: node.url.clone(),
            auth: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            ),
            http: reqwest::Client::new(),
        }
    }

    async fn post_capture(&self, body: &[u8]) -> (u16, Value, Option<String>) {
        let r = self
            .http
            .post(format!("{}/epcis/capture", self.url))
            .header("Authorization", &self.auth)
            .header("Content-Type", "application/ld+json")
            .body(body.to_vec())
            .send()
            .await
            .expect("capture");
        let status = r.status().as_u16();
        let location = r
            .headers()
            .get("location")
            .and_then(|h| h.to_str().ok())
            .map(str::to_string);
        let v = r.json().await.unwrap_or(Value::Null);
        (status, v, location)
    }

    /// Captures and waits for the job to finish; returns the finished job.
    async fn capture_ok(&self, name: &str, body: &[u8]) -> Value {
        let (status, v, location) = self.post_capture(body).await;
        assert_eq!(status, 202, "{name}: {v}");
        self.wait_job(name, &location.expect("Location of the capture job"))
            .await
    }

    /// Waits until the capture job at `location` has finished, and requires success.
    async fn wait_job(&self, name: &str, location: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let job = self.get(location).await.1;
            if job["running"] == false {
                assert_eq!(job["success"], true, "{name}: {job}");
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: capture job still running: {job}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn get_full(&self, path: &str) -> (u16, Value, Option<String>) {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .header("Authorization", &self.auth)
            .send()
            .await
            .expect("get");
        let status = r.status().as_u16();
        let link = r
            .headers()
            .get("link")
            .and_then(|h| h.to_str().ok())
            .map(str::to_string);
        (status, r.json().await.unwrap_or(Value::Null), link)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let (s, v, _) = self.get_full(path).await;
        (s, v)
    }

    /// Every event a query returns, following `Link: rel="next"` pages.
    async fn query_all(&self, query: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut path = format!("/epcis/events?{query}");
        for _ in 0..1000 {
            let (status, doc, link) = self.get_full(&path).await;
            assert_eq!(status, 200, "{path}: {doc}");
            assert_eq!(doc["type"], "EPCISQueryDocument");
            let list = doc["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
                .as_array()
                .expect("eventList")
                .clone();
            out.extend(list);
            match link.and_then(|l| {
                l.split_once('<')
                    .and_then(|(_, r)| r.split_once('>'))
                    .map(|(u, _)| u.to_string())
            }) {
                Some(next) => path = next,
                None => return out,
            }
        }
        panic!("paging did not end");
    }
}

/// Percent-encodes everything but unreserved characters (path segments and query values).
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An event as captured, for comparison with what the query returns: the repository adds
/// `recordTime` and, when there is none, `eventID` (the hash ID); contexts travel separately.
fn comparable(mut event: Value, original: &Value) -> Value {
    if let Some(o) = event.as_object_mut() {
        o.remove("@context");
        for added in ["recordTime", "eventID"] {
            if original.get(added).is_none() {
                o.remove(added);
            }
        }
    }
    event
}

fn without_context(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("@context");
    }
    v
}

/// Everything in `../shared/conformance/epcis` goes through the EPCIS REST binding: each
/// example document is captured on chain and every event comes back equal through
/// `GET /epcis/events/{eventID}`; capturing again stores nothing new; the chain's anchors carry
/// exactly the CBV 2.0 hash IDs of the event-hash vectors; queries, paging and rejections
/// behave as the standard says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epcis_conformance_capture_query_and_hash_vectors() {
    let node = NodeProc::start().await;
    let api = Epcis::new(&node, "acme-admin");
    let dir = conformance_dir().join("epcis");

    // Not signed in: refused, nothing stored.
    let r = reqwest::Client::new()
        .post(format!("{}/epcis/capture", node.url))
        .body("{}")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers().get("www-authenticate").is_some());

    // Every example document is captured and each event comes back equal.
    let examples = jsonld_files(&dir.join("examples"));
    assert!(
        examples.len() >= 40,
        "only {} example files",
        examples.len()
    );
    let mut captured: BTreeMap<String, Value> = BTreeMap::new(); // hash id → event
    for path in &examples {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        let body = std::fs::read(path).expect("read example");
        let doc: Value = serde_json::from_slice(&body).expect("example is JSON");
        let job = api.capture_ok(name, &body).await;
        let events = events_of(&doc);
        assert_eq!(job["events"].as_u64(), Some(events.len() as u64), "{name}");
        for (event, ctx) in events {
            let hash = event_hash_id(event, &ctx).expect("hash");
            let id = event["eventID"].as_str().unwrap_or(&hash).to_string();
            // The event as stored: by its ID, by its hash ID (an identical event captured
            // earlier under another ID), or among all events sharing its ID.
            let mut candidates = Vec::new();
            for key in [&id, &hash] {
                let (status, found) = api.get(&format!("/epcis/events/{}", enc(key))).await;
                if status == 200 {
                    candidates.push(found);
                }
            }
            candidates.extend(api.query_all(&format!("EQ_eventID={}", enc(&id))).await);
            let same: Vec<&Value> = candidates
                .iter()
                .filter(|e| event_hash_id(e, &ctx).ok().as_deref() == Some(hash.as_str()))
                .collect();
            assert!(
                !same.is_empty(),
                "{name}: event {id} ({hash}) is not stored"
            );
            // The first capture of an event comes back equal; so does an error declaration,
            // which replaces the event it corrects (same hash ID) in query results.
            let want = without_context(event.clone());
            let declares = event.get("errorDeclaration").is_some();
            if declares || !captured.contains_key(&hash) {
                assert!(
                    same.iter().any(|e| comparable((*e).clone(), event) == want),
                    "{name}: event {id} does not come back equal: {same:?}"
                );
                captured.insert(hash.clone(), want);
            }
        }
    }

    // Capturing a document again stores none of its events a second time.
    let first = std::fs::read(&examples[0]).expect("read");
    let before = api.query_all("perPage=1000").await.len();
    let again = api.capture_ok("again", &first).await;
    assert_eq!(again["eventsStored"], 0, "{again}");
    assert!(again["duplicates"].as_u64().unwrap_or(0) > 0, "{again}");
    let all = api.query_all("perPage=1000").await;
    assert_eq!(all.len(), before, "a repeated capture adds no events");
    assert_eq!(
        all.len(),
        captured.len(),
        "one event per distinct hash ID in query results (a correction replaces its event)"
    );

    // What the query returns is itself valid EPCIS 2.0: the result document and a single event.
    let validator = traceability::epcis::validate::EpcisValidator::load(&dir.join("schema"))
        .expect("EPCIS schema");
    let (status, doc, _) = api.get_full("/epcis/events?perPage=1000").await;
    assert_eq!(status, 200);
    // The examples reuse some eventIDs for different events (distinct hash IDs), which the
    // repository keeps apart; a document may not repeat an ID, so check one event per ID.
    let mut seen_ids = BTreeSet::new();
    let mut unique = doc.clone();
    if let Some(list) = unique
        .pointer_mut("/epcisBody/queryResults/resultsBody/eventList")
        .and_then(Value::as_array_mut)
    {
        list.retain(|e| seen_ids.insert(e["eventID"].to_string()));
    }
    if let Err(e) = validator.validate_capture(&unique) {
        panic!("the query result is not a valid EPCISQueryDocument: {e}");
    }
    let one_id = all[0]["eventID"].as_str().expect("eventID").to_string();
    let (_, one) = api.get(&format!("/epcis/events/{}", enc(&one_id))).await;
    if let Err(e) = validator.validate_capture(&one) {
        panic!("a single event is not valid EPCIS: {e}");
    }

    // Paging: small pages add up to the whole, in order, without repeats.
    let paged = api.query_all("perPage=7").await;
    assert_eq!(paged.len(), all.len());
    assert!(
        paged == all,
        "pages of 7 give the same events in the same order"
    );

    // Queries: the server's answer (index narrowing + paging) equals the standard's rule
    // applied to every stored event.
    let queries: &[&[(&str, &str)]] = &[
        &[("eventType", "ObjectEvent")],
        &[("eventType", "AggregationEvent|TransformationEvent")],
        &[("EQ_bizStep", "shipping")],
        &[("EQ_bizStep", "urn:epcglobal:cbv:bizstep:receiving")],
        &[("EQ_disposition", "in_transit")],
        &[("EQ_action", "OBSERVE"), ("eventType", "ObjectEvent")],
        &[
            ("GE_eventTime", "2019-10-21T00:00:00Z"),
            ("LT_eventTime", "2020-06-01T00:00:00+01:00"),
        ],
        &[("MATCH_epc", "urn:epc:id:sgtin:0614141.107346.2017")],
        &[("MATCH_anyEPCClass", "urn:epc:idpat:sgtin:4012345.011111.*")],
        &[("EQ_bizLocation", "urn:epc:id:sgln:0614141.00888.0")],
        &[
            ("orderBy", "eventTime"),
            ("orderDirection", "ASC"),
            ("eventCountLimit", "5"),
        ],
    ];
    let mut non_empty = 0;
    for params in queries {
        let pairs: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let q = EventQuery::from_pairs(&pairs).expect("valid query");
        let qs: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", enc(v)))
            .collect();
        let got = api.query_all(&qs.join("&")).await;
        let key = |e: &Value| e["eventID"].to_string() + &e["eventTime"].to_string();
        let got_keys: BTreeSet<String> = got.iter().map(key).collect();
        if q.event_count_limit.is_some() {
            assert_eq!(got.len(), 5, "{qs:?}");
            let times: Vec<&str> = got.iter().filter_map(|e| e["eventTime"].as_str()).collect();
            let mut sorted = times.clone();
            sorted.sort_by_key(|t| {
                chrono::DateTime::parse_from_rfc3339(t)
                    .map(|d| d.timestamp_millis())
                    .unwrap_or(0)
            });
            assert_eq!(times, sorted, "orderBy eventTime ASC");
            continue;
        }
        let want: BTreeSet<String> = all.iter().filter(|e| q.matches(e)).map(key).collect();
        assert_eq!(got_keys, want, "query {qs:?}");
        if !got.is_empty() {
            non_empty += 1;
        }
    }
    assert!(
        non_empty >= 6,
        "the queries should find events in the examples"
    );

    // Invalid documents are refused with the pointer of the first offending field, and
    // nothing of them is stored.
    let mut bad: Value = serde_json::from_slice(
        &std::fs::read(dir.join("examples/Example_9.6.1-ObjectEvent.jsonld")).expect("read"),
    )
    .expect("json");
    bad["epcisBody"]["eventList"][1]["eventTime"] = json!("yesterday");
    bad["epcisBody"]["eventList"][0]["eventID"] =
        json!("urn:uuid:6a6d4b2e-4f83-4b10-9c0c-000000000001");
    let (status, problem, _) = api
        .post_capture(&serde_json::to_vec(&bad).expect("json"))
        .await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(
        problem["type"], "epcisException:ValidationException",
        "{problem}"
    );
    assert_eq!(
        problem["pointer"], "/epcisBody/eventList/1/eventTime",
        "{problem}"
    );
    let (status, _) = api
        .get("/epcis/events/urn%3Auuid%3A6a6d4b2e-4f83-4b10-9c0c-000000000001")
        .await;
    assert_eq!(
        status, 404,
        "the valid first event of a refused document is not stored"
    );

    let single = json!({
        "@context": ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"],
        "type": "EPCISDocument", "schemaVersion": "2.0", "creationDate": "2024-01-01T00:00:00Z",
        "epcisBody": {"eventList": [{
            "type": "ObjectEvent", "eventTime": "2024-01-01T00:00:00Z", "eventTimeZoneOffset": "+00:00",
            "action": "OBSERVE", "epcList": ["https://id.gs1.org/01/09521234000014/21/1"]
        }]}
    });
    let (status, problem, _) = api
        .post_capture(&serde_json::to_vec(&single).expect("json"))
        .await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["code"], "gs1_check_digit", "{problem}");
    assert_eq!(
        problem["pointer"], "/epcisBody/eventList/0/epcList/0",
        "{problem}"
    );
    let (status, problem, _) = api.post_capture(b"{not json").await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (400, Some("epcis_malformed_json"))
    );
    let (status, problem) = api.get("/epcis/events?EQ_bizStep=no_such_step").await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["type"], "epcisException:QueryParameterException");
    assert_eq!(
        api.query_all("perPage=1000").await.len(),
        all.len(),
        "refusals stored nothing"
    );

    // The event-hash vectors: captured through the chain, the contract's anchor of every
    // event carries exactly the expected CBV 2.0 hash ID.
    let mut checked = 0;
    for path in jsonld_files(&dir.join("event-hash")) {
        let hashes = path.with_extension("hashes");
        let Ok(expected) = std::fs::read_to_string(&hashes) else {
            continue;
        };
        let expected: Vec<String> = expected
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("?")
            .to_string();
        let body = std::fs::read(&path).expect("read");
        let (status, v, location) = api.post_capture(&body).await;
        if status == 400 {
            // Some hash vectors are not valid EPCIS documents (they test the hash rules only);
            // their hashes are checked by the unit tests of `epcis::hash`.
            eprintln!("{name}: refused by the schema: {}", v["title"]);
            continue;
        }
        assert_eq!(status, 202, "{name}: {v}");
        api.wait_job(&name, &location.expect("location")).await;
        for want in &expected {
            let hex = want
                .strip_prefix("ni:///sha-256;")
                .and_then(|r| r.split('?').next())
                .expect("hash id");
            let (status, anchor) = api.get(&format!("/api/v1/state/trace/event%2F{hex}")).await;
            assert_eq!(status, 200, "{name}: {want}");
            assert_eq!(
                anchor["value"]["event_hash_id"],
                json!(want),
                "{name}: {anchor}"
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 20,
        "only {checked} hash vectors went through the chain"
    );
    let _ = Context::new();
}

/// The demo chain in a real browser: consumer pages (good, cold chain broken, recalled; in
/// Chinese; verified in the browser; counterfeit warning after many scanners) and the
/// enterprise pages (products form with a check-digit error then success, lot page with the
/// trace graph, recall, labels, live alerts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceability_pages_in_a_real_browser() {
    let _one = crate::bft::ONE_NETWORK.lock().await;
    let node = NodeProc::start_with(&[]).await;
    let url = node.url.clone();
    let http = reqwest::Client::new();
    // The demo is seeded in the background after start: wait for its last step (the recall).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v: Value = http
            .get(format!("{url}/api/v1/state/trace/recall%2FRECALL-RAW-2612"))
            .send()
            .await
            .expect("state")
            .json()
            .await
            .unwrap_or(Value::Null);
        if v["value"].is_object() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "demo data not seeded: {}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The demo's events are valid EPCIS 2.0 (they are captured through the contract directly).
    let dir = conformance_dir().join("epcis");
    let validator = traceability::epcis::validate::EpcisValidator::load(&dir.join("schema"))
        .expect("EPCIS schema");
    let api = Epcis::new(&node, "samr-admin");
    let (status, doc, _) = api.get_full("/epcis/events?perPage=1000").await;
    assert_eq!(status, 200, "{doc}");
    let n = doc["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
        .as_array()
        .map_or(0, Vec::len);
    assert!(n >= 10, "the demo captured {n} events");
    if let Err(e) = validator.validate_capture(&doc) {
        panic!("the demo's events are not valid EPCIS: {e}");
    }
    // The node's own IoT gateway: a probe registered on chain, bound to the raw-milk lot
    // (0–6 °C), publishes signed readings to the embedded broker; a warm one makes the lot
    // non-conformant within seconds.
    let ks =
        chain_core::keystore::Keystore::open(node.dir.path().join("keystore")).expect("keystore");
    let carrier = ks.load("swiftcold-admin", crate::web::PASS).expect("key");
    let probe = chain_core::crypto::SigningKey::from_label(
        chain_core::crypto::SigAlg::Ed25519,
        "tank-probe",
    );
    let register = json!({"public_key": probe.public_key().to_text(), "name": "Tank probe", "kind": "sensor",
                          "binding": {"type": "lot", "gtin": "09521234000013", "lot": "RAW-2611"}});
    let r =
        crate::web::submit_signed(&http, &url, &carrier, "iot", "register_device", register).await;
    assert_eq!(r["receipt"]["status"], "ok", "{r}");
    {
        use rumqttc::{AsyncClient, MqttOptions, QoS};
        let mut opts = MqttOptions::new("tank-probe", "127.0.0.1", node.mqtt_port);
        opts.set_keep_alive(Duration::from_secs(10));
        let (client, mut events) = AsyncClient::new(opts, 100);
        let pump = tokio::spawn(async move { while events.poll().await.is_ok() {} });
        let did = probe.public_key().did();
        // The fifth repeats counter 2: a replay, refused and counted.
        for (seq, celsius) in [(1u64, 3.9), (2, 4.2), (3, 9.0), (4, 4.1), (2, 4.2)] {
            let time = chrono::DateTime::from_timestamp_millis(chain_core::node::now_ms() as i64)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default();
            let payload = json!({"device": did, "seq": seq, "time": time, "type": "gs1:Temperature", "uom": "CEL", "value": celsius});
            client
                .publish(
                    format!("trellis/swiftcold/devices/{did}/readings"),
                    QoS::AtLeastOnce,
                    false,
                    iot_gateway::payload::sign_envelope(&probe, &payload),
                )
                .await
                .expect("publish");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let lot: Value = http
                .get(format!(
                    "{url}/api/v1/state/trace/lot%2F09521234000013%2FRAW-2611"
                ))
                .send()
                .await
                .expect("lot")
                .json()
                .await
                .expect("json");
            if lot["value"]["status"] == "non_conformant" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the warm reading did not reach the lot: {lot}\n{}",
                node.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        pump.abort();
    }
    let ok_page = format!("{url}/01/09521234000020/10/CHZ-2611A/21/1001");
    let bad_page = format!("{url}/01/09521234000037/10/YOG-2611B");
    let recalled_page = format!("{url}/01/09521234000020/10/CHZ-2612/21/2001");

    // Bad links are refused with the reason, not a crash.
    let r = http
        .get(format!("{url}/01/09521234000021/10/X"))
        .send()
        .await
        .expect("bad");
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await.unwrap_or_default().contains("check digit"));

    let b = Browser::start().await;
    let c = b.c();
    c.set_window_size(412, 915)
        .await
        .expect("phone-sized window");
    c.goto(&ok_page).await.expect("consumer page");
    let banner = b.text_of("[data-verdict]").await;
    assert!(banner.contains("Genuine"), "{banner}");
    let body = b.wait_text("Journey").await;
    for want in [
        "Grassland cheddar",
        "Acme Dairy Plant",
        "Sold",
        "Organic product certificate",
        "Cold chain",
    ] {
        assert!(body.contains(want), "consumer page lacks {want:?}: {body}");
    }
    let verified = c
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css("#verify-lot-out[data-verify-result]"))
        .await
        .expect("the phone's browser checks the proof by itself");
    assert_eq!(
        verified
            .attr("data-verify-result")
            .await
            .expect("attr")
            .as_deref(),
        Some("ok")
    );
    b.shot("consumer-ok").await;
    // Mobile first: nothing on the page is wider than the phone's screen.
    let wide = c
        .execute(
            "const w = document.documentElement.clientWidth; const wide = [...document.querySelectorAll('body *')].filter(e => !e.closest('.menu, .table-wrap') && e.getBoundingClientRect().right > w + 1).map(e => e.tagName + '.' + e.className).slice(0, 10); if (document.documentElement.scrollWidth > w + 1) wide.push('page scrolls sideways: ' + document.documentElement.scrollWidth + ' > ' + w); return wide;",
            vec![],
        )
        .await
        .expect("layout");
    assert_eq!(wide, json!([]), "elements wider than a phone screen");
    c.execute("window.scrollTo(0, document.body.scrollHeight)", vec![])
        .await
        .expect("scroll");
    b.shot("consumer-ok-bottom").await;

    c.goto(&bad_page).await.expect("excursion page");
    assert!(
        b.text_of("[data-verdict]")
            .await
            .contains("Cold chain broken")
    );
    assert!(
        c.find(Locator::Css(".cold-chart circle.point-bad"))
            .await
            .is_ok(),
        "out-of-range readings are marked"
    );
    b.shot("consumer-excursion").await;

    c.goto(&recalled_page).await.expect("recalled page");
    assert!(b.text_of("[data-verdict]").await.contains("Recalled"));
    b.click("a[hreflang='zh-CN']").await;
    b.wait_text("已召回").await;
    b.shot("consumer-recalled-zh").await;
    b.click("a[hreflang='en']").await;
    b.wait_text("Recalled").await;

    // Counterfeit rule: one code scanned by more distinct phones than allowed.
    let code = format!("{url}/01/09521234000020/10/CHZ-2611A/21/1002");
    for i in 0..7 {
        let r = http
            .get(&code)
            .header("User-Agent", format!("phone-{i}"))
            .send()
            .await
            .expect("scan");
        assert_eq!(r.status().as_u16(), 200);
    }
    c.goto(&code).await.expect("suspicious code");
    b.wait_text("Possible counterfeit").await;
    b.shot("consumer-counterfeit").await;
    c.set_window_size(1200, 900).await.expect("desktop window");

    // Enterprise pages, signed in as the producer's admin.
    c.goto(&format!("{url}/signin")).await.expect("signin");
    b.fill("#f-username", "acme-admin").await;
    b.fill("#f-password", &node.password_of("acme-admin")).await;
    b.click("form button[type='submit']").await;
    b.wait_text("acme-admin").await;
    c.goto(&format!("{url}/traceability"))
        .await
        .expect("overview");
    b.expect_h1("Traceability").await;
    let body = b.wait_text("Latest alerts").await;
    assert!(
        body.contains("Counterfeit suspicion") && body.contains("Recall"),
        "{body}"
    );
    b.shot("trace-overview").await;

    c.goto(&format!("{url}/traceability/products"))
        .await
        .expect("products");
    b.fill("#f-gtin", "09521234000045").await;
    b.fill("#f-name", "Butter 250 g").await;
    b.click("form.form button[type='submit']").await;
    let body = b.wait_text("check digit is wrong").await;
    assert!(
        body.contains("expected 4"),
        "names the expected digit: {body}"
    );
    b.shot("trace-product-error").await;
    b.fill("#f-gtin", "09521234000044").await;
    b.fill("#f-name", "Butter 250 g").await;
    b.fill("#f-temp_min", "2").await;
    b.fill("#f-temp_max", "8").await;
    b.click("form.form button[type='submit']").await;
    b.wait_text("The product is registered on chain.").await;
    b.wait_text("Butter 250 g").await;
    b.shot("trace-products").await;

    // A lot of it, then a handover to FreshMart: offered is not handed over.
    c.goto(&format!("{url}/traceability/lots"))
        .await
        .expect("lots");
    b.fill("#f-gtin", "9521234000044").await;
    b.fill("#f-lot", "BUT-1").await;
    b.fill("#f-location", "9521234000203").await;
    b.click("form.form button[type='submit']").await;
    let body = b.wait_text("check digit is wrong").await;
    assert!(
        body.contains("expected 4"),
        "the location's check digit: {body}"
    );
    b.fill("#f-location", "9521234000204").await;
    b.click("form.form button[type='submit']").await;
    b.wait_text("The lot is created on chain.").await;
    c.goto(&format!("{url}/traceability/lots/09521234000044/BUT-1"))
        .await
        .expect("butter lot");
    b.click("form[action='/traceability/handovers'] button[type='submit']")
        .await;
    b.wait_text("custody moves when the receiver accepts").await;
    let custodian = |v: Value| {
        v["value"]["custodian"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let butter = |http: reqwest::Client| {
        let url = url.clone();
        async move {
            http.get(format!(
                "{url}/api/v1/state/trace/lot%2F09521234000044%2FBUT-1"
            ))
            .send()
            .await
            .expect("lot")
            .json::<Value>()
            .await
            .expect("json")
        }
    };
    assert_eq!(
        custodian(butter(http.clone()).await),
        "acme",
        "offered is not handed over"
    );

    c.goto(&format!("{url}/traceability/lots/09521234000013/RAW-2611"))
        .await
        .expect("lot");
    let body = b.wait_text("Trace graph").await;
    for want in ["CHZ-2611A", "YOG-2611B"] {
        assert!(body.contains(want), "the graph shows {want}: {body}");
    }
    assert!(c.find(Locator::Css(".trace-graph path.edge")).await.is_ok());
    b.shot("trace-lot").await;

    // A certificate: the browser hashes the chosen file; only the digest goes on chain.
    let doc = node.dir.path().join("lab-report-RAW-2611.txt");
    std::fs::write(&doc, "Lab report RAW-2611: antibiotics not detected").expect("doc");
    let want = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        std::fs::read(&doc).expect("read doc"),
    ));
    b.click("details.card summary").await;
    c.find(Locator::Css("#f-doc"))
        .await
        .expect("file input")
        .send_keys(&doc.display().to_string())
        .await
        .expect("choose file");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = c
            .execute("return document.getElementById('f-hash').value", vec![])
            .await
            .expect("hash");
        if v == json!(want) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the page did not hash the file: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.fill("#f-kind", "Residue test").await;
    b.fill("#f-issuer", "Inner Mongolia Food Lab").await;
    b.click("form[action='/traceability/certificates'] button[type='submit']")
        .await;
    b.wait_text("The certificate's digest is on chain.").await;
    b.wait_text("Residue test").await;

    // Live alerts: an excursion reported while the page is open appears without a reload.
    c.goto(&format!("{url}/traceability/alerts"))
        .await
        .expect("alerts");
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#live-alerts-status[data-state='connected']"))
        .await
        .expect("alert stream connected");
    let rows_before = c
        .find_all(Locator::Css("#alerts-body tr.fresh"))
        .await
        .map(|v| v.len())
        .unwrap_or(0);
    assert_eq!(rows_before, 0);
    // FreshMart (the custodian) reports a warm reading for the cheese: the alert shows up.
    let key = chain_core::keystore::Keystore::open(node.dir.path().join("keystore"))
        .expect("keystore")
        .load("freshmart-admin", crate::web::PASS)
        .expect("key");
    let report = json!({"gtin": "09521234000020", "lot": "CHZ-2611A", "device": "shelf-fridge-3",
        "readings": [{"time_ms": chain_core::node::now_ms() - 1000, "temperature_c": 11.5}]});
    let r = crate::web::submit_signed(&http, &url, &key, "trace", "sensor_report", report).await;
    assert_eq!(r["status"], "committed", "{r}");
    c.wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css("#alerts-body tr.fresh[data-kind='excursion']"))
        .await
        .expect("the excursion appears live");
    // A counterfeit suspicion (not on chain: raised by consumer scans) appears live too.
    let copied = format!("{url}/01/09521234000020/10/CHZ-2611A/21/1003");
    for i in 0..7 {
        let r = http
            .get(&copied)
            .header("User-Agent", format!("copier-{i}"))
            .send()
            .await
            .expect("scan");
        assert_eq!(r.status().as_u16(), 200);
    }
    c.wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css(
            "#alerts-body tr.fresh[data-kind='counterfeit']",
        ))
        .await
        .expect("the counterfeit suspicion appears live");
    b.shot("trace-alerts-live").await;

    // Recall from the lot page: the lot and the lot made from it are recalled.
    c.goto(&format!("{url}/traceability/lots/09521234000013/RAW-2611"))
        .await
        .expect("lot");
    b.fill("#f-reason", "Test recall from the browser").await;
    b.click(".danger-zone button[type='submit']").await;
    b.wait_text("The recall is on chain").await;
    let lot: Value = http
        .get(format!(
            "{url}/api/v1/state/trace/lot%2F09521234000037%2FYOG-2611B"
        ))
        .send()
        .await
        .expect("lot")
        .json()
        .await
        .expect("json");
    assert_eq!(
        lot["value"]["status"], "recalled",
        "recall followed the transformation: {lot}"
    );
    b.shot("trace-recalled").await;

    // Labels: a PDF sheet and a PNG QR code.
    let pdf = c
        .execute(
            "return fetch('/traceability/labels.pdf?gtin=09521234000020&lot=CHZ-2611A&serials=1001-1030', {credentials: 'same-origin'}).then(r => r.arrayBuffer()).then(b => { const a = new Uint8Array(b); return [a.length, String.fromCharCode(a[0], a[1], a[2], a[3], a[4])]; })",
            vec![],
        )
        .await
        .expect("labels");
    assert_eq!(pdf[1], "%PDF-", "{pdf}");
    assert!(pdf[0].as_u64().unwrap_or(0) > 1000);
    let png = http
        .get(format!("{url}/traceability/qr.png?data={}", enc(&ok_page)))
        .send()
        .await
        .expect("png")
        .bytes()
        .await
        .expect("bytes");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));

    // The receiver accepts: now custody moves.
    c.goto(&format!("{url}/traceability"))
        .await
        .expect("overview");
    b.click("form[action='/signout'] button").await;
    b.wait_text("Sign in").await;
    c.goto(&format!("{url}/signin")).await.expect("signin");
    b.fill("#f-username", "freshmart-admin").await;
    b.fill("#f-password", &node.password_of("freshmart-admin"))
        .await;
    b.click("form button[type='submit']").await;
    b.wait_text("freshmart-admin").await;
    c.goto(&format!("{url}/traceability/handovers"))
        .await
        .expect("handovers");
    b.wait_text("Awaiting acceptance").await;
    b.shot("trace-handovers").await;
    b.click("button[data-answer='accept']").await;
    b.wait_text("your organisation now holds the lots").await;
    assert_eq!(
        custodian(butter(http.clone()).await),
        "freshmart",
        "accepted: custody moved"
    );

    // Devices: registered on chain from the device page (bad key refused next to the field),
    // then revoked.
    let probe = chain_core::crypto::SigningKey::from_label(
        chain_core::crypto::SigAlg::Ed25519,
        "shelf-probe",
    );
    let did = probe.public_key().did();
    c.goto(&format!("{url}/admin/devices"))
        .await
        .expect("devices");
    b.fill("#f-public_key", "ed25519:1234").await;
    b.fill("#f-name", "Shelf fridge probe").await;
    b.click("form.form button[type='submit']").await;
    b.wait_text("Not a valid public key").await;
    b.fill("#f-public_key", &probe.public_key().to_text()).await;
    b.fill("#f-name", "Shelf fridge probe").await;
    c.find(Locator::Css("#f-binding_type option[value='lot']"))
        .await
        .expect("lot option")
        .click()
        .await
        .expect("choose lot");
    b.fill("#f-binding_value", "09521234000020/CHZ-2611A").await;
    b.click("form.form button[type='submit']").await;
    b.wait_text("The device is registered on chain.").await;
    b.wait_text("Shelf fridge probe").await;
    // What the node's gateway has seen of the tank probe: four accepted, one replay refused.
    let seen = c
        .execute(
            "const row = [...document.querySelectorAll('tr')].find(r => r.textContent.includes('Tank probe'));
             if (!row) return null;
             const a = row.querySelector('[data-accepted]'), r = row.querySelector('[data-refused]');
             return [a && a.dataset.accepted, r && r.dataset.refused, r && r.dataset.reasons];",
            vec![],
        )
        .await
        .expect("device row");
    assert_eq!(
        seen,
        json!(["4", "1", "replay"]),
        "tank probe on the device page"
    );
    b.shot("trace-admin-devices").await;
    let metrics = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("trellis_iot_messages_rejected_total{reason=\"replay\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("trellis_iot_outbox_messages"), "{metrics}");
    let device_state = |http: reqwest::Client, did: String| {
        let url = url.clone();
        async move {
            http.get(format!("{url}/api/v1/state/iot/device%2F{}", enc(&did)))
                .send()
                .await
                .expect("device")
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    let d = device_state(http.clone(), did.clone()).await;
    assert_eq!(d["value"]["status"], "active", "{d}");
    assert_eq!(d["value"]["binding"]["lot"], "CHZ-2611A", "{d}");
    b.click(&format!("button[data-revoke='{did}']")).await;
    b.wait_text("The device is revoked").await;
    let d = device_state(http.clone(), did.clone()).await;
    assert_eq!(d["value"]["status"], "revoked", "{d}");
    b.close().await;
}
