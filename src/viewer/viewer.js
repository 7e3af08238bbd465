// The takeover viewer: shows the sandbox's desktop through noVNC so the user can log in
// for the agent, then tells the sidecar "I've logged in" or "I can't log in".
//
// The token arrives only in the URL fragment (never sent to any server by the browser);
// it is read once, removed from the address bar, and sent as a bearer token to
// `{page}/session|complete|cancel` and as a WebSocket subprotocol `grexal.v1.<token>`.
// Every URL is derived from the page's own path, so the page works behind a path prefix.
//
// A controlling viewer can also type text into the sandbox through a field of its own
// ("Type text into the sandbox"): for a password from a password manager or the clipboard,
// which the canvas cannot take (it sends keys the user presses, never a paste). The text goes
// as keys, never through the VNC clipboard, and is never logged.
//
// The screen (noVNC's canvas) takes every key, Tab included, which the sandbox needs for its
// forms; so a keyboard would be stuck in it. F6 (a browser's key for "next pane", which noVNC
// would otherwise swallow) is kept for the page: it moves the focus out of the screen, to the
// hint that says so (#screen-keys, which the canvas names as its description). From there
// Shift+Tab reaches the page's buttons and Tab goes back into the screen, which a controlling
// viewer can Tab to.
//
// For tests and people alike, the state is on <body>: data-state = connecting | live |
// reconnecting | replaced (another tab took control) | ended | error, data-outcome = completed | cancelled | timed_out | failed,
// and data-held-messages = how many of the relay's messages arrived before noVNC had loaded.

const $ = (id) => document.getElementById(id);

const OUTCOMES = {
  completed: {
    badge: 'Completed', tone: 'ok', icon: 'check',
    title: "You're all set",
    text: 'The login is done and the agent is carrying on. You can close this tab.',
  },
  cancelled: {
    badge: 'Cancelled', tone: 'muted', icon: 'cross',
    title: 'Login cancelled',
    text: "The agent has been told the login didn't happen. You can close this tab.",
  },
  timed_out: {
    badge: 'Timed out', tone: 'warn', icon: 'clock',
    title: 'Time ran out',
    text: 'This login session expired before it was finished. The agent has been told.',
  },
  failed: {
    badge: 'Failed', tone: 'bad', icon: 'alert',
    title: 'Something went wrong',
    text: 'The login session failed on the sandbox side. The agent has been told.',
  },
};

const ICONS = {
  check: ['M5 12.5l4.5 4.5L19 7.5'],
  cross: ['M7 7l10 10', 'M17 7L7 17'],
  clock: ['M12 7v5l3 2', 'M12 3a9 9 0 1 0 0 18a9 9 0 1 0 0-18'],
  alert: ['M12 8v5', 'M12 16.5h.01', 'M12 3a9 9 0 1 0 0 18a9 9 0 1 0 0-18'],
  lock: ['M6 11h12v9H6z', 'M8.5 11V8a3.5 3.5 0 0 1 7 0v3'],
};

const TOKEN_RE = /^[A-Za-z0-9._~-]{8,512}$/;
const BACKOFF_MS = [500, 1000, 2000, 4000, 8000];
const MAX_BACKOFF_MS = 10000;
// Past the deadline the server ends the takeover itself; give it this long to say so.
const EXPIRY_GRACE_MS = 15000;
// The relay's close code for a controlling viewer that a newer one replaced.
const CLOSE_REPLACED = 4001;
// How often a replaced tab asks whether the takeover is still live.
const REPLACED_POLL_MS = 5000;

const page = {
  base: location.pathname.replace(/\/+$/, ''),
  token: null,
  session: null,
  RFB: null,
  keysyms: null, // noVNC's codepoint -> keysym table (core/input/keysymdef.js)
  rfb: null,
  state: null,
  wasLive: false,
  attempt: 0,
  retryTimer: null,
  tickTimer: null,
  deadline: null, // performance.now() at which the takeover expires
  busy: false,
  early: null, // the WebSocket opened at the start, until noVNC takes it
  replacedPoll: null,
  loading: null, // the import of noVNC's module, started with the page
  name: null, // who the sign-in is for, once known (kept for a reload after the end)
};

// ---- state and rendering -------------------------------------------------------------

function setState(state, outcome) {
  page.state = state;
  document.body.dataset.state = state;
  if (outcome) document.body.dataset.outcome = outcome;
  if (state !== 'replaced') {
    clearInterval(page.replacedPoll);
    page.replacedPoll = null;
    $('btn-here').hidden = true;
  }
  const badge = {
    connecting: 'Connecting', live: 'Live', reconnecting: 'Reconnecting', error: 'Error',
    replaced: 'In another tab',
    ended: OUTCOMES[outcome] ? OUTCOMES[outcome].badge : 'Ended',
  }[state];
  $('badge-text').textContent = badge;
  const canAct = (state === 'live' || state === 'reconnecting') && page.session && page.session.access === 'control';
  $('btn-complete').hidden = !canAct;
  $('btn-cancel').hidden = !canAct;
  renderTyping();
  renderKeysHint();
  if (state === 'ended' || state === 'error') {
    $('timer').hidden = true;
    stopTimers();
  }
}

function svgIcon(name) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('fill', 'none');
  svg.setAttribute('stroke', 'currentColor');
  svg.setAttribute('stroke-width', '2.5');
  svg.setAttribute('stroke-linecap', 'round');
  svg.setAttribute('stroke-linejoin', 'round');
  for (const d of ICONS[name]) {
    const p = document.createElementNS(ns, 'path');
    p.setAttribute('d', d);
    svg.appendChild(p);
  }
  return svg;
}

function showOverlay({ icon, tone, title, text }) {
  const el = $('overlay-icon');
  el.replaceChildren();
  if (icon === 'spinner') {
    el.className = 'icon icon-spinner';
  } else {
    el.className = 'icon icon-' + tone;
    el.appendChild(svgIcon(icon));
  }
  $('overlay-title').textContent = title;
  $('overlay-text').textContent = text || '';
}

let toastTimer = null;
function toast(text) {
  const el = $('toast');
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, 5000);
}

function renderSession(s) {
  page.name = s.display_name || s.connection_id || null;
  $('display-name').textContent = s.display_name || s.connection_id || 'Sign-in';
  document.title = 'Log in to ' + (s.display_name || s.connection_id || 'your account');
  const hint = $('login-hint');
  hint.replaceChildren();
  if (s.login_url) {
    // Shown as text, never a link: the login happens inside the sandbox's browser below.
    const strong = document.createElement('strong');
    strong.textContent = hostOf(s.login_url);
    strong.title = s.login_url;
    hint.append('The agent needs you to log in at ', strong, '.');
  } else {
    hint.append('The agent needs you to log in to ' + (s.display_name || 'this service') + '.');
  }
  $('reason').textContent = s.reason ? '“' + s.reason + '”' : '';
  $('reason').title = s.reason || '';
  $('reason').hidden = !s.reason;
  const viewOnly = s.access === 'view';
  $('view-only').hidden = !viewOnly;
  $('view-note').hidden = !viewOnly;
  $('brief').hidden = false;
  renderTyping();
  renderKeysHint();
  fitReason();
}

// The reason is clamped to two lines so the desktop keeps its room; the rest is in its
// tooltip and behind "Show all" (a phone has no tooltips), offered only when something is
// cut off at this width.
function fitReason() {
  const reason = $('reason');
  const more = $('reason-more');
  const open = reason.classList.contains('open');
  more.hidden = reason.hidden || (!open && reason.scrollHeight <= reason.clientHeight);
  more.textContent = open ? 'Show less' : 'Show all';
  more.setAttribute('aria-expanded', String(open));
}

function toggleReason() {
  $('reason').classList.toggle('open');
  fitReason();
}

function hostOf(url) {
  try {
    const u = new URL(url);
    return u.host + (u.pathname && u.pathname !== '/' ? u.pathname : '');
  } catch (_) {
    return url;
  }
}

// ---- typing text into the sandbox -----------------------------------------------------

// Shown to a controlling viewer only (a watcher's keys are dropped by the relay anyway), and
// usable only while the desktop is live. Whatever was left in the field goes when it is not.
function renderTyping() {
  const control = !!page.session && page.session.access === 'control';
  const over = page.state === 'ended' || page.state === 'error';
  const usable = control && page.state === 'live' && !!page.rfb && !!page.keysyms;
  $('type-text').hidden = !control || over;
  $('type-text-input').disabled = !usable;
  $('btn-type').disabled = !usable;
  if (!usable) $('type-text-input').value = '';
}

// A character typing cannot produce: a control character (a pasted tab or line break).
function untypable(cp) {
  return cp < 0x20 || (cp >= 0x7f && cp < 0xa0);
}

// Types the field's text into the sandbox, where its focus is: each character as its keysym
// (noVNC's own table), pressed and released, as noVNC sends a key typed on the canvas; the X
// server finds the keycode and adds the Shift it needs. Then the canvas has the focus again,
// so Enter or Tab goes on in the sandbox. Not through the VNC clipboard: the desktop's
// clipboard is for nobody to read, and a password does not belong in it.
function typeText() {
  const input = $('type-text-input');
  const rfb = page.rfb;
  if (!rfb || page.state !== 'live' || input.disabled) return;
  const keysyms = [];
  for (const ch of input.value) {
    const cp = ch.codePointAt(0);
    if (untypable(cp)) {
      toast("This text holds a tab or line break, which can't be typed. Nothing was typed.");
      input.focus();
      return;
    }
    keysyms.push(page.keysyms.lookup(cp));
  }
  input.value = '';
  // No physical key (`code`): noVNC then sends the keysym itself, never a scancode.
  for (const keysym of keysyms) rfb.sendKey(keysym, null);
  rfb.focus();
}

// ---- the keyboard and the screen -------------------------------------------------------

// The hint on leaving the screen, for whoever can type into it (a watcher's canvas is not in
// the tab order, and nothing is typed into it).
function renderKeysHint() {
  const control = !!page.session && page.session.access === 'control';
  const over = page.state === 'ended' || page.state === 'error';
  $('screen-keys').hidden = !control || over;
}

// noVNC's canvas, made a named, described stop of the tab order for a controlling viewer.
function describeScreen(canvas, viewOnly) {
  canvas.tabIndex = viewOnly ? -1 : 0;
  canvas.setAttribute('role', 'application');
  canvas.setAttribute('aria-roledescription', 'remote screen');
  canvas.setAttribute('aria-label', "The sandbox's browser");
  canvas.setAttribute('aria-describedby', 'screen-keys');
}

// Caught on the way down to the canvas, before noVNC's own handler sees (and swallows) it.
function onScreenKey(e) {
  if (e.key !== 'F6' || e.ctrlKey || e.altKey || e.metaKey || e.isComposing) return;
  e.preventDefault();
  e.stopPropagation();
  const hint = $('screen-keys');
  hint.focus();
  // Not shown (a watcher, a touch screen): out of the screen all the same.
  if (document.activeElement !== hint && e.target.blur) e.target.blur();
}

// ---- remaining time ------------------------------------------------------------------

function startTimer(session, dateHeader) {
  if (typeof session.expires_at !== 'number') return;
  // The server's clock, not the user's: their clocks may disagree by minutes.
  const serverNowMs = Date.parse(dateHeader || '') || Date.now();
  page.deadline = performance.now() + (session.expires_at * 1000 - serverNowMs);
  clearInterval(page.tickTimer);
  page.tickTimer = setInterval(tick, 1000);
  tick();
}

function tick() {
  if (page.deadline === null) return;
  const left = Math.round((page.deadline - performance.now()) / 1000);
  const timer = $('timer');
  timer.hidden = false;
  if (left <= 0) {
    $('timer-text').textContent = "Time's up";
    timer.classList.add('urgent');
    // The server ends it; if it has not said so soon after, ask.
    if (-left * 1000 > EXPIRY_GRACE_MS && -left % 5 === 0) recheck();
    return;
  }
  const m = Math.floor(left / 60);
  const s = String(left % 60).padStart(2, '0');
  $('timer-text').textContent = m + ':' + s + ' left';
  timer.classList.toggle('urgent', left < 60);
}

function stopTimers() {
  clearInterval(page.replacedPoll);
  page.replacedPoll = null;
  clearInterval(page.tickTimer);
  clearTimeout(page.retryTimer);
  page.tickTimer = null;
  page.retryTimer = null;
}

// ---- talking to the sidecar ----------------------------------------------------------

async function call(method, suffix) {
  const resp = await fetch(page.base + suffix, {
    method,
    headers: { Authorization: 'Bearer ' + page.token },
    cache: 'no-store',
    credentials: 'omit',
    referrerPolicy: 'no-referrer',
  });
  let body = null;
  try { body = await resp.json(); } catch (_) { /* not JSON */ }
  return { status: resp.status, body: body || {}, date: resp.headers.get('Date') };
}

function outcomeOf(body) {
  const o = body.outcome || (body.takeover && body.takeover.outcome) || (body.error && body.error.outcome);
  return OUTCOMES[o] ? o : 'failed';
}

// Returns the session when the takeover is live; otherwise moves to ended/error and
// returns null. Throws on network errors (the caller decides whether to retry).
async function fetchSession() {
  const r = await call('GET', '/session');
  if (r.status === 200 && r.body.state === 'live') {
    page.session = r.body;
    return r;
  }
  if (r.status === 200 || r.status === 410) {
    end(outcomeOf(r.body));
  } else if (r.status === 401 || r.status === 403 || r.status === 404) {
    forgetToken();
    fail('This link is not valid or has expired',
      'Ask the agent for a new sign-in link if you still need to log in.');
  } else {
    throw new Error('session: HTTP ' + r.status);
  }
  return null;
}

// ---- the desktop ---------------------------------------------------------------------

function wsUrl() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return scheme + '//' + location.host + page.base + '/websocket';
}

// The WebSocket's subprotocols: `binary`, the token, and a request that the relay do the RFB
// handshake with the VNC server for us (pipelined-handshake): three round trips fewer before
// the first pixels.
function protocols() {
  return ['binary', 'grexal.v1.' + page.token, 'grexal.pipelined-handshake.v1'];
}

// A WebSocket opened as soon as the session says the takeover is live, while noVNC's modules
// are still loading: its opening (a TCP connection and the upgrade, a round trip or two over a
// real link) and the relay's handshake with the VNC server overlap the loading instead of
// following it. noVNC takes a WebSocket-like channel in place of a URL; until it attaches,
// this one holds what the relay sends (the greeting arrives as soon as it opens) and then
// hands it over as a WebSocket would, in order and in a later task, after noVNC has handled
// the open. The close code and reason are recorded before anyone hears of the close: 4000 +
// outcome means the takeover ended.
class HeldSocket {
  constructor(url, protos) {
    this.closed = null;
    this._ws = new WebSocket(url, protos);
    this._ws.binaryType = 'arraybuffer';
    this._handlers = { open: null, message: null, close: null, error: null };
    this._held = []; // [kind, event] not yet given to noVNC, oldest first
    this._draining = false;
    this._ws.onopen = (e) => this._event('open', e);
    this._ws.onmessage = (e) => this._event('message', e);
    this._ws.onerror = (e) => this._event('error', e);
    this._ws.onclose = (e) => {
      this.closed = { code: e.code, reason: e.reason };
      this._event('close', e);
    };
  }

  // What noVNC checks and uses of a channel.
  get readyState() { return this._ws.readyState; }
  get protocol() { return this._ws.protocol; }
  get binaryType() { return this._ws.binaryType; }
  set binaryType(t) { this._ws.binaryType = t; }
  send(data) { this._ws.send(data); }
  close(code, reason) { this._ws.close(code, reason); }
  get onopen() { return this._handlers.open; }
  set onopen(f) { this._handlers.open = f; }
  get onerror() { return this._handlers.error; }
  set onerror(f) { this._handlers.error = f; this._drainSoon(); }
  get onclose() { return this._handlers.close; }
  set onclose(f) { this._handlers.close = f; this._drainSoon(); }
  get onmessage() { return this._handlers.message; }
  set onmessage(f) { this._handlers.message = f; this._drainSoon(); }

  // Whether noVNC can still take this socket: not closed, nor about to be.
  usable() {
    return this._ws.readyState <= WebSocket.OPEN && !this.closed;
  }

  _event(kind, e) {
    // An open before noVNC attaches is not replayed: noVNC reads `readyState` when it
    // attaches and handles an open socket itself.
    if (kind === 'open') {
      if (this._handlers.open) this._handlers.open(e);
      return;
    }
    if (!this._held.length && this._handlers.message) {
      const f = this._handlers[kind];
      if (f) f(e);
      return;
    }
    this._held.push([kind, e]);
    this._drainSoon();
  }

  _drainSoon() {
    if (this._draining || !this._held.length || !this._handlers.message) return;
    this._draining = true;
    setTimeout(() => {
      this._draining = false;
      while (this._held.length) {
        const [kind, e] = this._held.shift();
        if (kind === 'message') {
          // How many messages arrived before noVNC took the socket (for tests and people).
          const held = Number(document.body.dataset.heldMessages || 0) + 1;
          document.body.dataset.heldMessages = String(held);
        }
        const f = this._handlers[kind];
        if (f) f(e);
      }
    }, 0);
  }
}

function connect() {
  clearTimeout(page.retryTimer);
  page.retryTimer = null;
  // The socket opened at the start, if it is still good; a new one otherwise (a reconnect).
  let ws = page.early;
  page.early = null;
  if (!ws || !ws.usable()) {
    if (ws) ws.close();
    ws = new HeldSocket(wsUrl(), protocols());
  }

  const rfb = new page.RFB($('screen'), ws, {});
  page.rfb = rfb;
  rfb.scaleViewport = true;
  rfb.resizeSession = false;
  rfb.viewOnly = page.session.access === 'view';
  // noVNC appends its screen, the canvas inside, to the target as it is made.
  const canvas = $('screen').lastElementChild && $('screen').lastElementChild.querySelector('canvas');
  if (canvas) describeScreen(canvas, rfb.viewOnly);
  rfb.background = 'transparent';
  rfb.addEventListener('connect', () => {
    if (page.rfb !== rfb) return;
    page.attempt = 0;
    page.wasLive = true;
    setState('live');
    if (!rfb.viewOnly) rfb.focus();
  });
  rfb.addEventListener('disconnect', () => {
    if (page.rfb !== rfb) return;
    page.rfb = null;
    renderTyping();
    onDisconnect(ws.closed);
  });
}

async function onDisconnect(closed) {
  if (page.state === 'ended' || page.state === 'error') return;
  if (closed && closed.code === 4000 && OUTCOMES[closed.reason]) {
    end(closed.reason);
    return;
  }
  if (closed && closed.code === CLOSE_REPLACED) {
    replaced();
    return;
  }
  setState(page.wasLive ? 'reconnecting' : 'connecting');
  showOverlay(page.wasLive
    ? { icon: 'spinner', title: 'Connection lost — reconnecting…', text: 'Hold on, the screen will be back in a moment.' }
    : { icon: 'spinner', title: 'Connecting to the sandbox\'s browser…', text: 'Still trying…' });
  await recheck();
}

// Asks the server whether the takeover is still live; reconnects with backoff if so.
async function recheck() {
  try {
    const r = await fetchSession();
    if (!r) return;
    // Not from 'replaced' (the deadline's rechecks come here too): taking control back would
    // make the other tab do the same, for good. Only "Use it here" takes it back.
    if (page.state !== 'live' && page.state !== 'replaced' && !page.rfb) scheduleRetry();
  } catch (_) {
    // The sandbox is unreachable for now: keep trying until the deadline has long passed.
    if (page.deadline !== null && performance.now() > page.deadline + EXPIRY_GRACE_MS * 2) {
      end('timed_out');
      return;
    }
    scheduleRetry(true);
  }
}

function scheduleRetry(sessionOnly) {
  if (page.retryTimer || page.state === 'ended' || page.state === 'error') return;
  const delay = BACKOFF_MS[Math.min(page.attempt, BACKOFF_MS.length - 1)] || MAX_BACKOFF_MS;
  page.attempt += 1;
  page.retryTimer = setTimeout(() => {
    page.retryTimer = null;
    if (!page.session) begin(); else if (sessionOnly) recheck(); else connect();
  }, Math.min(delay, MAX_BACKOFF_MS));
}

// Another tab (or window) opened with the control token took over. Reconnecting on our own
// would take control back, and that tab would do the same: two tabs knocking each other off
// twice a second. So this one waits for the user to say where they want to be.
function replaced() {
  clearTimeout(page.retryTimer);
  page.retryTimer = null;
  setState('replaced');
  showOverlay({
    icon: 'lock', tone: 'muted',
    title: 'Open in another tab',
    text: 'This sign-in is being used in another tab or window. Use it here instead?',
  });
  $('btn-here').hidden = false;
  // A takeover that ends meanwhile (finished in the other tab) is shown here too.
  clearInterval(page.replacedPoll);
  page.replacedPoll = setInterval(() => {
    fetchSession().catch(() => { /* unreachable for now: ask again later */ });
  }, REPLACED_POLL_MS);
}

function useHere() {
  if (page.state !== 'replaced') return;
  setState('connecting');
  showOverlay({ icon: 'spinner', title: 'Connecting to the sandbox\'s browser…', text: 'This takes a second or two.' });
  page.attempt = 0;
  connect();
}

function closeDesktop() {
  if (page.early) {
    page.early.close();
    page.early = null;
  }
  const rfb = page.rfb;
  page.rfb = null;
  if (rfb) {
    try { rfb.disconnect(); } catch (_) { /* already closed */ }
  }
}

function end(outcome) {
  if (page.state === 'ended') return;
  forgetToken();
  rememberEnding(outcome);
  closeDesktop();
  if (!page.session) $('display-name').textContent = page.name || 'Sign-in link';
  setState('ended', outcome);
  const o = OUTCOMES[outcome];
  showOverlay({ icon: o.icon, tone: o.tone, title: o.title, text: o.text });
}

// Keeps the token: the callers that know it is dead (the server refused it) forget it
// first, and otherwise this page's advice may well be a reload.
function fail(title, text) {
  closeDesktop();
  if (!page.session) $('display-name').textContent = 'Sign-in link';
  setState('error');
  showOverlay({ icon: 'lock', tone: 'bad', title, text });
}

// ---- the two answers -----------------------------------------------------------------

async function answer(kind) {
  if (page.busy || page.state === 'ended' || page.state === 'error') return;
  page.busy = true;
  $('btn-complete').disabled = true;
  $('btn-cancel').disabled = true;
  try {
    const r = await call('POST', '/' + kind);
    if (r.status === 200 || r.status === 410) {
      end(r.body.outcome && OUTCOMES[r.body.outcome] ? r.body.outcome : outcomeOf(r.body));
    } else if (r.status === 401) {
      forgetToken();
      fail('This link is not valid or has expired', 'Ask the agent for a new sign-in link if you still need to log in.');
    } else if (r.status === 403) {
      toast('This link can only watch the screen.');
    } else {
      toast('The sandbox did not answer (HTTP ' + r.status + '). Please try again.');
    }
  } catch (_) {
    toast('Could not reach the sandbox. Please try again.');
  } finally {
    page.busy = false;
    $('btn-complete').disabled = false;
    $('btn-cancel').disabled = false;
  }
}

// ---- start ---------------------------------------------------------------------------

const STORE_KEY = 'grexal.takeover:' + page.base;
// How the takeover ended, for a reload of this tab after the end: the token is forgotten
// then (it opens nothing any more), and the sandbox may be gone or the server have
// forgotten the takeover, which would make the reload say the link is not valid.
const ENDED_KEY = 'grexal.takeover.ended:' + page.base;

function readToken() {
  const params = new URLSearchParams(location.hash.slice(1));
  let token = params.get('token');
  // Out of the address bar and the history entry at once: no one should copy or
  // bookmark a live token by accident.
  history.replaceState(null, '', location.pathname + location.search);
  // Kept for this tab only, so a reload reconnects (the server lets a new controlling
  // connection replace the old one).
  try {
    if (token) {
      sessionStorage.setItem(STORE_KEY, token);
      sessionStorage.removeItem(ENDED_KEY);
    } else {
      token = sessionStorage.getItem(STORE_KEY);
    }
  } catch (_) { /* storage disabled: no reload support */ }
  return token && TOKEN_RE.test(token) ? token : null;
}

function forgetToken() {
  try { sessionStorage.removeItem(STORE_KEY); } catch (_) { /* storage disabled */ }
}

function rememberEnding(outcome) {
  try {
    sessionStorage.setItem(ENDED_KEY, JSON.stringify({ outcome, name: page.name }));
  } catch (_) { /* storage disabled */ }
}

// How the takeover ended, if this tab saw it end: {outcome, name}, or null.
function endedBefore() {
  try {
    const ended = JSON.parse(sessionStorage.getItem(ENDED_KEY));
    return ended && OUTCOMES[ended.outcome] ? ended : null;
  } catch (_) {
    return null;
  }
}

async function main() {
  page.token = readToken();
  setState('connecting');
  if (!page.token) {
    const ended = endedBefore();
    if (ended) {
      page.name = ended.name;
      end(ended.outcome);
      return;
    }
    fail('This link is not valid or has expired', 'The sign-in link is incomplete. Open the full link you were given.');
    return;
  }
  $('btn-complete').addEventListener('click', () => answer('complete'));
  $('btn-cancel').addEventListener('click', () => answer('cancel'));
  $('btn-here').addEventListener('click', useHere);
  $('btn-type').addEventListener('click', typeText);
  $('type-text-input').addEventListener('keydown', (e) => {
    if (e.key !== 'Enter' || e.isComposing) return;
    e.preventDefault();
    typeText();
  });
  $('reason-more').addEventListener('click', toggleReason);
  $('screen').addEventListener('keydown', onScreenKey, true);
  window.addEventListener('resize', fitReason);

  // noVNC's modules and the session at once: over a real link each costs round trips.
  // (keysymdef.js is among rfb.js's own imports: no request of its own.)
  page.loading = Promise.all([
    import('../novnc/core/rfb.js'),
    import('../novnc/core/input/keysymdef.js'),
  ]);
  page.loading.catch(() => { /* reported below, once the session is known */ });
  await begin();
}

// The first answer of the session, then the desktop. A sandbox that does not answer (a
// network error, a proxy's 502) is asked again with the usual backoff, the token kept: a
// blip on the first request must not cost the user their link.
async function begin() {
  let r;
  try {
    r = await fetchSession();
  } catch (_) {
    showOverlay({ icon: 'spinner', title: 'Connecting to the sandbox\'s browser…', text: 'The sandbox is not answering yet. Still trying…' });
    scheduleRetry(true);
    return;
  }
  if (!r) return;
  renderSession(r.body);
  startTimer(r.body, r.date);
  // The takeover is live and the token good: open the WebSocket now, while the modules are
  // still loading (they take several round trips; the session took one).
  page.early = new HeldSocket(wsUrl(), protocols());
  try {
    const [rfb, keysyms] = await page.loading;
    page.RFB = rfb.default;
    page.keysyms = keysyms.default;
  } catch (_) {
    fail('The viewer could not load', 'The remote-screen component did not load. Reload this page to try again.');
    return;
  }
  connect();
}

main();
