//! Printable GS1 labels: one QR code as a PNG, or A4 sheets of labels as a PDF.
//!
//! The QR code always carries the GS1 Digital Link URI; the text printed next
//! to it is only the human-readable interpretation (HRI). That split drives two
//! decisions below: the QR is drawn exactly (vector, with a full quiet zone),
//! while the text may be shrunk, truncated or lose characters the built-in PDF
//! font cannot show, because the scanner never reads it.

use printpdf::lopdf::content::Operation;
use printpdf::lopdf::{self, Object, StringFormat};
use printpdf::{BuiltinFont, IndirectFontRef, Mm, PdfDocument, PdfLayerReference};
use qrcode::types::QrError;
use qrcode::{Color, EcLevel, QrCode};

/// The most labels one call to [`label_sheet_pdf`] will lay out.
pub const MAX_LABELS: usize = 1000;

/// The largest `module_px` accepted by [`qr_png`]. A version-40 code at this
/// scale is about 6200 px square; larger values would only let a caller make
/// us allocate unbounded memory.
pub const MAX_MODULE_PX: u32 = 32;

/// ISO/IEC 18004 asks for four light modules around the symbol; scanners
/// misread codes that sit too close to other ink, so both outputs include it.
const QUIET_ZONE: usize = 4;

/// One label on a sheet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Label {
    /// GS1 Digital Link URI, encoded verbatim in the QR code.
    pub url: String,
    /// Product name; may contain any Unicode (see [`win_ansi_bytes`] for how
    /// characters the PDF font cannot show are printed).
    pub product: String,
    pub gtin: String,
    pub lot: Option<String>,
    pub serial: Option<String>,
    /// Expiry date as `YYYY-MM-DD`; printed as GS1 AI (17) `YYMMDD`.
    pub expiry: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error("data is {len} bytes, too long for a QR code at error correction level M")]
    TooLong { len: usize },
    #[error("{count} labels requested, at most {MAX_LABELS} are allowed")]
    TooMany { count: usize },
    #[error("expiry {0:?} is not a YYYY-MM-DD date")]
    InvalidExpiry(String),
    /// Any QR encoder failure other than the data being too long. With
    /// automatic mode selection this should not happen; it exists so that a
    /// future encoder change surfaces as an error rather than a panic.
    #[error("QR encoding failed: {0}")]
    Qr(String),
    #[error("PDF generation failed: {0}")]
    Pdf(String),
    #[error("PNG generation failed: {0}")]
    Png(String),
}

impl LabelError {
    /// Stable machine-readable code, safe to expose in APIs and logs.
    pub fn code(&self) -> &'static str {
        match self {
            LabelError::TooLong { .. } => "label_too_long",
            LabelError::TooMany { .. } => "label_too_many",
            LabelError::InvalidExpiry(_) => "label_invalid_expiry",
            LabelError::Qr(_) => "label_qr_failed",
            LabelError::Pdf(_) => "label_pdf_failed",
            LabelError::Png(_) => "label_png_failed",
        }
    }
}

fn pdf_err(e: impl std::fmt::Display) -> LabelError {
    LabelError::Pdf(e.to_string())
}

fn png_err(e: impl std::fmt::Display) -> LabelError {
    LabelError::Png(e.to_string())
}

// ---------------------------------------------------------------------------
// QR matrix
// ---------------------------------------------------------------------------

/// A horizontal run of dark modules: `len` modules starting at column `x` of
/// row `y` (row 0 is the top), in symbol coordinates without the quiet zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    x: usize,
    y: usize,
    len: usize,
}

/// The module grid of one QR symbol, decoupled from the encoder's types so the
/// PNG and PDF renderers share one representation.
struct QrMatrix {
    width: usize,
    dark: Vec<bool>,
}

impl QrMatrix {
    fn encode(data: &str) -> Result<Self, LabelError> {
        // Level M (~15% recovery) is the usual choice for Digital Link on
        // packaging: it survives scuffs without growing the symbol as much as
        // Q or H would.
        let code = QrCode::with_error_correction_level(data.as_bytes(), EcLevel::M).map_err(
            |e| match e {
                QrError::DataTooLong => LabelError::TooLong { len: data.len() },
                other => LabelError::Qr(other.to_string()),
            },
        )?;
        let width = code.width();
        Ok(QrMatrix {
            width,
            dark: code
                .into_colors()
                .into_iter()
                .map(|c| c == Color::Dark)
                .collect(),
        })
    }

    /// Side length in modules including the quiet zone on both sides.
    fn padded_width(&self) -> usize {
        self.width + 2 * QUIET_ZONE
    }

    /// Whether a module is dark, addressed with the quiet zone included, so
    /// anything outside the symbol simply reads as light.
    fn is_dark_padded(&self, x: usize, y: usize) -> bool {
        let (Some(x), Some(y)) = (x.checked_sub(QUIET_ZONE), y.checked_sub(QUIET_ZONE)) else {
            return false;
        };
        x < self.width && y < self.width && self.dark.get(y * self.width + x) == Some(&true)
    }

    /// Dark modules merged into horizontal runs. Drawing one rectangle per run
    /// instead of per module roughly halves the rectangles in the PDF.
    fn dark_runs(&self) -> Vec<Run> {
        let mut runs = Vec::new();
        for (y, row) in self.dark.chunks(self.width.max(1)).enumerate() {
            let mut start = None;
            for (x, &dark) in row.iter().chain(std::iter::once(&false)).enumerate() {
                match (dark, start) {
                    (true, None) => start = Some(x),
                    (false, Some(s)) => {
                        runs.push(Run {
                            x: s,
                            y,
                            len: x - s,
                        });
                        start = None;
                    }
                    _ => {}
                }
            }
        }
        runs
    }
}

// ---------------------------------------------------------------------------
// PNG
// ---------------------------------------------------------------------------

/// Renders `data` as a black-on-white QR code PNG (error correction level M,
/// 4-module quiet zone), each module `module_px` pixels square.
///
/// The image is 1-bit greyscale: QR codes are strictly two-tone, and this
/// keeps files about 8x smaller before compression than 8-bit would.
pub fn qr_png(data: &str, module_px: u32) -> Result<Vec<u8>, LabelError> {
    if !(1..=MAX_MODULE_PX).contains(&module_px) {
        return Err(LabelError::Png(format!(
            "module_px must be between 1 and {MAX_MODULE_PX}, got {module_px}"
        )));
    }
    let qr = QrMatrix::encode(data)?;
    let scale = usize::try_from(module_px).map_err(png_err)?;
    let side = qr.padded_width() * scale;
    let side_px = u32::try_from(side).map_err(png_err)?;

    // Each pixel row is built once per module row and repeated `scale` times.
    // In 1-bit greyscale a set bit is white, so the buffer starts black and
    // only light modules are written.
    let row_bytes = side.div_ceil(8);
    let mut pixels = Vec::with_capacity(row_bytes * side);
    for module_y in 0..qr.padded_width() {
        let mut row = vec![0u8; row_bytes];
        for x in 0..side {
            if !qr.is_dark_padded(x / scale, module_y) {
                row[x / 8] |= 0x80 >> (x % 8);
            }
        }
        for _ in 0..scale {
            pixels.extend_from_slice(&row);
        }
    }

    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, side_px, side_px);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::One);
    let mut writer = encoder.write_header().map_err(png_err)?;
    writer.write_image_data(&pixels).map_err(png_err)?;
    writer.finish().map_err(png_err)?;
    Ok(out)
}

// ---------------------------------------------------------------------------
// Text helpers
// ---------------------------------------------------------------------------

/// Encodes text for a built-in PDF font using WinAnsiEncoding (the encoding
/// printpdf declares for built-in fonts).
///
/// Characters WinAnsi lacks — Chinese product names, for instance — become
/// `?`, one per character. We deliberately do not transliterate or embed a
/// CJK font: the standard 14 fonts have no CJK glyphs, a CJK font would add
/// megabytes to every sheet, and the text is only the human-readable copy —
/// the QR code carries the authoritative data untouched. A visible `?` tells
/// the reader something was lost, where silently dropping characters (what
/// printpdf's own `use_text` does) would print a plausible but wrong name.
fn win_ansi_bytes(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| {
            if c.is_whitespace() {
                // Newlines and tabs would otherwise become '?'; on a single
                // line of label text they are just spacing.
                b' '
            } else {
                win_ansi_byte(c).unwrap_or(b'?')
            }
        })
        .collect()
}

/// WinAnsiEncoding (Windows-1252 as defined in PDF 32000 Annex D) for one
/// character: ASCII and Latin-1 map to themselves, plus the 0x80..0x9F extras.
fn win_ansi_byte(c: char) -> Option<u8> {
    let byte = match c {
        ' '..='~' | '\u{A0}'..='\u{FF}' => return u8::try_from(u32::from(c)).ok(),
        '€' => 0x80,
        '‚' => 0x82,
        'ƒ' => 0x83,
        '„' => 0x84,
        '…' => 0x85,
        '†' => 0x86,
        '‡' => 0x87,
        'ˆ' => 0x88,
        '‰' => 0x89,
        'Š' => 0x8A,
        '‹' => 0x8B,
        'Œ' => 0x8C,
        'Ž' => 0x8E,
        '‘' => 0x91,
        '’' => 0x92,
        '“' => 0x93,
        '”' => 0x94,
        '•' => 0x95,
        '–' => 0x96,
        '—' => 0x97,
        '˜' => 0x98,
        '™' => 0x99,
        'š' => 0x9A,
        '›' => 0x9B,
        'œ' => 0x9C,
        'ž' => 0x9E,
        'Ÿ' => 0x9F,
        _ => return None,
    };
    Some(byte)
}

/// Helvetica advance widths (1/1000 em) for ASCII 0x20..=0x7E, from Adobe's
/// published font metrics. Needed because PDF has no text layout: we must
/// measure text ourselves to wrap and truncate it inside a label.
const HELVETICA_ASCII_WIDTHS: [u16; 95] = [
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278,
    278, // space../
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556, // 0..?
    1015, 667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833, 722, 778, // @..O
    667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 278, 278, 278, 469, 556, // P.._
    333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500, 222, 833, 556, 556, // `..o
    556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584, // p..~
];

/// Width used for non-ASCII WinAnsi bytes. Most accented letters are 556–722,
/// so this errs towards wide; the few wider glyphs (Æ, Œ, ‰, —) can overshoot
/// slightly, which the per-label clip path contains.
const FALLBACK_WIDTH: u16 = 722;

fn text_width(text: &[u8], size: f32) -> f32 {
    let units: u32 = text
        .iter()
        .map(|&b| {
            let w = b
                .checked_sub(0x20)
                .and_then(|i| HELVETICA_ASCII_WIDTHS.get(usize::from(i)))
                .copied()
                .unwrap_or(FALLBACK_WIDTH);
            u32::from(w)
        })
        .sum();
    units as f32 * size / 1000.0
}

const ELLIPSIS: &[u8] = b"...";

/// Cuts `text` so it fits in `max_width`, marking the cut with "...".
fn truncate_to_width(text: &[u8], size: f32, max_width: f32) -> Vec<u8> {
    if text_width(text, size) <= max_width {
        return text.to_vec();
    }
    let budget = max_width - text_width(ELLIPSIS, size);
    let mut cut = text.to_vec();
    while !cut.is_empty() && text_width(&cut, size) > budget {
        cut.pop();
    }
    while cut.last() == Some(&b' ') {
        cut.pop();
    }
    cut.extend_from_slice(ELLIPSIS);
    cut
}

/// Greedy word wrap into at most `max_lines` lines; whatever does not fit is
/// folded into the last line, which is then truncated with "...".
fn wrap_to_width(text: &[u8], size: f32, max_width: f32, max_lines: usize) -> Vec<Vec<u8>> {
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let mut current: Vec<u8> = Vec::new();
    for word in text.split(|&b| b == b' ').filter(|w| !w.is_empty()) {
        if current.is_empty() {
            current.extend_from_slice(word);
            continue;
        }
        let mut candidate = current.clone();
        candidate.push(b' ');
        candidate.extend_from_slice(word);
        if text_width(&candidate, size) <= max_width {
            current = candidate;
        } else {
            lines.push(std::mem::replace(&mut current, word.to_vec()));
        }
    }
    if !current.is_empty() {
        lines.push(current);
    }
    if lines.len() > max_lines && max_lines > 0 {
        let rest = lines.split_off(max_lines - 1).join(&b' ');
        lines.push(rest);
    }
    lines
        .iter()
        .map(|line| truncate_to_width(line, size, max_width))
        .collect()
}

/// GS1 AI (17) is printed as YYMMDD. The day may be "00" (GS1: "end of the
/// month"), so this checks shape and ranges rather than calendar validity.
fn expiry_yymmdd(expiry: &str) -> Result<String, LabelError> {
    let invalid = || LabelError::InvalidExpiry(expiry.to_string());
    let b = expiry.as_bytes();
    let digit_positions = [0, 1, 2, 3, 5, 6, 8, 9];
    let well_formed = b.len() == 10
        && b.get(4) == Some(&b'-')
        && b.get(7) == Some(&b'-')
        && digit_positions
            .iter()
            .all(|&i| b.get(i).is_some_and(u8::is_ascii_digit));
    if !well_formed {
        return Err(invalid());
    }
    let two_digits = |i: usize| -> Option<u8> {
        let tens = b.get(i)?.checked_sub(b'0')?;
        let ones = b.get(i + 1)?.checked_sub(b'0')?;
        Some(tens * 10 + ones)
    };
    let (Some(month), Some(day)) = (two_digits(5), two_digits(8)) else {
        return Err(invalid());
    };
    if !(1..=12).contains(&month) || day > 31 {
        return Err(invalid());
    }
    // All bytes were checked to be ASCII above, so these slices are on char
    // boundaries; `get` keeps it panic-free regardless.
    match (expiry.get(2..4), expiry.get(5..7), expiry.get(8..10)) {
        (Some(yy), Some(mm), Some(dd)) => Ok(format!("{yy}{mm}{dd}")),
        _ => Err(invalid()),
    }
}

// ---------------------------------------------------------------------------
// PDF layout
// ---------------------------------------------------------------------------

const PAGE_W_MM: f32 = 210.0;
const PAGE_H_MM: f32 = 297.0;
const COLUMNS: usize = 3;
const ROWS: usize = 8;
const LABELS_PER_PAGE: usize = COLUMNS * ROWS;
const MARGIN_X_MM: f32 = 8.0;
/// Larger than the bottom margin to leave room for the page header.
const MARGIN_TOP_MM: f32 = 14.0;
const MARGIN_BOTTOM_MM: f32 = 8.0;
const HEADER_BASELINE_FROM_TOP_MM: f32 = 9.0;
/// Inner padding of a label cell, so printer misregistration on pre-cut
/// label stock does not clip the quiet zone or text.
const PADDING_MM: f32 = 2.0;
const QR_TEXT_GAP_MM: f32 = 1.5;

const HEADER_PT: f32 = 9.0;
const NAME_PT: f32 = 8.0;
const NAME_MAX_LINES: usize = 2;
const HRI_PT: f32 = 7.0;
/// HRI lines shrink down to this before being truncated: a smaller but
/// complete lot or serial number is more useful than a cut-off one.
const HRI_MIN_PT: f32 = 5.0;
const LEADING: f32 = 1.25;

fn mm(v: f32) -> f32 {
    v * 72.0 / 25.4
}

/// PDF numbers rounded to 1/100 pt: far below print resolution, and it keeps
/// f32 noise like `22.677164` out of the content stream.
fn num(v: f32) -> Object {
    Object::Real((v * 100.0).round() / 100.0)
}

fn int(v: usize) -> Object {
    Object::Integer(i64::try_from(v).unwrap_or(i64::MAX))
}

/// A label's cell in PDF points, origin at its bottom-left corner.
#[derive(Debug, Clone, Copy)]
struct Cell {
    x: f32,
    y: f32,
    w: f32,
    h: f32,
}

fn cell_at(index_on_page: usize) -> Cell {
    let w = mm((PAGE_W_MM - 2.0 * MARGIN_X_MM) / COLUMNS as f32);
    let h = mm((PAGE_H_MM - MARGIN_TOP_MM - MARGIN_BOTTOM_MM) / ROWS as f32);
    let col = index_on_page % COLUMNS;
    let row = index_on_page / COLUMNS;
    Cell {
        x: mm(MARGIN_X_MM) + col as f32 * w,
        y: mm(PAGE_H_MM - MARGIN_TOP_MM) - (row + 1) as f32 * h,
        w,
        h,
    }
}

/// Everything about a label that can fail, computed before any PDF is built
/// so a bad label is reported without doing layout work.
struct PreparedLabel {
    qr: QrMatrix,
    name: Vec<u8>,
    hri: Vec<Vec<u8>>,
}

fn prepare(label: &Label) -> Result<PreparedLabel, LabelError> {
    let qr = QrMatrix::encode(&label.url)?;
    let mut hri = vec![format!("(01) {}", label.gtin)];
    if let Some(lot) = &label.lot {
        hri.push(format!("(10) {lot}"));
    }
    if let Some(serial) = &label.serial {
        hri.push(format!("(21) {serial}"));
    }
    if let Some(expiry) = &label.expiry {
        hri.push(format!("(17) {}", expiry_yymmdd(expiry)?));
    }
    Ok(PreparedLabel {
        qr,
        name: win_ansi_bytes(&label.product),
        hri: hri.iter().map(|line| win_ansi_bytes(line)).collect(),
    })
}

/// Thin wrapper for raw content-stream operators. printpdf 0.7 has no API for
/// the two things we need raw: several `re` subpaths filled by one `f`, and
/// literal (rather than hex) text strings.
fn op(layer: &PdfLayerReference, operator: &str, operands: Vec<Object>) {
    layer.add_operation(Operation::new(operator, operands));
}

fn show_text(layer: &PdfLayerReference, text: &[u8]) {
    // Literal strings keep the content stream human-readable (and greppable
    // in tests); lopdf escapes unbalanced parentheses and backslashes.
    op(
        layer,
        "Tj",
        vec![Object::String(text.to_vec(), StringFormat::Literal)],
    );
}

fn draw_qr(layer: &PdfLayerReference, qr: &QrMatrix, x: f32, y: f32, side: f32) {
    let module = side / qr.padded_width() as f32;
    let offset = QUIET_ZONE as f32 * module;
    op(layer, "q", vec![]);
    // Scale so one unit is one module: the run rectangles below then need
    // only small integers, which keeps the content stream compact.
    op(
        layer,
        "cm",
        vec![
            num(module),
            num(0.0),
            num(0.0),
            num(module),
            num(x + offset),
            num(y + offset),
        ],
    );
    let runs = qr.dark_runs();
    for run in &runs {
        // PDF's y axis points up, QR rows count down from the top.
        let y_up = qr.width.saturating_sub(run.y + 1);
        op(
            layer,
            "re",
            vec![int(run.x), int(y_up), int(run.len), int(1)],
        );
    }
    // One fill for the whole symbol: filling each rectangle separately makes
    // anti-aliasing viewers show hairline seams between adjacent rows.
    if !runs.is_empty() {
        op(layer, "f", vec![]);
    }
    op(layer, "Q", vec![]);
}

fn draw_label(
    layer: &PdfLayerReference,
    font: &IndirectFontRef,
    cell: Cell,
    label: &PreparedLabel,
) {
    let pad = mm(PADDING_MM);
    let qr_side = cell.h - 2.0 * pad;
    draw_qr(layer, &label.qr, cell.x + pad, cell.y + pad, qr_side);

    let text_x = cell.x + pad + qr_side + mm(QR_TEXT_GAP_MM);
    let text_w = (cell.x + cell.w - pad - text_x).max(0.0);
    let text_bottom = cell.y + pad;
    let text_h = cell.h - 2.0 * pad;

    // Clip to the text box: our width estimates are approximate for some
    // non-ASCII glyphs, and nothing may spill onto the neighbouring label.
    op(layer, "q", vec![]);
    op(
        layer,
        "re",
        vec![num(text_x), num(text_bottom), num(text_w), num(text_h)],
    );
    op(layer, "W", vec![]);
    op(layer, "n", vec![]);

    layer.begin_text_section();
    // First baseline ~0.8 em below the top of the box: Helvetica's ascender
    // is ~0.72 em, so the tallest glyphs just clear the top edge.
    let first_baseline = cell.y + cell.h - pad - NAME_PT * 0.8;
    op(layer, "Td", vec![num(text_x), num(first_baseline)]);
    layer.set_font(font, NAME_PT);
    let mut first = true;
    for line in wrap_to_width(&label.name, NAME_PT, text_w, NAME_MAX_LINES) {
        if !first {
            op(layer, "Td", vec![num(0.0), num(-NAME_PT * LEADING)]);
        }
        show_text(layer, &line);
        first = false;
    }
    // A little extra space separates the name from the AI lines.
    let mut step = if first { 0.0 } else { NAME_PT * LEADING + 2.0 };
    for line in &label.hri {
        let natural = text_width(line, HRI_PT);
        let size = if natural > text_w && natural > 0.0 {
            (HRI_PT * text_w / natural).max(HRI_MIN_PT)
        } else {
            HRI_PT
        };
        op(layer, "Td", vec![num(0.0), num(-step)]);
        layer.set_font(font, size);
        show_text(layer, &truncate_to_width(line, size, text_w));
        step = HRI_PT * LEADING;
    }
    layer.end_text_section();
    op(layer, "Q", vec![]);
}

fn draw_header(
    layer: &PdfLayerReference,
    font: &IndirectFontRef,
    title: &[u8],
    page: usize,
    pages: usize,
) {
    let mut text = title.to_vec();
    if !text.is_empty() {
        text.extend_from_slice(b"  -  ");
    }
    text.extend_from_slice(format!("page {page} of {pages}").as_bytes());
    let max_w = mm(PAGE_W_MM - 2.0 * MARGIN_X_MM);
    layer.begin_text_section();
    layer.set_font(font, HEADER_PT);
    op(
        layer,
        "Td",
        vec![
            num(mm(MARGIN_X_MM)),
            num(mm(PAGE_H_MM - HEADER_BASELINE_FROM_TOP_MM)),
        ],
    );
    show_text(layer, &truncate_to_width(&text, HEADER_PT, max_w));
    layer.end_text_section();
}

/// printpdf 0.7 writes the document title into the Info dictionary as the raw
/// UTF-8 bytes of the string, which viewers decode as PDFDocEncoding. Only
/// ASCII survives that unchanged, so everything else becomes '?' here (the
/// page header still gets the fuller WinAnsi rendering).
fn info_title(title: &str) -> String {
    title
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else if c.is_whitespace() {
                ' '
            } else {
                '?'
            }
        })
        .collect()
}

/// Lays out `labels` on A4 portrait pages, 3 columns x 8 rows (24 per page),
/// each with its QR code drawn as vector rectangles and the human-readable
/// product name and GS1 element strings beside it. An empty slice yields a
/// single page carrying only the header.
pub fn label_sheet_pdf(title: &str, labels: &[Label]) -> Result<Vec<u8>, LabelError> {
    let uncompressed = render_sheet(title, labels)?;
    compress_pdf(&uncompressed)
}

fn render_sheet(title: &str, labels: &[Label]) -> Result<Vec<u8>, LabelError> {
    if labels.len() > MAX_LABELS {
        return Err(LabelError::TooMany {
            count: labels.len(),
        });
    }
    let prepared = labels.iter().map(prepare).collect::<Result<Vec<_>, _>>()?;

    let pages = prepared.len().div_ceil(LABELS_PER_PAGE).max(1);
    let (doc, first_page, first_layer) =
        PdfDocument::new(info_title(title), Mm(PAGE_W_MM), Mm(PAGE_H_MM), "labels");
    let font = doc
        .add_builtin_font(BuiltinFont::Helvetica)
        .map_err(pdf_err)?;
    let header_title = win_ansi_bytes(title);

    let mut chunks = prepared.chunks(LABELS_PER_PAGE);
    for page in 0..pages {
        let layer = if page == 0 {
            doc.get_page(first_page).get_layer(first_layer)
        } else {
            let (p, l) = doc.add_page(Mm(PAGE_W_MM), Mm(PAGE_H_MM), "labels");
            doc.get_page(p).get_layer(l)
        };
        draw_header(&layer, &font, &header_title, page + 1, pages);
        for (i, label) in chunks.next().unwrap_or_default().iter().enumerate() {
            draw_label(&layer, &font, cell_at(i), label);
        }
    }
    doc.save_to_bytes().map_err(pdf_err)
}

/// printpdf 0.7 marks page content streams as non-compressible, even in
/// release builds, and that is almost all of a label sheet's bytes. Reparsing
/// with lopdf (which printpdf re-exports) and deflating every stream shrinks
/// sheets several-fold for a few milliseconds of work.
fn compress_pdf(bytes: &[u8]) -> Result<Vec<u8>, LabelError> {
    let mut doc = lopdf::Document::load_mem(bytes).map_err(pdf_err)?;
    // printpdf 0.7 always writes an (empty) /GTS_PDFXVersion, which makes
    // preflight tools treat the sheet as a PDF/X candidate. We make no PDF/X
    // claim, so drop it while the document is open anyway.
    if let Ok(info_id) = doc.trailer.get(b"Info").and_then(Object::as_reference)
        && let Ok(info) = doc.get_object_mut(info_id).and_then(Object::as_dict_mut)
    {
        info.remove(b"GTS_PDFXVersion");
    }
    doc.compress();
    let mut out = Vec::with_capacity(bytes.len() / 2);
    doc.save_to(&mut out).map_err(pdf_err)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGITAL_LINK: &str = "https://id.example.com/01/09521234000013/10/LOT1/21/ABC";

    fn decode_png(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        // Expand 1-bit greyscale to one byte per pixel for easy indexing.
        decoder.set_transformations(png::Transformations::EXPAND);
        let mut reader = decoder.read_info().expect("png header");
        let size = reader.output_buffer_size().expect("buffer size");
        let mut buf = vec![0; size];
        let info = reader.next_frame(&mut buf).expect("png frame");
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    fn label(i: usize) -> Label {
        Label {
            url: format!("https://id.example.com/01/09521234000013/10/LOT{i}/21/S{i}"),
            product: "Organic Green Tea 100 g".to_string(),
            gtin: "09521234000013".to_string(),
            lot: Some(format!("LOT{i}")),
            serial: Some(format!("S{i}")),
            expiry: Some("2027-03-31".to_string()),
        }
    }

    fn page_content(pdf: &[u8]) -> (usize, Vec<u8>) {
        let doc = lopdf::Document::load_mem(pdf).expect("pdf parses");
        let pages = doc.get_pages();
        let mut content = Vec::new();
        for id in pages.values() {
            content.extend(doc.get_page_content(*id).expect("page content"));
        }
        (pages.len(), content)
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    /// Counts page objects textually, as a cross-check on the parser. lopdf
    /// writes `/Type/Page`; other writers put a space after `/Type`.
    fn count_page_objects(pdf: &[u8]) -> usize {
        [&b"/Type/Page"[..], &b"/Type /Page"[..]]
            .iter()
            .map(|pat| {
                pdf.windows(pat.len() + 1)
                    .filter(|w| w.starts_with(pat) && w[pat.len()] != b's')
                    .count()
            })
            .sum()
    }

    #[test]
    fn png_has_signature_and_expected_size() {
        let png = qr_png("hello", 4).expect("png");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
        // "hello" fits version 1 (21 modules) + 2 * 4 quiet zone.
        let (w, h, _) = decode_png(&png);
        assert_eq!((w, h), (29 * 4, 29 * 4));
    }

    #[test]
    fn png_of_digital_link_has_quiet_zone_and_finder() {
        let px = 3;
        let png = qr_png(DIGITAL_LINK, px).expect("png");
        let modules = QrCode::with_error_correction_level(DIGITAL_LINK, EcLevel::M)
            .expect("qr")
            .width();
        let (w, h, pixels) = decode_png(&png);
        let side = (modules + 2 * QUIET_ZONE) as u32 * px;
        assert_eq!((w, h), (side, side));
        let at = |x: u32, y: u32| pixels[(y * w + x) as usize];
        // Quiet zone corner is white; the finder pattern's corner is black.
        assert_eq!(at(0, 0), 255);
        assert_eq!(at(4 * px - 1, 4 * px - 1), 255);
        assert_eq!(at(4 * px, 4 * px), 0);
        assert_eq!(at(w - 4 * px - 1, 4 * px), 0);
    }

    #[test]
    fn png_rejects_bad_module_size_and_long_data() {
        assert_eq!(qr_png("x", 0).unwrap_err().code(), "label_png_failed");
        assert_eq!(
            qr_png("x", MAX_MODULE_PX + 1).unwrap_err().code(),
            "label_png_failed"
        );
        let long = "a".repeat(5000);
        assert_eq!(qr_png(&long, 2).unwrap_err().code(), "label_too_long");
    }

    #[test]
    fn runs_merge_adjacent_dark_modules() {
        let qr = QrMatrix {
            width: 4,
            dark: vec![
                true, true, false, true, //
                false, false, false, false, //
                true, true, true, true, //
                false, true, true, false,
            ],
        };
        assert_eq!(
            qr.dark_runs(),
            vec![
                Run { x: 0, y: 0, len: 2 },
                Run { x: 3, y: 0, len: 1 },
                Run { x: 0, y: 2, len: 4 },
                Run { x: 1, y: 3, len: 2 },
            ]
        );
    }

    #[test]
    fn pdf_has_two_pages_for_25_labels_and_readable_text() {
        let labels: Vec<Label> = (0..25).map(label).collect();
        let pdf = label_sheet_pdf("Batch 42", &labels).expect("pdf");
        assert!(pdf.starts_with(b"%PDF-"));
        assert_eq!(count_page_objects(&pdf), 2);

        let (pages, content) = page_content(&pdf);
        assert_eq!(pages, 2);
        assert!(contains(&content, b"((01) 09521234000013) Tj"));
        assert!(contains(&content, b"((10) LOT24) Tj"));
        assert!(contains(&content, b"((21) S0) Tj"));
        assert!(contains(&content, b"((17) 270331) Tj"));
        assert!(contains(&content, b"(Batch 42  -  page 2 of 2) Tj"));
    }

    #[test]
    fn pdf_streams_are_compressed_but_uncompressed_render_is_plain() {
        let labels: Vec<Label> = (0..24).map(label).collect();
        let plain = render_sheet("t", &labels).expect("pdf");
        assert!(contains(&plain, b"((01) 09521234000013) Tj"));
        let packed = label_sheet_pdf("t", &labels).expect("pdf");
        assert!(contains(&packed, b"/FlateDecode"));
        assert!(!contains(&packed, b"GTS_PDFXVersion"));
        assert!(!contains(&packed, b"((01) 09521234000013) Tj"));
        assert!(packed.len() * 2 < plain.len());
    }

    #[test]
    fn pdf_replaces_characters_outside_win_ansi() {
        let mut l = label(1);
        l.product = "有机绿茶 Café".to_string();
        let pdf = label_sheet_pdf("标签 Labels", &[l]).expect("pdf");
        let (pages, content) = page_content(&pdf);
        assert_eq!(pages, 1);
        // "é" is WinAnsi 0xE9; the four CJK characters become '?'.
        assert!(contains(&content, b"(???? Caf\xe9) Tj"));
        assert!(contains(&content, b"(?? Labels  -  page 1 of 1) Tj"));
    }

    #[test]
    fn pdf_with_no_labels_has_one_page() {
        let pdf = label_sheet_pdf("empty", &[]).expect("pdf");
        assert_eq!(page_content(&pdf).0, 1);
    }

    #[test]
    fn pdf_rejects_too_many_labels_and_long_urls() {
        let labels = vec![label(0); MAX_LABELS + 1];
        let err = label_sheet_pdf("t", &labels).unwrap_err();
        assert_eq!(err.code(), "label_too_many");

        let mut long = label(0);
        long.url = format!("https://id.example.com/{}", "x".repeat(5000));
        let err = label_sheet_pdf("t", &[label(1), long]).unwrap_err();
        assert_eq!(err.code(), "label_too_long");
    }

    #[test]
    fn pdf_rejects_malformed_expiry() {
        for bad in [
            "2027-3-31",
            "27-03-31",
            "2027-13-01",
            "2027-02-32",
            "２０２７-03-31",
        ] {
            let mut l = label(0);
            l.expiry = Some(bad.to_string());
            let err = label_sheet_pdf("t", &[l]).unwrap_err();
            assert_eq!(err.code(), "label_invalid_expiry", "{bad}");
        }
    }

    #[test]
    fn expiry_converts_to_yymmdd() {
        assert_eq!(expiry_yymmdd("2027-03-31").expect("valid"), "270331");
        // GS1 allows day 00, meaning the last day of the month.
        assert_eq!(expiry_yymmdd("2030-12-00").expect("valid"), "301200");
    }

    #[test]
    fn long_names_wrap_then_truncate() {
        let text = win_ansi_bytes("Extra Virgin Olive Oil Cold Pressed Single Estate 500 ml");
        let max = 80.0;
        let lines = wrap_to_width(&text, NAME_PT, max, 2);
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|l| text_width(l, NAME_PT) <= max));
        assert!(lines[1].ends_with(ELLIPSIS));
        // A single unbreakable word is truncated rather than overflowing.
        let word = vec![b'W'; 100];
        let lines = wrap_to_width(&word, NAME_PT, max, 2);
        assert_eq!(lines.len(), 1);
        assert!(text_width(&lines[0], NAME_PT) <= max);
    }

    #[test]
    fn error_codes_are_stable() {
        assert_eq!(LabelError::TooLong { len: 1 }.code(), "label_too_long");
        assert_eq!(LabelError::TooMany { count: 1 }.code(), "label_too_many");
        assert_eq!(LabelError::Pdf(String::new()).code(), "label_pdf_failed");
        assert_eq!(LabelError::Png(String::new()).code(), "label_png_failed");
    }
}
