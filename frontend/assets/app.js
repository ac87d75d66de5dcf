/*
 * Trellis page behaviour. Pages work without it; it adds copy buttons and live updates.
 * Loaded as a file (the Content-Security-Policy forbids inline scripts); reads data-* only.
 */
(() => {
  'use strict';

  // Copy buttons: <button class="copy" data-copy="value" data-copied="Copied">.
  function bindCopy(root) {
    root.querySelectorAll('button.copy[data-copy]').forEach((b) => {
      if (b.dataset.bound) return;
      b.dataset.bound = '1';
      b.addEventListener('click', async () => {
        const label = b.textContent;
        try {
          await navigator.clipboard.writeText(b.dataset.copy);
        } catch (_) {
          // Clipboard API needs a secure context: fall back to selecting the text.
          const r = document.createRange();
          const code = b.parentElement && b.parentElement.querySelector('code');
          if (code) { r.selectNodeContents(code); const s = getSelection(); s.removeAllRanges(); s.addRange(r); }
          return;
        }
        b.classList.add('copied');
        b.textContent = b.dataset.copied || 'Copied';
        setTimeout(() => { b.classList.remove('copied'); b.textContent = label; }, 1500);
      });
    });
  }

  function cell(text, href) {
    const td = document.createElement('td');
    if (href) {
      const a = document.createElement('a');
      a.href = href;
      a.textContent = text;
      td.appendChild(a);
    } else {
      td.textContent = text;
    }
    return td;
  }

  function shortHash(h) {
    return h.length > 20 ? h.slice(0, 10) + '…' + h.slice(-6) : h;
  }

  function pad(n) { return String(n).padStart(2, '0'); }
  function utc(ms) {
    const d = new Date(ms);
    return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ` +
      `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} UTC`;
  }

  // Live blocks: <tbody data-live-blocks="/api/v1/stream" data-max-rows="20">. Each `block`
  // event of the node's SSE stream becomes a new first row (built with textContent only).
  function bindLiveBlocks() {
    const body = document.querySelector('tbody[data-live-blocks]');
    if (!body || !window.EventSource) return;
    const max = parseInt(body.dataset.maxRows || '20', 10);
    const status = document.getElementById(body.dataset.liveStatus || '');
    const es = new EventSource(body.dataset.liveBlocks);
    es.addEventListener('open', () => { if (status) status.dataset.state = 'connected'; });
    es.addEventListener('error', () => { if (status) status.dataset.state = 'reconnecting'; });
    es.addEventListener('block', (ev) => {
      let b;
      try { b = JSON.parse(ev.data); } catch (_) { return; }
      if (typeof b.height !== 'number' || typeof b.hash !== 'string') return;
      if (body.querySelector(`tr[data-height="${b.height}"]`)) return;
      const tr = document.createElement('tr');
      tr.dataset.height = String(b.height);
      tr.className = 'fresh';
      tr.appendChild(cell(String(b.height), `/explorer/blocks/${b.height}`));
      tr.appendChild(cell(shortHash(b.hash), `/explorer/blocks/${b.height}`));
      tr.appendChild(cell(utc(b.time_ms)));
      const n = cell(String(b.tx_count));
      n.className = 'num';
      tr.appendChild(n);
      const empty = body.querySelector('tr.empty-row');
      if (empty) empty.remove();
      body.insertBefore(tr, body.firstChild);
      while (body.rows.length > max) body.deleteRow(body.rows.length - 1);
      if (status) status.dataset.lastHeight = String(b.height);
    });
  }

  // Live alerts: <div data-live-alerts="/api/v1/stream?contract=trace" data-label-excursion="…"
  // data-label-recall="…" data-lot-href="/…/{gtin}/{lot}"> around a table. Each `alert`
  // contract event becomes a new first row of its body, linking to the lot.
  function bindLiveAlerts() {
    const holder = document.querySelector('[data-live-alerts]');
    const body = holder && holder.querySelector('tbody');
    if (!body || !window.EventSource) return;
    const cfg = holder.dataset;
    const es = new EventSource(cfg.liveAlerts);
    const status = document.getElementById(cfg.liveStatus || '');
    es.addEventListener('open', () => { if (status) status.dataset.state = 'connected'; });
    es.addEventListener('error', () => { if (status) status.dataset.state = 'reconnecting'; });
    es.addEventListener('contract_event', (ev) => {
      let e;
      try { e = JSON.parse(ev.data); } catch (_) { return; }
      if (!e || e.kind !== 'alert' || !e.data || typeof e.data.gtin !== 'string') return;
      const d = e.data;
      const kind = String(d.kind || 'alert');
      const tr = document.createElement('tr');
      tr.className = 'fresh';
      tr.dataset.kind = kind;
      // The same badge the server renders: red for recalls and counterfeits, amber otherwise.
      const badge = document.createElement('span');
      badge.className = kind === 'excursion' ? 'badge badge-warn' : 'badge badge-bad';
      badge.textContent = cfg['label' + kind.charAt(0).toUpperCase() + kind.slice(1)] || kind;
      const first = document.createElement('td');
      first.appendChild(badge);
      tr.appendChild(first);
      const href = (cfg.lotHref || '')
        .replace('{gtin}', encodeURIComponent(d.gtin))
        .replace('{lot}', encodeURIComponent(String(d.lot || '')));
      const what = `${d.gtin} / ${d.lot || ''}` + (d.serial ? ` · ${d.serial}` : '');
      tr.appendChild(cell(what, href || undefined));
      const count = cell(String(d.count ?? ''));
      count.className = 'num';
      tr.appendChild(count);
      // Chain alerts link their block; others (counterfeit suspicions) show when they arrived.
      tr.appendChild(typeof e.height === 'number'
        ? cell(`#${e.height}`, `/explorer/blocks/${e.height}`)
        : cell(utc(Date.now())));
      const empty = body.querySelector('tr.empty-row');
      if (empty) empty.remove();
      body.insertBefore(tr, body.firstChild);
      while (body.rows.length > 50) body.deleteRow(body.rows.length - 1);
    });
  }

  // Documents hashed in the browser: <input type="file" data-sha256-into="id-of-text-input">.
  // Only the digest is sent; the file never leaves this computer.
  function bindFileHashes() {
    document.querySelectorAll('input[type="file"][data-sha256-into]').forEach((input) => {
      input.addEventListener('change', async () => {
        const target = document.getElementById(input.dataset.sha256Into);
        const file = input.files && input.files[0];
        if (!target || !file || !(window.crypto && crypto.subtle)) return;
        const digest = await crypto.subtle.digest('SHA-256', await file.arrayBuffer());
        target.value = [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
      });
    });
  }

  function start() {
    bindCopy(document);
    bindFileHashes();
    bindLiveBlocks();
    bindLiveAlerts();
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
