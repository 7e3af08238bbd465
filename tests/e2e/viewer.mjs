#!/usr/bin/env node
// Drives the takeover viewer page in the system Chromium like a person would.
//
//   node tests/e2e/viewer.mjs --url URL --screenshot out.png [--actions actions.json]
//        [--until live|error|ended] [--timeout-ms 30000] [--viewport 1280x900] [--mobile]
//        [--abort GLOB[@N]]...
//
// Opens URL, waits for data-state=live AND real pixels on noVNC's canvas (noVNC sizes its
// canvas before the first frame arrives, so "visible" is not enough), measures the time
// from opening the page to those pixels, performs the actions, takes the screenshot and
// prints one JSON line:
//   {"first_pixels_ms":..., "state":..., "outcome":..., "states":[...], "page":{...}, ...}
// plus wall-clock times (Date.now(), ms since the epoch) for latency figures measured
// against other processes: "first_pixels_at", "complete_clicked_at" (the page saw the
// click on "I've logged in") and "action_times" ([{type, start, end}]).
// With --until error|ended it waits for that state instead of pixels (e.g. a bad token).
// --mobile makes the browser a phone's (touch, the page's viewport meta honoured).
// --abort GLOB fails the browser's requests whose URL matches GLOB as a reset connection
// would, until the "unroute" action; GLOB@N only the first N of them (a network blip).
// Any failure exits 1 with a message on stderr (and a JSON line with "error" on stdout).
// Every console message of the page is in "console_messages" ([{type, text}]).
//
// Actions (a JSON array), desktop coordinates are the remote screen's pixels:
//   {"type":"click","x":640,"y":400}            click on the desktop (mapped to the scaled canvas)
//   {"type":"type","text":"hello"}              type into the desktop
//   {"type":"press","key":"Enter"}              press a key (Playwright key names)
//   {"type":"complete"} / {"type":"cancel"}     click "I've logged in" / "I can't log in"
//   {"type":"wait_state","state":"ended"}       wait until data-state is that state
//   {"type":"wait_seen","state":"reconnecting"} wait until the state has been seen at all
//   {"type":"wait_pixels"}                      wait for live + real pixels again
//   {"type":"screenshot","path":"x.png"}        take a screenshot now
//   {"type":"http","method":"POST","url":"/x"}  an HTTP request from the harness (not the
//                                               page), URL relative to --url; e.g. to make a
//                                               test server end or drop the session
//   {"type":"pause","ms":2000}                  let time pass
//   {"type":"open_tab"}                         open --url in a second tab (same browser) and
//                                               wait for its pixels; its snapshot is "tab"
//   {"type":"tab_wait_state","state":"x"}       wait until the second tab's data-state is x
//   {"type":"use_here"}                         click "Use it here" (a replaced tab)
//   {"type":"type_text","text":"pw","submit":"enter"|"click"}
//                                               paste text into "Type text into the sandbox"
//                                               and press Enter there (default) or click its
//                                               button
//   {"type":"viewport","width":390,"height":844} resize the page's viewport (e.g. a phone's)
//   {"type":"click_element","selector":"#x"}    click an element of the page itself
//   {"type":"reload"}                           reload the page, as the user would
//   {"type":"unroute"}                          stop the failures of --abort
//   {"type":"layout","name":"x"}                measure the page's layout now, into
//                                               "layouts": {"x": {...}} (see layoutProbe)
//   {"type":"focus","name":"x"}                 what has the keyboard now (an element's id,
//                                               else its tag), into "focuses": {"x": ...}
// Every wait takes an optional "timeout_ms" (default: --timeout-ms).

import { readFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { performance } from 'node:perf_hooks';
import { chromium } from 'playwright-core';

const CHROMIUM = process.env.GREXAL_CHROMIUM || '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--no-sandbox', '--headless=new', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run',
  // Never resolve an outside name: everything under test is on loopback.
  '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1',
];

function usage(msg) {
  process.stderr.write(`viewer.mjs: ${msg}\nusage: node viewer.mjs --url URL --screenshot out.png ` +
    `[--actions actions.json] [--until live|error|ended] [--timeout-ms N] [--viewport WxH] ` +
    `[--mobile] [--abort GLOB[@N]]...\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { until: 'live', timeoutMs: 30000, viewport: { width: 1280, height: 900 }, mobile: false, aborts: [] };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    if (flag === '--mobile') {
      opts.mobile = true;
      continue;
    }
    const value = argv[i + 1];
    if (value === undefined) usage(`${flag} needs a value`);
    i++;
    switch (flag) {
      case '--url': opts.url = value; break;
      case '--screenshot': opts.screenshot = value; break;
      case '--actions': opts.actionsFile = value; break;
      case '--until':
        if (!['live', 'error', 'ended'].includes(value)) usage('--until must be live, error or ended');
        opts.until = value; break;
      case '--timeout-ms':
        opts.timeoutMs = Number(value);
        if (!Number.isInteger(opts.timeoutMs) || opts.timeoutMs <= 0) usage('--timeout-ms must be a positive integer');
        break;
      case '--viewport': {
        const m = /^(\d{3,4})x(\d{3,4})$/.exec(value);
        if (!m) usage('--viewport must be WIDTHxHEIGHT');
        opts.viewport = { width: Number(m[1]), height: Number(m[2]) };
        break;
      }
      case '--abort': {
        const m = /^(.+?)(?:@(\d+))?$/.exec(value);
        opts.aborts.push({ glob: m[1], times: m[2] === undefined ? Infinity : Number(m[2]) });
        break;
      }
      default: usage(`unknown flag ${flag}`);
    }
  }
  if (!opts.url) usage('--url is required');
  if (!opts.screenshot) usage('--screenshot is required');
  opts.actions = [];
  if (opts.actionsFile) {
    try {
      opts.actions = JSON.parse(readFileSync(opts.actionsFile, 'utf8'));
    } catch (e) {
      usage(`cannot read --actions ${opts.actionsFile}: ${e.message}`);
    }
    if (!Array.isArray(opts.actions)) usage('--actions must hold a JSON array');
  }
  return opts;
}

// Runs in the page before its scripts: records every state and every CSP violation.
function recorder() {
  window.__viewerStates = [];
  window.__cspViolations = [];
  const record = () => {
    const s = document.body && document.body.dataset.state;
    const all = window.__viewerStates;
    if (s && all[all.length - 1] !== s) all.push(s);
  };
  // When "I've logged in" was really clicked (Date.now(), for latency figures).
  document.addEventListener('click', (e) => {
    if (e.target && e.target.closest && e.target.closest('#btn-complete')) window.__completeClickedAt = Date.now();
  }, true);
  document.addEventListener('securitypolicyviolation', (e) => {
    window.__cspViolations.push(`${e.effectiveDirective} ${e.blockedURI}`);
  });
  document.addEventListener('DOMContentLoaded', () => {
    record();
    new MutationObserver(record).observe(document.body, { attributes: true, attributeFilter: ['data-state'] });
  });
}

// In the page: 'pixels' once the page is live and noVNC's canvas is not uniform, a
// 'state:<s>' string if the page ended or failed instead, else false (keep polling).
function pixelsProbe() {
  const st = document.body.dataset.state;
  if (st === 'error' || st === 'ended') return 'state:' + st;
  if (st !== 'live') return false;
  const c = document.querySelector('#screen canvas');
  if (!c || !c.width || !c.height) return false;
  const w = Math.min(320, c.width);
  const h = Math.min(200, c.height);
  const probe = document.createElement('canvas');
  probe.width = w;
  probe.height = h;
  const ctx = probe.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(c, 0, 0, w, h);
  const d = ctx.getImageData(0, 0, w, h).data;
  for (let i = 4; i < d.length; i += 4) {
    if (d[i] !== d[0] || d[i + 1] !== d[1] || d[i + 2] !== d[2] || d[i + 3] !== d[3]) return 'pixels';
  }
  return false;
}

async function waitPixels(page, timeoutMs) {
  const handle = await page.waitForFunction(pixelsProbe, null, { polling: 'raf', timeout: timeoutMs });
  const v = await handle.jsonValue();
  if (v !== 'pixels') throw new Error(`the page went to ${v} instead of showing the desktop`);
}

async function waitState(page, state, timeoutMs) {
  await page.waitForFunction((s) => document.body.dataset.state === s, state, { polling: 100, timeout: timeoutMs });
}

async function waitSeen(page, state, timeoutMs) {
  await page.waitForFunction((s) => (window.__viewerStates || []).includes(s), state, { polling: 50, timeout: timeoutMs });
}

// Desktop pixel (x, y) → page coordinates on the scaled canvas.
async function desktopToPage(page, x, y) {
  const box = await page.evaluate(() => {
    const c = document.querySelector('#screen canvas');
    if (!c) return null;
    const r = c.getBoundingClientRect();
    return { left: r.left, top: r.top, width: r.width, height: r.height, fbw: c.width, fbh: c.height };
  });
  if (!box || !box.fbw) throw new Error('no desktop canvas to click on');
  if (!(x >= 0 && x < box.fbw && y >= 0 && y < box.fbh)) {
    throw new Error(`(${x},${y}) is outside the ${box.fbw}x${box.fbh} desktop`);
  }
  return {
    x: box.left + ((x + 0.5) * box.width) / box.fbw,
    y: box.top + ((y + 0.5) * box.height) / box.fbh,
  };
}

async function snapshot(page) {
  return page.evaluate(() => {
    const focusName = () => (document.activeElement
      ? document.activeElement.id || document.activeElement.tagName.toLowerCase()
      : null);
    const text = (id) => { const el = document.getElementById(id); return el ? el.textContent.trim() : null; };
    const shown = (id) => { const el = document.getElementById(id); return !!el && !el.hidden && el.offsetParent !== null; };
    const c = document.querySelector('#screen canvas');
    return {
      state: document.body.dataset.state || null,
      outcome: document.body.dataset.outcome || null,
      states: window.__viewerStates || [],
      held_messages: Number(document.body.dataset.heldMessages || 0),
      csp_violations: window.__cspViolations || [],
      complete_clicked_at: window.__completeClickedAt || null,
      url: location.href,
      page: {
        title: document.title,
        display_name: text('display-name'),
        badge: text('badge-text'),
        login_hint: shown('login-hint') ? text('login-hint') : null,
        reason: shown('reason') ? text('reason') : null,
        overlay_title: shown('overlay') ? text('overlay-title') : null,
        overlay_text: shown('overlay') ? text('overlay-text') : null,
        timer: shown('timer') ? text('timer-text') : null,
        view_only: shown('view-only'),
        buttons_visible: shown('btn-complete') && shown('btn-cancel'),
        use_here_visible: shown('btn-here'),
        // "Type text into the sandbox": its value's length only, never the value.
        type_text: (() => {
          const input = document.getElementById('type-text-input');
          return {
            visible: shown('type-text') && shown('type-text-input'),
            enabled: !!input && !input.disabled && !document.getElementById('btn-type').disabled,
            value_length: input ? input.value.length : null,
          };
        })(),
        // What has the keyboard: an element's id, else its tag.
        focus: focusName(),
        // How a keyboard leaves the screen: the hint, and whether the canvas is a tab stop
        // that the hint describes.
        screen_keys: (() => {
          const described = c ? c.getAttribute('aria-describedby') : null;
          const by = described ? document.getElementById(described) : null;
          return {
            visible: shown('screen-keys'),
            text: text('screen-keys'),
            canvas_described_by: by ? by.id : null,
            canvas_tab_index: c ? c.tabIndex : null,
            canvas_label: c ? c.getAttribute('aria-label') : null,
          };
        })(),
        toast: shown('toast') ? text('toast') : null,
      },
      canvas: c ? { width: c.width, height: c.height } : null,
    };
  });
}

// In the page: what a layout test needs. The page's own width against the viewport's, each
// visible button's content against its box, the lines the timer's text takes, the agent's
// reason (clamped or not, its tooltip, its "Show all"), and what this tab keeps in
// sessionStorage (the keys only).
function layoutProbe() {
  const lines = (el) => {
    if (!el || el.offsetParent === null) return 0;
    const range = document.createRange();
    range.selectNodeContents(el);
    return new Set([...range.getClientRects()].filter((r) => r.width > 0).map((r) => Math.round(r.top))).size;
  };
  const reason = document.getElementById('reason');
  const more = document.getElementById('reason-more');
  return {
    inner_width: window.innerWidth,
    scroll_width: document.documentElement.scrollWidth,
    buttons: [...document.querySelectorAll('button')].filter((b) => b.offsetParent !== null).map((b) => ({
      id: b.id,
      scroll_width: b.scrollWidth, client_width: b.clientWidth,
      scroll_height: b.scrollHeight, client_height: b.clientHeight,
      right: Math.ceil(b.getBoundingClientRect().right),
    })),
    timer_lines: lines(document.getElementById('timer-text')),
    reason: reason && {
      scroll_height: reason.scrollHeight,
      client_height: reason.clientHeight,
      title: reason.title || null,
      more_visible: !!more && !more.hidden && more.offsetParent !== null,
    },
    stored_keys: Object.keys(sessionStorage),
  };
}

async function shot(page, path) {
  mkdirSync(dirname(path) || '.', { recursive: true });
  await page.screenshot({ path });
}

// The second tab of "open_tab", if any.
let tab = null;
// What the "layout" actions measured, by name.
const layouts = {};
// What had the keyboard at each "focus" action, by name.
const focuses = {};

async function runAction(page, action, opts) {
  const timeout = action.timeout_ms || opts.timeoutMs;
  const secondTab = () => {
    if (!tab) throw new Error(`${action.type} before open_tab`);
    return tab;
  };
  switch (action.type) {
    case 'click': {
      const p = await desktopToPage(page, action.x, action.y);
      await page.mouse.click(p.x, p.y, { button: action.button || 'left' });
      break;
    }
    case 'type': await page.keyboard.type(String(action.text), { delay: 15 }); break;
    case 'press': await page.keyboard.press(String(action.key)); break;
    case 'complete': await page.click('#btn-complete', { timeout }); break;
    case 'cancel': await page.click('#btn-cancel', { timeout }); break;
    case 'wait_state': await waitState(page, action.state, timeout); break;
    case 'wait_seen': await waitSeen(page, action.state, timeout); break;
    case 'wait_pixels': await waitPixels(page, timeout); break;
    case 'screenshot': await shot(page, action.path); break;
    case 'pause': await new Promise((resolve) => setTimeout(resolve, Number(action.ms))); break;
    case 'open_tab': {
      tab = await page.context().newPage();
      await tab.addInitScript(recorder);
      const resp = await tab.goto(opts.url, { waitUntil: 'domcontentloaded', timeout });
      if (!resp || !resp.ok()) throw new Error(`second tab: GET answered ${resp ? resp.status() : 'nothing'}`);
      await waitPixels(tab, timeout);
      break;
    }
    case 'tab_wait_state': await waitState(secondTab(), action.state, timeout); break;
    case 'use_here': await page.click('#btn-here', { timeout }); break;
    case 'type_text': {
      // fill() is what a paste does: the whole value at once, then an input event.
      await page.fill('#type-text-input', String(action.text), { timeout });
      if (action.submit === 'click') await page.click('#btn-type', { timeout });
      else await page.press('#type-text-input', 'Enter', { timeout });
      break;
    }
    case 'viewport':
      await page.setViewportSize({ width: Number(action.width), height: Number(action.height) });
      break;
    case 'click_element': await page.click(String(action.selector), { timeout }); break;
    case 'reload': await page.reload({ waitUntil: 'domcontentloaded', timeout }); break;
    case 'unroute': await page.context().unrouteAll(); break;
    case 'layout':
      layouts[action.name] = await page.evaluate(layoutProbe);
      break;
    case 'focus':
      focuses[action.name] = await page.evaluate(() => (document.activeElement
        ? document.activeElement.id || document.activeElement.tagName.toLowerCase()
        : null));
      break;
    case 'http': {
      const resp = await fetch(new URL(action.url, opts.url), {
        method: action.method || 'GET', signal: AbortSignal.timeout(timeout),
      });
      if (resp.status >= 400) throw new Error(`${action.method || 'GET'} ${action.url} answered ${resp.status}`);
      break;
    }
    default: throw new Error(`unknown action ${JSON.stringify(action)}`);
  }
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: opts.timeoutMs });
  const consoleErrors = [];
  const consoleMessages = [];
  let page;
  let result = { first_pixels_ms: null };
  try {
    const context = await browser.newContext({ viewport: opts.viewport, isMobile: opts.mobile, hasTouch: opts.mobile });
    for (const abort of opts.aborts) {
      let left = abort.times;
      await context.route(abort.glob, (route) => {
        if (left <= 0) return route.fallback();
        left -= 1;
        return route.abort('connectionreset');
      });
    }
    page = await context.newPage();
    page.on('console', (m) => {
      consoleMessages.push({ type: m.type(), text: m.text().slice(0, 300) });
      if (m.type() === 'error') consoleErrors.push(m.text().slice(0, 300));
    });
    page.on('pageerror', (e) => consoleErrors.push(String(e).slice(0, 300)));
    await page.addInitScript(recorder);

    const t0 = performance.now();
    const resp = await page.goto(opts.url, { waitUntil: 'domcontentloaded', timeout: opts.timeoutMs });
    if (!resp || !resp.ok()) throw new Error(`GET ${new URL(opts.url).pathname} answered ${resp ? resp.status() : 'nothing'}`);
    if (opts.until === 'live') {
      await waitPixels(page, opts.timeoutMs);
      result.first_pixels_ms = Math.round(performance.now() - t0);
      result.first_pixels_at = Date.now();
    } else {
      await waitState(page, opts.until, opts.timeoutMs);
    }
    result.action_times = [];
    for (const action of opts.actions) {
      const start = Date.now();
      await runAction(page, action, opts);
      result.action_times.push({ type: action.type, start, end: Date.now() });
    }
    await shot(page, opts.screenshot);
    result = {
      ...result, ...(await snapshot(page)), console_errors: consoleErrors, console_messages: consoleMessages,
    };
    if (tab) result.tab = await snapshot(tab);
    if (Object.keys(layouts).length) result.layouts = layouts;
    if (Object.keys(focuses).length) result.focuses = focuses;
    process.stdout.write(JSON.stringify(result) + '\n');
  } catch (e) {
    let state = null;
    if (page) {
      try { state = await snapshot(page); } catch (_) { /* page gone */ }
      try { await shot(page, opts.screenshot); } catch (_) { /* page gone */ }
    }
    process.stdout.write(JSON.stringify({
      error: e.message, ...result, ...(state || {}), console_errors: consoleErrors, console_messages: consoleMessages,
    }) + '\n');
    process.stderr.write(`viewer.mjs: ${e.message}\n`);
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  process.stderr.write(`viewer.mjs: ${e.message}\n`);
  process.exit(1);
});
