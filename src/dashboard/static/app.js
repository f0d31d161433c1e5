// Tollgate team dashboard: one ES module, no dependencies, no build step.
//
// The API key lives only in `token` below: never in storage, cookies, the
// URL or the console. Reloading the page signs out. Every call goes to
// /api on this origin with `Authorization: Bearer`. The page follows the
// strict CSP of src/dashboard/mod.rs: no inline script or style; sizes are
// set through the CSSOM only.

const SVG_NS = 'http://www.w3.org/2000/svg';
const root = document.getElementById('app');
const iconHref = document.querySelector('link[rel="icon"]')?.getAttribute('href') || '';

let token = null; // the secret, in memory only
let session = null; // {operator, me, teams, teamId}
let seq = 0; // bumped on every navigation: late answers of an old view are dropped
let flash = null; // {view, node}: a one-shot panel (a new key, a token) above a view
const usageDefaults = {preset: 'this-month', from: '', to: '', split: 'member', tag: ''};
let usageState = {...usageDefaults};

// === DOM ===

function setAttrs(el, attrs) {
  for (const name in attrs || {}) {
    const value = attrs[name];
    if (value == null || value === false) continue;
    if (typeof value === 'function') el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? '' : value);
  }
}
function add(el, kids) {
  for (const kid of kids.flat(9)) {
    if (kid != null && kid !== false) el.append(kid instanceof Node ? kid : String(kid));
  }
  return el;
}
const h = (tag, attrs, ...kids) => {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  return add(el, kids);
};
const s = (tag, attrs, ...kids) => {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  return add(el, kids);
};
const enc = encodeURIComponent;
const frag = (...kids) => add(document.createDocumentFragment(), kids);

function icon(d) {
  return s('svg', {class: 'ico', viewBox: '0 0 24 24', 'aria-hidden': 'true', focusable: 'false'}, s('path', {d}));
}

function busy(button, on, label) {
  if (on) {
    button.dataset.label = button.textContent;
    if (label) button.textContent = label;
    button.disabled = true;
    button.setAttribute('aria-busy', 'true');
  } else if (button.dataset.label != null) {
    button.textContent = button.dataset.label;
    delete button.dataset.label;
    button.disabled = false;
    button.removeAttribute('aria-busy');
  }
}

// === Money: exact decimal strings, shown rounded to cents ===

const NANO = 1000000000n;
const fmtUsd = new Intl.NumberFormat(undefined, {style: 'currency', currency: 'USD'});
const fmtUsdCompact = new Intl.NumberFormat(undefined, {style: 'currency', currency: 'USD', notation: 'compact', maximumFractionDigits: 1});
const fmtNum = new Intl.NumberFormat();
const fmtPct = new Intl.NumberFormat(undefined, {style: 'percent', maximumFractionDigits: 0});

/** A decimal string (up to 9 decimals) as integer nano-dollars. */
function nano(text) {
  const m = /^([+-]?)(\d*)(?:\.(\d*))?$/.exec(String(text ?? '0').trim());
  if (!m) return 0n;
  const value = BigInt(m[2] || '0') * NANO + BigInt(((m[3] || '') + '000000000').slice(0, 9));
  return m[1] === '-' ? -value : value;
}
/** Rounded half away from zero to cents, by BigInt arithmetic. */
function centsText(value) {
  const negative = value < 0n;
  const cents = ((negative ? -value : value) + 5000000n) / 10000000n;
  const text = `${negative && cents ? '-' : ''}${cents / 100n}.${String(cents % 100n).padStart(2, '0')}`;
  return fmtUsd.format(text); // a numeric string is formatted exactly
}
const usdText = (text) => usdNano(nano(text));
function usdNano(value) {
  if (value !== 0n && value > -5000000n && value < 5000000n) return `${value < 0n ? '−' : ''}< ${fmtUsd.format('0.01')}`;
  return centsText(value);
}
function money(text, cls) {
  if (text == null) return h('span', {class: 'muted'}, '—');
  return h('span', {class: `money ${cls || ''}`, title: `Exact: $${text}`, 'data-usd': text}, usdText(text));
}
const byCost = (a, b) => {
  const d = nano(b.cost_usd) - nano(a.cost_usd);
  return d > 0n ? 1 : d < 0n ? -1 : String(a.label).localeCompare(String(b.label));
};
/** part / whole as a float in [0, 1] (for geometry only). */
const ratio = (part, whole) => (whole > 0n ? Number((part * 100000n) / whole) / 100000 : 0);

// === Dates: the API's months and days are UTC ===

const fmtDay = new Intl.DateTimeFormat(undefined, {month: 'short', day: 'numeric', timeZone: 'UTC'});
const fmtDayNum = new Intl.DateTimeFormat(undefined, {day: 'numeric', timeZone: 'UTC'});
const fmtDayLong = new Intl.DateTimeFormat(undefined, {weekday: 'short', month: 'short', day: 'numeric', year: 'numeric', timeZone: 'UTC'});
const fmtMonth = new Intl.DateTimeFormat(undefined, {month: 'long', year: 'numeric', timeZone: 'UTC'});
const fmtDate = new Intl.DateTimeFormat(undefined, {dateStyle: 'medium'});
const fmtDateTime = new Intl.DateTimeFormat(undefined, {dateStyle: 'medium', timeStyle: 'short'});
const pad = (n) => String(n).padStart(2, '0');
const ymd = (d) => `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
const dayDate = (key) => new Date(`${key}T00:00:00Z`);
const DAY = 86400000;
function todayUtc() {
  const now = new Date();
  return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate()));
}
function monthRange(offset) {
  const t = todayUtc();
  return {
    from: ymd(new Date(Date.UTC(t.getUTCFullYear(), t.getUTCMonth() + offset, 1))),
    to: ymd(new Date(Date.UTC(t.getUTCFullYear(), t.getUTCMonth() + offset + 1, 0))),
  };
}
function lastDays(n) {
  const t = todayUtc();
  return {from: ymd(new Date(t - (n - 1) * DAY)), to: ymd(t)};
}
function daysBetween(from, to) {
  const out = [];
  for (let d = dayDate(from); ymd(d) <= to && out.length < 1200; d = new Date(+d + DAY)) out.push(ymd(d));
  return out;
}
const when = (iso) => (iso ? fmtDate.format(new Date(iso)) : '—');

// === API ===

class ApiError extends Error {
  constructor(message, status, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function request(path, {method = 'GET', body} = {}) {
  const secret = token;
  const headers = {authorization: `Bearer ${secret}`};
  if (body !== undefined) headers['content-type'] = 'application/json';
  let res;
  try {
    res = await fetch(`/api${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'omit',
    });
  } catch {
    throw new ApiError('The gateway could not be reached. Check the connection and try again.', 0);
  }
  if (res.ok) return res;
  let message = `The request failed (HTTP ${res.status}).`;
  let code;
  try {
    const json = await res.json();
    if (json?.error?.message) ({message, code} = json.error);
  } catch {
    // not JSON: keep the generic message
  }
  if (res.status === 401 && session && token === secret) {
    signOut('Your key is no longer accepted (revoked or unknown). Sign in again.');
  }
  throw new ApiError(message, res.status, code);
}
const api = async (path, options) => (await request(path, options)).json();

// === Session ===

const sortTeams = (teams) => [...teams].sort((a, b) => a.name.localeCompare(b.name));
const currentTeam = () => session?.teams.find((t) => t.id === session.teamId) || null;

async function signIn(secret) {
  token = secret;
  try {
    let me = null;
    // User keys have a known shape; anything else is taken for the operator
    // token (which /api/me refuses with 403: it is not a user).
    let operator = !/^tg-[A-Za-z0-9]{32,}$/.test(secret);
    if (!operator) {
      try {
        me = await api('/me');
      } catch (error) {
        if (error.status !== 403) throw error;
        operator = true;
      }
    }
    const teams = sortTeams(operator ? (await api('/teams')).data : me.teams);
    session = {operator, me, teams, teamId: teams[0]?.id ?? null};
  } catch (error) {
    token = null;
    session = null;
    throw error;
  }
}

async function reloadSession(preferTeam) {
  if (session.operator) session.teams = sortTeams((await api('/teams')).data);
  else {
    session.me = await api('/me');
    session.teams = sortTeams(session.me.teams);
  }
  if (preferTeam) session.teamId = preferTeam;
  if (!currentTeam()) session.teamId = session.teams[0]?.id ?? null;
  renderShell();
}

function signOut(notice) {
  token = null;
  session = null;
  flash = null;
  usageState = {...usageDefaults};
  memberFilter = '';
  expanded.clear();
  seq++;
  for (const d of document.querySelectorAll('dialog')) d.remove();
  toastBox.replaceChildren();
  history.replaceState(null, '', location.pathname + location.search);
  renderSignIn(notice);
}

// === Toasts ===

const toastBox = h('div', {class: 'toasts', role: 'status', 'aria-live': 'polite'});
document.body.append(toastBox);
function toast(message, kind = 'ok') {
  const item = h('div', {class: `toast ${kind}`}, message);
  toastBox.append(item);
  while (toastBox.children.length > 3) toastBox.firstChild.remove();
  setTimeout(() => item.remove(), kind === 'error' ? 7000 : 4000);
}

// === Sign-in ===

function renderSignIn(notice) {
  seq++;
  document.title = 'Sign in · Tollgate';
  const input = h('input', {
    id: 'signin-key', type: 'password', autocomplete: 'off', spellcheck: 'false',
    autocapitalize: 'off', required: true, 'aria-describedby': 'signin-help',
  });
  const error = h('p', {class: 'form-error', role: 'alert'});
  const reveal = h('button', {
    type: 'button', class: 'btn ghost sm reveal', 'aria-pressed': 'false', 'aria-controls': 'signin-key',
    onclick() {
      const shown = input.type === 'text';
      input.type = shown ? 'password' : 'text';
      reveal.setAttribute('aria-pressed', String(!shown));
      reveal.textContent = shown ? 'Show' : 'Hide';
    },
  }, 'Show');
  const submit = h('button', {type: 'submit', class: 'btn primary block'}, 'Sign in');
  const form = h('form', {
    class: 'stack',
    async onsubmit(event) {
      event.preventDefault();
      error.textContent = '';
      const secret = input.value.trim();
      if (!secret) {
        error.textContent = 'Paste an API key or the operator token.';
        return;
      }
      busy(submit, true, 'Signing in…');
      try {
        await signIn(secret);
        input.value = '';
        startApp();
      } catch (e) {
        busy(submit, false);
        error.textContent = e.status === 401 ? 'That key or token was not accepted.' : e.message;
        input.focus();
      }
    },
  },
  h('div', {class: 'field'},
    h('label', {for: 'signin-key'}, 'API key or operator token'),
    h('div', {class: 'input-row'}, input, reveal)),
  error, submit);
  root.replaceChildren(h('main', {class: 'signin'},
    h('div', {class: 'signin-card card'},
      h('div', {class: 'brand brand-lg'}, h('img', {src: iconHref, alt: '', width: 32, height: 32}), 'Tollgate'),
      h('h1', null, 'Sign in to your team'),
      notice ? h('p', {class: 'notice'}, notice) : null,
      form,
      h('p', {class: 'fineprint', id: 'signin-help'},
        'Your key stays in this tab’s memory only: it is never stored. Reloading or closing the tab signs you out.'))));
  input.focus();
}

// === Shell and routing ===

const VIEWS = {
  overview: {title: 'Overview', team: true, icon: 'M4 4h7v7H4zM13 4h7v7h-7zM4 13h7v7H4zM13 13h7v7h-7z'},
  members: {title: 'Members', team: true, icon: 'M9 11a4 4 0 1 0 0-8 4 4 0 0 0 0 8zM2 21v-1a6 6 0 0 1 6-6h2a6 6 0 0 1 6 6v1M16 3.3a4 4 0 0 1 0 7.4M22 21v-1a6 6 0 0 0-4-5.6'},
  usage: {title: 'Usage', team: true, icon: 'M3 21h18M6 17V11M11 17V5M16 17v-8M21 17v-4'},
  settings: {title: 'Settings', team: true, icon: 'M4 6h9M17 6h3M15 4v4M4 12h3M11 12h9M9 10v4M4 18h11M19 18h1M17 16v4'},
  mine: {title: 'My usage', team: false, user: true, icon: 'M12 12a4 4 0 1 0 0-8 4 4 0 0 0 0 8zM4 21v-1a6 6 0 0 1 6-6h4a6 6 0 0 1 6 6v1'},
  keys: {title: 'My keys', team: false, user: true, icon: 'M20 8.5a4.5 4.5 0 1 1-9 0 4.5 4.5 0 0 1 9 0zM12.3 11.7 3 21M6 18l2.5 2.5M8.5 15.5 11 18'},
  // Pages a link opens (`/invite/{token}`, `/join/{token}`); not in the nav.
  invite: {title: 'Invitation', team: false, user: true, hidden: true},
  join: {title: 'Join a team', team: false, user: true, hidden: true},
};

/** The token of an invitation or join page: `#/invite/TOKEN`. */
function linkToken() {
  const m = /^#\/(?:invite|join)\/([A-Za-z0-9_-]+)/.exec(location.hash);
  return m ? m[1] : null;
}

function routeName() {
  const m = /^#\/(\w+)/.exec(location.hash);
  return m && VIEWS[m[1]] && !(VIEWS[m[1]].user && session?.operator) ? m[1] : null;
}
const defaultRoute = () => (session.operator || session.teams.length ? 'overview' : 'keys');
function go(route) {
  if (location.hash === `#/${route}`) renderView();
  else location.hash = `#/${route}`;
}
window.addEventListener('hashchange', () => {
  if (session) renderView();
});

function startApp() {
  renderShell();
  if (routeName()) renderView();
  else go(defaultRoute());
}

function renderShell() {
  const team = currentTeam();
  const teams = session.teams;
  let picker;
  if (teams.length > 1) {
    const select = h('select', {
      id: 'team-select',
      onchange() {
        session.teamId = select.value;
        renderShell();
        renderView();
        document.getElementById('team-select')?.focus();
      },
    }, teams.map((t) => h('option', {value: t.id, selected: t.id === session.teamId}, t.name)));
    picker = [h('label', {class: 'label', for: 'team-select'}, session.operator ? 'Team (all teams)' : 'Team'), select];
  } else {
    picker = [h('span', {class: 'label'}, 'Team'), h('span', {class: `team-name ${team ? '' : 'muted'}`}, team ? team.name : 'No team yet')];
  }
  const nav = h('nav', {class: 'nav', 'aria-label': 'Sections'},
    Object.entries(VIEWS)
      .filter(([, view]) => !view.hidden && !(view.user && session.operator))
      .map(([id, view]) => h('a', {
        href: `#/${id}`, id: `nav-${id}`,
        onclick(event) {
          if (location.hash === `#/${id}`) {
            event.preventDefault();
            renderView();
          }
        },
      }, icon(view.icon), h('span', null, view.title))));
  const who = session.operator ? 'Operator' : session.me.email;
  const skip = h('button', {type: 'button', class: 'skip', onclick: () => document.getElementById('page-title')?.focus()}, 'Skip to content');
  root.replaceChildren(skip, h('div', {class: 'shell'},
    h('header', {class: 'side'},
      h('a', {class: 'brand', href: '#/overview'}, h('img', {src: iconHref, alt: '', width: 28, height: 28}), 'Tollgate'),
      h('div', {class: 'team-pick'}, picker, team ? h('span', {class: `role role-${team.role}`}, session.operator ? 'operator' : team.role) : null),
      nav,
      h('div', {class: 'who'},
        h('span', {class: 'who-name', title: who}, who),
        h('button', {type: 'button', class: 'btn sm', id: 'sign-out', onclick: () => signOut('You signed out. The key was forgotten.')}, 'Sign out'))),
    h('main', {class: 'main', id: 'main', tabindex: '-1'})));
}

function makeCtx(view, mySeq) {
  const team = currentTeam();
  const role = team?.role ?? null;
  const ctx = {
    view, seq: mySeq, team, teamId: team?.id, role,
    isAdmin: role === 'owner' || role === 'admin',
    isOwner: role === 'owner',
    t: team ? `/teams/${enc(team.id)}` : '',
  };
  ctx.reload = () => load(ctx);
  return ctx;
}

function renderView() {
  const name = routeName() || defaultRoute();
  const visible = VIEWS[name].hidden ? null : name;
  const mySeq = ++seq;
  const main = document.getElementById('main');
  if (!main) return;
  for (const a of document.querySelectorAll('.nav a')) {
    if (a.id === `nav-${visible}`) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const view = VIEWS[name];
  const ctx = makeCtx(name, mySeq);
  document.title = `${view.title} · ${ctx.team && view.team ? `${ctx.team.name} · ` : ''}Tollgate`;
  const sub = view.team
    ? (ctx.team ? `${ctx.team.name} · ${session.operator ? 'operator access' : `you are ${{owner: 'the owner', admin: 'an admin', member: 'a member'}[ctx.role]}`}` : '')
    : (session.operator ? '' : session.me.email);
  const body = h('div', {id: 'view-body', class: 'view-body', 'data-view': name});
  main.replaceChildren(h('div', {class: 'page-head'}, h('h1', {id: 'page-title', tabindex: '-1'}, view.title), sub ? h('p', {class: 'sub'}, sub) : null), body);
  window.scrollTo(0, 0);
  if (view.team && !ctx.team) {
    body.append(emptyState(session.operator ? 'No teams yet' : 'You are not in a team yet',
      session.operator ? 'Teams appear here once users create them.' : 'Create a team, or accept an invitation, on the My keys page.',
      session.operator ? null : h('a', {class: 'btn primary', href: '#/keys'}, 'Go to My keys')));
    body.dataset.ready = name;
    return;
  }
  body.append(skeleton(name));
  load(ctx, true);
}

async function load(ctx, first) {
  const body = document.getElementById('view-body');
  if (!body || ctx.seq !== seq) return;
  body.setAttribute('aria-busy', 'true');
  try {
    const node = await RENDER[ctx.view](ctx);
    if (ctx.seq !== seq) return;
    const focused = document.activeElement?.id;
    const y = window.scrollY;
    body.replaceChildren(node);
    if (flash && flash.view === ctx.view) flash = null;
    if (!first) window.scrollTo(0, y);
    if (focused && body.contains(document.getElementById(focused))) document.getElementById(focused).focus({preventScroll: true});
    body.dataset.ready = ctx.view;
  } catch (error) {
    if (ctx.seq !== seq || !session) return;
    body.replaceChildren(errorBox(error, () => {
      body.replaceChildren(skeleton(ctx.view));
      load(ctx, true);
    }));
  } finally {
    body.removeAttribute('aria-busy');
  }
}

// === Building blocks ===

function card(title, actions, ...kids) {
  const id = `card-${title.toLowerCase().replace(/[^a-z0-9]+/g, '-')}`;
  return h('section', {class: 'card', 'aria-labelledby': id},
    h('div', {class: 'card-head'}, h('h2', {id}, title), actions ? h('div', {class: 'card-actions'}, actions) : null),
    kids.length ? h('div', {class: 'card-body'}, kids) : null);
}
function emptyState(title, text, action) {
  return h('div', {class: 'empty'}, h('p', {class: 'empty-title'}, title), text ? h('p', {class: 'muted'}, text) : null, action);
}
function errorBox(error, retry) {
  return h('div', {class: 'alert', role: 'alert'},
    h('div', null, h('strong', null, 'Could not load this page.'), ' ', error.message),
    retry ? h('button', {type: 'button', class: 'btn sm', onclick: retry}, 'Try again') : null);
}
function skeleton(view) {
  const block = (cls) => h('div', {class: `skel ${cls}`});
  const stats = h('div', {class: 'stats'}, [0, 1, 2, 3].map(() => h('div', {class: 'card stat'}, block('line short'), block('line big'), block('line'))));
  const rows = (n) => h('div', {class: 'card'}, h('div', {class: 'card-head'}, block('line short')), h('div', {class: 'card-body'}, Array.from({length: n}, () => block('line row'))));
  const parts = {
    overview: [stats, h('div', {class: 'card'}, h('div', {class: 'card-head'}, block('line short')), h('div', {class: 'card-body'}, block('chart-skel'))), h('div', {class: 'grid2'}, rows(5), rows(5))],
    usage: [block('toolbar-skel'), stats, h('div', {class: 'card'}, h('div', {class: 'card-head'}, block('line short')), h('div', {class: 'card-body'}, block('chart-skel'))), rows(4)],
  };
  return h('div', {class: 'stack', 'aria-label': 'Loading', role: 'progressbar'}, parts[view] || [rows(3), rows(5)]);
}
function stat(label, value, sub) {
  return h('section', {class: 'card stat'}, h('h2', {class: 'stat-label'}, label), h('p', {class: 'stat-value'}, value), h('p', {class: 'stat-sub'}, sub || '\u00a0'));
}
function meter(fraction, cls) {
  const bar = h('span', {class: cls || ''});
  bar.style.width = `${Math.max(0, Math.min(1, fraction)) * 100}%`;
  return h('div', {class: 'meter', 'aria-hidden': 'true'}, bar);
}
function pill(text, cls) {
  return h('span', {class: `pill ${cls || ''}`}, text);
}
const AVATAR_COLORS = 8;
function avatar(text) {
  let hash = 0;
  for (const ch of text) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return h('span', {class: `avatar a${hash % AVATAR_COLORS}`, 'aria-hidden': 'true'}, (text[0] || '?').toUpperCase());
}
function field(label, id, control, help) {
  return h('div', {class: 'field'}, h('label', {for: id}, label), control, help ? h('p', {class: 'help', id: `${id}-help`}, help) : null);
}

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = h('textarea', {class: 'sr-only', readonly: true});
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand('copy');
    area.remove();
  }
  const label = button.textContent;
  button.textContent = 'Copied';
  setTimeout(() => (button.textContent = label), 1500);
}
function secretField(label, id, value) {
  const input = h('input', {id, class: 'mono', readonly: true, value, spellcheck: 'false'});
  input.addEventListener('focus', () => input.select());
  const button = h('button', {type: 'button', class: 'btn sm', 'aria-label': `Copy ${label.toLowerCase()}`, onclick: () => copyText(value, button)}, 'Copy');
  return h('div', {class: 'field'}, h('label', {for: id}, label), h('div', {class: 'input-row'}, input, button));
}
/** A one-shot panel for a secret shown once (a new key, an invitation token). */
function secretPanel(title, text, fields, note) {
  const panel = h('section', {class: 'callout', 'aria-label': title},
    h('div', {class: 'callout-head'}, h('h2', null, title),
      h('button', {type: 'button', class: 'btn ghost sm', onclick: () => panel.remove()}, 'Dismiss')),
    text ? h('p', null, text) : null,
    fields.map(([label, id, value]) => secretField(label, id, value)),
    note ? h('p', {class: 'help'}, note) : null);
  return panel;
}
function takeFlash(view) {
  return flash && flash.view === view ? flash.node : null;
}

/** A modal dialog with a form; `onSubmit` throws to keep it open with a message. */
function openDialog({title, body, submitLabel = 'Save', danger = false, onSubmit}) {
  const error = h('p', {class: 'form-error', role: 'alert'});
  const submit = h('button', {type: 'submit', class: `btn ${danger ? 'danger' : 'primary'}`}, submitLabel);
  const dialog = h('dialog', {class: 'dialog', 'aria-labelledby': 'dialog-title'});
  const form = h('form', {
    async onsubmit(event) {
      event.preventDefault();
      error.textContent = '';
      busy(submit, true);
      try {
        await onSubmit();
        dialog.close();
      } catch (e) {
        error.textContent = e.message;
      } finally {
        busy(submit, false);
      }
    },
  },
  h('h2', {id: 'dialog-title'}, title),
  h('div', {class: 'dialog-body'}, body),
  error,
  h('div', {class: 'dialog-actions'}, h('button', {type: 'button', class: 'btn', onclick: () => dialog.close()}, 'Cancel'), submit));
  dialog.append(form);
  dialog.addEventListener('close', () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  return dialog;
}
const confirmDialog = (title, text, submitLabel, onSubmit, danger = true) =>
  openDialog({title, body: h('p', null, text), submitLabel, danger, onSubmit});

function moneyInput(id, value, placeholder, describedBy) {
  return h('div', {class: 'input-money'}, h('span', {'aria-hidden': 'true'}, '$'),
    h('input', {id, inputmode: 'decimal', autocomplete: 'off', value: value ?? '', placeholder, 'aria-describedby': describedBy}));
}
function readLimit(text, what) {
  const value = text.trim().replace(/^\$/, '');
  if (value === '') return null;
  if (!/^\d+(\.\d{1,9})?$/.test(value)) throw new Error(`Enter the ${what} in US dollars, like 25 or 12.50 (up to 9 decimals).`);
  return value;
}

// === Charts (SVG drawn here) ===

function niceScale(max) {
  if (!(max > 0)) return {step: 0.25, top: 1};
  const raw = max / 4;
  const p = 10 ** Math.floor(Math.log10(raw));
  const f = raw / p;
  const step = (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * p;
  return {step, top: step * 4};
}
function axisUsd(value, step) {
  if (value === 0) return fmtUsd.format(0).replace(/[.,]00$/, '');
  if (step >= 1000) return fmtUsdCompact.format(value);
  let digits = 0;
  while (digits < 6 && Math.abs(Math.round(step * 10 ** digits) - step * 10 ** digits) > 1e-6) digits++;
  if (digits === 1) digits = 2;
  return new Intl.NumberFormat(undefined, {style: 'currency', currency: 'USD', minimumFractionDigits: digits, maximumFractionDigits: digits}).format(value);
}

/**
 * A (stacked) bar chart: `keys` are days, each series has `values` in
 * nano-dollars per key. Redrawn at the container's width.
 */
function barChart({keys, series, label, xLabel, tip, empty}) {
  const box = h('div', {class: 'chart', role: 'img', 'aria-label': label});
  let drawnWidth = 0;
  const draw = (W) => {
    const H = 240, ml = 60, mr = 8, mt = 12, mb = 28;
    const pw = W - ml - mr, ph = H - mt - mb;
    const totals = keys.map((_, i) => series.reduce((sum, se) => sum + se.values[i], 0n));
    const maxNano = totals.reduce((m, v) => (v > m ? v : m), 0n);
    const {step, top} = niceScale(Number(maxNano) / 1e9);
    const svg = s('svg', {width: W, height: H, viewBox: `0 0 ${W} ${H}`, 'aria-hidden': 'true', focusable: 'false'});
    for (let i = 0; i <= 4; i++) {
      const y = Math.round(mt + ph - (i / 4) * ph) + 0.5;
      svg.append(s('line', {class: i ? 'grid' : 'axis', x1: ml, x2: W - mr, y1: y, y2: y}),
        s('text', {class: 'tick', x: ml - 8, y: y + 4, 'text-anchor': 'end'}, axisUsd(step * i, step)));
    }
    const band = pw / keys.length;
    const bw = Math.max(1, Math.min(28, band * 0.7));
    keys.forEach((key, i) => {
      const x = ml + band * i + (band - bw) / 2;
      let y = mt + ph;
      const col = s('g', {class: 'col'});
      col.append(s('rect', {class: 'hit', x: ml + band * i, y: mt, width: band, height: ph}));
      for (const se of series) {
        const v = Number(se.values[i]) / 1e9;
        if (v <= 0) continue;
        const hgt = Math.max(1.5, (v / top) * ph);
        y -= hgt;
        col.append(s('rect', {class: `bar ${se.cls}`, x, y, width: bw, height: hgt}));
      }
      col.append(s('title', null, tip(key, i, totals[i])));
      svg.append(col);
    });
    const every = Math.max(1, Math.ceil(48 / band));
    keys.forEach((key, i) => {
      if (i % every) return;
      svg.append(s('text', {class: 'tick', x: ml + band * i + band / 2, y: H - 8, 'text-anchor': 'middle'}, xLabel(key)));
    });
    const nodes = [svg];
    if (maxNano === 0n && empty) nodes.push(h('p', {class: 'chart-empty'}, empty));
    box.replaceChildren(...nodes);
  };
  new ResizeObserver(() => {
    const width = Math.floor(box.clientWidth);
    if (width > 0 && width !== drawnWidth) {
      drawnWidth = width;
      draw(width);
    }
  }).observe(box);
  return box;
}

// === Overview ===

async function overviewView(ctx) {
  const month = monthRange(0);
  const prev = monthRange(-1);
  const q = (r, group) => `${ctx.t}/usage?from=${r.from}&to=${r.to}&group_by=${group}`;
  const [team, days, members, models, last] = await Promise.all([
    api(ctx.t), api(q(month, 'day')), api(q(month, 'member')), api(q(month, 'model')), api(q(prev, 'model')),
  ]);
  const spend = nano(team.spend_this_month_usd);
  const lastSpend = nano(last.total.cost_usd);
  let trend = 'No spend last month';
  if (lastSpend > 0n) {
    const change = Number(((spend - lastSpend) * 10000n) / lastSpend) / 10000;
    trend = `${change >= 0 ? '↑' : '↓'} ${fmtPct.format(Math.abs(change))} vs last month`;
  }
  const pending = team.pending_join_requests;
  const pendingText = `${pending} pending join request${pending === 1 ? '' : 's'}`;
  const stats = h('div', {class: 'stats'},
    stat('Team balance', money(team.balance_usd), 'Owner’s prepaid balance'),
    stat('Spend this month', money(team.spend_this_month_usd), trend),
    stat('Last month', money(last.total.cost_usd), fmtMonth.format(dayDate(prev.from))),
    stat('Members', fmtNum.format(team.member_count),
      pending && ctx.isAdmin ? h('a', {href: '#/members'}, pendingText) : pendingText));

  const keys = daysBetween(month.from, month.to);
  const byDay = new Map(days.groups.map((g) => [g.key, g]));
  const chart = barChart({
    keys,
    series: [{cls: 's0', values: keys.map((k) => nano(byDay.get(k)?.cost_usd))}],
    label: `Daily spend in ${fmtMonth.format(dayDate(month.from))}: ${usdText(days.total.cost_usd)} in ${fmtNum.format(days.total.requests)} requests.`,
    xLabel: (k) => fmtDayNum.format(dayDate(k)),
    tip: (k) => {
      const g = byDay.get(k);
      return `${fmtDayLong.format(dayDate(k))}\n${usdText(g?.cost_usd ?? '0')} · ${fmtNum.format(g?.requests ?? 0)} requests`;
    },
    empty: 'No spend this month yet.',
  });
  const total = nano(members.total.cost_usd);
  return frag(stats,
    card(`Daily spend · ${fmtMonth.format(dayDate(month.from))}`, h('a', {class: 'btn sm', href: '#/usage'}, 'View usage'), chart),
    h('div', {class: 'grid2'},
      topList('Top members', members.groups, total, 'No team usage this month yet.'),
      topList('Top models', models.groups, total, 'No team usage this month yet.')));
}

function topList(title, groups, total, emptyText) {
  const top = [...groups].sort(byCost).slice(0, 5);
  const max = top.length ? nano(top[0].cost_usd) : 0n;
  const body = top.length
    ? h('ol', {class: 'toplist'}, top.map((g) => {
      const cost = nano(g.cost_usd);
      return h('li', null,
        h('div', {class: 'top-row'}, h('span', {class: 'top-name', title: g.label || g.key}, g.label || g.key), money(g.cost_usd)),
        meter(ratio(cost, max)),
        h('div', {class: 'top-meta'}, `${fmtNum.format(g.requests)} requests · ${fmtPct.format(ratio(cost, total))} of spend`));
    }))
    : emptyState(emptyText);
  return card(title, null, body);
}

// === Members ===

function limitState(m) {
  if (m.effective_limit_usd == null) return {limit: false, text: 'No limit', cls: ''};
  const spend = nano(m.spend_this_month_usd);
  const limit = nano(m.effective_limit_usd);
  const fraction = limit > 0n ? ratio(spend, limit) : 1;
  if (spend >= limit) {
    return m.enforcement === 'hard'
      ? {limit: true, fraction: 1, text: 'Limit reached · blocked', cls: 'bad'}
      : {limit: true, fraction: 1, text: 'Over limit · soft', cls: 'warn'};
  }
  if (fraction >= 0.8) return {limit: true, fraction, text: `Near limit · ${fmtPct.format(fraction)}`, cls: 'warn'};
  return {limit: true, fraction, text: `${fmtPct.format(fraction)} of limit used`, cls: 'ok'};
}

async function membersView(ctx) {
  const [list, team, invitations, joins] = await Promise.all([
    api(`${ctx.t}/members`), api(ctx.t),
    ctx.isAdmin ? api(`${ctx.t}/invitations`) : null,
    ctx.isAdmin ? api(`${ctx.t}/join-requests`) : null,
  ]);
  const pendingJoins = joins ? joins.data.filter((j) => j.status === 'pending') : [];
  const pendingInvites = invitations ? invitations.data.filter((i) => i.status === 'pending') : [];
  return frag(
    takeFlash('members'),
    ctx.isAdmin ? inviteCard(ctx) : null,
    pendingJoins.length ? joinRequestsCard(ctx, pendingJoins) : null,
    membersCard(ctx, list.data, team),
    ctx.isAdmin ? h('div', {class: 'grid2'}, inviteLinkCard(ctx, team), invitationsCard(ctx, pendingInvites)) : null);
}

const ROLE_ORDER = {owner: 0, admin: 1, member: 2};
let memberFilter = '';
function membersCard(ctx, rows, team) {
  const me = session.me?.id;
  rows = [...rows].sort((a, b) => ROLE_ORDER[a.role] - ROLE_ORDER[b.role] || a.email.localeCompare(b.email));
  const defaultLimit = team.default_monthly_limit_usd;
  const summary = `${rows.length} member${rows.length === 1 ? '' : 's'} · ${defaultLimit == null ? 'no default limit' : `default limit ${usdText(defaultLimit)}`} · ${team.enforcement} enforcement`;
  const filterable = rows.length > 8;
  const noMatch = h('p', {class: 'empty muted', hidden: true}, 'No member matches the filter.');
  const applyFilter = () => {
    const text = memberFilter.trim().toLowerCase();
    let shown = 0;
    for (const tr of table.tBodies[0].rows) {
      const match = !text || tr.dataset.email.toLowerCase().includes(text);
      tr.hidden = !match;
      shown += match;
    }
    noMatch.hidden = shown > 0;
  };
  const filter = filterable ? h('input', {
    type: 'search', id: 'member-filter', class: 'filter', placeholder: 'Filter by email', 'aria-label': 'Filter members by email',
    autocomplete: 'off', value: memberFilter,
    oninput(event) {
      memberFilter = event.target.value;
      applyFilter();
    },
  }) : null;
  const table = h('table', {class: 'table-stack members-table'},
    h('caption', {class: 'sr-only'}, 'Team members'),
    h('thead', null, h('tr', null,
      h('th', {scope: 'col'}, 'Member'), h('th', {scope: 'col', class: 'w-role'}, 'Role'), h('th', {scope: 'col', class: 'w-spend'}, 'Spend this month'),
      h('th', {scope: 'col', class: 'w-limit'}, 'Monthly limit'), ctx.isAdmin ? h('th', {scope: 'col', class: 'w-actions'}, h('span', {class: 'sr-only'}, 'Actions')) : null)),
    h('tbody', null, rows.map((m) => memberRow(ctx, m, me, defaultLimit))));
  if (filterable) applyFilter();
  return card('Team members', [h('span', {class: 'muted sm'}, summary), filter], h('div', {class: 'table-wrap flush'}, table, noMatch));
}

function memberRow(ctx, m, me, defaultLimit) {
  const state = limitState(m);
  const isOwnerRow = m.role === 'owner';
  let role;
  if (ctx.isAdmin && !isOwnerRow) {
    const select = h('select', {
      id: `role-${m.user_id}`, 'aria-label': `Role of ${m.email}`, class: 'sm',
      async onchange() {
        select.disabled = true;
        try {
          await api(`${ctx.t}/members/${enc(m.user_id)}`, {method: 'PATCH', body: {role: select.value}});
          toast(`${m.email} is now ${select.value === 'admin' ? 'an admin' : 'a member'}.`);
          if (m.user_id === me) {
            await reloadSession();
            renderView();
          } else ctx.reload();
        } catch (e) {
          toast(e.message, 'error');
          select.value = m.role;
          select.disabled = false;
        }
      },
    }, h('option', {value: 'admin', selected: m.role === 'admin'}, 'Admin'), h('option', {value: 'member', selected: m.role === 'member'}, 'Member'));
    role = select;
  } else role = h('span', {class: `role role-${m.role}`}, m.role);
  const limitCell = m.effective_limit_usd == null
    ? h('span', {class: 'muted'}, 'No limit')
    : h('div', {class: 'limit-cell'}, money(m.effective_limit_usd), h('span', {class: 'tag'}, m.monthly_limit_usd == null ? 'team default' : 'override'));
  const actions = ctx.isAdmin ? h('td', {class: 'actions full'},
    h('button', {type: 'button', class: 'btn sm', id: `limit-${m.user_id}`, 'aria-label': `Set monthly limit for ${m.email}`, onclick: () => limitDialog(ctx, m, defaultLimit)}, 'Set limit'),
    isOwnerRow ? null : h('button', {
      type: 'button', class: 'btn sm ghost danger-text', id: `remove-${m.user_id}`, 'aria-label': `Remove ${m.email}`,
      onclick: () => confirmDialog(`Remove ${m.email}?`,
        'They lose access to the team at once; their keys billed to the team stop working. Their usage stays in reports.',
        'Remove member', async () => {
          await api(`${ctx.t}/members/${enc(m.user_id)}`, {method: 'DELETE'});
          toast(`${m.email} was removed.`);
          if (m.user_id === me) {
            await reloadSession();
            go(defaultRoute());
          } else ctx.reload();
        }),
    }, 'Remove')) : null;
  return h('tr', {'data-user': m.user_id, 'data-email': m.email},
    h('td', {class: 'full'}, h('div', {class: 'person'}, avatar(m.email),
      h('div', {class: 'person-text'},
        h('div', {class: 'person-name'}, h('span', {class: 'ellipsis'}, m.email), m.user_id === me ? h('span', {class: 'tag'}, 'you') : null),
        h('div', {class: 'muted sm'}, `Joined ${when(m.joined_at)}`)))),
    h('td', {'data-label': 'Role'}, role),
    h('td', {'data-label': 'Spend this month', class: 'spend-cell full'},
      h('div', {class: 'spend-top'}, money(m.spend_this_month_usd), state.limit ? h('span', {class: 'muted'}, ' of ', money(m.effective_limit_usd)) : null),
      state.limit ? meter(state.fraction, state.cls === 'ok' ? '' : state.cls) : null,
      state.cls === 'warn' || state.cls === 'bad'
        ? h('span', {class: `pill ${state.cls}`, 'data-limit-state': state.cls}, state.text)
        : h('span', {class: 'muted sm', 'data-limit-state': state.cls || 'none'}, state.text)),
    h('td', {'data-label': 'Monthly limit'}, limitCell),
    actions);
}

function limitDialog(ctx, m, defaultLimit) {
  const help = defaultLimit == null
    ? 'Leave empty to use the team default (none is set: no limit).'
    : `Leave empty to use the team default (${usdText(defaultLimit)}).`;
  const control = moneyInput('limit-input', m.monthly_limit_usd, defaultLimit == null ? 'No limit' : `Team default: ${usdText(defaultLimit)}`, 'limit-input-help');
  openDialog({
    title: `Monthly limit for ${m.email}`,
    body: [field('Monthly limit override (USD)', 'limit-input', control, help),
      h('p', {class: 'help'}, `Spend this month: ${usdText(m.spend_this_month_usd)}. Limits reset on the 1st at 00:00 UTC. Enforcement is ${m.enforcement}: ${m.enforcement === 'hard' ? 'requests over the limit are refused' : 'requests are never refused, only flagged'}.`)],
    submitLabel: 'Save limit',
    async onSubmit() {
      const value = readLimit(control.querySelector('input').value, 'limit');
      await api(`${ctx.t}/members/${enc(m.user_id)}`, {method: 'PATCH', body: {monthly_limit_usd: value}});
      toast(value == null ? `${m.email} now follows the team default.` : `Monthly limit for ${m.email} set to ${usdText(value)}.`);
      ctx.reload();
    },
  });
  document.getElementById('limit-input').focus();
}

function inviteCard(ctx) {
  const email = h('input', {id: 'invite-email', type: 'email', required: true, autocomplete: 'off', placeholder: 'name@company.com'});
  const role = h('select', {id: 'invite-role'}, h('option', {value: 'member'}, 'Member'), h('option', {value: 'admin'}, 'Admin'));
  const submit = h('button', {type: 'submit', class: 'btn primary', id: 'invite-submit'}, 'Create invitation');
  const error = h('p', {class: 'form-error', role: 'alert'});
  const form = h('form', {
    class: 'inline-form',
    async onsubmit(event) {
      event.preventDefault();
      error.textContent = '';
      busy(submit, true, 'Creating…');
      try {
        const res = await api(`${ctx.t}/invitations`, {method: 'POST', body: {email: email.value.trim(), role: role.value}});
        flash = {view: 'members', node: secretPanel(`Invitation for ${res.email}`,
          `Send this link to ${res.email}. Opened in a browser it shows the team and role and joins with one click once they sign in with their key (or they paste the token into My keys → Join a team). It works once.`,
          [['Invitation link', 'invite-url', res.url], ['Invitation token', 'invite-token', res.token]],
          `Expires ${fmtDateTime.format(new Date(res.expires_at))}. It is shown only now.`)};
        toast(`Invitation created for ${res.email}.`);
        ctx.reload();
      } catch (e) {
        error.textContent = e.message;
        busy(submit, false);
      }
    },
  },
  field('Email', 'invite-email', email), field('Role', 'invite-role', role), h('div', {class: 'field field-submit'}, submit));
  return card('Invite a member', null, form, error);
}

function joinRequestsCard(ctx, rows) {
  const decide = (r, approve) => async (event) => {
    busy(event.currentTarget, true);
    try {
      await api(`${ctx.t}/join-requests/${enc(r.id)}/${approve ? 'approve' : 'deny'}`, {method: 'POST'});
      toast(approve ? `${r.email} joined the team.` : `The request of ${r.email} was denied.`);
      ctx.reload();
    } catch (e) {
      toast(e.message, 'error');
      ctx.reload();
    }
  };
  return card('Join requests', pill(`${rows.length} pending`, 'warn'),
    h('ul', {class: 'rows'}, rows.map((r) => h('li', {class: 'row'},
      h('div', {class: 'person'}, avatar(r.email || r.user_id), h('div', {class: 'person-text'}, h('div', {class: 'person-name'}, r.email || r.user_id), h('div', {class: 'muted sm'}, `Asked ${when(r.created_at)} via the invite link`))),
      h('div', {class: 'row-actions'},
        h('button', {type: 'button', class: 'btn sm primary', id: `approve-${r.id}`, 'aria-label': `Approve ${r.email}`, onclick: decide(r, true)}, 'Approve'),
        h('button', {type: 'button', class: 'btn sm', id: `deny-${r.id}`, 'aria-label': `Deny ${r.email}`, onclick: decide(r, false)}, 'Deny'))))));
}

function inviteLinkCard(ctx, team) {
  const set = (enabled, label) => async (event) => {
    const button = event.currentTarget;
    busy(button, true);
    try {
      const res = await api(`${ctx.t}/invite-link`, {method: 'PUT', body: {enabled}});
      if (enabled) {
        flash = {view: 'members', node: secretPanel('Invite link',
          'Anyone with this link can ask to join; each request waits here for an admin. Enabling again rotates it (the old link stops working).',
          [['Join URL', 'link-url', res.url], ['Link token', 'link-token', res.token]], 'It is shown only now.')};
      }
      toast(label);
      ctx.reload();
    } catch (e) {
      toast(e.message, 'error');
      busy(button, false);
    }
  };
  const on = team.invite_link_enabled;
  return card('Invite link', pill(on ? 'Enabled' : 'Disabled', on ? 'ok' : ''),
    h('p', {class: 'muted'}, on
      ? 'A public link is active: people who use it create join requests for you to approve.'
      : 'Turn on a public link that people can use to ask to join. Each request needs an admin’s approval.'),
    h('div', {class: 'button-row'}, on
      ? [h('button', {type: 'button', class: 'btn', id: 'link-rotate', onclick: set(true, 'The invite link was rotated.')}, 'Rotate link'),
        h('button', {type: 'button', class: 'btn danger-text', id: 'link-disable', onclick: set(false, 'The invite link was disabled.')}, 'Disable')]
      : h('button', {type: 'button', class: 'btn primary', id: 'link-enable', onclick: set(true, 'The invite link is on.')}, 'Enable link')));
}

function invitationsCard(ctx, rows) {
  return card('Pending invitations', rows.length ? pill(String(rows.length)) : null,
    rows.length
      ? h('ul', {class: 'rows'}, rows.map((i) => h('li', {class: 'row'},
        h('div', {class: 'person-text'}, h('div', {class: 'person-name'}, h('span', {class: 'ellipsis'}, i.email), h('span', {class: `role role-${i.role}`}, i.role)),
          h('div', {class: 'muted sm'}, `Expires ${when(i.expires_at)}`)),
        h('button', {
          type: 'button', class: 'btn sm', id: `revoke-inv-${i.id}`, 'aria-label': `Revoke the invitation for ${i.email}`,
          onclick: () => confirmDialog(`Revoke the invitation for ${i.email}?`, 'The token stops working at once.', 'Revoke', async () => {
            await api(`${ctx.t}/invitations/${enc(i.id)}`, {method: 'DELETE'});
            toast(`The invitation for ${i.email} was revoked.`);
            ctx.reload();
          }),
        }, 'Revoke'))))
      : emptyState('No pending invitations.'));
}

// === Usage ===

const PRESETS = {
  'this-month': ['This month', () => monthRange(0)],
  'last-month': ['Last month', () => monthRange(-1)],
  'last-7': ['Last 7 days', () => lastDays(7)],
  'last-30': ['Last 30 days', () => lastDays(30)],
  custom: ['Custom range', () => ({from: usageState.from, to: usageState.to})],
};
function usageRange() {
  return PRESETS[usageState.preset][1]();
}

async function usageView(ctx) {
  const range = usageRange();
  const q = (group) => `${ctx.t}/usage?from=${range.from}&to=${range.to}&group_by=${group}`;
  const tag = usageState.tag;
  const [byMember, byModel, byDay, byTag] = await Promise.all([
    api(q('member')), api(q('model')), api(`${q('day')}&split_by=${usageState.split}`),
    tag ? api(q(`tag:${enc(tag)}`)) : null,
  ]);
  const total = byMember.total;
  const stats = h('div', {class: 'stats', id: 'usage-totals', 'data-range': `${range.from}/${range.to}`},
    stat('Cost', money(total.cost_usd), `${fmtDay.format(dayDate(range.from))} – ${fmtDay.format(dayDate(range.to))}`),
    stat('Requests', h('span', {'data-total': 'requests'}, fmtNum.format(total.requests)), 'Forwarded upstream; refusals excluded'),
    stat('Input tokens', h('span', {'data-total': 'input_tokens'}, fmtNum.format(total.input_tokens)), `${fmtNum.format(total.cached_tokens)} cached`),
    stat('Output tokens', h('span', {'data-total': 'output_tokens'}, fmtNum.format(total.output_tokens)), `${fmtNum.format(total.reasoning_tokens)} reasoning`));
  return frag(usageToolbar(ctx, range), stats, dailyCard(ctx, range, byDay),
    usageTable(ctx, range, 'By member', 'Member', 'member', byMember),
    usageTable(ctx, range, 'By model', 'Model', 'model', byModel),
    tagCard(ctx, range, byTag));
}

/** Usage by the value of one cost allocation tag (x-tollgate-tags). */
function tagCard(ctx, range, report) {
  const input = h('input', {id: 'tag-key', class: 'mono', value: usageState.tag, placeholder: 'project', autocomplete: 'off', spellcheck: 'false', 'aria-describedby': 'tag-key-help'});
  const error = h('p', {class: 'form-error', role: 'alert'});
  const form = h('form', {
    class: 'inline-form',
    onsubmit(event) {
      event.preventDefault();
      const key = input.value.trim();
      if (key && !/^[a-z0-9_.-]{1,64}$/.test(key)) {
        error.textContent = 'A tag key is 1 to 64 of a-z, 0-9, _ . -';
        return;
      }
      usageState.tag = key;
      ctx.reload();
    },
  }, field('Tag key', 'tag-key', input, 'Requests carry tags in the x-tollgate-tags header (project=alpha,env=prod) or from their key’s defaults.'),
  h('div', {class: 'field field-submit'}, h('button', {type: 'submit', class: 'btn', id: 'tag-apply'}, usageState.tag ? 'Show' : 'Group by tag')), error);
  if (!report) return card('By tag', null, form);
  const table = usageTable(ctx, range, `By tag ${usageState.tag}`, usageState.tag, `tag:${usageState.tag}`, report);
  return frag(card('By tag', null, form), table);
}

function usageToolbar(ctx, range) {
  const from = h('input', {type: 'date', id: 'range-from', value: range.from, required: true});
  const to = h('input', {type: 'date', id: 'range-to', value: range.to, required: true});
  const error = h('p', {class: 'form-error', role: 'alert'});
  const custom = h('form', {
    class: 'custom-range',
    hidden: usageState.preset !== 'custom',
    onsubmit(event) {
      event.preventDefault();
      if (!from.value || !to.value || from.value > to.value) {
        error.textContent = 'Pick a start date on or before the end date.';
        return;
      }
      Object.assign(usageState, {preset: 'custom', from: from.value, to: to.value});
      ctx.reload();
    },
  }, field('From', 'range-from', from), field('To', 'range-to', to),
  h('div', {class: 'field field-submit'}, h('button', {type: 'submit', class: 'btn', id: 'range-apply'}, 'Apply')), error);
  const select = h('select', {
    id: 'range-preset',
    onchange() {
      if (select.value === 'custom') {
        custom.hidden = false;
        from.focus();
        return;
      }
      usageState.preset = select.value;
      ctx.reload();
    },
  }, Object.entries(PRESETS).map(([id, [label]]) => h('option', {value: id, selected: id === usageState.preset}, label)));
  return h('div', {class: 'toolbar'}, field('Date range', 'range-preset', select), custom,
    h('p', {class: 'range-note muted sm'}, `${fmtDayLong.format(dayDate(range.from))} – ${fmtDayLong.format(dayDate(range.to))} (UTC days)`));
}

const SERIES_MAX = 7;
function dailyCard(ctx, range, report) {
  const keys = daysBetween(range.from, range.to);
  const byDay = new Map(report.groups.map((g) => [g.key, g]));
  const totals = new Map();
  const labels = new Map();
  for (const g of report.groups) {
    for (const part of g.split || []) {
      totals.set(part.key, (totals.get(part.key) || 0n) + nano(part.cost_usd));
      labels.set(part.key, part.label || part.key);
    }
  }
  const ranked = [...totals.entries()].sort((a, b) => (b[1] > a[1] ? 1 : b[1] < a[1] ? -1 : 0));
  const shown = ranked.slice(0, ranked.length > SERIES_MAX + 1 ? SERIES_MAX : SERIES_MAX + 1).map(([k]) => k);
  const index = new Map(shown.map((k, i) => [k, i]));
  const series = shown.map((k, i) => ({key: k, label: labels.get(k), cls: `s${i}`, values: keys.map(() => 0n)}));
  const other = {key: '', label: 'Other', cls: 's-other', values: keys.map(() => 0n)};
  keys.forEach((k, i) => {
    for (const part of byDay.get(k)?.split || []) {
      const target = index.has(part.key) ? series[index.get(part.key)] : other;
      target.values[i] += nano(part.cost_usd);
    }
  });
  if (ranked.length > shown.length) series.push(other);
  const chart = barChart({
    keys,
    series,
    label: `Daily cost from ${range.from} to ${range.to}, stacked by ${usageState.split}: ${usdText(report.total.cost_usd)} in total.`,
    xLabel: (k) => fmtDay.format(dayDate(k)),
    tip: (k, i, sum) => [
      `${fmtDayLong.format(dayDate(k))}: ${usdNano(sum)}`,
      ...series.filter((se) => se.values[i] > 0n).map((se) => `${se.label}: ${usdNano(se.values[i])}`),
    ].join('\n'),
    empty: 'No usage in this range.',
  });
  const toggle = (value, label) => h('button', {
    type: 'button', class: 'seg', id: `split-${value}`, 'aria-pressed': String(usageState.split === value),
    onclick() {
      if (usageState.split === value) return;
      usageState.split = value;
      ctx.reload();
    },
  }, label);
  const legend = h('ul', {class: 'legend', 'aria-label': 'Legend'}, series.map((se) => {
    const sum = se.values.reduce((a, b) => a + b, 0n);
    return h('li', null, h('span', {class: `swatch ${se.cls}`, 'aria-hidden': 'true'}), h('span', {class: 'legend-label', title: se.label}, se.label), h('span', {class: 'muted'}, usdNano(sum)));
  }));
  return card('Daily cost', [
    h('div', {class: 'segmented', role: 'group', 'aria-label': 'Stack the bars by'}, toggle('member', 'By member'), toggle('model', 'By model')),
    exportButton(ctx, range, 'day', 'Export daily CSV'),
  ], chart, series.length ? legend : null);
}

/** A grouping as an id or file-name part (`tag:project` → `tag-project`). */
const idOf = (group) => group.replace(/[^a-z0-9_-]/gi, '-');

function exportButton(ctx, range, group, label = 'Export CSV') {
  const button = h('button', {
    type: 'button', class: 'btn sm', id: `export-${idOf(group)}`,
    async onclick() {
      busy(button, true, 'Exporting…');
      try {
        const res = await request(`${ctx.t}/usage?from=${range.from}&to=${range.to}&group_by=${group}&format=csv`);
        const blob = await res.blob();
        const slug = ctx.team.name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '') || 'team';
        const name = `usage-${slug}-by-${idOf(group)}-${range.from}-to-${range.to}.csv`;
        const url = URL.createObjectURL(blob);
        const link = h('a', {href: url, download: name, hidden: true});
        document.body.append(link);
        link.click();
        link.remove();
        setTimeout(() => URL.revokeObjectURL(url), 30000);
        toast(`Downloaded ${name}.`);
      } catch (e) {
        toast(e.message, 'error');
      } finally {
        busy(button, false);
      }
    },
  }, label);
  return button;
}

/** Long breakdowns show their top rows until expanded (kept across reloads). */
const COLLAPSE_AT = 12;
const COLLAPSED_ROWS = 10;
const expanded = new Set();

/** The request count under the name, on narrow screens only. */
const requestsLine = (g) => h('span', {class: 'show-sm muted sm'}, `${fmtNum.format(g.requests)} requests`);

function usageTable(ctx, range, title, nameHeader, group, report) {
  const total = nano(report.total.cost_usd);
  const rows = [...report.groups].sort(byCost);
  const cells = (g) => [
    h('td', {class: 'num hide-sm'}, fmtNum.format(g.requests)),
    h('td', {class: 'num hide-sm'}, fmtNum.format(g.input_tokens)),
    h('td', {class: 'num hide-sm'}, fmtNum.format(g.output_tokens)),
    h('td', {class: 'num hide-sm'}, fmtNum.format(g.cached_tokens)),
    h('td', {class: 'num hide-sm'}, fmtNum.format(g.reasoning_tokens)),
    h('td', {class: 'num strong'}, money(g.cost_usd)),
  ];
  const table = h('table', {class: 'data', id: `usage-by-${idOf(group)}`},
    h('caption', {class: 'sr-only'}, `Usage ${title.toLowerCase()}, ${range.from} to ${range.to}`),
    h('thead', null, h('tr', null, h('th', {scope: 'col'}, nameHeader),
      h('th', {scope: 'col', class: 'num hide-sm'}, 'Requests'),
      ['Input tokens', 'Output tokens', 'Cached', 'Reasoning'].map((c) => h('th', {scope: 'col', class: 'num hide-sm'}, c)),
      h('th', {scope: 'col', class: 'num'}, 'Cost'), h('th', {scope: 'col', class: 'share'}, 'Share'))),
    h('tbody', null, rows.map((g) => {
      const fraction = ratio(nano(g.cost_usd), total);
      return h('tr', {'data-key': g.key}, h('th', {scope: 'row', class: 'name'}, h('span', {class: 'ellipsis', title: g.label || g.key}, g.label || g.key), requestsLine(g)), cells(g),
        h('td', {class: 'share'}, h('div', {class: 'share-cell'}, meter(fraction), h('span', {class: 'muted sm'}, fmtPct.format(fraction)))));
    })),
    h('tfoot', null, h('tr', {'data-total': 'true'}, h('th', {scope: 'row'}, 'Total', requestsLine(report.total)), cells(report.total), h('td', {class: 'share'}))));
  let more = null;
  if (rows.length > COLLAPSE_AT) {
    const body = table.tBodies[0];
    const noun = {member: 'members', model: 'models'}[group] || 'values';
    const button = h('button', {type: 'button', class: 'btn sm', id: `more-${idOf(group)}`, 'aria-controls': `usage-by-${idOf(group)}`});
    const apply = () => {
      const open = expanded.has(group);
      [...body.rows].forEach((tr, i) => (tr.hidden = !open && i >= COLLAPSED_ROWS));
      button.textContent = open ? `Show the top ${COLLAPSED_ROWS} only` : `Show all ${rows.length} ${noun}`;
      button.setAttribute('aria-expanded', String(open));
    };
    button.addEventListener('click', () => {
      if (expanded.has(group)) expanded.delete(group);
      else expanded.add(group);
      apply();
    });
    apply();
    more = h('div', {class: 'table-more'}, button);
  }
  return card(title, exportButton(ctx, range, group),
    rows.length ? [h('div', {class: `table-wrap ${more ? 'flush-top' : 'flush'}`}, table), more] : emptyState('No requests in this range.'));
}

// === Settings ===

async function settingsView(ctx) {
  const [team, models, members, hooks] = await Promise.all([api(ctx.t), api('/models'), ctx.isOwner ? api(`${ctx.t}/members`) : null,
    ctx.isAdmin ? api(`${ctx.t}/webhooks`) : null]);
  const readOnly = !ctx.isAdmin;
  const known = new Set(models.data.map((m) => m.id));
  const patterns = team.restricted_models.filter((p) => !known.has(p));
  const restricted = new Set(team.restricted_models);
  const name = h('input', {id: 'set-name', value: team.name, required: true, maxlength: 100, autocomplete: 'off', disabled: readOnly});
  const limit = moneyInput('set-limit', team.default_monthly_limit_usd, 'No limit', 'set-limit-help');
  limit.querySelector('input').disabled = readOnly;
  // The low-balance alert is about the owner's balance: the owner sets it.
  const lowBalance = moneyInput('set-low-balance', team.low_balance_usd, 'No alert', 'set-low-balance-help');
  lowBalance.querySelector('input').disabled = !ctx.isOwner;
  const radio = (value, title, text) => h('label', {class: 'choice'},
    h('input', {type: 'radio', name: 'enforcement', value, checked: team.enforcement === value, disabled: readOnly}),
    h('span', null, h('strong', null, title), h('span', {class: 'muted'}, text)));
  const modelBoxes = models.data.map((m, i) => h('label', {class: 'check'},
    h('input', {type: 'checkbox', id: `rm-${i}`, value: m.id, checked: restricted.has(m.id), disabled: readOnly}),
    h('span', {class: 'mono'}, m.id), h('span', {class: 'muted sm'}, m.provider)));
  const chips = h('ul', {class: 'chips', 'aria-label': 'Restricted patterns'});
  const drawChips = () => chips.replaceChildren(...patterns.map((p) => h('li', {class: 'chip'}, h('span', {class: 'mono'}, p),
    readOnly ? null : h('button', {
      type: 'button', class: 'chip-x', 'aria-label': `Remove pattern ${p}`,
      onclick() {
        patterns.splice(patterns.indexOf(p), 1);
        drawChips();
        document.getElementById('rm-pattern')?.focus();
      },
    }, '×'))));
  drawChips();
  const patternInput = h('input', {id: 'rm-pattern', class: 'mono', placeholder: 'claude-opus-*', autocomplete: 'off', spellcheck: 'false', 'aria-describedby': 'rm-pattern-help'});
  const patternError = h('p', {class: 'form-error', role: 'alert'});
  const addPattern = () => {
    const p = patternInput.value.trim();
    patternError.textContent = '';
    if (!p) return;
    if (!/^[A-Za-z0-9._:/@*?-]+$/.test(p)) {
      patternError.textContent = 'Use model-name characters and the wildcards * and ?.';
      return;
    }
    if (!patterns.includes(p) && !known.has(p)) patterns.push(p);
    if (known.has(p)) modelBoxes.find((b) => b.querySelector('input').value === p).querySelector('input').checked = true;
    patternInput.value = '';
    drawChips();
  };
  patternInput.addEventListener('keydown', (e) => {
    if (e.key === 'Enter') {
      e.preventDefault();
      addPattern();
    }
  });
  const save = h('button', {type: 'submit', class: 'btn primary', id: 'settings-save'}, 'Save changes');
  const error = h('p', {class: 'form-error', role: 'alert'});
  const form = h('form', {
    class: 'stack',
    async onsubmit(event) {
      event.preventDefault();
      error.textContent = '';
      const patch = {};
      try {
        const newName = name.value.trim();
        if (!newName) throw new Error('The team needs a name.');
        if (newName !== team.name) patch.name = newName;
        const newLimit = readLimit(limit.querySelector('input').value, 'default limit');
        if ((newLimit == null) !== (team.default_monthly_limit_usd == null) || (newLimit != null && nano(newLimit) !== nano(team.default_monthly_limit_usd))) {
          patch.default_monthly_limit_usd = newLimit;
        }
        if (ctx.isOwner) {
          const low = readLimit(lowBalance.querySelector('input').value, 'low-balance alert');
          if ((low == null) !== (team.low_balance_usd == null) || (low != null && nano(low) !== nano(team.low_balance_usd))) {
            patch.low_balance_usd = low;
          }
        }
        const enforcement = form.querySelector('input[name="enforcement"]:checked')?.value;
        if (enforcement && enforcement !== team.enforcement) patch.enforcement = enforcement;
        const list = [...modelBoxes.map((b) => b.querySelector('input')).filter((i) => i.checked).map((i) => i.value), ...patterns];
        if (list.join('\n') !== team.restricted_models.join('\n')) patch.restricted_models = list;
      } catch (e) {
        error.textContent = e.message;
        return;
      }
      if (!Object.keys(patch).length) {
        toast('Nothing to save: no field changed.');
        return;
      }
      busy(save, true, 'Saving…');
      try {
        await api(ctx.t, {method: 'PATCH', body: patch});
        toast('Settings saved.');
        if (patch.name) {
          await reloadSession();
          renderView();
        } else ctx.reload();
      } catch (e) {
        error.textContent = e.message;
        busy(save, false);
      }
    },
  },
  card('General', readOnly ? pill('Read only') : null,
    h('div', {class: 'form-grid'},
      field('Team name', 'set-name', name),
      field('Default monthly limit per member', 'set-limit', limit, 'Applies to members without their own limit. Leave empty for no limit. Resets on the 1st, 00:00 UTC.'),
      field('Low-balance alert', 'set-low-balance', lowBalance, ctx.isOwner
        ? 'When your balance falls below this, webhooks taking balance.low are told once (again after a top-up). Empty: no alert.'
        : 'Set by the owner: the balance it watches is theirs.')),
    h('fieldset', {class: 'choices'}, h('legend', null, 'When a member reaches their limit'),
      radio('hard', 'Hard: refuse', 'Team-billed requests over the limit are refused with HTTP 402.'),
      radio('soft', 'Soft: warn', 'Requests go through with a warning header; the crossing is recorded.'))),
  card('Model restrictions', null,
    h('p', {class: 'muted'}, 'Team-billed requests for these models are refused (HTTP 403). Members can still use them on personal billing.'),
    h('fieldset', {class: 'checks'}, h('legend', null, 'Configured models'), modelBoxes),
    h('div', {class: 'field'}, h('span', {class: 'label', id: 'patterns-label'}, 'Patterns'), chips,
      patterns.length || !readOnly ? null : h('p', {class: 'muted sm'}, 'No patterns.')),
    readOnly ? null : h('div', {class: 'inline-form'},
      field('Add a name or glob', 'rm-pattern', patternInput),
      h('div', {class: 'field field-submit'}, h('button', {type: 'button', class: 'btn', id: 'rm-add', onclick: addPattern}, 'Add'))),
    readOnly ? null : h('p', {class: 'help', id: 'rm-pattern-help'}, 'Globs use * and ?, e.g. claude-opus-* or gpt-5.?'),
    patternError),
  readOnly
    ? h('p', {class: 'notice'}, 'Only admins and the owner can change these settings.')
    : h('div', {class: 'form-foot'}, error, save));
  return frag(takeFlash('settings'), form, hooks ? webhooksCard(ctx, hooks.data) : null,
    ctx.isOwner ? dangerZone(ctx, team, members.data) : null, !ctx.isOwner && !session.operator ? leaveCard(ctx) : null);
}

const EVENT_TYPES = ['limit.threshold', 'limit.blocked', 'balance.low', 'member.joined', 'member.left', 'report.scheduled'];

function webhooksCard(ctx, hooks) {
  const url = h('input', {id: 'hook-url', type: 'url', required: true, placeholder: 'https://example.com/tollgate', autocomplete: 'off', spellcheck: 'false'});
  const boxes = EVENT_TYPES.map((name, i) => h('label', {class: 'check'},
    h('input', {type: 'checkbox', id: `hook-event-${i}`, value: name, checked: name.startsWith('limit.') || name === 'balance.low'}),
    h('span', {class: 'mono'}, name)));
  const submit = h('button', {type: 'submit', class: 'btn primary', id: 'hook-create'}, 'Add webhook');
  const error = h('p', {class: 'form-error', role: 'alert'});
  const form = h('form', {
    class: 'stack',
    async onsubmit(event) {
      event.preventDefault();
      error.textContent = '';
      const events = boxes.map((b) => b.querySelector('input')).filter((i) => i.checked).map((i) => i.value);
      if (!events.length) {
        error.textContent = 'Pick at least one event.';
        return;
      }
      busy(submit, true, 'Adding…');
      try {
        const res = await api(`${ctx.t}/webhooks`, {method: 'POST', body: {url: url.value.trim(), events}});
        flash = {view: 'settings', node: secretPanel('Webhook signing secret',
          'Copy it now: it is shown only once. Check each delivery’s x-tollgate-signature header with it (the README shows how).',
          [['Signing secret', 'hook-secret', res.secret]], `Sends ${res.events.join(', ')} to ${res.url}.`)};
        toast('Webhook added.');
        ctx.reload();
      } catch (e) {
        error.textContent = e.message;
        busy(submit, false);
      }
    },
  }, field('Endpoint URL', 'hook-url', url),
  h('fieldset', {class: 'checks'}, h('legend', null, 'Events'), boxes),
  h('div', {class: 'form-foot'}, error, submit));
  const row = (w) => h('tr', {'data-hook-id': w.id},
    h('td', {class: 'full'}, h('div', {class: 'mono ellipsis', title: w.url}, w.url), h('div', {class: 'muted sm'}, w.events.join(' · '))),
    h('td', {'data-label': 'Added'}, when(w.created_at)),
    h('td', {class: 'actions'},
      h('button', {type: 'button', class: 'btn sm', id: `hook-log-${w.id}`, 'aria-label': `Deliveries to ${w.url}`, onclick: () => deliveriesDialog(ctx, w)}, 'Deliveries'),
      h('button', {
        type: 'button', class: 'btn sm ghost danger-text', id: `hook-delete-${w.id}`, 'aria-label': `Delete the webhook to ${w.url}`,
        onclick: () => confirmDialog('Delete this webhook?', `Nothing more is sent to ${w.url}; deliveries not yet made are dropped.`, 'Delete webhook', async () => {
          await api(`${ctx.t}/webhooks/${enc(w.id)}`, {method: 'DELETE'});
          toast('Webhook deleted.');
          ctx.reload();
        }),
      }, 'Delete')));
  const table = h('table', {class: 'table-stack', id: 'hooks-table'}, h('caption', {class: 'sr-only'}, 'Webhooks'),
    h('thead', null, h('tr', null, h('th', {scope: 'col'}, 'Endpoint'), h('th', {scope: 'col'}, 'Added'), h('th', {scope: 'col'}, h('span', {class: 'sr-only'}, 'Actions')))),
    h('tbody', null, hooks.map(row)));
  return card('Webhooks', null,
    h('p', {class: 'muted'}, 'Signed POSTs when members near or reach their limits, the balance runs low, members join or leave, or a scheduled report is due. Failed deliveries are retried for 24 hours.'),
    hooks.length ? h('div', {class: 'table-wrap flush-x'}, table) : emptyState('No webhooks yet.'),
    form);
}

async function deliveriesDialog(ctx, w) {
  let res;
  try {
    res = await api(`${ctx.t}/webhooks/${enc(w.id)}/deliveries`);
  } catch (e) {
    toast(e.message, 'error');
    return;
  }
  const result = (a) => {
    if (a.delivered) return pill(`HTTP ${a.status}`, 'ok');
    return h('span', {class: 'danger-text'}, a.status ? `HTTP ${a.status}` : (a.error || 'failed'));
  };
  const body = res.data.length
    ? h('div', {class: 'table-wrap flush-x'}, h('table', {class: 'data', id: 'deliveries-table'},
      h('caption', {class: 'sr-only'}, `Delivery attempts to ${w.url}, newest first`),
      h('thead', null, h('tr', null, ['When', 'Event', 'Try', 'Result'].map((c) => h('th', {scope: 'col'}, c)))),
      h('tbody', null, res.data.map((a) => h('tr', null,
        h('td', null, fmtDateTime.format(new Date(a.at))), h('td', {class: 'mono sm'}, a.event_id),
        h('td', {class: 'num'}, String(a.attempt)), h('td', null, result(a)))))))
    : h('p', {class: 'muted', id: 'deliveries-empty'}, 'No attempts yet.');
  openDialog({title: `Deliveries to ${w.url}`, body, submitLabel: 'Close', onSubmit: async () => {}});
}

function dangerZone(ctx, team, members) {
  const others = members.filter((m) => m.user_id !== team.owner_id);
  const select = h('select', {id: 'transfer-to', disabled: !others.length},
    others.length ? others.map((m) => h('option', {value: m.user_id}, `${m.email} (${m.role})`)) : h('option', null, 'No other members yet'));
  const transfer = h('button', {
    type: 'button', class: 'btn danger-outline', id: 'transfer-submit', disabled: !others.length,
    onclick() {
      const target = others.find((m) => m.user_id === select.value);
      confirmDialog(`Transfer ${team.name} to ${target.email}?`,
        `${target.email} becomes the owner and pays for the team from the next request on. The current owner becomes an admin.`,
        'Transfer ownership', async () => {
          await api(`${ctx.t}/transfer`, {method: 'POST', body: {user_id: target.user_id}});
          toast(`${target.email} now owns ${team.name}.`);
          await reloadSession();
          renderView();
        });
    },
  }, 'Transfer ownership');
  const remove = h('button', {
    type: 'button', class: 'btn danger', id: 'delete-team',
    onclick() {
      const confirmInput = h('input', {id: 'delete-confirm', autocomplete: 'off', spellcheck: 'false'});
      openDialog({
        title: `Delete ${team.name}?`,
        body: [h('p', null, 'Members lose access and team-billed keys stop working. Usage history is kept for audit.'),
          field(`Type the team name (${team.name}) to confirm`, 'delete-confirm', confirmInput)],
        submitLabel: 'Delete team',
        danger: true,
        async onSubmit() {
          if (confirmInput.value.trim() !== team.name) throw new Error('The name does not match.');
          await api(ctx.t, {method: 'DELETE'});
          toast(`${team.name} was deleted.`);
          await reloadSession();
          go(defaultRoute());
        },
      });
      confirmInput.focus();
    },
  }, 'Delete team');
  return h('section', {class: 'card danger-zone', 'aria-labelledby': 'danger-title'},
    h('div', {class: 'card-head'}, h('h2', {id: 'danger-title'}, 'Danger zone')),
    h('div', {class: 'danger-row'},
      h('div', null, h('h3', null, 'Transfer ownership'), h('p', {class: 'muted'}, 'Billing moves to the new owner. You stay on as an admin.')),
      h('div', {class: 'inline-form'}, field('New owner', 'transfer-to', select), h('div', {class: 'field field-submit'}, transfer))),
    h('div', {class: 'danger-row'},
      h('div', null, h('h3', null, 'Delete this team'), h('p', {class: 'muted'}, 'The team disappears for everyone. History stays in the ledger.')),
      remove));
}

function leaveCard(ctx) {
  return card('Leave team', null,
    h('div', {class: 'danger-row plain'},
      h('p', {class: 'muted'}, `You lose access to ${ctx.team.name}; keys billed to it stop working until you switch them.`),
      h('button', {
        type: 'button', class: 'btn danger-outline', id: 'leave-team',
        onclick: () => confirmDialog(`Leave ${ctx.team.name}?`, 'You need a new invitation to come back.', 'Leave team', async () => {
          await api(`${ctx.t}/members/${enc(session.me.id)}`, {method: 'DELETE'});
          toast(`You left ${ctx.team.name}.`);
          await reloadSession();
          go(defaultRoute());
        }),
      }, 'Leave team')));
}

// === My keys ===

async function keysView(ctx) {
  const [me, keys, limits] = await Promise.all([api('/me'), api('/me/keys'), api('/me/limits')]);
  session.me = me;
  const teams = sortTeams(me.teams);
  const billingLabel = (b) => {
    if (b === 'personal') return 'Personal';
    const team = teams.find((t) => `team:${t.id}` === b);
    return team ? `Team: ${team.name}` : `Team ${b.slice(5)} (not a member)`;
  };
  const billingOptions = (current) => {
    const values = ['personal', ...teams.map((t) => `team:${t.id}`)];
    if (current && !values.includes(current)) values.push(current);
    return values.map((v) => h('option', {value: v, selected: v === current}, billingLabel(v)));
  };
  const live = keys.data.filter((k) => !k.revoked_at);
  const revoked = keys.data.filter((k) => k.revoked_at);
  const keyName = h('input', {id: 'key-name', autocomplete: 'off', placeholder: 'e.g. laptop, CI'});
  const keyBilling = h('select', {id: 'key-billing'}, billingOptions('personal'));
  const create = h('button', {type: 'submit', class: 'btn primary', id: 'key-create'}, 'Create key');
  const createError = h('p', {class: 'form-error', role: 'alert'});
  const createForm = h('form', {
    class: 'inline-form',
    async onsubmit(event) {
      event.preventDefault();
      createError.textContent = '';
      busy(create, true, 'Creating…');
      try {
        const body = {billing: keyBilling.value};
        if (keyName.value.trim()) body.name = keyName.value.trim();
        const res = await api('/me/keys', {method: 'POST', body});
        flash = {view: 'keys', node: secretPanel('Your new API key',
          'Copy it now: it is shown only once. Use it as the bearer token of any OpenAI-compatible SDK pointed at this gateway.',
          [['New API key', 'new-key', res.key]], `Bills: ${billingLabel(res.billing)}.`)};
        toast('Key created.');
        ctx.reload();
      } catch (e) {
        createError.textContent = e.message;
        busy(create, false);
      }
    },
  }, field('Name', 'key-name', keyName), field('Bill to', 'key-billing', keyBilling), h('div', {class: 'field field-submit'}, create));

  const keyRow = (k) => {
    const current = token && token.startsWith(k.prefix);
    const title = k.name || 'Unnamed key';
    let billing;
    if (k.revoked_at) billing = h('span', null, billingLabel(k.billing));
    else {
      billing = h('select', {
        id: `billing-${k.id}`, class: 'sm', 'aria-label': `Billing of ${title} (${k.prefix}…)`,
        async onchange() {
          billing.disabled = true;
          try {
            await api(`/me/keys/${enc(k.id)}`, {method: 'PATCH', body: {billing: billing.value}});
            toast(`${title} now bills ${billingLabel(billing.value)}.`);
            ctx.reload();
          } catch (e) {
            toast(e.message, 'error');
            billing.value = k.billing;
            billing.disabled = false;
          }
        },
      }, billingOptions(k.billing));
    }
    return h('tr', {'data-key-id': k.id, class: k.revoked_at ? 'revoked' : ''},
      h('td', {class: 'full'}, h('div', {class: 'person-name'}, h('span', {class: 'ellipsis'}, title), current ? h('span', {class: 'tag accent'}, 'this session') : null),
        h('div', {class: 'mono muted sm'}, `${k.prefix}…`)),
      h('td', {'data-label': 'Billing'}, billing),
      h('td', {'data-label': k.revoked_at ? 'Revoked' : 'Created'}, when(k.revoked_at || k.created_at)),
      h('td', {class: 'actions'}, k.revoked_at ? pill('Revoked') : h('button', {
        type: 'button', class: 'btn sm ghost danger-text', id: `revoke-${k.id}`, 'aria-label': `Revoke ${title} (${k.prefix}…)`,
        onclick: () => confirmDialog(`Revoke ${title}?`,
          current ? 'This is the key you signed in with: revoking it signs you out.' : 'Requests with this key are refused from now on. This cannot be undone.',
          'Revoke key', async () => {
            await api(`/me/keys/${enc(k.id)}`, {method: 'DELETE'});
            if (current) {
              signOut('You revoked the key you signed in with.');
              return;
            }
            toast(`${title} was revoked.`);
            ctx.reload();
          }),
      }, 'Revoke')));
  };
  const table = (rows, caption) => h('table', {class: 'table-stack keys-table'}, h('caption', {class: 'sr-only'}, caption),
    h('thead', null, h('tr', null, ['Key', 'Billing', caption === 'Revoked keys' ? 'Revoked' : 'Created'].map((c) => h('th', {scope: 'col'}, c)), h('th', {scope: 'col'}, h('span', {class: 'sr-only'}, 'Actions')))),
    h('tbody', null, rows.map(keyRow)));

  return frag(
    takeFlash('keys'),
    h('div', {class: 'stats stats-2'},
      stat('Personal balance', money(me.balance_usd), 'Pays for keys billed to you personally'),
      stat('Teams', fmtNum.format(teams.length), teams.length ? teams.map((t) => `${t.name} (${t.role})`).join(' · ') : 'None yet')),
    headroomCard(limits.data, billingLabel),
    card('API keys', null, createForm, createError,
      live.length ? h('div', {class: 'table-wrap flush-x'}, table(live, 'Active keys')) : emptyState('No active keys.'),
      revoked.length ? h('details', {class: 'revoked-keys'}, h('summary', null, `Revoked keys (${revoked.length})`), h('div', {class: 'table-wrap flush-x'}, table(revoked, 'Revoked keys'))) : null),
    h('div', {class: 'grid2'}, createTeamCard(), joinTeamCard()));
}

/** What the next request may hold, per billing target (GET /api/me/limits). */
function headroomCard(rows, billingLabel) {
  const binding = (r) => (r.binding === 'member_monthly' ? 'Your monthly limit' : 'The balance');
  const table = h('table', {class: 'table-stack', id: 'headroom-table'},
    h('caption', {class: 'sr-only'}, 'Headroom per billing target'),
    h('thead', null, h('tr', null, ['Bills', 'Balance', 'Limit', 'Spent this month', 'Next request may hold', 'Binding'].map((c) => h('th', {scope: 'col'}, c)))),
    h('tbody', null, rows.map((r) => h('tr', {'data-billing': r.billing},
      h('td', {class: 'full'}, billingLabel(r.billing)),
      h('td', {'data-label': 'Balance'}, money(r.balance_usd)),
      h('td', {'data-label': 'Limit'}, r.limit_usd == null ? h('span', {class: 'muted'}, 'None') : [money(r.limit_usd), r.enforcement === 'soft' ? h('span', {class: 'muted sm'}, ' (soft)') : null]),
      h('td', {'data-label': 'Spent this month'}, r.spent_usd == null ? h('span', {class: 'muted'}, '—') : money(r.spent_usd)),
      h('td', {'data-label': 'Next request may hold', class: 'strong'}, money(r.remaining_usd)),
      h('td', {'data-label': 'Binding'}, binding(r), r.resets_at && r.binding === 'member_monthly' ? h('div', {class: 'muted sm'}, `Resets ${when(r.resets_at)}`) : null)))));
  return card('Headroom', null,
    h('p', {class: 'muted'}, 'The most the next request may hold on each billing target: the smaller of what is left of your monthly limit and the paying balance.'),
    h('div', {class: 'table-wrap flush-x'}, table));
}

function createTeamCard() {
  const name = h('input', {id: 'new-team-name', required: true, maxlength: 100, autocomplete: 'off', placeholder: 'Acme Research'});
  const submit = h('button', {type: 'submit', class: 'btn primary', id: 'team-create'}, 'Create team');
  const error = h('p', {class: 'form-error', role: 'alert'});
  return card('Create a team', null,
    h('p', {class: 'muted'}, 'You become its owner: team-billed requests are paid from your balance.'),
    h('form', {
      class: 'inline-form',
      async onsubmit(event) {
        event.preventDefault();
        error.textContent = '';
        busy(submit, true, 'Creating…');
        try {
          const team = await api('/teams', {method: 'POST', body: {name: name.value.trim()}});
          toast(`${team.name} was created.`);
          await reloadSession(team.id);
          go('overview');
        } catch (e) {
          error.textContent = e.message;
          busy(submit, false);
        }
      },
    }, field('Team name', 'new-team-name', name), h('div', {class: 'field field-submit'}, submit)), error);
}

function joinTeamCard() {
  const input = h('input', {id: 'join-token', class: 'mono', required: true, autocomplete: 'off', spellcheck: 'false', placeholder: 'tgi_… or tgl_…'});
  const submit = h('button', {type: 'submit', class: 'btn primary', id: 'join-submit'}, 'Join');
  const error = h('p', {class: 'form-error', role: 'alert'});
  return card('Join a team', null,
    h('p', {class: 'muted'}, 'Paste an invitation token (or its URL), or a team’s invite link to ask to join.'),
    h('form', {
      class: 'inline-form',
      async onsubmit(event) {
        event.preventDefault();
        error.textContent = '';
        const text = input.value.trim();
        const m = /(tg[il]_[A-Za-z0-9]+)/.exec(text);
        if (!m) {
          error.textContent = 'That does not look like an invitation token (tgi_…) or an invite link (tgl_…).';
          return;
        }
        busy(submit, true, 'Joining…');
        try {
          if (m[1].startsWith('tgi_')) {
            const res = await api(`/invitations/${enc(m[1])}/accept`, {method: 'POST'});
            toast(`You joined ${res.team.name} as ${res.role === 'admin' ? 'an admin' : 'a member'}.`);
            await reloadSession(res.team.id);
            renderView();
          } else {
            await api(`/join/${enc(m[1])}`, {method: 'POST'});
            input.value = '';
            toast('Request sent. An admin of the team has to approve it.');
            busy(submit, false);
          }
        } catch (e) {
          error.textContent = e.message;
          busy(submit, false);
        }
      },
    }, field('Token or link', 'join-token', input), h('div', {class: 'field field-submit'}, submit)), error);
}

// === My usage ===

async function mineView() {
  const month = monthRange(0);
  const [me, report] = await Promise.all([api('/me'), api(`/me/usage?from=${month.from}&to=${month.to}`)]);
  session.me = me;
  const personal = report.by_payer.find((g) => g.team_id === null);
  const stats = h('div', {class: 'stats'},
    stat('Balance', money(report.balance_usd), 'Your prepaid balance (personal billing)'),
    stat('Spend this month', money(report.total.cost_usd), `${fmtNum.format(report.total.requests)} requests, all billing`),
    stat('Billed to you', money(personal?.cost_usd ?? '0'), 'Personal requests this month'),
    stat('Billed to teams', money(usdSub(report.total.cost_usd, personal?.cost_usd ?? '0')), 'Paid by the teams’ owners'));
  const keys = daysBetween(month.from, month.to);
  const byDay = new Map(report.by_day.map((g) => [g.key, g]));
  const chart = barChart({
    keys,
    series: [{cls: 's0', values: keys.map((k) => nano(byDay.get(k)?.cost_usd))}],
    label: `Your daily spend in ${fmtMonth.format(dayDate(month.from))}: ${usdText(report.total.cost_usd)}.`,
    xLabel: (k) => fmtDayNum.format(dayDate(k)),
    tip: (k) => {
      const g = byDay.get(k);
      return `${fmtDayLong.format(dayDate(k))}\n${usdText(g?.cost_usd ?? '0')} · ${fmtNum.format(g?.requests ?? 0)} requests`;
    },
    empty: 'No spend this month yet.',
  });
  const total = nano(report.total.cost_usd);
  const payers = report.by_payer.map((g) => ({...g, label: g.team_id === null ? 'Personal' : `Team: ${g.label || g.team_id}`}));
  return frag(stats,
    card(`My daily spend · ${fmtMonth.format(dayDate(month.from))}`, null, chart),
    h('div', {class: 'grid2'},
      topList('By who paid', payers, total, 'No usage this month yet.'),
      topList('By model', report.by_model, total, 'No usage this month yet.')));
}

/** a − b, as a USD decimal string (both decimal strings). */
function usdSub(a, b) {
  const d = nano(a) - nano(b);
  const sign = d < 0n ? '-' : '';
  const abs = d < 0n ? -d : d;
  return `${sign}${abs / 1000000000n}.${String(abs % 1000000000n).padStart(9, '0')}`;
}

// === Invitation and join pages ===

async function inviteView() {
  const tokenText = linkToken();
  if (!tokenText) return emptyState('No invitation here', 'The link is incomplete: open the whole link you were sent.');
  const info = await api(`/invitations/${enc(tokenText)}`);
  const roleText = info.role === 'admin' ? 'an admin' : 'a member';
  const meEmail = session.me?.email ?? '';
  const error = h('p', {class: 'form-error', role: 'alert'});
  const accept = h('button', {type: 'button', class: 'btn primary', id: 'invite-accept',
    async onclick() {
      error.textContent = '';
      busy(accept, true, 'Joining…');
      try {
        const res = await api(`/invitations/${enc(tokenText)}/accept`, {method: 'POST'});
        toast(`You joined ${res.team.name} as ${res.role === 'admin' ? 'an admin' : 'a member'}.`);
        await reloadSession(res.team.id);
        go('overview');
      } catch (e) {
        error.textContent = e.message;
        busy(accept, false);
      }
    }}, `Join ${info.team.name}`);
  const states = {
    accepted: 'This invitation was already used.',
    revoked: 'This invitation was revoked; ask for a new one.',
    expired: `This invitation expired on ${fmtDateTime.format(new Date(info.expires_at))}; ask for a new one.`,
  };
  const wrongUser = meEmail && meEmail.toLowerCase() !== info.email.toLowerCase();
  return card(`Join ${info.team.name}`, null,
    h('p', {id: 'invite-summary'}, `You are invited to join ${info.team.name} as ${roleText}.`),
    h('p', {class: 'muted'}, `The invitation is for ${info.email}; it expires ${fmtDateTime.format(new Date(info.expires_at))}.`),
    states[info.status]
      ? h('p', {class: 'alert', role: 'alert'}, states[info.status])
      : wrongUser
        ? h('p', {class: 'alert', role: 'alert'}, `You are signed in as ${meEmail}. Sign out and sign in with the key of ${info.email} to accept.`)
        : h('div', {class: 'stack'}, accept, error));
}

async function joinView() {
  const tokenText = linkToken();
  if (!tokenText) return emptyState('No invite link here', 'The link is incomplete: open the whole link you were sent.');
  const info = await api(`/join/${enc(tokenText)}`);
  const error = h('p', {class: 'form-error', role: 'alert'});
  const done = h('p', {class: 'notice', role: 'status'});
  const ask = h('button', {type: 'button', class: 'btn primary', id: 'join-ask',
    async onclick() {
      error.textContent = '';
      busy(ask, true, 'Sending…');
      try {
        await api(`/join/${enc(tokenText)}`, {method: 'POST'});
        done.textContent = `Request sent. An admin of ${info.team.name} has to approve it.`;
        ask.remove();
      } catch (e) {
        error.textContent = e.message;
        busy(ask, false);
      }
    }}, `Ask to join ${info.team.name}`);
  return card(`Join ${info.team.name}`, null,
    h('p', null, `This link lets you ask to join ${info.team.name}. An admin approves the request.`),
    h('div', {class: 'stack'}, ask, done, error));
}

const RENDER = {overview: overviewView, members: membersView, usage: usageView, settings: settingsView, mine: mineView, keys: keysView, invite: inviteView, join: joinView};

// A link's page opened before signing in says what signing in is for.
(async () => {
  const tokenText = linkToken();
  if (!tokenText) {
    renderSignIn();
    return;
  }
  try {
    if (location.hash.startsWith('#/invite/')) {
      const info = await api(`/invitations/${enc(tokenText)}`);
      renderSignIn(`Sign in with the API key of ${info.email} to join ${info.team.name} as ${info.role === 'admin' ? 'an admin' : 'a member'}.`);
    } else {
      const info = await api(`/join/${enc(tokenText)}`);
      renderSignIn(`Sign in with your API key to ask to join ${info.team.name}.`);
    }
  } catch (e) {
    renderSignIn(e.status === 404 ? 'That link is not valid (unknown, or disabled). Sign in to continue.' : e.message);
  }
})();
