//! Verification of device messages in batches: parse, look up the device (registered on chain,
//! not revoked, on its own organisation's topic, the right kind), check all signatures at once
//! (Ed25519 batches spread over the cores), then, in arrival order, the per-device counter
//! (replays) and the device clock against the gateway's. A bad message is refused with a
//! reason and counted; it never stops the batch.

use std::collections::{BTreeMap, HashMap};

use chain_core::crypto::{PublicKey, SigAlg, VerifyItem, verify_batch_in_chunks_of_at_least};

use crate::contract::{Binding, Device, DeviceKind, DeviceStatus};
use crate::payload::{self, Channel, Message, Reject, Signed};

/// What the gateway knows of a registered device.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    pub key: PublicKey,
    pub org: String,
    pub kind: DeviceKind,
    pub active: bool,
    pub binding: Option<Binding>,
}

impl DeviceInfo {
    /// From the on-chain record; `None` when its key does not parse.
    pub fn from_record(d: &Device) -> Option<Self> {
        Some(Self {
            key: d.public_key.parse().ok()?,
            org: d.org.clone(),
            kind: d.kind,
            active: d.status == DeviceStatus::Active,
            binding: d.binding.clone(),
        })
    }
}

/// Per device named by a batch: its last accepted counter and accepted count before the batch.
pub struct SeqSnapshot(Vec<DeviceCounters>);

/// A device, its last accepted counter and (accepted messages, time of the last one).
type DeviceCounters = (String, Option<u64>, Option<(u64, i64)>);

/// A message parsed and matched to its registered device, its signature not yet admitted.
pub struct StagedMessage {
    signed: Signed,
    info: DeviceInfo,
    signature_ok: bool,
}

pub type Staged = Result<StagedMessage, Reject>;

/// Fewest signatures one thread verifies as a batch: as many as the chain's own batches, whose
/// cost per signature is about 30 % lower than at 64 (see `chain_core::crypto::verify_batch`).
const MIN_VERIFY_CHUNK: usize = 128;

/// Step 2: every staged signature at once (batched, over all cores); needs no verifier state.
pub fn verify_staged(staged: &mut [Staged]) {
    let results = {
        let items: Vec<VerifyItem<'_>> = staged
            .iter()
            .filter_map(|s| s.as_ref().ok())
            .map(|s| VerifyItem {
                key: &s.info.key,
                msg: &s.signed.signed_bytes,
                sig: &s.signed.signature,
            })
            .collect();
        // Messages are acknowledged once they are in the inbox, before they get here, so a
        // batch's verification is off the path the broker waits on: up to 128 messages are
        // verified by one thread at the lower cost per signature, while the other
        // cores store the batch before, run the broker client and anchor. Larger backlogs
        // still spread over every core.
        verify_batch_in_chunks_of_at_least(&items, MIN_VERIFY_CHUNK)
    };
    for (s, ok) in staged
        .iter_mut()
        .filter_map(|s| s.as_mut().ok())
        .zip(results)
    {
        s.signature_ok = ok.is_ok();
    }
}

/// A message as it arrived from the broker.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub topic: String,
    pub payload: Vec<u8>,
    /// The gateway's clock when it arrived (ms).
    pub received_ms: i64,
    /// The broker marked it as a resend (MQTT DUP) of a message not acknowledged before.
    pub redelivered: bool,
}

/// A verified message, ready to be stored and anchored.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub message: Message,
    pub org: String,
    pub binding: Option<Binding>,
    /// The envelope exactly as the device sent it (its hash is the batch's leaf).
    pub envelope: Vec<u8>,
}

pub struct Verifier {
    alg: SigAlg,
    /// How far a device clock may be from the gateway's.
    max_skew_ms: i64,
    devices: HashMap<String, DeviceInfo>,
    last_seq: HashMap<String, u64>,
    /// (device or "-", reason) → count.
    rejected: BTreeMap<(String, Reject), u64>,
    /// device → (messages accepted, gateway time of the last one).
    accepted: HashMap<String, (u64, i64)>,
}

impl Verifier {
    pub fn new(alg: SigAlg, max_skew_ms: i64) -> Self {
        Self {
            alg,
            max_skew_ms,
            devices: HashMap::new(),
            last_seq: HashMap::new(),
            rejected: BTreeMap::new(),
            accepted: HashMap::new(),
        }
    }

    pub fn set_device(&mut self, did: &str, info: DeviceInfo) {
        self.devices.insert(did.to_string(), info);
    }

    /// The last accepted counter of a device (restored from storage after a restart).
    pub fn set_last_seq(&mut self, did: &str, seq: u64) {
        let e = self.last_seq.entry(did.to_string()).or_insert(seq);
        *e = (*e).max(seq);
    }

    pub fn last_seq(&self, did: &str) -> Option<u64> {
        self.last_seq.get(did).copied()
    }

    /// The distinct devices that messages name in their topics but the registry does not hold
    /// (one may have been registered a moment ago: the gateway looks them up before refusing).
    pub fn unknown_devices(&self, batch: &[Incoming]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for m in batch {
            if let Some((_, device, _)) = payload::parse_topic(&m.topic)
                && !self.devices.contains_key(device)
                && !out.iter().any(|d| d == device)
            {
                out.push(device.to_string());
            }
        }
        out
    }

    /// Rejections so far, by device (`-` when the device is unknown) and reason.
    pub fn rejected(&self) -> &BTreeMap<(String, Reject), u64> {
        &self.rejected
    }

    /// Every device's accepted messages and the time of its last one.
    pub fn accepted_all(&self) -> &HashMap<String, (u64, i64)> {
        &self.accepted
    }

    /// Messages accepted from `device` since the gateway started, and when the last arrived.
    pub fn accepted(&self, device: &str) -> Option<(u64, i64)> {
        self.accepted.get(device).copied()
    }

    /// Takes back a counted replay that turned out to be a redelivery of a stored message
    /// (the broker resends what was not acknowledged before a crash or reconnect).
    pub fn forgive_replay(&mut self, device: &str) {
        if let Some(n) = self.rejected.get_mut(&(device.to_string(), Reject::Replay)) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.rejected.remove(&(device.to_string(), Reject::Replay));
            }
        }
    }

    fn reject(&mut self, device: Option<&str>, r: Reject) -> Reject {
        *self
            .rejected
            .entry((device.unwrap_or("-").to_string(), r))
            .or_insert(0) += 1;
        r
    }

    /// What `check` may change for the devices a batch names: taken before it, handed back to
    /// [`Verifier::rollback`] when the batch could not be stored, so that the broker's
    /// redelivery of it is not refused as a replay.
    pub fn snapshot(&self, batch: &[Incoming]) -> SeqSnapshot {
        let mut devices: Vec<DeviceCounters> = Vec::new();
        for m in batch {
            if let Some((_, device, _)) = payload::parse_topic(&m.topic)
                && !devices.iter().any(|(d, _, _)| d == device)
            {
                devices.push((
                    device.to_string(),
                    self.last_seq.get(device).copied(),
                    self.accepted.get(device).copied(),
                ));
            }
        }
        SeqSnapshot(devices)
    }

    /// Undoes what `check` accepted since `snapshot` (see there).
    pub fn rollback(&mut self, snapshot: SeqSnapshot) {
        for (device, seq, accepted) in snapshot.0 {
            match seq {
                Some(s) => self.last_seq.insert(device.clone(), s),
                None => self.last_seq.remove(&device),
            };
            match accepted {
                Some(a) => self.accepted.insert(device, a),
                None => self.accepted.remove(&device),
            };
        }
    }

    /// Verifies a batch; one result per message, in order. The three steps are public so that
    /// the gateway can verify signatures of one batch while it stores the one before.
    pub fn check(&mut self, batch: &[Incoming]) -> Vec<Result<Accepted, Reject>> {
        let mut staged = self.stage_batch(batch);
        verify_staged(&mut staged);
        self.admit(batch, staged)
    }

    /// Step 1: parse and look up, everything that needs no cryptography nor the counters.
    pub fn stage_batch(&mut self, batch: &[Incoming]) -> Vec<Staged> {
        batch
            .iter()
            .map(|m| {
                self.stage(m).map(|(signed, info)| StagedMessage {
                    signed,
                    info,
                    signature_ok: false,
                })
            })
            .collect()
    }

    /// Step 3, in arrival order: signature (checked by [`verify_staged`]), clock, counter.
    pub fn admit(
        &mut self,
        batch: &[Incoming],
        staged: Vec<Staged>,
    ) -> Vec<Result<Accepted, Reject>> {
        let mut out = Vec::with_capacity(batch.len());
        for (m, s) in batch.iter().zip(staged) {
            let res = match s {
                Err(r) => Err(r),
                Ok(StagedMessage {
                    signed,
                    info,
                    signature_ok,
                }) => {
                    let device = signed.message.device().to_string();
                    if !signature_ok {
                        Err(self.reject(Some(&device), Reject::BadSignature))
                    } else if (signed.message.time_ms() - m.received_ms).abs() > self.max_skew_ms {
                        Err(self.reject(Some(&device), Reject::ClockSkew))
                    } else if self
                        .last_seq
                        .get(&device)
                        .is_some_and(|last| signed.message.seq() <= *last)
                    {
                        Err(self.reject(Some(&device), Reject::Replay))
                    } else {
                        let seen = self.accepted.entry(device.clone()).or_insert((0, 0));
                        *seen = (seen.0 + 1, m.received_ms);
                        self.last_seq.insert(device, signed.message.seq());
                        Ok(Accepted {
                            message: signed.message,
                            org: info.org,
                            binding: info.binding,
                            envelope: m.payload.clone(),
                        })
                    }
                }
            };
            out.push(res);
        }
        out
    }

    fn stage(&mut self, m: &Incoming) -> Result<(Signed, DeviceInfo), Reject> {
        let Some((org, topic_device, channel)) = payload::parse_topic(&m.topic) else {
            return Err(self.reject(None, Reject::WrongTopic));
        };
        let Some(info) = self.devices.get(topic_device).cloned() else {
            return Err(self.reject(None, Reject::UnknownDevice));
        };
        if !info.active {
            return Err(self.reject(Some(topic_device), Reject::RevokedDevice));
        }
        // A device publishes only on its own organisation's topics…
        if org != info.org {
            return Err(self.reject(Some(topic_device), Reject::WrongTopic));
        }
        let kind_ok = matches!(
            (channel, info.kind),
            (Channel::Readings, DeviceKind::Sensor) | (Channel::Scans, DeviceKind::Scanner)
        );
        if !kind_ok {
            return Err(self.reject(Some(topic_device), Reject::WrongKind));
        }
        let signed = match payload::parse(&m.payload, channel, self.alg) {
            Ok(s) => s,
            Err(r) => return Err(self.reject(Some(topic_device), r)),
        };
        // …and only under its own identity.
        if signed.message.device() != topic_device {
            return Err(self.reject(Some(topic_device), Reject::WrongTopic));
        }
        Ok((signed, info))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::sign_envelope;
    use chain_core::crypto::SigningKey;
    use serde_json::json;

    const NOW: i64 = 1_790_000_000_000;

    fn sensor(label: &str) -> SigningKey {
        SigningKey::from_label(SigAlg::Ed25519, label)
    }

    fn verifier() -> Verifier {
        let mut v = Verifier::new(SigAlg::Ed25519, 5 * 60_000);
        for (label, kind, active) in [
            ("s1", DeviceKind::Sensor, true),
            ("s2", DeviceKind::Sensor, false),
            ("scanner", DeviceKind::Scanner, true),
        ] {
            let k = sensor(label).public_key();
            v.set_device(
                &k.did(),
                DeviceInfo {
                    key: k,
                    org: "swiftcold".into(),
                    kind,
                    active,
                    binding: None,
                },
            );
        }
        v
    }

    fn reading(key: &SigningKey, seq: u64, time_ms: i64) -> Incoming {
        let did = key.public_key().did();
        let time = chrono::DateTime::from_timestamp_millis(time_ms)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default();
        let payload = json!({"device": did, "seq": seq, "time": time, "type": "Temperature", "uom": "CEL", "value": 5.0});
        Incoming {
            topic: format!("trellis/swiftcold/devices/{did}/readings"),
            payload: sign_envelope(key, &payload),
            received_ms: NOW,
            redelivered: false,
        }
    }

    #[test]
    fn a_batch_that_could_not_be_stored_passes_again_after_rollback() {
        let mut v = verifier();
        let s1 = sensor("s1");
        let did = s1.public_key().did();
        assert!(v.check(&[reading(&s1, 1, NOW)])[0].is_ok());
        let batch = [reading(&s1, 2, NOW), reading(&s1, 3, NOW)];
        let snapshot = v.snapshot(&batch);
        assert!(v.check(&batch).iter().all(Result::is_ok));
        assert_eq!(
            (v.last_seq(&did), v.accepted(&did).map(|a| a.0)),
            (Some(3), Some(3))
        );
        // The store failed: the broker's redelivery is the same messages, not a replay.
        v.rollback(snapshot);
        assert_eq!(
            (v.last_seq(&did), v.accepted(&did).map(|a| a.0)),
            (Some(1), Some(1))
        );
        assert!(v.check(&batch).iter().all(Result::is_ok));
        assert!(v.rejected().is_empty());
        // Without the rollback they would have been replays.
        assert_eq!(v.check(&batch)[0].as_ref().err(), Some(&Reject::Replay));
    }

    #[test]
    fn each_rejection_reason_is_reported_and_counted_and_good_messages_pass() {
        let mut v = verifier();
        let s1 = sensor("s1");
        let mut forged = reading(&s1, 3, NOW);
        // The same payload signed by someone else.
        let other = sensor("intruder");
        let did = s1.public_key().did();
        forged.payload = sign_envelope(
            &other,
            &json!({"device": did, "seq": 3, "time": "2026-09-21T00:00:00Z", "type": "Temperature", "uom": "CEL", "value": 5.0}),
        );
        let mut wrong_org = reading(&s1, 9, NOW);
        wrong_org.topic = format!("trellis/acme/devices/{did}/readings");
        let mut wrong_kind = reading(&s1, 10, NOW);
        wrong_kind.topic = format!("trellis/swiftcold/devices/{did}/scans");
        let batch = vec![
            reading(&s1, 1, NOW),
            reading(&s1, 2, NOW + 1000),
            reading(&s1, 2, NOW + 2000),          // replay (same counter)
            reading(&s1, 1, NOW + 3000),          // replay (older counter)
            reading(&s1, 5, NOW + 10 * 60_000),   // clock too far ahead
            forged,                               // bad signature
            reading(&sensor("s2"), 1, NOW),       // revoked
            reading(&sensor("stranger"), 1, NOW), // unknown
            wrong_org,
            wrong_kind,
            Incoming {
                topic: "trellis/x".into(),
                payload: vec![],
                received_ms: NOW,
                redelivered: false,
            },
            Incoming {
                topic: format!("trellis/swiftcold/devices/{did}/readings"),
                payload: b"{".to_vec(),
                received_ms: NOW,
                redelivered: false,
            },
            reading(&s1, 6, NOW),
        ];
        let out = v.check(&batch);
        let got: Vec<Result<u64, Reject>> = out
            .iter()
            .map(|r| r.as_ref().map(|a| a.message.seq()).map_err(|e| *e))
            .collect();
        assert_eq!(
            got,
            vec![
                Ok(1),
                Ok(2),
                Err(Reject::Replay),
                Err(Reject::Replay),
                Err(Reject::ClockSkew),
                Err(Reject::BadSignature),
                Err(Reject::RevokedDevice),
                Err(Reject::UnknownDevice),
                Err(Reject::WrongTopic),
                Err(Reject::WrongKind),
                Err(Reject::WrongTopic),
                Err(Reject::Malformed),
                Ok(6),
            ]
        );
        assert_eq!(v.rejected().get(&(did.clone(), Reject::Replay)), Some(&2));
        assert_eq!(v.last_seq(&did), Some(6));
        // After a restart the counter is restored: an old message is still a replay.
        let mut fresh = verifier();
        fresh.set_last_seq(&did, 6);
        assert_eq!(
            fresh.check(&[reading(&s1, 6, NOW)])[0].as_ref().err(),
            Some(&Reject::Replay)
        );
    }

    #[test]
    fn many_signatures_verify_together() {
        let mut v = verifier();
        let s1 = sensor("s1");
        let batch: Vec<Incoming> = (1..=500).map(|i| reading(&s1, i, NOW)).collect();
        let out = v.check(&batch);
        assert!(out.iter().all(Result::is_ok));
    }
}
