// Shared helpers: the seed, a Chromium launcher, pages that record console
// errors and CSP violations, sign-in, and API calls from Node.

import assert from 'node:assert/strict';
import {mkdirSync, readFileSync} from 'node:fs';
import {join} from 'node:path';

import {chromium} from 'playwright-core';

export const seed = JSON.parse(readFileSync(process.env.E2E_STATE, 'utf8'));
export const BASE = seed.base;
export const ARTIFACTS = process.env.E2E_ARTIFACTS;
export const SCREENS = join(ARTIFACTS, 'screens');
mkdirSync(SCREENS, {recursive: true});

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking'],
  });
}

/**
 * A new context and page. `problems` collects console errors and warnings,
 * uncaught exceptions and CSP violations (as the page's own
 * `securitypolicyviolation` events).
 */
export async function openPage(browser, {width = 1440, height = 900, colorScheme = 'light'} = {}) {
  const context = await browser.newContext({
    viewport: {width, height},
    colorScheme,
    locale: 'en-US',
    timezoneId: 'America/Los_Angeles',
    acceptDownloads: true,
  });
  await context.addInitScript(() => {
    window.__csp = [];
    document.addEventListener('securitypolicyviolation', (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
  });
  const page = await context.newPage();
  const problems = [];
  const consoleText = [];
  page.on('console', (message) => {
    consoleText.push(message.text());
    if (message.type() === 'error' || message.type() === 'warning') problems.push(`console ${message.type()}: ${message.text()}`);
  });
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  return {context, page, problems, consoleText};
}

/**
 * No console errors, no uncaught exceptions, no CSP violations. `statuses`
 * lists HTTP error statuses a test provoked on purpose: Chromium logs each
 * one as "Failed to load resource" (the page itself logs nothing).
 */
export async function assertClean(page, problems, statuses = []) {
  const csp = await page.evaluate(() => window.__csp || []);
  assert.deepEqual(csp, [], `CSP violations: ${csp.join('; ')}`);
  const expected = (p) => statuses.some((status) => p.includes(`Failed to load resource: the server responded with a status of ${status}`));
  const unexpected = problems.filter((p) => !expected(p));
  assert.deepEqual(unexpected, [], `console problems: ${unexpected.join('; ')}`);
}

export async function signIn(page, key, view) {
  await page.goto(`${BASE}/dashboard`);
  await page.getByLabel('API key or operator token').fill(key);
  await page.getByRole('button', {name: 'Sign in'}).click();
  await ready(page, view);
}

/** Waits until a view has rendered its data. */
export async function ready(page, view) {
  const selector = view ? `#view-body[data-ready="${view}"]` : '#view-body[data-ready]';
  await page.waitForSelector(selector, {timeout: 30000});
}

/** Navigates with the sidebar (a click on the current view reloads it). */
export async function goTo(page, view) {
  const titles = {overview: 'Overview', members: 'Members', usage: 'Usage', settings: 'Settings', mine: 'My usage', keys: 'My keys'};
  await page.getByRole('navigation', {name: 'Sections'}).getByRole('link', {name: titles[view], exact: true}).click();
  await ready(page, view);
}

export async function api(path, {token = seed.adminToken, method = 'GET', body, headers = {}, raw = false} = {}) {
  const res = await fetch(`${BASE}${path}`, {
    method,
    headers: {authorization: `Bearer ${token}`, ...(body === undefined ? {} : {'content-type': 'application/json'}), ...headers},
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (raw) return res;
  const text = await res.text();
  assert.ok(res.ok, `${method} ${path}: HTTP ${res.status} ${text}`);
  return JSON.parse(text);
}

/** The displayed totals of the Usage view. */
export async function usageTotals(page) {
  return page.evaluate(() => {
    const box = document.getElementById('usage-totals');
    const number = (name) => Number(box.querySelector(`[data-total="${name}"]`).textContent.replace(/[^0-9]/g, ''));
    return {
      cost_usd: box.querySelector('[data-usd]').dataset.usd,
      requests: number('requests'),
      input_tokens: number('input_tokens'),
      output_tokens: number('output_tokens'),
    };
  });
}

export const screenshot = (page, name) => page.screenshot({path: join(SCREENS, `${name}.png`), fullPage: true});

/** Today's UTC month as the API's default report range. */
export function thisMonth() {
  const now = new Date();
  const pad = (n) => String(n).padStart(2, '0');
  const last = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 0));
  return {
    from: `${now.getUTCFullYear()}-${pad(now.getUTCMonth() + 1)}-01`,
    to: `${last.getUTCFullYear()}-${pad(last.getUTCMonth() + 1)}-${pad(last.getUTCDate())}`,
  };
}
