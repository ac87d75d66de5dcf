//! Shared server-rendered components: every app's pages are built from these.
//!
//! No inline styles or scripts (the Content-Security-Policy forbids them): looks come from
//! classes in the one stylesheet, behaviour from `data-*` attributes read by `app.js`.

use leptos::prelude::*;

use crate::i18n::{Lang, current_lang, t, tr};

// ------------------------------------------------------------------ shell

/// A top-level navigation entry (apps register theirs with the web state).
#[derive(Debug, Clone)]
pub struct NavItem {
    /// Catalogue key of the label.
    pub label: &'static str,
    pub href: &'static str,
    /// Shown greyed out with "coming soon" until the app ships its pages.
    pub ready: bool,
    /// Only for signed-in users.
    pub signed_in_only: bool,
}

/// The signed-in user as pages see it (never any secret).
#[derive(Debug, Clone)]
pub struct UserView {
    pub username: String,
    pub org: String,
    pub org_name: String,
    pub member: String,
    pub roles: Vec<String>,
}

impl UserView {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// Everything the shell needs to know about the request being answered.
#[derive(Debug, Clone)]
pub struct PageCtx {
    pub lang: Lang,
    pub user: Option<UserView>,
    /// The token every form of this page carries.
    pub csrf: String,
    /// Path and query of this page (for the language switch and sign-in redirects).
    pub path: String,
    pub nav: std::sync::Arc<Vec<NavItem>>,
    pub chain_id: String,
    pub height: u64,
    /// Asset URLs with content hashes (cache busting).
    pub assets: crate::assets::AssetUrls,
}

/// Render a full HTML document: the shell around `body`.
pub fn render_page(ctx: &PageCtx, title: &str, body: impl FnOnce() -> AnyView) -> String {
    let ctx = ctx.clone();
    let title = title.to_string();
    let owner = Owner::new();
    owner.with(move || {
        provide_context(ctx.lang);
        provide_context(ctx.clone());
        let body = body();
        let html = view! { <Shell ctx=ctx title=title>{body}</Shell> }.to_html();
        format!("<!DOCTYPE html>{html}")
    })
}

/// The page context provided by [`render_page`].
pub fn page_ctx() -> Option<PageCtx> {
    use_context::<PageCtx>()
}

#[component]
fn Shell(ctx: PageCtx, title: String, children: Children) -> impl IntoView {
    let lang = ctx.lang;
    let full_title = format!("{title} · {}", t("app.name"));
    let nav = ctx
        .nav
        .iter()
        .filter(|n| !n.signed_in_only || ctx.user.is_some())
        .map(|n| {
            let active = ctx.path == n.href
                || (n.href != "/" && ctx.path.starts_with(&format!("{}/", n.href)))
                || ctx.path.starts_with(&format!("{}?", n.href));
            if n.ready {
                view! {
                    <li>
                        <a href=n.href aria-current=active.then_some("page")>
                            {t(n.label)}
                        </a>
                    </li>
                }
                .into_any()
            } else {
                view! {
                    <li>
                        <span class="nav-soon" title=t("nav.soon")>
                            {t(n.label)}
                            <small>{t("nav.soon")}</small>
                        </span>
                    </li>
                }
                .into_any()
            }
        })
        .collect_view();
    let switch = Lang::ALL
        .iter()
        .map(|l| {
            let href = format!("/lang/{}?next={}", l.tag(), urlencode(&ctx.path));
            let current = *l == lang;
            view! {
                <a href=href hreflang=l.tag() lang=l.tag() aria-current=current.then_some("true")>
                    {l.native_name()}
                </a>
            }
        })
        .collect_view();
    let user = match &ctx.user {
        Some(u) => {
            let who = format!("{} · {}", u.username, u.org_name);
            view! {
                <div class="user">
                    <span class="user-name" title=t("auth.signed_in_as")>
                        {who}
                    </span>
                    <form method="post" action="/signout" class="inline">
                        <input type="hidden" name="csrf" value=ctx.csrf.clone()/>
                        <button type="submit" class="link">{t("auth.sign_out")}</button>
                    </form>
                </div>
            }
            .into_any()
        }
        None => {
            let href = format!("/signin?next={}", urlencode(&ctx.path));
            view! {
                <div class="user">
                    <a href=href>{t("auth.sign_in")}</a>
                </div>
            }
            .into_any()
        }
    };
    let footer = format!("{} · {} {}", ctx.chain_id, t("home.height"), ctx.height);
    view! {
        <html lang=lang.tag()>
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <title>{full_title}</title>
                <link rel="stylesheet" href=ctx.assets.style.clone()/>
                <script src=ctx.assets.app.clone() defer></script>
                <script src=ctx.assets.verify.clone() defer></script>
            </head>
            <body>
                <a class="skip" href="#main">{t("nav.skip")}</a>
                <header class="topbar">
                    <a class="brand" href="/">{t("app.name")}</a>
                    <nav class="menu" aria-label=t("nav.main")>
                        <ul>{nav}</ul>
                    </nav>
                    <div class="lang" role="group" aria-label=t("nav.language")>{switch}</div>
                    {user}
                </header>
                <main id="main">{children()}</main>
                <footer class="footer">{footer}</footer>
            </body>
        </html>
    }
}

/// Percent-encode a string for use as one query parameter value.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

// ------------------------------------------------------------------ small pieces

/// Colour of a status badge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Ok,
    Warn,
    Bad,
    Info,
    Muted,
}

impl Tone {
    fn class(self) -> &'static str {
        match self {
            Tone::Ok => "badge badge-ok",
            Tone::Warn => "badge badge-warn",
            Tone::Bad => "badge badge-bad",
            Tone::Info => "badge badge-info",
            Tone::Muted => "badge badge-muted",
        }
    }
}

#[component]
pub fn Badge(tone: Tone, #[prop(into)] label: String) -> impl IntoView {
    view! { <span class=tone.class()>{label}</span> }
}

/// A hash, key or DID: shortened for reading, full on hover and in the copy button.
#[component]
pub fn HashText(
    #[prop(into)] value: String,
    #[prop(optional, into)] href: Option<String>,
    /// Show the full value instead of the shortened one.
    #[prop(optional)]
    full: bool,
) -> impl IntoView {
    let shown = if full { value.clone() } else { short(&value) };
    let title = value.clone();
    let text = match href {
        Some(h) => view! { <a href=h><code>{shown}</code></a> }.into_any(),
        None => view! { <code>{shown}</code> }.into_any(),
    };
    // A shortened value is a handful of characters: broken over lines it reads as noise.
    let class = if full { "hash" } else { "hash short" };
    view! {
        <span class=class title=title>
            {text}
            <button
                type="button"
                class="copy"
                data-copy=value
                data-copied=t("common.copied")
                aria-label=t("common.copy")
            >
                {t("common.copy")}
            </button>
        </span>
    }
}

/// `0123456789abcdef…` → `01234567…cdef` (long values only).
pub fn short(v: &str) -> String {
    let chars: Vec<char> = v.chars().collect();
    if chars.len() <= 20 {
        return v.to_string();
    }
    let head: String = chars[..10].iter().collect();
    let tail: String = chars[chars.len() - 6..].iter().collect();
    format!("{head}…{tail}")
}

/// Block time (ms since the epoch) as `2026-11-22 03:04:05 UTC`.
pub fn format_time(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// A definition list of label → value rows (detail pages).
#[component]
pub fn Facts(rows: Vec<(&'static str, AnyView)>) -> impl IntoView {
    let rows = rows
        .into_iter()
        .map(|(label, value)| view! { <dt>{t(label)}</dt><dd>{value}</dd> })
        .collect_view();
    view! { <dl class="facts">{rows}</dl> }
}

#[component]
pub fn EmptyState(#[prop(optional, into)] message: Option<String>) -> impl IntoView {
    let message = message.unwrap_or_else(|| t("state.empty").to_string());
    view! { <p class="empty" role="status">{message}</p> }
}

#[component]
pub fn ErrorState(
    #[prop(into)] message: String,
    #[prop(optional, into)] detail: Option<String>,
) -> impl IntoView {
    view! {
        <div class="error-state" role="alert">
            <p><strong>{message}</strong></p>
            {detail.map(|d| view! { <p class="muted">{d}</p> })}
        </div>
    }
}

/// Placeholder for content filled in by script (live lists); says "loading" to screen readers.
#[component]
pub fn Loading() -> impl IntoView {
    view! { <p class="loading" aria-busy="true">{t("state.loading")}</p> }
}

/// A one-line message after an action (flash).
#[component]
pub fn Notice(tone: Tone, #[prop(into)] message: String) -> impl IntoView {
    let class = match tone {
        Tone::Ok => "notice notice-ok",
        Tone::Bad => "notice notice-bad",
        _ => "notice",
    };
    view! { <p class=class role="status">{message}</p> }
}

// ------------------------------------------------------------------ tables

/// A column of a [`Table`]; `sort_key` makes its header a sort link.
#[derive(Debug, Clone)]
pub struct Col {
    pub label: &'static str,
    pub sort_key: Option<&'static str>,
    /// Right-aligned numbers.
    pub numeric: bool,
}

impl Col {
    pub fn new(label: &'static str) -> Self {
        Self {
            label,
            sort_key: None,
            numeric: false,
        }
    }
    pub fn sortable(mut self, key: &'static str) -> Self {
        self.sort_key = Some(key);
        self
    }
    pub fn numeric(mut self) -> Self {
        self.numeric = true;
        self
    }
}

/// Current sort and page of a table, parsed from and written back to the query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paging {
    /// Path of the page the table is on (links keep it).
    pub base: String,
    pub sort: Option<String>,
    pub desc: bool,
    /// 1-based.
    pub page: u64,
    pub per_page: u64,
    /// Total rows, when known.
    pub total: Option<u64>,
    /// Whether a next page exists (for lists whose total is not counted).
    pub has_next: bool,
}

impl Paging {
    pub fn href(&self, sort: Option<&str>, desc: bool, page: u64) -> String {
        let mut q = vec![format!("page={page}")];
        if let Some(s) = sort {
            q.push(format!("sort={}", urlencode(s)));
            q.push(format!("dir={}", if desc { "desc" } else { "asc" }));
        }
        format!("{}?{}", self.base, q.join("&"))
    }

    pub fn pages(&self) -> Option<u64> {
        self.total.map(|t| t.div_ceil(self.per_page.max(1)).max(1))
    }
}

#[component]
pub fn Table(
    cols: Vec<Col>,
    rows: Vec<Vec<AnyView>>,
    #[prop(optional)] paging: Option<Paging>,
    /// `id` of the `<tbody>` (live updates prepend rows to it).
    #[prop(optional, into)]
    body_id: Option<String>,
    #[prop(optional, into)] caption: Option<String>,
) -> impl IntoView {
    let head = cols
        .iter()
        .map(|c| {
            let class = if c.numeric { "num" } else { "" };
            match (&paging, c.sort_key) {
                (Some(p), Some(key)) => {
                    let active = p.sort.as_deref() == Some(key);
                    // Clicking the active column flips its direction.
                    let desc = if active { !p.desc } else { false };
                    let href = p.href(Some(key), desc, 1);
                    let aria = active.then_some(if p.desc { "descending" } else { "ascending" });
                    let arrow = if active {
                        if p.desc { " ↓" } else { " ↑" }
                    } else {
                        ""
                    };
                    view! {
                        <th scope="col" class=class aria-sort=aria>
                            <a href=href>{t(c.label)}{arrow}</a>
                        </th>
                    }
                    .into_any()
                }
                _ => view! { <th scope="col" class=class>{t(c.label)}</th> }.into_any(),
            }
        })
        .collect_view();
    let numeric: Vec<bool> = cols.iter().map(|c| c.numeric).collect();
    let empty = rows.is_empty();
    let ncols = cols.len().to_string();
    let body = rows
        .into_iter()
        .map(|cells| {
            let cells = cells
                .into_iter()
                .enumerate()
                .map(|(i, cell)| {
                    let class = if numeric.get(i).copied().unwrap_or(false) {
                        "num"
                    } else {
                        ""
                    };
                    view! { <td class=class>{cell}</td> }
                })
                .collect_view();
            view! { <tr>{cells}</tr> }
        })
        .collect_view();
    let empty_row = empty.then(|| {
        view! {
            <tr class="empty-row">
                <td colspan=ncols>
                    <EmptyState/>
                </td>
            </tr>
        }
    });
    let pager = paging.map(|p| view! { <Pager paging=p/> });
    view! {
        <div class="table-wrap">
            <table>
                {caption.map(|c| view! { <caption>{c}</caption> })}
                <thead>
                    <tr>{head}</tr>
                </thead>
                <tbody id=body_id>{body} {empty_row}</tbody>
            </table>
        </div>
        {pager}
    }
}

#[component]
pub fn Pager(paging: Paging) -> impl IntoView {
    let p = &paging;
    let prev = (p.page > 1).then(|| p.href(p.sort.as_deref(), p.desc, p.page - 1));
    let has_next = match p.pages() {
        Some(n) => p.page < n,
        None => p.has_next,
    };
    let next = has_next.then(|| p.href(p.sort.as_deref(), p.desc, p.page + 1));
    let label = match p.pages() {
        Some(n) => match current_lang() {
            Lang::En => format!(
                "{} {} {} {n}",
                t("common.page"),
                p.page,
                t("common.page_of")
            ),
            Lang::ZhCn => format!(
                "{} {} {} {n} 页",
                t("common.page"),
                p.page,
                t("common.page_of")
            ),
        },
        None => match current_lang() {
            Lang::En => format!("{} {}", t("common.page"), p.page),
            Lang::ZhCn => format!("{} {} 页", t("common.page"), p.page),
        },
    };
    view! {
        <nav class="pager" aria-label=t("common.page")>
            {match prev {
                Some(h) => view! { <a href=h rel="prev">{t("common.prev")}</a> }.into_any(),
                None => view! { <span class="disabled">{t("common.prev")}</span> }.into_any(),
            }}
            <span class="pager-label">{label}</span>
            {match next {
                Some(h) => view! { <a href=h rel="next">{t("common.next")}</a> }.into_any(),
                None => view! { <span class="disabled">{t("common.next")}</span> }.into_any(),
            }}
        </nav>
    }
}

// ------------------------------------------------------------------ forms

/// A form with the page's CSRF token.
#[component]
pub fn PostForm(
    #[prop(into)] action: String,
    children: Children,
    #[prop(optional, into)] class: Option<String>,
) -> impl IntoView {
    let csrf = page_ctx().map(|c| c.csrf).unwrap_or_default();
    view! {
        <form method="post" action=action class=class.unwrap_or_else(|| "form".into()) novalidate>
            <input type="hidden" name="csrf" value=csrf/>
            {children()}
        </form>
    }
}

/// One labelled input with its server-side validation message right next to it.
#[component]
pub fn Field(
    #[prop(into)] name: String,
    /// Catalogue key of the label.
    label: &'static str,
    #[prop(optional, into)] value: String,
    #[prop(default = None)] error: Option<&'static str>,
    #[prop(default = None)] hint: Option<&'static str>,
    #[prop(default = "text")] kind: &'static str,
    #[prop(optional)] required: bool,
    #[prop(optional, into)] autocomplete: Option<String>,
) -> impl IntoView {
    let id = format!("f-{name}");
    let err_id = format!("{id}-error");
    let hint_id = format!("{id}-hint");
    let hint =
        hint.filter(|h| error.is_none_or(|e| tr(current_lang(), e) != tr(current_lang(), h)));
    let described = match (error.is_some(), hint.is_some()) {
        (true, true) => Some(format!("{err_id} {hint_id}")),
        (true, false) => Some(err_id.clone()),
        (false, true) => Some(hint_id.clone()),
        (false, false) => None,
    };
    // Passwords are never echoed back into the page.
    let value = if kind == "password" {
        String::new()
    } else {
        value
    };
    view! {
        <div class=if error.is_some() { "field field-invalid" } else { "field" }>
            <label for=id.clone()>{t(label)}</label>
            <input
                id=id
                name=name
                type=kind
                value=value
                required=required
                autocomplete=autocomplete
                aria-invalid=error.map(|_| "true")
                aria-describedby=described
            />
            // The error replaces the hint when they would say the same thing.
            {hint
                .map(|h| view! { <p class="field-hint" id=hint_id>{t(h)}</p> })}
            {error.map(|e| view! { <p class="field-error" id=err_id>{t(e)}</p> })}
        </div>
    }
}

// ------------------------------------------------------------------ timeline

#[derive(Debug, Clone)]
pub struct TimelineItem {
    pub time: Option<String>,
    pub title: String,
    pub detail: Option<String>,
    pub tone: Tone,
}

#[component]
pub fn Timeline(items: Vec<TimelineItem>) -> impl IntoView {
    if items.is_empty() {
        return view! { <EmptyState/> }.into_any();
    }
    let items = items
        .into_iter()
        .map(|i| {
            let dot = match i.tone {
                Tone::Ok => "dot dot-ok",
                Tone::Warn => "dot dot-warn",
                Tone::Bad => "dot dot-bad",
                _ => "dot",
            };
            view! {
                <li>
                    <span class=dot aria-hidden="true"></span>
                    <div>
                        <p class="tl-title">{i.title}</p>
                        {i.time.map(|t| view! { <p class="tl-time">{t}</p> })}
                        {i.detail.map(|d| view! { <p class="tl-detail">{d}</p> })}
                    </div>
                </li>
            }
        })
        .collect_view();
    view! { <ol class="timeline">{items}</ol> }.into_any()
}

// ------------------------------------------------------------------ charts

/// Data for a chart: labelled points in order.
#[derive(Debug, Clone)]
pub struct Series {
    pub title: String,
    pub points: Vec<(String, f64)>,
    /// Unit shown after values in tooltips.
    pub unit: String,
}

const CHART_W: f64 = 600.0;
const CHART_H: f64 = 200.0;
const PAD_L: f64 = 44.0;
const PAD_B: f64 = 22.0;
const PAD_T: f64 = 10.0;

/// Round a maximum up to 1, 2 or 5 × 10ⁿ so axis labels read well.
fn nice_max(v: f64) -> f64 {
    if !(v.is_finite()) || v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if v <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

fn fmt_num(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        format!("{v:.2}")
    }
}

/// Axes, grid lines and labels shared by both chart kinds.
fn axes(series: &Series, max: f64) -> AnyView {
    let plot_h = CHART_H - PAD_B - PAD_T;
    let grid = (0..=4)
        .map(|i| {
            let v = max * f64::from(i) / 4.0;
            let y = PAD_T + plot_h - plot_h * f64::from(i) / 4.0;
            view! {
                <line class="grid" x1=PAD_L x2=CHART_W y1=y y2=y></line>
                <text class="axis" x=PAD_L - 6.0 y=y + 4.0 text-anchor="end">{fmt_num(v)}</text>
            }
        })
        .collect_view();
    let n = series.points.len();
    let first = series
        .points
        .first()
        .map(|p| p.0.clone())
        .unwrap_or_default();
    let last = series
        .points
        .last()
        .map(|p| p.0.clone())
        .unwrap_or_default();
    view! {
        {grid}
        <text class="axis" x=PAD_L y=CHART_H - 4.0>{first}</text>
        {(n > 1).then(|| view! { <text class="axis" x=CHART_W y=CHART_H - 4.0 text-anchor="end">{last}</text> })}
    }
    .into_any()
}

#[component]
pub fn BarChart(series: Series) -> impl IntoView {
    if series.points.is_empty() {
        return view! { <EmptyState/> }.into_any();
    }
    let max = nice_max(series.points.iter().map(|p| p.1).fold(0.0, f64::max));
    let plot_w = CHART_W - PAD_L;
    let plot_h = CHART_H - PAD_B - PAD_T;
    let slot = plot_w / series.points.len() as f64;
    let bars = series
        .points
        .iter()
        .enumerate()
        .map(|(i, (label, v))| {
            let h = (v.max(0.0) / max * plot_h).max(if *v > 0.0 { 1.0 } else { 0.0 });
            let x = PAD_L + slot * i as f64 + slot * 0.15;
            let tip = format!("{label}: {}{}", fmt_num(*v), series.unit);
            view! {
                <rect class="bar" x=x y=PAD_T + plot_h - h width=slot * 0.7 height=h>
                    <title>{tip}</title>
                </rect>
            }
        })
        .collect_view();
    let vb = format!("0 0 {CHART_W} {CHART_H}");
    let axes = axes(&series, max);
    view! {
        <figure class="chart">
            <figcaption>{series.title.clone()}</figcaption>
            <svg viewBox=vb role="img" aria-label=series.title.clone() preserveAspectRatio="none">
                {axes}
                {bars}
            </svg>
        </figure>
    }
    .into_any()
}

#[component]
pub fn LineChart(series: Series) -> impl IntoView {
    if series.points.is_empty() {
        return view! { <EmptyState/> }.into_any();
    }
    let max = nice_max(series.points.iter().map(|p| p.1).fold(0.0, f64::max));
    let plot_w = CHART_W - PAD_L;
    let plot_h = CHART_H - PAD_B - PAD_T;
    let n = series.points.len();
    let step = if n > 1 { plot_w / (n - 1) as f64 } else { 0.0 };
    let coords: Vec<(f64, f64)> = series
        .points
        .iter()
        .enumerate()
        .map(|(i, (_, v))| {
            (
                PAD_L + step * i as f64,
                PAD_T + plot_h - v.max(0.0) / max * plot_h,
            )
        })
        .collect();
    let path = coords
        .iter()
        .map(|(x, y)| format!("{x:.1},{y:.1}"))
        .collect::<Vec<_>>()
        .join(" ");
    let dots = coords
        .iter()
        .zip(&series.points)
        .map(|((x, y), (label, v))| {
            let tip = format!("{label}: {}{}", fmt_num(*v), series.unit);
            view! {
                <circle class="point" cx=*x cy=*y r="3">
                    <title>{tip}</title>
                </circle>
            }
        })
        .collect_view();
    let vb = format!("0 0 {CHART_W} {CHART_H}");
    let axes = axes(&series, max);
    view! {
        <figure class="chart">
            <figcaption>{series.title.clone()}</figcaption>
            <svg viewBox=vb role="img" aria-label=series.title.clone() preserveAspectRatio="none">
                {axes}
                <polyline class="line" points=path></polyline>
                {dots}
            </svg>
        </figure>
    }
    .into_any()
}

// ------------------------------------------------------------------ QR

/// A QR code of `data` (e.g. a link), with a caption. The image is a separate, cacheable
/// request (`/qr.svg`): encoding a QR code costs far more than rendering the page around it.
#[component]
pub fn Qr(
    #[prop(into)] data: String,
    #[prop(optional, into)] caption: Option<String>,
) -> impl IntoView {
    let src = format!("/qr.svg?data={}", urlencode(&data));
    view! {
        <figure class="qr">
            <img class="qr-img" src=src alt=t("common.qr") width="160" height="160"/>
            {caption.map(|c| view! { <figcaption>{c}</figcaption> })}
        </figure>
    }
}

/// Longest text a QR image is made for (a link or an identifier, not a document).
pub const QR_MAX_DATA: usize = 1024;

/// SVG markup of a QR code (medium error correction), `None` if `data` is too long.
pub fn qr_svg(data: &str) -> Option<String> {
    let code =
        qrcode::QrCode::with_error_correction_level(data.as_bytes(), qrcode::EcLevel::M).ok()?;
    let svg = code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(160, 160)
        .quiet_zone(true)
        .build();
    // Inline SVG in HTML takes no XML declaration.
    let start = svg.find("<svg")?;
    Some(svg[start..].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_max_rounds_up_to_readable_steps() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(120.0), 200.0);
        assert_eq!(nice_max(4900.0), 5000.0);
        assert_eq!(nice_max(f64::NAN), 1.0);
    }

    #[test]
    fn short_keeps_both_ends() {
        assert_eq!(short("abc"), "abc");
        assert_eq!(short("0123456789abcdefghijklmnop"), "0123456789…klmnop");
    }

    #[test]
    fn qr_encodes_links_and_refuses_oversized_data() {
        let svg = qr_svg("https://example.com/01/09506000134352/10/LOT1").expect("qr");
        assert!(svg.starts_with("<svg") && svg.contains("<path"));
        assert!(qr_svg(&"x".repeat(5000)).is_none());
    }

    #[test]
    fn urlencode_escapes_query_syntax() {
        assert_eq!(urlencode("/a?b=c&d"), "/a%3Fb%3Dc%26d");
    }
}
