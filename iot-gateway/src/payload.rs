//! Device messages (docs/spec/iot.md): an envelope `{"payload": "<JSON text>", "sig": "<hex>"}`
//! whose signature covers `trellis/iot/v1\n` followed by the payload text, exactly as sent. The
//! payload is a reading (`…/readings` topics) or a scan (`…/scans` topics).

use chain_core::crypto::{SigAlg, Signature};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Domain separation of device signatures: a device key signs nothing else with this prefix.
pub const SIGNING_DOMAIN: &[u8] = b"trellis/iot/v1\n";
/// Largest message accepted from a device.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024;

/// Why a message was refused. Every reason is counted and shown per device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reject {
    Oversized,
    Malformed,
    UnknownDevice,
    RevokedDevice,
    WrongTopic,
    WrongKind,
    BadSignature,
    Replay,
    ClockSkew,
}

impl Reject {
    pub const ALL: [Reject; 9] = [
        Reject::Oversized,
        Reject::Malformed,
        Reject::UnknownDevice,
        Reject::RevokedDevice,
        Reject::WrongTopic,
        Reject::WrongKind,
        Reject::BadSignature,
        Reject::Replay,
        Reject::ClockSkew,
    ];

    /// Stable code (metrics label, device page, logs).
    pub fn code(self) -> &'static str {
        match self {
            Reject::Oversized => "oversized",
            Reject::Malformed => "malformed",
            Reject::UnknownDevice => "unknown_device",
            Reject::RevokedDevice => "revoked_device",
            Reject::WrongTopic => "wrong_topic",
            Reject::WrongKind => "wrong_kind",
            Reject::BadSignature => "bad_signature",
            Reject::Replay => "replay",
            Reject::ClockSkew => "clock_skew",
        }
    }
}

/// The kind of message a topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Readings,
    Scans,
}

/// `trellis/{org}/devices/{device}/readings|scans` → (org, device, channel).
pub fn parse_topic(topic: &str) -> Option<(&str, &str, Channel)> {
    let mut it = topic.split('/');
    let (Some("trellis"), Some(org), Some("devices"), Some(device), Some(kind), None) = (
        it.next(),
        it.next(),
        it.next(),
        it.next(),
        it.next(),
        it.next(),
    ) else {
        return None;
    };
    let channel = match kind {
        "readings" => Channel::Readings,
        "scans" => Channel::Scans,
        _ => return None,
    };
    (!org.is_empty() && !device.is_empty()).then_some((org, device, channel))
}

/// A measurement as a device reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub device: String,
    /// Per-device counter: strictly increasing.
    pub seq: u64,
    /// Device time, ms since the Unix epoch.
    pub time_ms: i64,
    /// CBV sensor measurement type without prefix (`Temperature`, `RelativeHumidity`…).
    pub measurement: String,
    /// UN/CEFACT unit code (`CEL`, `P1`…).
    pub uom: String,
    pub value: f64,
}

/// A scan of a GS1 Digital Link code at a read point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scan {
    pub device: String,
    pub seq: u64,
    pub time_ms: i64,
    /// The scanned GS1 Digital Link URI.
    pub uri: String,
    /// GLN of the read point, when the payload names one (else the device's location).
    pub read_point: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Reading(Reading),
    Scan(Scan),
}

impl Message {
    pub fn device(&self) -> &str {
        match self {
            Message::Reading(r) => &r.device,
            Message::Scan(s) => &s.device,
        }
    }
    pub fn seq(&self) -> u64 {
        match self {
            Message::Reading(r) => r.seq,
            Message::Scan(s) => s.seq,
        }
    }
    pub fn time_ms(&self) -> i64 {
        match self {
            Message::Reading(r) => r.time_ms,
            Message::Scan(s) => s.time_ms,
        }
    }
}

/// Measurement types (CBV 2.0 sensor measurement types) and the units each may use.
const MEASUREMENTS: &[(&str, &[&str])] = &[
    ("Temperature", &["CEL", "FAH", "KEL"]),
    ("RelativeHumidity", &["P1"]),
    ("AbsoluteHumidity", &["GM"]),
    ("Illuminance", &["LUX"]),
    ("Pressure", &["PAL", "BAR", "MBR"]),
    ("Acceleration", &["MSK"]),
    ("Voltage", &["VLT"]),
    ("Dimensionless", &["P1"]),
];

/// A parsed message: its payload, the bytes the signature covers, and the signature.
#[derive(Debug, Clone)]
pub struct Signed {
    pub message: Message,
    pub signed_bytes: Vec<u8>,
    pub signature: Signature,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    payload: String,
    sig: String,
}

fn str_field<'a>(v: &'a Value, k: &str) -> Result<&'a str, Reject> {
    v.get(k).and_then(Value::as_str).ok_or(Reject::Malformed)
}

fn time_field(v: &Value) -> Result<i64, Reject> {
    let t = str_field(v, "time")?;
    chrono::DateTime::parse_from_rfc3339(t)
        .map(|d| d.timestamp_millis())
        .map_err(|_| Reject::Malformed)
}

/// Parses an envelope (nothing is trusted yet: the signature is checked by the verifier).
pub fn parse(bytes: &[u8], channel: Channel, alg: SigAlg) -> Result<Signed, Reject> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(Reject::Oversized);
    }
    let env: Envelope = serde_json::from_slice(bytes).map_err(|_| Reject::Malformed)?;
    let sig_bytes = hex::decode(env.sig.trim()).map_err(|_| Reject::Malformed)?;
    let signature = Signature::new(alg, sig_bytes).map_err(|_| Reject::Malformed)?;
    let v: Value = serde_json::from_str(&env.payload).map_err(|_| Reject::Malformed)?;
    let device = str_field(&v, "device")?.to_string();
    let seq = v
        .get("seq")
        .and_then(Value::as_u64)
        .ok_or(Reject::Malformed)?;
    let time_ms = time_field(&v)?;
    let message = match channel {
        Channel::Readings => {
            let ty = str_field(&v, "type")?;
            let measurement = ty.strip_prefix("gs1:").unwrap_or(ty).to_string();
            let uom = str_field(&v, "uom")?.to_string();
            let units = MEASUREMENTS
                .iter()
                .find(|(m, _)| *m == measurement)
                .map(|(_, u)| *u)
                .ok_or(Reject::Malformed)?;
            if !units.contains(&uom.as_str()) {
                return Err(Reject::Malformed);
            }
            let value = v
                .get("value")
                .and_then(Value::as_f64)
                .filter(|x| x.is_finite() && x.abs() < 1.0e6)
                .ok_or(Reject::Malformed)?;
            Message::Reading(Reading {
                device,
                seq,
                time_ms,
                measurement,
                uom,
                value,
            })
        }
        Channel::Scans => {
            let uri = str_field(&v, "uri")?;
            let lower = uri.to_ascii_lowercase();
            if uri.len() > 1024
                || !(lower.starts_with("https://") || lower.starts_with("http://"))
                || !uri.contains("/01/")
            {
                return Err(Reject::Malformed);
            }
            let read_point = match v.get("readPoint") {
                None | Some(Value::Null) => None,
                Some(Value::String(g))
                    if g.len() == 13 && g.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    Some(g.clone())
                }
                Some(_) => return Err(Reject::Malformed),
            };
            Message::Scan(Scan {
                device,
                seq,
                time_ms,
                uri: uri.to_string(),
                read_point,
            })
        }
    };
    let mut signed_bytes = Vec::with_capacity(SIGNING_DOMAIN.len() + env.payload.len());
    signed_bytes.extend_from_slice(SIGNING_DOMAIN);
    signed_bytes.extend_from_slice(env.payload.as_bytes());
    Ok(Signed {
        message,
        signed_bytes,
        signature,
    })
}

/// Builds a signed envelope (the simulator, tests and device makers' reference).
pub fn sign_envelope(key: &chain_core::crypto::SigningKey, payload: &Value) -> Vec<u8> {
    let text = payload.to_string();
    let mut msg = Vec::with_capacity(SIGNING_DOMAIN.len() + text.len());
    msg.extend_from_slice(SIGNING_DOMAIN);
    msg.extend_from_slice(text.as_bytes());
    let sig = key.sign(&msg);
    serde_json::json!({"payload": text, "sig": hex::encode(&sig.bytes)})
        .to_string()
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chain_core::crypto::SigningKey;
    use serde_json::json;

    fn key() -> SigningKey {
        SigningKey::from_label(SigAlg::Ed25519, "sensor-1")
    }

    fn reading(seq: u64) -> Value {
        json!({"device": key().public_key().did(), "seq": seq, "time": "2026-12-02T10:00:00.000Z",
               "type": "gs1:Temperature", "uom": "CEL", "value": 4.5})
    }

    #[test]
    fn topics_name_org_device_and_channel() {
        assert_eq!(
            parse_topic("trellis/acme/devices/did:key:z6Mk/readings"),
            Some(("acme", "did:key:z6Mk", Channel::Readings))
        );
        assert_eq!(
            parse_topic("trellis/acme/devices/x/scans").map(|t| t.2),
            Some(Channel::Scans)
        );
        assert_eq!(parse_topic("trellis/acme/devices/x/other"), None);
        assert_eq!(parse_topic("trellis/acme/devices/x/readings/extra"), None);
        assert_eq!(parse_topic("trellis//devices/x/readings"), None);
    }

    #[test]
    fn a_signed_reading_parses_and_its_signature_covers_the_payload_text() {
        let env = sign_envelope(&key(), &reading(7));
        let s = parse(&env, Channel::Readings, SigAlg::Ed25519).expect("parses");
        assert_eq!(s.message.seq(), 7);
        assert!(
            key()
                .public_key()
                .verify(&s.signed_bytes, &s.signature)
                .is_ok()
        );
        let Message::Reading(r) = s.message else {
            panic!("reading")
        };
        assert_eq!(
            (r.measurement.as_str(), r.uom.as_str(), r.value),
            ("Temperature", "CEL", 4.5)
        );
    }

    #[test]
    fn bad_messages_are_refused_with_a_reason() {
        let oversized = vec![b' '; MAX_MESSAGE_BYTES + 1];
        assert_eq!(
            parse(&oversized, Channel::Readings, SigAlg::Ed25519).unwrap_err(),
            Reject::Oversized
        );
        assert_eq!(
            parse(b"{not json", Channel::Readings, SigAlg::Ed25519).unwrap_err(),
            Reject::Malformed
        );
        for bad in [
            json!({"device": "d", "seq": 1, "time": "yesterday", "type": "Temperature", "uom": "CEL", "value": 1}),
            json!({"device": "d", "seq": -1, "time": "2026-12-02T10:00:00Z", "type": "Temperature", "uom": "CEL", "value": 1}),
            json!({"device": "d", "seq": 1, "time": "2026-12-02T10:00:00Z", "type": "Temperature", "uom": "P1", "value": 1}),
            json!({"device": "d", "seq": 1, "time": "2026-12-02T10:00:00Z", "type": "Smell", "uom": "CEL", "value": 1}),
            json!({"device": "d", "seq": 1, "time": "2026-12-02T10:00:00Z", "type": "Temperature", "uom": "CEL", "value": "hot"}),
        ] {
            let env = sign_envelope(&key(), &bad);
            assert_eq!(
                parse(&env, Channel::Readings, SigAlg::Ed25519).unwrap_err(),
                Reject::Malformed,
                "{bad}"
            );
        }
        // A reading sent on the scans topic is not a scan.
        let env = sign_envelope(&key(), &reading(1));
        assert_eq!(
            parse(&env, Channel::Scans, SigAlg::Ed25519).unwrap_err(),
            Reject::Malformed
        );
    }

    #[test]
    fn scans_carry_a_digital_link_and_an_optional_read_point() {
        let scan = json!({"device": "d", "seq": 3, "time": "2026-12-02T10:00:00+08:00",
                          "uri": "https://id.example.com/01/09521234000020/21/1001", "readPoint": "9521234000204"});
        let s = parse(
            &sign_envelope(&key(), &scan),
            Channel::Scans,
            SigAlg::Ed25519,
        )
        .expect("scan");
        let Message::Scan(s) = s.message else {
            panic!("scan")
        };
        assert_eq!(s.read_point.as_deref(), Some("9521234000204"));
        let bad =
            json!({"device": "d", "seq": 3, "time": "2026-12-02T10:00:00Z", "uri": "ftp://x/01/1"});
        assert!(
            parse(
                &sign_envelope(&key(), &bad),
                Channel::Scans,
                SigAlg::Ed25519
            )
            .is_err()
        );
    }
}

#[cfg(test)]
mod spec_example {
    use super::*;
    use chain_core::crypto::SigningKey;

    /// The worked example of docs/spec/iot.md, recomputed: the document must show exactly
    /// these bytes, so a device maker can check an implementation against it.
    #[test]
    fn the_spec_example_is_what_the_gateway_computes() {
        let key = SigningKey::from_seed(SigAlg::Ed25519, &[7u8; 32]).expect("seed");
        let did = key.public_key().did();
        let payload = format!(
            r#"{{"device":"{did}","seq":42,"time":"2026-12-02T10:00:00.000+08:00","type":"gs1:Temperature","uom":"CEL","value":4.7}}"#
        );
        let mut msg = SIGNING_DOMAIN.to_vec();
        msg.extend_from_slice(payload.as_bytes());
        let sig = hex::encode(key.sign(&msg).bytes);
        let spec =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/spec/iot.md"))
                .expect("docs/spec/iot.md");
        let missing: Vec<String> = [
            ("public key", key.public_key().to_text()),
            ("DID", did.clone()),
            ("payload", payload.clone()),
            ("signature", sig.clone()),
        ]
        .into_iter()
        .filter(|(_, value)| !spec.contains(value.as_str()))
        .map(|(what, value)| format!("{what}: {value}"))
        .collect();
        assert!(
            missing.is_empty(),
            "docs/spec/iot.md lacks the example's {missing:#?}"
        );
        let env = serde_json::json!({"payload": payload, "sig": sig}).to_string();
        let parsed = parse(env.as_bytes(), Channel::Readings, SigAlg::Ed25519).expect("parses");
        assert!(
            key.public_key()
                .verify(&parsed.signed_bytes, &parsed.signature)
                .is_ok()
        );
    }
}
