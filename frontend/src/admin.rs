//! Administration: organisations, members and roles, keys (rotate, revoke), devices, and
//! governance proposals with approve/reject. Every page needs a signed-in user; every change
//! needs the `org_admin` role, checked here on the server and again by the system contract.
//! Changes are transactions signed with the user's custodial key.

use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use chain_core::crypto::PublicKey;
use chain_core::system::{
    self, KeyRecord, Member, Organisation, Proposal, ProposalAction, ProposalStatus,
    ROLE_ORG_ADMIN, Status, valid_ident, valid_role,
};
use leptos::prelude::*;
use serde::Deserialize;
use serde_json::json;

use crate::auth::{CallError, MIN_PASSWORD_LEN};
use crate::components::*;
use crate::i18n::{Lang, t, tr};
use crate::web::{DeviceSeen, Shared, Viewer};

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/admin", get(|| async { Redirect::to("/admin/members") }))
        .route("/admin/organisations", get(organisations))
        .route("/admin/members", get(members).post(add_member))
        .route("/admin/members/roles", post(set_roles))
        .route("/admin/keys", get(keys))
        .route("/admin/keys/rotate", post(rotate_key))
        .route("/admin/keys/revoke", post(revoke_key))
        .route("/admin/devices", get(devices).post(register_device))
        .route("/admin/devices/revoke", post(revoke_device))
        .route("/admin/governance", get(governance).post(propose))
        .route("/admin/governance/vote", post(vote))
}

/// A flash message carried in the redirect after a successful action (`?done=key`).
#[derive(Deserialize, Default)]
struct Flash {
    #[serde(default)]
    done: Option<String>,
}

/// Only catalogue keys of this module may be echoed back as a flash message.
fn flash_message(f: &Flash) -> Option<&'static str> {
    const KNOWN: [&str; 6] = [
        "admin.member_added",
        "admin.roles_changed",
        "admin.key_rotated",
        "admin.key_revoked",
        "admin.vote_cast",
        "admin.proposed",
    ];
    let d = f.done.as_deref()?;
    KNOWN.iter().find(|k| **k == d).copied()
}

fn internal(v: &Viewer, e: impl std::fmt::Display) -> Response {
    tracing::error!("admin: {e}");
    v.error(StatusCode::INTERNAL_SERVER_ERROR, "state.error", None)
}

/// A refused chain call shown as a page with the contract's stable code.
fn chain_error(v: &Viewer, e: CallError) -> Response {
    let (status, detail) = match &e {
        CallError::Chain { code, message } => (StatusCode::CONFLICT, format!("{code}: {message}")),
        CallError::Key(m) => (StatusCode::INTERNAL_SERVER_ERROR, m.clone()),
    };
    tracing::info!("admin action refused: {e}");
    v.error(status, "admin.chain_error", Some(detail))
}

fn subnav(current: &'static str) -> AnyView {
    let items = [
        ("/admin/members", "admin.members"),
        ("/admin/keys", "admin.keys"),
        ("/admin/organisations", "admin.organisations"),
        ("/admin/devices", "admin.devices"),
        ("/admin/governance", "admin.governance"),
    ]
    .into_iter()
    .map(|(href, label)| {
        let here = href == current;
        view! { <a href=href aria-current=here.then_some("page")>{t(label)}</a> }
    })
    .collect_view();
    view! { <nav class="actions subnav" aria-label=t("admin.title")>{items}</nav> }.into_any()
}

fn status_badge(s: &Status) -> AnyView {
    match s {
        Status::Active => view! { <Badge tone=Tone::Ok label=t("status.active")/> }.into_any(),
        Status::Rotated => view! { <Badge tone=Tone::Warn label=t("status.rotated")/> }.into_any(),
        Status::Revoked => view! { <Badge tone=Tone::Bad label=t("status.revoked")/> }.into_any(),
    }
}

fn text(s: impl Into<String>) -> AnyView {
    let s: String = s.into();
    view! { <span>{s}</span> }.into_any()
}

async fn list_json<T: serde::de::DeserializeOwned>(
    v: &Viewer,
    prefix: &str,
) -> Result<Vec<T>, Response> {
    let rows = v
        .node()
        .state_list(system::NAME, prefix.as_bytes(), None, 1000)
        .await
        .map_err(|e| internal(v, e))?;
    Ok(rows
        .into_iter()
        .filter_map(|(_, val)| serde_json::from_slice(&val).ok())
        .collect())
}

/// An administrator's form post: its token matches, the user holds `org_admin`, and their key
/// is in the keystore. Returns the user and the key's label.
fn admin_action(v: &Viewer, csrf: &str) -> Result<(UserView, String), Response> {
    v.check_csrf(csrf)?;
    let user = v.require_role(ROLE_ORG_ADMIN)?.clone();
    let label = v
        .key_label
        .clone()
        .ok_or_else(|| v.error(StatusCode::FORBIDDEN, "auth.forbidden", None))?;
    Ok((user, label))
}

// ------------------------------------------------------------------ organisations

async fn organisations(v: Viewer) -> Response {
    if let Err(r) = v.require_user() {
        return r;
    }
    let orgs: Vec<Organisation> = match list_json(&v, "org/").await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let rows: Vec<Vec<AnyView>> = orgs
        .iter()
        .map(|o| {
            vec![
                view! { <code>{o.id.clone()}</code> }.into_any(),
                text(o.name.clone()),
                status_badge(&o.status),
                text(o.admitted_height.to_string()),
            ]
        })
        .collect();
    v.page(v.tr("admin.organisations"), move || {
        view! {
            <h1>{t("admin.organisations")}</h1>
            {subnav("/admin/organisations")}
            <Table
                cols=vec![Col::new("admin.org_id"), Col::new("admin.name"), Col::new("admin.status"), Col::new("admin.admitted").numeric()]
                rows=rows
            />
            <p><a href="/admin/governance">{t("admin.propose_admission")} " →"</a></p>
        }
        .into_any()
    })
}

// ------------------------------------------------------------------ members

#[derive(Deserialize, Default, Clone)]
struct AddMemberForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    roles: String,
    #[serde(default)]
    password: String,
}

#[derive(Default, Clone, Copy)]
struct AddMemberErrors {
    name: Option<&'static str>,
    roles: Option<&'static str>,
    password: Option<&'static str>,
}

impl AddMemberErrors {
    fn any(&self) -> bool {
        self.name.is_some() || self.roles.is_some() || self.password.is_some()
    }
}

fn parse_roles(s: &str) -> Result<Vec<String>, &'static str> {
    let roles: Vec<String> = s
        .split(',')
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .collect();
    if roles.len() > 16 || roles.iter().any(|r| !valid_role(r) || r.len() > 32) {
        return Err("form.invalid_roles");
    }
    Ok(roles)
}

async fn members_page(
    v: &Viewer,
    status: StatusCode,
    form: AddMemberForm,
    errors: AddMemberErrors,
    flash: Option<&'static str>,
) -> Response {
    let user = match v.require_user() {
        Ok(u) => u.clone(),
        Err(r) => return r,
    };
    let members: Vec<Member> = match list_json(v, &format!("member/{}/", user.org)).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let is_admin = user.has_role(ROLE_ORG_ADMIN);
    let csrf = v.csrf.clone();
    let mut rows: Vec<Vec<AnyView>> = Vec::with_capacity(members.len());
    for m in &members {
        let logins = v
            .state
            .users
            .by_member(&m.id())
            .await
            .map(|u| {
                u.into_iter()
                    .map(|u| u.username)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        let roles = m.roles.join(", ");
        let edit = is_admin.then(|| {
            let id = m.id();
            let field_id = format!("roles-{}", m.name);
            view! {
                <form method="post" action="/admin/members/roles" class="actions">
                    <input type="hidden" name="csrf" value=csrf.clone()/>
                    <input type="hidden" name="member" value=id/>
                    <label class="sr-only" for=field_id.clone()>{t("admin.roles")}</label>
                    <input id=field_id name="roles" value=roles.clone() size="24"/>
                    <button type="submit" class="btn secondary">{t("admin.set_roles")}</button>
                </form>
            }
        });
        rows.push(vec![
            view! { <code>{m.name.clone()}</code> }.into_any(),
            match edit {
                Some(e) => e.into_any(),
                None => text(roles),
            },
            status_badge(&m.status),
            text(m.keys.len().to_string()),
            text(if logins.is_empty() {
                v.tr("common.none").to_string()
            } else {
                logins
            }),
        ]);
    }
    let org_name = user.org_name.clone();
    v.page_with_status(status, v.tr("admin.members"), move || {
        let add = if is_admin {
            view! {
                <h2>{t("admin.add_member")}</h2>
                <PostForm action="/admin/members">
                    <Field name="name" label="admin.member_name" value=form.name.clone() error=errors.name required=true/>
                    <Field name="roles" label="admin.roles" value=form.roles.clone() error=errors.roles hint=Some("admin.roles_hint")/>
                    <Field
                        name="password"
                        label="admin.new_password"
                        kind="password"
                        error=errors.password
                        hint=Some("admin.password_hint")
                        required=true
                        autocomplete="new-password"
                    />
                    <button type="submit">{t("admin.add_member")}</button>
                </PostForm>
            }
            .into_any()
        } else {
            view! { <Notice tone=Tone::Info message=t("admin.only_admins")/> }.into_any()
        };
        view! {
            <h1>{t("admin.members")} " · " {org_name}</h1>
            {subnav("/admin/members")}
            {flash.map(|f| view! { <Notice tone=Tone::Ok message=t(f)/> })}
            <Table
                cols=vec![Col::new("admin.member_name"), Col::new("admin.roles"), Col::new("admin.status"), Col::new("admin.keys").numeric(), Col::new("admin.web_user")]
                rows=rows
            />
            {add}
        }
        .into_any()
    })
}

async fn members(v: Viewer, Query(f): Query<Flash>) -> Response {
    members_page(
        &v,
        StatusCode::OK,
        AddMemberForm::default(),
        AddMemberErrors::default(),
        flash_message(&f),
    )
    .await
}

async fn add_member(v: Viewer, Form(f): Form<AddMemberForm>) -> Response {
    let (user, admin_label) = match admin_action(&v, &f.csrf) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let name = f.name.trim().to_string();
    let mut errors = AddMemberErrors::default();
    if !valid_ident(&name, 64) {
        errors.name = Some("form.invalid_name");
    }
    let roles = match parse_roles(&f.roles) {
        Ok(r) => r,
        Err(e) => {
            errors.roles = Some(e);
            vec![]
        }
    };
    if f.password.chars().count() < MIN_PASSWORD_LEN {
        errors.password = Some("form.password_short");
    } else if f.password.len() > 1024 {
        errors.password = Some("form.too_long");
    }
    let username = format!("{}-{name}", user.org);
    if !errors.any() {
        match v.state.users.by_username(&username).await {
            Ok(Some(_)) => errors.name = Some("form.username_taken"),
            Ok(None) => {}
            Err(e) => return internal(&v, e),
        }
    }
    if errors.any() {
        return members_page(&v, StatusCode::UNPROCESSABLE_ENTITY, f, errors, None).await;
    }
    // The member's key is generated into the organisation's keystore (custody); the chain
    // learns only its public half.
    let label = username.clone();
    if v.state.custody.keystore().exists(&label) {
        errors.name = Some("form.username_taken");
        return members_page(&v, StatusCode::UNPROCESSABLE_ENTITY, f, errors, None).await;
    }
    let pk = match v
        .state
        .custody
        .create_key(&label, v.node().info.suite.sig())
        .await
    {
        Ok(pk) => pk,
        Err(e) => return chain_error(&v, e),
    };
    let args = json!({"name": name, "public_key": pk, "roles": roles});
    if let Err(e) = v
        .state
        .custody
        .call(
            v.node(),
            &admin_label,
            system::NAME,
            "register_member",
            &args,
        )
        .await
    {
        return chain_error(&v, e);
    }
    match v
        .state
        .users
        .create(
            &username,
            &format!("{}/{name}", user.org),
            &label,
            f.password,
        )
        .await
    {
        Ok(_) => Redirect::to("/admin/members?done=admin.member_added").into_response(),
        Err(e) => internal(&v, e),
    }
}

#[derive(Deserialize, Default)]
struct SetRolesForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    member: String,
    #[serde(default)]
    roles: String,
}

async fn set_roles(v: Viewer, Form(f): Form<SetRolesForm>) -> Response {
    let (user, label) = match admin_action(&v, &f.csrf) {
        Ok(x) => x,
        Err(r) => return r,
    };
    // Admins change their own organisation's members only (the contract agrees).
    if f.member.split('/').next() != Some(user.org.as_str()) {
        return v.error(StatusCode::FORBIDDEN, "auth.forbidden", None);
    }
    let roles = match parse_roles(&f.roles) {
        Ok(r) => r,
        Err(e) => return v.error(StatusCode::UNPROCESSABLE_ENTITY, e, None),
    };
    let args = json!({"member": f.member, "roles": roles});
    match v
        .state
        .custody
        .call(v.node(), &label, system::NAME, "set_roles", &args)
        .await
    {
        Ok(_) => Redirect::to("/admin/members?done=admin.roles_changed").into_response(),
        Err(e) => chain_error(&v, e),
    }
}

// ------------------------------------------------------------------ keys

async fn keys(v: Viewer, Query(f): Query<Flash>) -> Response {
    let user = match v.require_user() {
        Ok(u) => u.clone(),
        Err(r) => return r,
    };
    let members: Vec<Member> = match list_json(&v, &format!("member/{}/", user.org)).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let is_admin = user.has_role(ROLE_ORG_ADMIN);
    let csrf = v.csrf.clone();
    let custodial: std::collections::HashSet<String> = v
        .state
        .custody
        .keystore()
        .list()
        .map(|l| l.into_iter().map(|(_, pk)| pk.to_text()).collect())
        .unwrap_or_default();
    let mut rows: Vec<Vec<AnyView>> = Vec::new();
    for m in &members {
        for k in &m.keys {
            let rec: Option<KeyRecord> = v
                .node()
                .state_json(system::NAME, &format!("key/{k}"))
                .await
                .ok()
                .flatten();
            let Some(rec) = rec else { continue };
            let key_text = k.to_text();
            let held = custodial.contains(&key_text);
            let actions = (is_admin && rec.status == Status::Active).then(|| {
                view! {
                    <div class="actions">
                        {held.then(|| view! {
                            <form method="post" action="/admin/keys/rotate">
                                <input type="hidden" name="csrf" value=csrf.clone()/>
                                <input type="hidden" name="public_key" value=key_text.clone()/>
                                <button type="submit" class="btn secondary">{t("admin.rotate")}</button>
                            </form>
                        })}
                        <form method="post" action="/admin/keys/revoke">
                            <input type="hidden" name="csrf" value=csrf.clone()/>
                            <input type="hidden" name="public_key" value=key_text.clone()/>
                            <input name="reason" aria-label=t("admin.reason") placeholder=t("admin.reason") size="12"/>
                            <button type="submit" class="btn danger">{t("admin.revoke")}</button>
                        </form>
                    </div>
                }
            });
            rows.push(vec![
                view! { <code>{m.name.clone()}</code> }.into_any(),
                view! { <HashText value=key_text.clone() href=format!("/explorer/accounts/{key_text}")/> }.into_any(),
                status_badge(&rec.status),
                text(rec.since_height.to_string()),
                text(if held { v.tr("admin.custodial") } else { "" }),
                actions.map(|a| a.into_any()).unwrap_or_else(|| text("")),
            ]);
        }
    }
    let flash = flash_message(&f);
    v.page(v.tr("admin.keys"), move || {
        view! {
            <h1>{t("admin.keys")}</h1>
            {subnav("/admin/keys")}
            {flash.map(|f| view! { <Notice tone=Tone::Ok message=t(f)/> })}
            <Table
                cols=vec![Col::new("admin.member_name"), Col::new("admin.public_key"), Col::new("admin.status"), Col::new("admin.since").numeric(), Col::new("admin.custodial"), Col::new("admin.action")]
                rows=rows
            />
        }
        .into_any()
    })
}

#[derive(Deserialize, Default)]
struct KeyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    public_key: String,
    #[serde(default)]
    reason: String,
}

/// The key record of `public_key` if it belongs to a member of the user's organisation.
async fn own_org_key(
    v: &Viewer,
    org: &str,
    public_key: &str,
) -> Result<(PublicKey, KeyRecord), Response> {
    let pk: PublicKey = public_key
        .parse()
        .map_err(|_| v.error(StatusCode::UNPROCESSABLE_ENTITY, "form.invalid_key", None))?;
    let rec: Option<KeyRecord> = v
        .node()
        .state_json(system::NAME, &format!("key/{pk}"))
        .await
        .map_err(|e| internal(v, e))?;
    match rec {
        Some(r) if r.member.split('/').next() == Some(org) => Ok((pk, r)),
        Some(_) => Err(v.error(StatusCode::FORBIDDEN, "auth.forbidden", None)),
        None => Err(v.error(StatusCode::NOT_FOUND, "state.not_found", None)),
    }
}

async fn rotate_key(v: Viewer, Form(f): Form<KeyForm>) -> Response {
    let (user, admin_label) = match admin_action(&v, &f.csrf) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let (old, rec) = match own_org_key(&v, &user.org, &f.public_key).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    // A fresh label per rotation; the old key file stays (it still verifies history).
    let base = rec.member.replace('/', "-");
    let height = v.node().tip().height;
    let label = format!("{base}-r{height}");
    let new = match v
        .state
        .custody
        .create_key(&label, v.node().info.suite.sig())
        .await
    {
        Ok(pk) => pk,
        Err(e) => return chain_error(&v, e),
    };
    let args = json!({"old_public_key": old, "new_public_key": new});
    // The admin signs (the contract lets an organisation admin rotate its members' keys) —
    // unless the admin rotates their own key, which they sign with that key as well.
    if let Err(e) = v
        .state
        .custody
        .call(v.node(), &admin_label, system::NAME, "rotate_key", &args)
        .await
    {
        return chain_error(&v, e);
    }
    if let Err(e) = v.state.users.set_key_label(&rec.member, &label).await {
        return internal(&v, e);
    }
    Redirect::to("/admin/keys?done=admin.key_rotated").into_response()
}

async fn revoke_key(v: Viewer, Form(f): Form<KeyForm>) -> Response {
    let (user, label) = match admin_action(&v, &f.csrf) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let (pk, _) = match own_org_key(&v, &user.org, &f.public_key).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if f.reason.len() > 500 {
        return v.error(StatusCode::UNPROCESSABLE_ENTITY, "form.too_long", None);
    }
    let args = json!({"public_key": pk, "reason": f.reason.trim()});
    match v
        .state
        .custody
        .call(v.node(), &label, system::NAME, "revoke_key", &args)
        .await
    {
        Ok(_) => Redirect::to("/admin/keys?done=admin.key_revoked").into_response(),
        Err(e) => chain_error(&v, e),
    }
}

// ------------------------------------------------------------------ devices

/// The contract that keeps the device registry (the IoT gateway's; named, not linked: the shell
/// knows no app).
const IOT_CONTRACT: &str = "iot";

#[derive(Deserialize, Default, Clone)]
#[serde(default)]
struct DeviceForm {
    csrf: String,
    public_key: String,
    name: String,
    kind: String,
    binding_type: String,
    binding_value: String,
}

#[derive(Default, Clone, Copy)]
struct DeviceErrors {
    public_key: Option<&'static str>,
    name: Option<&'static str>,
    binding: Option<&'static str>,
}

fn binding_text(b: &serde_json::Value) -> String {
    match b.get("type").and_then(|t| t.as_str()) {
        Some("lot") => format!(
            "lot {} / {}",
            b["gtin"].as_str().unwrap_or(""),
            b["lot"].as_str().unwrap_or("")
        ),
        Some("shipment") => format!("shipment {}", b["id"].as_str().unwrap_or("")),
        Some("location") => format!("location {}", b["gln"].as_str().unwrap_or("")),
        _ => String::new(),
    }
}

/// Accepted messages and when the last one arrived; blank when no gateway runs here.
fn accepted_cell(a: Option<&DeviceSeen>) -> AnyView {
    match a {
        None => text(String::new()),
        Some(a) => {
            let last = a
                .last_accepted_ms
                .map(|ms| format_time(ms.max(0) as u64))
                .unwrap_or_default();
            view! {
                <span data-accepted=a.accepted.to_string()>
                    {a.accepted.to_string()}
                    <br/><small class="muted">{last}</small>
                </span>
            }
            .into_any()
        }
    }
}

/// Refused messages by reason, e.g. "replay 3 · bad signature 1".
fn refused_cell(lang: Lang, a: Option<&DeviceSeen>) -> AnyView {
    match a {
        Some(a) if !a.rejected.is_empty() => {
            let n: u64 = a.rejected.iter().map(|(_, n)| n).sum();
            let codes = a
                .rejected
                .iter()
                .map(|(c, _)| c.as_str())
                .collect::<Vec<_>>()
                .join(" ");
            view! {
                <span data-refused=n.to_string() data-reasons=codes>
                    <Badge tone=Tone::Bad label=n.to_string()/>" "
                    <small>{reasons_text(lang, &a.rejected)}</small>
                </span>
            }
            .into_any()
        }
        _ => text(String::new()),
    }
}

fn reasons_text(lang: Lang, rejected: &[(String, u64)]) -> String {
    rejected
        .iter()
        .map(|(code, n)| format!("{} {n}", reject_label(lang, code)))
        .collect::<Vec<_>>()
        .join(" · ")
}

/// The gateway's reason codes in words; an unknown code shows as itself.
fn reject_label(lang: Lang, code: &str) -> String {
    let key = match code {
        "oversized" => "iot.reject.oversized",
        "malformed" => "iot.reject.malformed",
        "unknown_device" => "iot.reject.unknown_device",
        "revoked_device" => "iot.reject.revoked_device",
        "wrong_topic" => "iot.reject.wrong_topic",
        "wrong_kind" => "iot.reject.wrong_kind",
        "bad_signature" => "iot.reject.bad_signature",
        "replay" => "iot.reject.replay",
        "clock_skew" => "iot.reject.clock_skew",
        other => return other.to_string(),
    };
    tr(lang, key).to_string()
}

async fn devices(v: Viewer, Query(f): Query<Flash>) -> Response {
    devices_page(
        &v,
        StatusCode::OK,
        DeviceForm::default(),
        DeviceErrors::default(),
        None,
        device_flash(&f),
    )
    .await
}

fn device_flash(f: &Flash) -> Option<&'static str> {
    match f.done.as_deref() {
        Some("admin.device_registered") => Some("admin.device_registered"),
        Some("admin.device_revoked") => Some("admin.device_revoked"),
        _ => None,
    }
}

async fn devices_page(
    v: &Viewer,
    status: StatusCode,
    form: DeviceForm,
    errors: DeviceErrors,
    refusal: Option<String>,
    done: Option<&'static str>,
) -> Response {
    let user = match v.require_user() {
        Ok(u) => u.clone(),
        Err(r) => return r,
    };
    let devices: Vec<serde_json::Value> = match v
        .node()
        .state_list(IOT_CONTRACT, b"device/", None, 1000)
        .await
    {
        Ok(rows) => rows
            .into_iter()
            .filter_map(|(_, val)| serde_json::from_slice(&val).ok())
            .collect(),
        // A chain without the IoT contract simply has no devices.
        Err(_) => Vec::new(),
    };
    let is_admin = user.has_role(ROLE_ORG_ADMIN);
    let csrf = v.csrf.clone();
    let seen = v.state.devices_seen.get().map(|g| g.devices_seen());
    let lang = v.lang;
    let rows: Vec<Vec<AnyView>> = devices
        .iter()
        .map(|d| {
            let s = |k: &str| d.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
            let active = s("status") == "active";
            let activity = seen.as_ref().map(|m| m.get(&s("did")).cloned().unwrap_or_default());
            let revoke = (is_admin && active && s("org") == user.org).then(|| {
                view! {
                    <form method="post" action="/admin/devices/revoke" class="inline">
                        <input type="hidden" name="csrf" value=csrf.clone()/>
                        <input type="hidden" name="did" value=s("did")/>
                        <button type="submit" class="btn secondary" data-revoke=s("did")>{t("admin.revoke")}</button>
                    </form>
                }
            });
            vec![
                view! { <HashText value=s("did")/> }.into_any(),
                text(s("name")),
                text(s("org")),
                text(s("kind")),
                text(binding_text(&d["binding"])),
                if active {
                    view! { <Badge tone=Tone::Ok label=t("status.active")/> }.into_any()
                } else {
                    view! { <Badge tone=Tone::Bad label=t("status.revoked")/> }.into_any()
                },
                accepted_cell(activity.as_ref()),
                refused_cell(lang, activity.as_ref()),
                view! { <span>{revoke}</span> }.into_any(),
            ]
        })
        .collect();
    // Messages naming no registered device cannot be shown on a row: they get a line.
    let gateway_note = match &seen {
        None => {
            view! { <p class="muted" data-gateway="elsewhere">{t("admin.gateway_elsewhere")}</p> }
                .into_any()
        }
        Some(m) => match m.get("-").filter(|a| !a.rejected.is_empty()) {
            Some(a) => {
                let n: u64 = a.rejected.iter().map(|(_, n)| n).sum();
                view! {
                    <p data-gateway="unregistered">
                        {t("admin.unregistered_refused")}": "<strong>{n.to_string()}</strong>" "
                        <span class="muted">{reasons_text(lang, &a.rejected)}</span>
                    </p>
                }
                .into_any()
            }
            None => ().into_any(),
        },
    };
    v.page_with_status(status, v.tr("admin.devices"), move || {
        let add = is_admin.then(|| {
            let kinds = [("sensor", "admin.device_sensor"), ("scanner", "admin.device_scanner")]
                .into_iter()
                .map(|(k, l)| view! { <option value=k selected=form.kind == k>{t(l)}</option> })
                .collect_view();
            let bindings = [
                ("", "admin.binding_none"),
                ("lot", "admin.binding_lot"),
                ("shipment", "admin.binding_shipment"),
                ("location", "admin.binding_location"),
            ]
            .into_iter()
            .map(|(k, l)| view! { <option value=k selected=form.binding_type == k>{t(l)}</option> })
            .collect_view();
            view! {
                <h2>{t("admin.register_device")}</h2>
                {refusal.clone().map(|r| view! { <Notice tone=Tone::Bad message=r/> })}
                <PostForm action="/admin/devices">
                    <Field name="public_key" label="admin.device_key" value=form.public_key.clone() error=errors.public_key hint=Some("admin.device_key_hint") required=true/>
                    <Field name="name" label="admin.name" value=form.name.clone() error=errors.name required=true/>
                    <div class="field">
                        <label for="f-kind">{t("admin.device_kind")}</label>
                        <select id="f-kind" name="kind">{kinds}</select>
                    </div>
                    <div class="field">
                        <label for="f-binding_type">{t("admin.device_binding")}</label>
                        <select id="f-binding_type" name="binding_type">{bindings}</select>
                    </div>
                    <Field name="binding_value" label="admin.binding_value" value=form.binding_value.clone() error=errors.binding hint=Some("admin.binding_hint")/>
                    <button type="submit">{t("admin.register_device")}</button>
                </PostForm>
            }
        });
        view! {
            <h1>{t("admin.devices")}</h1>
            {subnav("/admin/devices")}
            {done.map(|f| view! { <Notice tone=Tone::Ok message=t(f)/> })}
            <p class="muted">{t("admin.devices_later")}</p>
            {gateway_note}
            <Table
                cols=vec![Col::new("admin.device_id"), Col::new("admin.name"), Col::new("explorer.organisation"), Col::new("admin.device_kind"), Col::new("admin.device_binding"), Col::new("admin.status"), Col::new("admin.device_accepted").numeric(), Col::new("admin.device_refused"), Col::new("admin.action")]
                rows=rows
            />
            {add}
        }
        .into_any()
    })
    .into_response()
}

async fn register_device(v: Viewer, Form(f): Form<DeviceForm>) -> Response {
    let (_user, label) = match admin_action(&v, &f.csrf) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut errors = DeviceErrors::default();
    let key = f.public_key.trim();
    if key.parse::<PublicKey>().is_err() {
        errors.public_key = Some("form.invalid_key");
    }
    if f.name.trim().is_empty() || f.name.len() > 100 {
        errors.name = Some("form.invalid_name");
    }
    let value = f.binding_value.trim();
    let binding = match f.binding_type.as_str() {
        "" => Some(serde_json::Value::Null),
        "lot" => value
            .split_once('/')
            .filter(|(g, l)| {
                g.len() == 14 && g.bytes().all(|b| b.is_ascii_digit()) && !l.is_empty()
            })
            .map(|(g, l)| json!({"type": "lot", "gtin": g, "lot": l})),
        "shipment" => (!value.is_empty()).then(|| json!({"type": "shipment", "id": value})),
        "location" => (value.len() == 13 && value.bytes().all(|b| b.is_ascii_digit()))
            .then(|| json!({"type": "location", "gln": value})),
        _ => None,
    };
    if binding.is_none() {
        errors.binding = Some("admin.binding_invalid");
    }
    let kind = if f.kind == "scanner" {
        "scanner"
    } else {
        "sensor"
    };
    if errors.public_key.is_some() || errors.name.is_some() || errors.binding.is_some() {
        return devices_page(&v, StatusCode::UNPROCESSABLE_ENTITY, f, errors, None, None).await;
    }
    let mut args = json!({"public_key": key, "name": f.name.trim(), "kind": kind});
    if let Some(b) = binding.filter(|b| !b.is_null()) {
        args["binding"] = b;
    }
    match v
        .state
        .custody
        .call(v.node(), &label, IOT_CONTRACT, "register_device", &args)
        .await
    {
        Ok(_) => Redirect::to("/admin/devices?done=admin.device_registered").into_response(),
        Err(e) => {
            let detail = match &e {
                CallError::Chain { code, message } => format!("{code}: {message}"),
                CallError::Key(m) => m.clone(),
            };
            devices_page(
                &v,
                StatusCode::UNPROCESSABLE_ENTITY,
                f,
                errors,
                Some(detail),
                None,
            )
            .await
        }
    }
}

#[derive(Deserialize)]
struct RevokeDeviceForm {
    csrf: String,
    did: String,
}

async fn revoke_device(v: Viewer, Form(f): Form<RevokeDeviceForm>) -> Response {
    let (_user, label) = match admin_action(&v, &f.csrf) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let args = json!({"did": f.did, "reason": "revoked by the organisation's administrator"});
    match v
        .state
        .custody
        .call(v.node(), &label, IOT_CONTRACT, "revoke_device", &args)
        .await
    {
        Ok(_) => Redirect::to("/admin/devices?done=admin.device_revoked").into_response(),
        Err(e) => chain_error(&v, e),
    }
}

// ------------------------------------------------------------------ governance

fn proposal_status(s: &ProposalStatus) -> AnyView {
    match s {
        ProposalStatus::Open => {
            view! { <Badge tone=Tone::Info label=t("status.open")/> }.into_any()
        }
        ProposalStatus::Approved => {
            view! { <Badge tone=Tone::Ok label=t("status.approved")/> }.into_any()
        }
        ProposalStatus::Rejected => {
            view! { <Badge tone=Tone::Bad label=t("status.rejected")/> }.into_any()
        }
        ProposalStatus::Expired => {
            view! { <Badge tone=Tone::Muted label=t("status.expired")/> }.into_any()
        }
    }
}

fn describe_action(a: &ProposalAction) -> String {
    match a {
        ProposalAction::AdmitOrganisation { id, name, .. } => {
            format!("admit_organisation {id} ({name})")
        }
        ProposalAction::SetValidators { validators } => {
            format!("set_validators ({})", validators.len())
        }
        ProposalAction::SetContractVersion { contract, version } => {
            format!("set_contract_version {contract} v{version}")
        }
    }
}

#[derive(Deserialize, Default, Clone)]
struct ProposeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    org_id: String,
    #[serde(default)]
    org_name: String,
    #[serde(default)]
    admin_name: String,
    #[serde(default)]
    admin_key: String,
    #[serde(default)]
    description: String,
}

#[derive(Default, Clone, Copy)]
struct ProposeErrors {
    org_id: Option<&'static str>,
    org_name: Option<&'static str>,
    admin_name: Option<&'static str>,
    admin_key: Option<&'static str>,
    description: Option<&'static str>,
}

async fn governance_page(
    v: &Viewer,
    status: StatusCode,
    form: ProposeForm,
    errors: ProposeErrors,
    flash: Option<&'static str>,
) -> Response {
    let user = match v.require_user() {
        Ok(u) => u.clone(),
        Err(r) => return r,
    };
    let mut proposals: Vec<Proposal> = match list_json(v, "proposal/").await {
        Ok(p) => p,
        Err(r) => return r,
    };
    proposals.sort_by_key(|p| std::cmp::Reverse(p.id));
    let is_admin = user.has_role(ROLE_ORG_ADMIN);
    let csrf = v.csrf.clone();
    let rows: Vec<Vec<AnyView>> = proposals
        .iter()
        .map(|p| {
            let voted = p.approvals.contains(&user.org) || p.rejections.contains(&user.org);
            let can_vote = is_admin && p.status == ProposalStatus::Open && !voted;
            let id = p.id.to_string();
            let vote = can_vote.then(|| {
                view! {
                    <div class="actions">
                        <form method="post" action="/admin/governance/vote">
                            <input type="hidden" name="csrf" value=csrf.clone()/>
                            <input type="hidden" name="proposal_id" value=id.clone()/>
                            <input type="hidden" name="approve" value="true"/>
                            <button type="submit" class="btn">{t("admin.approve")}</button>
                        </form>
                        <form method="post" action="/admin/governance/vote">
                            <input type="hidden" name="csrf" value=csrf.clone()/>
                            <input type="hidden" name="proposal_id" value=id.clone()/>
                            <input type="hidden" name="approve" value="false"/>
                            <button type="submit" class="btn danger">{t("admin.reject")}</button>
                        </form>
                    </div>
                }
            });
            vec![
                text(format!("#{}", p.id)),
                view! { <code>{describe_action(&p.action)}</code> }.into_any(),
                text(p.description.clone()),
                text(p.proposer.clone()),
                proposal_status(&p.status),
                text(p.approvals.join(", ")),
                text(p.rejections.join(", ")),
                text(format_time(p.deadline_ms)),
                vote.map(|x| x.into_any()).unwrap_or_else(|| text("")),
            ]
        })
        .collect();
    v.page_with_status(status, v.tr("admin.governance"), move || {
        let form_view = is_admin.then(|| {
            view! {
                <h2>{t("admin.propose_admission")}</h2>
                <PostForm action="/admin/governance">
                    <Field name="org_id" label="admin.org_id" value=form.org_id.clone() error=errors.org_id required=true/>
                    <Field name="org_name" label="admin.name" value=form.org_name.clone() error=errors.org_name required=true/>
                    <Field name="admin_name" label="admin.admin_name" value=form.admin_name.clone() error=errors.admin_name required=true/>
                    <Field name="admin_key" label="admin.admin_key" value=form.admin_key.clone() error=errors.admin_key required=true/>
                    <Field name="description" label="admin.description" value=form.description.clone() error=errors.description/>
                    <button type="submit">{t("common.submit")}</button>
                </PostForm>
            }
        });
        view! {
            <h1>{t("admin.governance")}</h1>
            {subnav("/admin/governance")}
            {flash.map(|f| view! { <Notice tone=Tone::Ok message=t(f)/> })}
            <Table
                cols=vec![
                    Col::new("admin.proposal"), Col::new("admin.action"), Col::new("admin.description"),
                    Col::new("admin.proposer"), Col::new("admin.status"), Col::new("admin.approvals"),
                    Col::new("admin.rejections"), Col::new("admin.deadline"), Col::new("admin.approve"),
                ]
                rows=rows
            />
            {form_view}
        }
        .into_any()
    })
}

async fn governance(v: Viewer, Query(f): Query<Flash>) -> Response {
    governance_page(
        &v,
        StatusCode::OK,
        ProposeForm::default(),
        ProposeErrors::default(),
        flash_message(&f),
    )
    .await
}

async fn propose(v: Viewer, Form(f): Form<ProposeForm>) -> Response {
    let (_user, label) = match admin_action(&v, &f.csrf) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut e = ProposeErrors::default();
    let org_id = f.org_id.trim().to_string();
    let org_name = f.org_name.trim().to_string();
    let admin_name = f.admin_name.trim().to_string();
    if !valid_ident(&org_id, 32) {
        e.org_id = Some("form.invalid_name");
    }
    if org_name.is_empty() {
        e.org_name = Some("auth.required");
    } else if org_name.len() > 200 {
        e.org_name = Some("form.too_long");
    }
    if !valid_ident(&admin_name, 64) {
        e.admin_name = Some("form.invalid_name");
    }
    let admin_key = match f.admin_key.trim().parse::<PublicKey>() {
        Ok(pk) if pk.alg() == v.node().info.suite.sig() => Some(pk),
        _ => {
            e.admin_key = Some("form.invalid_key");
            None
        }
    };
    if f.description.len() > 4000 {
        e.description = Some("form.too_long");
    }
    let (Some(admin_key), None, None, None, None, None) = (
        admin_key,
        e.org_id,
        e.org_name,
        e.admin_name,
        e.admin_key,
        e.description,
    ) else {
        return governance_page(&v, StatusCode::UNPROCESSABLE_ENTITY, f, e, None).await;
    };
    let args = json!({
        "action": {"type": "admit_organisation", "id": org_id, "name": org_name,
                   "admin": {"name": admin_name, "public_key": admin_key}},
        "description": f.description.trim(),
    });
    match v
        .state
        .custody
        .call(v.node(), &label, system::NAME, "propose", &args)
        .await
    {
        Ok(_) => Redirect::to("/admin/governance?done=admin.proposed").into_response(),
        Err(err) => chain_error(&v, err),
    }
}

#[derive(Deserialize, Default)]
struct VoteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    proposal_id: String,
    #[serde(default)]
    approve: String,
}

async fn vote(v: Viewer, Form(f): Form<VoteForm>) -> Response {
    let (_user, label) = match admin_action(&v, &f.csrf) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Ok(id) = f.proposal_id.parse::<u64>() else {
        return v.error(StatusCode::UNPROCESSABLE_ENTITY, "state.not_found", None);
    };
    let approve = match f.approve.as_str() {
        "true" => true,
        "false" => false,
        _ => return v.error(StatusCode::UNPROCESSABLE_ENTITY, "state.error", None),
    };
    let args = json!({"proposal_id": id, "approve": approve});
    match v
        .state
        .custody
        .call(v.node(), &label, system::NAME, "vote", &args)
        .await
    {
        Ok(_) => Redirect::to("/admin/governance?done=admin.vote_cast").into_response(),
        Err(e) => chain_error(&v, e),
    }
}
