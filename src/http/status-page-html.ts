/**
 * The status page: one self-contained HTML document (inline CSS, inline script, an inline SVG
 * chart; no CDN, no build step). It holds no data and no token: its script polls
 * `status.json` every 2 s and fills the page in. Kept in a .ts module so `tsc` ships it in dist/.
 */

export const STATUS_PAGE_STYLE = `
:root { --bg: #f5f6f8; --card: #fff; --ink: #1d2330; --muted: #687086; --line: #e2e5eb; --good: #1a7f4b; --warn: #b26a00; --bad: #c0392b; --accent: #2f6fdb; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; background: var(--bg); color: var(--ink); }
header { display: flex; flex-wrap: wrap; align-items: baseline; gap: 6px 18px; padding: 14px 22px; background: var(--ink); color: #fff; }
header h1 { margin: 0; font-size: 17px; font-weight: 600; }
header .meta { color: #c5cad6; font-size: 13px; }
header #updated { margin-left: auto; }
body.stale header #updated { color: #ffb4a8; font-weight: 600; }
main { display: grid; grid-template-columns: repeat(auto-fit, minmax(280px, 1fr)); gap: 16px; padding: 18px 22px; max-width: 1200px; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 14px 16px; }
section.wide { grid-column: 1 / -1; }
h2 { margin: 0 0 8px; font-size: 13px; font-weight: 600; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
.big { font-size: 30px; font-weight: 650; font-variant-numeric: tabular-nums; }
.big .unit { font-size: 15px; font-weight: 400; }
.figures { display: grid; grid-template-columns: auto 1fr; gap: 2px 14px; margin-top: 8px; font-variant-numeric: tabular-nums; }
.figures dt { color: var(--muted); }
.figures dd { margin: 0; }
.bar { height: 10px; background: var(--line); border-radius: 5px; overflow: hidden; margin: 8px 0 4px; }
.bar > div { height: 100%; width: 0; background: var(--good); transition: width .4s; }
.bar.high > div { background: var(--warn); }
.bar.over > div { background: var(--bad); }
svg { width: 100%; height: 110px; display: block; margin-top: 6px; }
svg .volume { fill: #d6def0; }
svg .rate { fill: none; stroke: var(--accent); stroke-width: 1.6; }
svg .dot { fill: var(--accent); }
svg .label { fill: var(--muted); font-size: 11px; }
svg .grid { stroke: var(--line); stroke-width: 1; }
.axis { display: flex; justify-content: space-between; color: var(--muted); font-size: 12px; }
.warn { color: var(--warn); }
table { width: 100%; border-collapse: collapse; font-size: 13px; }
td { padding: 5px 8px 5px 0; border-top: 1px solid var(--line); vertical-align: top; }
td.when { white-space: nowrap; color: var(--muted); font-variant-numeric: tabular-nums; }
td.level { font-weight: 600; }
td.level.error { color: var(--bad); }
td.level.warn { color: var(--warn); }
td .fields { color: var(--muted); word-break: break-all; }
.empty { color: var(--muted); }
`;

export const STATUS_PAGE_SCRIPT = `
'use strict';
const $ = (id) => document.getElementById(id);
const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
function size(bytes) {
  if (bytes < 1024) return bytes + ' B';
  const power = Math.min(units.length - 1, Math.floor(Math.log2(bytes) / 10));
  return (bytes / 2 ** (10 * power)).toFixed(1) + ' ' + units[power];
}
function ago(ms) {
  if (ms === null || ms === undefined) return '-';
  const s = Math.round(ms / 1000);
  if (s < 120) return s + ' s';
  if (s < 7200) return Math.round(s / 60) + ' min';
  return (s / 3600).toFixed(1) + ' h';
}
const percent = (ratio) => (ratio === null ? '-' : (100 * ratio).toFixed(1) + ' %');
function set(id, text) { $(id).textContent = text; }

function drawHistory(history, nowMs, uptimeMs) {
  const svg = $('hit-rate-chart');
  const ns = 'http://www.w3.org/2000/svg';
  // Drawn in the chart's own pixels, so dots stay round at any width.
  const width = Math.max(svg.clientWidth, 200), height = 110, top = 5, bottom = 105;
  svg.setAttribute('viewBox', '0 0 ' + width + ' ' + height);
  svg.replaceChildren();
  for (const [y, label] of [[top, '100 %'], [(top + bottom) / 2, '50 %'], [bottom, '0 %']]) {
    const line = document.createElementNS(ns, 'line');
    line.setAttribute('class', 'grid');
    line.setAttribute('x1', 0); line.setAttribute('x2', width); line.setAttribute('y1', y); line.setAttribute('y2', y);
    const text = document.createElementNS(ns, 'text');
    text.setAttribute('class', 'label');
    text.setAttribute('x', 2); text.setAttribute('y', Math.max(y - 3, 14));
    text.textContent = label;
    svg.append(line, text);
  }
  // The last 5 minutes at least, the whole window (30 min) once the daemon has been up that long.
  const spanMs = Math.min(history.windowMs, Math.max(5 * 60000, uptimeMs + history.intervalMs));
  const start = nowMs - spanMs;
  const step = (width * history.intervalMs) / spanMs;
  const x = (ms) => ((ms - start) / spanMs) * width;
  const dots = [];
  const busiest = Math.max(1, ...history.buckets.map((b) => b.hits + b.misses));
  let path = '', previous = null;
  for (const bucket of history.buckets) {
    if (bucket.startMs + history.intervalMs <= start) continue;
    const total = bucket.hits + bucket.misses;
    const bar = document.createElementNS(ns, 'rect');
    const barHeight = ((bottom - top) * total) / busiest;
    bar.setAttribute('class', 'volume');
    bar.setAttribute('x', x(bucket.startMs)); bar.setAttribute('width', Math.max(step - 0.5, 0.5));
    bar.setAttribute('y', bottom - barHeight); bar.setAttribute('height', barHeight);
    svg.append(bar);
    const px = x(bucket.startMs) + step / 2, py = bottom - ((bottom - top) * bucket.hits) / total;
    // Intervals without lookups have no hit rate: the line breaks there.
    path += (previous !== null && bucket.startMs - previous === history.intervalMs ? ' L' : ' M') + px.toFixed(1) + ' ' + py.toFixed(1);
    previous = bucket.startMs;
    const dot = document.createElementNS(ns, 'circle');
    dot.setAttribute('class', 'dot');
    dot.setAttribute('cx', px); dot.setAttribute('cy', py); dot.setAttribute('r', 2.2);
    const title = document.createElementNS(ns, 'title');
    title.textContent = new Date(bucket.startMs).toLocaleTimeString() + ': ' + bucket.hits + ' hits, ' + bucket.misses + ' misses';
    dot.append(title);
    dots.push(dot);
  }
  const rate = document.createElementNS(ns, 'path');
  rate.setAttribute('class', 'rate');
  rate.setAttribute('d', path.trim() || 'M0 0');
  svg.append(rate, ...dots);
  set('chart-start', Math.round(spanMs / 60000) + ' min ago');
}

function drawErrors(errors, nowMs) {
  const rows = $('errors');
  rows.replaceChildren();
  for (const event of errors.slice().reverse()) {
    const tr = document.createElement('tr');
    const when = document.createElement('td');
    when.className = 'when';
    when.textContent = new Date(event.atMs).toLocaleTimeString() + ' (' + ago(nowMs - event.atMs) + ' ago)';
    const level = document.createElement('td');
    level.className = 'level ' + event.level;
    level.textContent = event.level === 'error' ? 'ERROR' : 'WARN';
    const text = document.createElement('td');
    text.append(event.message);
    if (event.fields) {
      const fields = document.createElement('div');
      fields.className = 'fields';
      fields.textContent = event.fields;
      text.append(fields);
    }
    tr.append(when, level, text);
    rows.append(tr);
  }
  $('errors-empty').hidden = errors.length > 0;
}

function render(s) {
  set('mode', s.mode + (s.modeSource === 'default' ? ' (the default)' : ' (from ' + s.modeSource + ')'));
  set('s3', (s.remote.state === 'off' ? 'S3 tier off: ' + (s.remote.reason || '') : 'S3 ' + s.remote.state + ': ' + s.remote.bucket) +
    (s.remote.writeZone ? '; zones: write ' + s.remote.writeZone + ', read ' + (s.remote.readZones || []).join(' then ') : ''));
  set('uptime', 'up ' + ago(s.uptimeMs) + ', pid ' + s.pid);

  set('hit-rate', percent(s.cache.hitRate));
  set('lookups', s.cache.lookups);
  set('hits-local', s.cache.hits.local);
  set('hits-s3', s.cache.hits.s3);
  set('misses', s.cache.misses);
  drawHistory(s.cache.history, s.nowMs, s.uptimeMs);

  const used = s.local.usedBytes, budget = s.local.budgetBytes;
  const ratio = budget > 0 ? used / budget : 0;
  set('local-used', size(used));
  set('local-budget', size(budget));
  set('local-percent', (100 * ratio).toFixed(1) + ' %');
  set('local-entries', s.local.entries);
  set('evictions', s.evictions.count + ' (' + size(s.evictions.bytes) + ')');
  const notice = s.cacheDirLost ? 'the cache directory is gone (the daemon is exiting): ' + s.cacheDirLost
    : s.indexRebuild ? 'the index was damaged at start and rebuilt from the blobs; the damaged file is kept as ' + s.indexRebuild.keptAs : '';
  set('local-notice', notice);
  $('local-notice').hidden = !notice;
  $('local-bar').style.width = Math.min(100, 100 * ratio) + '%';
  $('local-bar').parentElement.className = 'bar' + (ratio > 1 ? ' over' : ratio > 0.9 ? ' high' : '');

  set('outbox-entries', s.outbox.entries);
  set('outbox-bytes', size(s.outbox.bytes));
  set('outbox-parked', s.outbox.parked);
  set('outbox-oldest', ago(s.outbox.oldestAgeMs));
  set('uploads', s.uploads ? s.uploads.uploaded + ' uploaded, ' + s.uploads.alreadyPresent + ' already in S3, ' + s.uploads.failedAttempts + ' failed attempts' + (s.uploads.headsSkipped ? ', ' + s.uploads.headsSkipped + ' without a HEAD first (index)' : '') : 'off');
  set('read-through', s.readThrough ? s.readThrough.hits + ' hits, ' + s.readThrough.misses + ' misses, ' + (s.readThrough.failures + s.readThrough.timeouts) + ' failed, ' + s.readThrough.skipped + ' skipped (cool-down)' : 'off');
  const p = s.prefetch;
  set('prefetch', p ? p.state + ': ' + p.artifacts + ' artifacts (' + size(p.bytes) + '), ' + p.hits + ' then hit (' + size(p.hitBytes) + '), ' + p.notStored + ' not stored; ' + size(p.unusedBytes) + ' unused of ' + size(p.budgetBytes) + '; git ' + p.git : 'off');

  set('bucket-index', bucketIndexText(s));

  drawErrors(s.recentErrors, s.nowMs);
}

function bucketIndexText(s) {
  const why = s.cache.readThroughReasons;
  const reads = 'read through: ' + why.inIndex + ' in index, ' + why.stale + ' stale, ' + why.notIndexed + ' not indexed, ' + why.off + ' off';
  if (!s.bucketIndex) return 'off; ' + reads;
  const zones = s.bucketIndex.zones.map((z) =>
    (z.zone || '(no zone)') + ': ' + z.entries + ' objects (' + size(z.bytes) + '), synced ' + ago(z.ageMs) + (!z.indexed ? ' (not indexed)' : z.fresh ? ' (fresh)' : ' (stale)') + (z.lastError ? ', failing: ' + z.lastError : '') + gcText(z.gc, s.nowMs));
  const j = s.bucketIndex.journalObjects;
  const p = s.bucketIndex.published;
  const published = p ? '; published ' + p.journalObjects + ' journal objects, ' + p.unpublished + ' uploads not yet' + (p.lastError ? ' (last error ' + ago(s.nowMs - p.lastError.atMs) + ' ago: ' + p.lastError.message + ')' : '') : '';
  const a = s.bucketIndex.accessRecords;
  const uses = a ? '; access records ' + a.records + ' published in ' + a.accessObjects + ' objects, ' + a.pending + ' pending' + (a.lastError ? ' (last error ' + ago(s.nowMs - a.lastError.atMs) + ' ago: ' + a.lastError.message + ')' : '') : '';
  return s.cache.indexMisses + ' misses answered without S3; ' + reads + '; ' + zones.join('; ') + '; journal ' + j.applied + ' applied, ' + j.refused + ' refused' + published + uses;
}

function gcText(gc, nowMs) {
  if (!gc) return '';
  return ', last gc ' + ago(nowMs - gc.startedMs) + ' ago' + (gc.done ? '' : ' (under way)') + ': ' + gc.removedObjects + ' objects (' + size(gc.removedBytes) + ') removed';
}

async function refresh() {
  try {
    const response = await fetch('status.json', { cache: 'no-store' });
    if (!response.ok) throw new Error('the daemon answered ' + response.status);
    render(await response.json());
    document.body.classList.remove('stale');
    set('updated', 'updated ' + new Date().toLocaleTimeString());
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  } catch (error) {
    document.body.classList.add('stale');
    set('updated', 'not updating: ' + error.message);
  } finally {
    setTimeout(refresh, 2000);
  }
}
refresh();
`;

export const STATUS_PAGE_BODY = `
<header>
  <h1>nx-s3-sidecar</h1>
  <span class="meta" id="mode"></span>
  <span class="meta" id="s3"></span>
  <span class="meta" id="uptime"></span>
  <span class="meta" id="updated">loading…</span>
</header>
<main>
  <section>
    <h2>Hit rate</h2>
    <div class="big" id="hit-rate">-</div>
    <dl class="figures">
      <dt>lookups</dt><dd id="lookups">-</dd>
      <dt>local hits</dt><dd id="hits-local">-</dd>
      <dt>hits from S3</dt><dd id="hits-s3">-</dd>
      <dt>misses</dt><dd id="misses">-</dd>
    </dl>
  </section>
  <section>
    <h2>Local tier</h2>
    <div class="big"><span id="local-used">-</span> <span class="unit">of <span id="local-budget">-</span></span></div>
    <div class="bar"><div id="local-bar"></div></div>
    <dl class="figures">
      <dt>used</dt><dd id="local-percent">-</dd>
      <dt>artifacts</dt><dd id="local-entries">-</dd>
      <dt>evicted</dt><dd id="evictions">-</dd>
    </dl>
    <p class="warn" id="local-notice" hidden></p>
  </section>
  <section>
    <h2>Outbox (waiting for upload)</h2>
    <div class="big"><span id="outbox-entries">-</span> <span class="unit">pending, <span id="outbox-bytes">-</span></span></div>
    <dl class="figures">
      <dt>oldest pending</dt><dd id="outbox-oldest">-</dd>
      <dt>parked</dt><dd id="outbox-parked">-</dd>
      <dt>uploads</dt><dd id="uploads">-</dd>
      <dt>read-through</dt><dd id="read-through">-</dd>
      <dt>bucket index</dt><dd id="bucket-index">-</dd>
      <dt>prefetch</dt><dd id="prefetch">-</dd>
    </dl>
  </section>
  <section class="wide">
    <h2>Hit rate over time</h2>
    <svg id="hit-rate-chart" viewBox="0 0 360 110" role="img" aria-label="hit rate (line) and lookups (bars) per 10 s"></svg>
    <div class="axis"><span id="chart-start"></span><span>line: hit rate · bars: lookups per 10 s</span><span>now</span></div>
  </section>
  <section class="wide">
    <h2>Recent warnings and errors</h2>
    <table><tbody id="errors"></tbody></table>
    <p class="empty" id="errors-empty">None since the daemon started.</p>
  </section>
</main>
`;

export const STATUS_PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>nx-s3-sidecar status</title>
<style>${STATUS_PAGE_STYLE}</style>
</head>
<body>
${STATUS_PAGE_BODY}
<script>${STATUS_PAGE_SCRIPT}</script>
</body>
</html>
`;
