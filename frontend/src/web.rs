//! The web shell's server side: state, the per-request viewer (language, session, CSRF token),
//! security headers, sign-in/out, the language switch, error pages and the router.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use chain_core::node::Node;
use chain_core::system::{self, Organisation};
use leptos::prelude::*;
use serde::Deserialize;

use crate::auth::{Custody, SignInLimiter, Users, tokens_match};
use crate::components::*;
use crate::i18n::{Lang, t, tr};

pub const SESSION_COOKIE: &str = "trellis_session";
pub const CSRF_COOKIE: &str = "trellis_csrf";
pub const LANG_COOKIE: &str = "trellis_lang";

/// Everything the pages share.
pub struct WebState {
    pub node: Arc<Node>,
    pub users: Users,
    pub custody: Custody,
    pub limiter: SignInLimiter,
    pub nav: Arc<Vec<NavItem>>,
    /// Mark cookies `Secure` (the site is served over HTTPS, directly or behind a proxy).
    pub secure_cookies: bool,
    /// The IoT gateway running in this process, once started (the device page shows what it
    /// has seen of each device). Unset when devices report to a gateway elsewhere.
    pub devices_seen: std::sync::OnceLock<Arc<dyn DeviceTelemetry>>,
}

/// What a gateway has seen of each device since it started; the key `-` gathers messages that
/// named no registered device.
pub trait DeviceTelemetry: Send + Sync {
    fn devices_seen(&self) -> std::collections::BTreeMap<String, DeviceSeen>;
}

#[derive(Debug, Clone, Default)]
pub struct DeviceSeen {
    pub accepted: u64,
    pub last_accepted_ms: Option<i64>,
    /// Refusals by stable reason code (`bad_signature`, `replay`, …).
    pub rejected: Vec<(String, u64)>,
}

pub type Shared = Arc<WebState>;

/// The navigation of the suite; apps flip `ready` as their pages arrive.
pub fn default_nav() -> Vec<NavItem> {
    vec![
        NavItem {
            label: "nav.explorer",
            href: "/explorer",
            ready: true,
            signed_in_only: false,
        },
        NavItem {
            label: "nav.traceability",
            href: "/traceability",
            ready: true,
            signed_in_only: false,
        },
        NavItem {
            label: "nav.invoice",
            href: "/invoice",
            ready: false,
            signed_in_only: false,
        },
        NavItem {
            label: "nav.procurement",
            href: "/procurement",
            ready: false,
            signed_in_only: false,
        },
        NavItem {
            label: "nav.admin",
            href: "/admin",
            ready: true,
            signed_in_only: true,
        },
    ]
}

// ------------------------------------------------------------------ viewer

/// The anonymous CSRF token of this browser (double-submit cookie), set by [`csrf_cookie`].
#[derive(Debug, Clone)]
struct AnonCsrf(String);

/// Who is asking, in which language, with which form token.
#[derive(Clone)]
pub struct Viewer {
    pub lang: Lang,
    pub user: Option<UserView>,
    /// Label of the signed-in user's key in the keystore (custodial signing).
    pub key_label: Option<String>,
    pub session_token: Option<String>,
    pub csrf: String,
    pub path: String,
    pub ip: IpAddr,
    pub state: Shared,
}

/// The language of a request: the switch's cookie, else the browser's Accept-Language.
pub fn request_lang(headers: &HeaderMap) -> Lang {
    CookieJar::from_headers(headers)
        .get(LANG_COOKIE)
        .and_then(|c| Lang::from_tag(c.value()))
        .unwrap_or_else(|| {
            let al = headers
                .get(header::ACCEPT_LANGUAGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            Lang::negotiate(al)
        })
}

/// Makes the request's language available to every view built while answering it.
pub async fn lang_scope(req: Request, next: Next) -> Response {
    let lang = request_lang(req.headers());
    crate::i18n::REQUEST_LANG.scope(lang, next.run(req)).await
}

impl FromRequestParts<Shared> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, Response> {
        let jar = CookieJar::from_headers(&parts.headers);
        let lang = request_lang(&parts.headers);
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let anon = parts
            .extensions
            .get::<AnonCsrf>()
            .map(|a| a.0.clone())
            .unwrap_or_default();
        let mut v = Viewer {
            lang,
            user: None,
            key_label: None,
            session_token: None,
            csrf: anon,
            path,
            ip,
            state: state.clone(),
        };
        if let Some(c) = jar.get(SESSION_COOKIE) {
            match state.users.session(c.value()).await {
                Ok(Some(s)) => {
                    v.user = Some(user_view(&state.node, &s.user).await);
                    v.key_label = Some(s.user.key_label.clone());
                    v.session_token = Some(c.value().to_string());
                    v.csrf = s.csrf;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!("session lookup failed: {e}");
                    return Err(v.error(StatusCode::INTERNAL_SERVER_ERROR, "state.error", None));
                }
            }
        }
        Ok(v)
    }
}

/// Roles and organisation come from the chain, not from the web database.
async fn user_view(node: &Node, u: &crate::auth::entities::web_user::Model) -> UserView {
    let member: Option<system::Member> = node
        .state_json(system::NAME, &format!("member/{}", u.member))
        .await
        .ok()
        .flatten();
    let org_id = u.member.split('/').next().unwrap_or_default().to_string();
    let org: Option<Organisation> = node
        .state_json(system::NAME, &format!("org/{org_id}"))
        .await
        .ok()
        .flatten();
    let active = member
        .as_ref()
        .is_some_and(|m| m.status == system::Status::Active);
    UserView {
        username: u.username.clone(),
        org_name: org.map(|o| o.name).unwrap_or_else(|| org_id.clone()),
        org: org_id,
        member: u.member.clone(),
        roles: if active {
            member.map(|m| m.roles).unwrap_or_default()
        } else {
            vec![]
        },
    }
}

impl Viewer {
    pub fn node(&self) -> &Arc<Node> {
        &self.state.node
    }

    pub fn ctx(&self) -> PageCtx {
        let tip = self.state.node.tip();
        PageCtx {
            lang: self.lang,
            user: self.user.clone(),
            csrf: self.csrf.clone(),
            path: self.path.clone(),
            nav: self.state.nav.clone(),
            chain_id: self.state.node.info.chain_id.clone(),
            height: tip.height,
            assets: crate::assets::urls().clone(),
        }
    }

    pub fn tr(&self, key: &'static str) -> &'static str {
        tr(self.lang, key)
    }

    /// A full page.
    pub fn page(&self, title: &str, body: impl FnOnce() -> AnyView) -> Response {
        self.page_with_status(StatusCode::OK, title, body)
    }

    pub fn page_with_status(
        &self,
        status: StatusCode,
        title: &str,
        body: impl FnOnce() -> AnyView,
    ) -> Response {
        let html = render_page(&self.ctx(), title, body);
        let mut r = (status, Html(html)).into_response();
        // Pages show per-user content: never cache them in shared caches.
        r.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-cache"),
        );
        r
    }

    /// An error page with a catalogue message.
    pub fn error(&self, status: StatusCode, key: &'static str, detail: Option<String>) -> Response {
        let title = self.tr(key);
        self.page_with_status(status, title, move || {
            view! {
                <h1>{t(key)}</h1>
                <ErrorState message=t(key) detail=detail.unwrap_or_default()/>
                <p><a href="/">{t("state.back_home")}</a></p>
            }
            .into_any()
        })
    }

    /// Refuse a form whose token does not match this browser's.
    pub fn check_csrf(&self, submitted: &str) -> Result<(), Response> {
        if tokens_match(&self.csrf, submitted) {
            Ok(())
        } else {
            Err(self.error(StatusCode::FORBIDDEN, "auth.csrf", None))
        }
    }

    /// The signed-in user, or a redirect to the sign-in page.
    pub fn require_user(&self) -> Result<&UserView, Response> {
        self.user.as_ref().ok_or_else(|| {
            Redirect::to(&format!("/signin?next={}", urlencode(&self.path))).into_response()
        })
    }

    /// The signed-in user if they hold `role` (checked on the server for every action).
    pub fn require_role(&self, role: &str) -> Result<&UserView, Response> {
        let u = self.require_user()?;
        if u.has_role(role) {
            Ok(u)
        } else {
            Err(self.error(StatusCode::FORBIDDEN, "auth.forbidden", None))
        }
    }
}

// ------------------------------------------------------------------ middleware

/// Give every browser an anonymous CSRF token (double-submit cookie) for forms shown before
/// sign-in; signed-in forms use the session's token instead.
pub async fn csrf_cookie(
    State(state): State<Shared>,
    jar: CookieJar,
    mut req: Request,
    next: Next,
) -> Response {
    let existing = jar
        .get(CSRF_COOKIE)
        .map(|c| c.value().to_string())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()));
    let (token, fresh) = match existing {
        Some(t) => (t, false),
        None => (crate::auth::random_token(), true),
    };
    req.extensions_mut().insert(AnonCsrf(token.clone()));
    let resp = next.run(req).await;
    if fresh {
        let cookie = Cookie::build((CSRF_COOKIE, token))
            .path("/")
            .http_only(true)
            .same_site(SameSite::Strict)
            .secure(state.secure_cookies)
            .build();
        (CookieJar::new().add(cookie), resp).into_response()
    } else {
        resp
    }
}

/// Security headers on every response.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    // Scripts and styles only from our own files; no inline code, no framing, no plugins.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; \
             base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(), microphone=(), geolocation=(), payment=()"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    resp
}

/// HSTS, only when the site is served over HTTPS (it would lock out a plain-HTTP setup).
pub async fn hsts(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    resp.headers_mut().insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000; includeSubDomains"),
    );
    resp
}

// ------------------------------------------------------------------ sign-in, language

#[derive(Deserialize, Default)]
pub struct NextQuery {
    #[serde(default)]
    next: Option<String>,
}

/// Only local paths: never redirect off-site (open redirect).
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.chars().any(char::is_control) =>
        {
            n.to_string()
        }
        _ => "/".into(),
    }
}

#[derive(Deserialize, Default)]
pub struct SignInForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
}

fn sign_in_page(
    v: &Viewer,
    status: StatusCode,
    username: &str,
    next: &str,
    username_err: Option<&'static str>,
    password_err: Option<&'static str>,
    form_err: Option<&'static str>,
) -> Response {
    let username = username.to_string();
    let next = next.to_string();
    v.page_with_status(status, v.tr("auth.title"), move || {
        view! {
            <h1>{t("auth.title")}</h1>
            <p class="muted">{t("auth.intro")}</p>
            {form_err.map(|e| view! { <Notice tone=Tone::Bad message=t(e)/> })}
            <PostForm action="/signin">
                <input type="hidden" name="next" value=next/>
                <Field
                    name="username"
                    label="auth.username"
                    value=username
                    error=username_err
                    required=true
                    autocomplete="username"
                />
                <Field
                    name="password"
                    label="auth.password"
                    kind="password"
                    error=password_err
                    required=true
                    autocomplete="current-password"
                />
                <button type="submit">{t("auth.sign_in")}</button>
            </PostForm>
        }
        .into_any()
    })
}

async fn sign_in_form(v: Viewer, Query(q): Query<NextQuery>) -> Response {
    let next = safe_next(q.next.as_deref());
    if v.user.is_some() {
        return Redirect::to(&next).into_response();
    }
    sign_in_page(&v, StatusCode::OK, "", &next, None, None, None)
}

async fn sign_in(v: Viewer, Form(f): Form<SignInForm>) -> Response {
    if let Err(r) = v.check_csrf(&f.csrf) {
        return r;
    }
    let next = safe_next(Some(&f.next));
    let username = f.username.trim().to_string();
    let user_err = username.is_empty().then_some("auth.required");
    let pass_err = f.password.is_empty().then_some("auth.required");
    if user_err.is_some() || pass_err.is_some() {
        return sign_in_page(
            &v,
            StatusCode::UNPROCESSABLE_ENTITY,
            &username,
            &next,
            user_err,
            pass_err,
            None,
        );
    }
    if username.len() > 128 || f.password.len() > 1024 {
        return sign_in_page(
            &v,
            StatusCode::UNPROCESSABLE_ENTITY,
            &username,
            &next,
            None,
            None,
            Some("auth.bad_credentials"),
        );
    }
    if !v.state.limiter.allow(v.ip, &username) {
        let mut r = sign_in_page(
            &v,
            StatusCode::TOO_MANY_REQUESTS,
            &username,
            &next,
            None,
            None,
            Some("auth.rate_limited"),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        return r;
    }
    match v.state.users.authenticate(&username, f.password).await {
        Ok(Ok(user)) => match v.state.users.start_session(user.id).await {
            Ok(token) => {
                let cookie = Cookie::build((SESSION_COOKIE, token))
                    .path("/")
                    .http_only(true)
                    .same_site(SameSite::Lax)
                    .secure(v.state.secure_cookies)
                    .build();
                tracing::info!(user = %user.username, ip = %v.ip, "signed in");
                (CookieJar::new().add(cookie), Redirect::to(&next)).into_response()
            }
            Err(e) => {
                tracing::error!("starting a session failed: {e}");
                v.error(StatusCode::INTERNAL_SERVER_ERROR, "state.error", None)
            }
        },
        Ok(Err(reason)) => {
            tracing::info!(user = %username, ip = %v.ip, "sign-in refused");
            sign_in_page(
                &v,
                StatusCode::UNAUTHORIZED,
                &username,
                &next,
                None,
                None,
                Some(reason),
            )
        }
        Err(e) => {
            tracing::error!("sign-in failed: {e}");
            v.error(StatusCode::INTERNAL_SERVER_ERROR, "state.error", None)
        }
    }
}

#[derive(Deserialize, Default)]
pub struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

async fn sign_out(v: Viewer, Form(f): Form<CsrfOnly>) -> Response {
    if let Err(r) = v.check_csrf(&f.csrf) {
        return r;
    }
    if let Some(token) = &v.session_token
        && let Err(e) = v.state.users.end_session(token).await
    {
        tracing::error!("ending a session failed: {e}");
    }
    let gone = Cookie::build((SESSION_COOKIE, "")).path("/").build();
    (CookieJar::new().remove(gone), Redirect::to("/")).into_response()
}

async fn set_lang(
    State(state): State<Shared>,
    Path(tag): Path<String>,
    Query(q): Query<NextQuery>,
) -> Response {
    let next = safe_next(q.next.as_deref());
    let Some(lang) = Lang::from_tag(&tag) else {
        return Redirect::to(&next).into_response();
    };
    let cookie = Cookie::build((LANG_COOKIE, lang.tag()))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(state.secure_cookies)
        .permanent()
        .build();
    (CookieJar::new().add(cookie), Redirect::to(&next)).into_response()
}

async fn home(v: Viewer) -> Response {
    let node = v.node().clone();
    let tip = node.tip();
    let validators = node
        .validator_set_at(tip.height + 1)
        .await
        .ok()
        .flatten()
        .map(|s| s.validators().len())
        .unwrap_or(0);
    let suite = node.info.suite.to_string();
    let chain = node.info.chain_id.clone();
    v.page(v.tr("home.title"), move || {
        view! {
            <h1>{t("home.title")}</h1>
            <p class="muted">{t("home.lead")}</p>
            <div class="cards four">
                <div class="card"><p class="stat-label">{t("home.chain")}</p><p class="stat">{chain}</p></div>
                <div class="card"><p class="stat-label">{t("home.height")}</p><p class="stat">{tip.height}</p></div>
                <div class="card"><p class="stat-label">{t("home.validators")}</p><p class="stat">{validators}</p></div>
                <div class="card"><p class="stat-label">{t("home.suite")}</p><p class="stat">{suite}</p></div>
            </div>
            <p><a class="btn" href="/explorer">{t("nav.explorer")}</a></p>
        }
        .into_any()
    })
}

#[derive(Deserialize, Default)]
pub struct QrQuery {
    #[serde(default)]
    data: String,
}

/// `GET /qr.svg?data=…`: the QR code of `data` as SVG. The same data always gives the same
/// image, so browsers may keep it.
async fn qr_image(q: Result<Query<QrQuery>, axum::extract::rejection::QueryRejection>) -> Response {
    let data = match q {
        Ok(Query(q)) if !q.data.is_empty() && q.data.len() <= QR_MAX_DATA => q.data,
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                format!("data: 1 to {QR_MAX_DATA} bytes of text"),
            )
                .into_response();
        }
    };
    match qr_svg(&data) {
        Some(svg) => {
            let mut r = svg.into_response();
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("image/svg+xml"),
            );
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            );
            r
        }
        None => (StatusCode::BAD_REQUEST, "too long for a QR code").into_response(),
    }
}

async fn not_found(v: Viewer) -> Response {
    v.error(
        StatusCode::NOT_FOUND,
        "state.not_found",
        Some(v.tr("state.not_found_detail").to_string()),
    )
}

/// Rejections of malformed forms and queries become pages, not axum's plain text.
pub fn bad_request(v: &Viewer, detail: String) -> Response {
    v.error(StatusCode::BAD_REQUEST, "state.error", Some(detail))
}

/// All web pages (explorer, administration, sign-in), the apps' pages and routes (`apps`, which
/// share the viewer, language and CSRF handling) and assets. The root binary merges this with
/// the node API and adds [`security_headers`].
pub fn router(state: Shared, apps: Router<Shared>) -> Router {
    Router::new()
        .merge(apps)
        .route("/", get(home))
        .route("/signin", get(sign_in_form).post(sign_in))
        .route("/signout", post(sign_out))
        .route("/lang/{tag}", get(set_lang))
        .route("/assets/{name}", get(crate::assets::serve))
        .route("/qr.svg", get(qr_image))
        .merge(crate::explorer::routes())
        .merge(crate::admin::routes())
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            csrf_cookie,
        ))
        .layer(axum::middleware::from_fn(lang_scope))
        .with_state(state)
}

/// Headers of a response as a test sees them (used by unit tests of the middleware).
pub fn header_str<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_redirect_targets() {
        assert_eq!(safe_next(Some("/explorer?x=1")), "/explorer?x=1");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil")), "/");
        assert_eq!(safe_next(Some("/a\nb")), "/");
        assert_eq!(safe_next(None), "/");
    }
}
