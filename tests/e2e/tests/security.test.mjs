// The key stays in memory: never in storage, cookies, the URL or the console;
// no console errors and no CSP violations on any view; sign-out forgets it.

import assert from 'node:assert/strict';
import {after, before, test} from 'node:test';

import {BASE, assertClean, goTo, launch, openPage, seed, signIn} from './helpers.mjs';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

test('the page is served with the strict CSP', async () => {
  const res = await fetch(`${BASE}/dashboard`);
  const csp = res.headers.get('content-security-policy');
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /script-src 'self'/);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
  const html = await res.text();
  assert.doesNotMatch(html, /<style|style=|<script>|onclick=/);
});

test('the key is never stored, put in the URL or logged, and sign-out forgets it', async () => {
  const {owner} = seed.users;
  const {context, page, problems, consoleText} = await openPage(browser);
  await signIn(page, owner.key, 'overview');
  const urls = [page.url()];
  for (const view of ['members', 'usage', 'settings', 'keys', 'overview']) {
    await goTo(page, view);
    urls.push(page.url());
  }
  // A dialog opens and closes without errors.
  await goTo(page, 'members');
  await page.getByRole('button', {name: /^Set monthly limit for /}).first().click();
  await page.getByRole('dialog').getByRole('button', {name: 'Cancel'}).click();

  const leaks = await page.evaluate((key) => ({
    local: JSON.stringify({...localStorage}).includes(key) || localStorage.length,
    session: JSON.stringify({...sessionStorage}).includes(key) || sessionStorage.length,
    cookie: document.cookie,
    url: location.href.includes(key),
    dom: document.documentElement.outerHTML.includes(key),
    hash: location.hash,
  }), owner.key);
  assert.deepEqual(leaks, {local: 0, session: 0, cookie: '', url: false, dom: false, hash: '#/members'});
  assert.deepEqual(await context.cookies(), []);
  for (const url of urls) assert.ok(!url.includes(owner.key) && !url.includes('tg-'), url);
  assert.ok(consoleText.every((text) => !text.includes(owner.key)), 'the key is not logged');
  await assertClean(page, problems);

  await page.getByRole('button', {name: 'Sign out'}).click();
  await page.getByText('You signed out. The key was forgotten.').waitFor();
  assert.equal(await page.getByLabel('API key or operator token').inputValue(), '');
  assert.equal(new URL(page.url()).hash, '');
  // Going back to a view needs a new sign-in.
  await page.goto(`${BASE}/dashboard#/members`);
  await page.getByLabel('API key or operator token').waitFor();
  assert.equal(await page.locator('#view-body').count(), 0);
  await assertClean(page, problems);
  await context.close();
});

test('a wrong key is refused in words', async () => {
  const {context, page, problems} = await openPage(browser);
  await page.goto(`${BASE}/dashboard`);
  await page.getByLabel('API key or operator token').fill('tg-notarealkeynotarealkeynotarealkey0000');
  await page.getByRole('button', {name: 'Sign in'}).click();
  await page.getByText('That key or token was not accepted.').waitFor();
  assert.equal(await page.locator('#view-body').count(), 0);
  await assertClean(page, problems, [401]);
  await context.close();
});

test('keyboard only: sign in, reach a view, open and close a dialog', async () => {
  const {member} = seed.users;
  const {context, page, problems} = await openPage(browser);
  await page.goto(`${BASE}/dashboard`);
  // The key field has focus on load.
  await page.keyboard.type(member.key);
  await page.keyboard.press('Enter');
  await page.waitForSelector('#view-body[data-ready="overview"]');
  // Tab from the top reaches the skip button, then the brand, then the sections.
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Skip to content');
  let guard = 0;
  while ((await page.evaluate(() => document.activeElement.id)) !== 'nav-keys' && guard++ < 20) await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'nav-keys');
  const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  assert.notEqual(outline, 'none', 'focus is visible');
  await page.keyboard.press('Enter');
  await page.waitForSelector('#view-body[data-ready="keys"]');
  assert.equal(new URL(page.url()).hash, '#/keys');
  await page.focus('[id^="revoke-key_"]');
  await page.keyboard.press('Enter');
  await page.getByRole('dialog').waitFor();
  await page.keyboard.press('Escape');
  await page.getByRole('dialog').waitFor({state: 'detached'});
  await assertClean(page, problems);
  await context.close();
});
