// Alerts in the dashboard: an owner adds a webhook in Settings (its secret
// shown once), sets a low-balance alert that the next settlement crosses,
// sees the delivery attempt in the webhook's log, and deletes the webhook;
// the Usage view groups by a cost allocation tag.

import assert from 'node:assert/strict';
import {after, before, test} from 'node:test';

import {BASE, api, assertClean, goTo, launch, openPage, seed, signIn} from './helpers.mjs';

const {owner, admin} = seed.users;
const acme = seed.teams.acme;
let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await api(`/api/teams/${acme.id}`, {token: owner.key, method: 'PATCH', body: {low_balance_usd: null}});
  await browser?.close();
});

const completion = (who, headers = {}) => fetch(`${BASE}/v1/chat/completions`, {
  method: 'POST',
  headers: {authorization: `Bearer ${who.key}`, 'content-type': 'application/json', 'x-tollgate-billing': `team:${acme.id}`, ...headers},
  body: JSON.stringify({model: 'mock-1', max_tokens: 16, messages: [{role: 'user', content: 'alert me'}]}),
});

test('an owner adds a webhook, sees its secret once, its deliveries, and deletes it', async () => {
  const {context, page, problems} = await openPage(browser);
  await signIn(page, owner.key, 'overview');
  await goTo(page, 'settings');
  // Nothing listens on port 9: every attempt fails and is logged.
  const url = 'http://127.0.0.1:9/tollgate-e2e';
  await page.getByLabel('Endpoint URL').fill(url);
  await page.locator('#hook-create').click();
  await page.locator('#hook-secret').waitFor();
  const secret = await page.locator('#hook-secret').inputValue();
  assert.match(secret, /^whsec_/);
  const listed = await api(`/api/teams/${acme.id}/webhooks`, {token: owner.key});
  const hook = listed.data.find((w) => w.url === url);
  assert.ok(hook, 'the webhook is listed');
  assert.ok(!JSON.stringify(listed).includes(secret), 'listings never show the secret');
  assert.deepEqual(hook.events, ['limit.threshold', 'limit.blocked', 'balance.low']);
  await page.locator(`tr[data-hook-id="${hook.id}"]`).waitFor();

  // A low-balance alert above the owner's balance: the next settlement
  // crosses it and balance.low goes out (and fails to arrive).
  await page.getByLabel('Low-balance alert').fill('100000');
  await page.locator('#settings-save').click();
  await page.getByText('Settings saved.').waitFor();
  const res = await completion(owner);
  assert.equal(res.status, 200);
  await res.text();
  let attempts = [];
  for (let i = 0; i < 150 && !attempts.length; i++) {
    attempts = (await api(`/api/teams/${acme.id}/webhooks/${hook.id}/deliveries`, {token: owner.key})).data;
    if (!attempts.length) await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(attempts.length, 'an attempt is recorded');
  assert.equal(attempts[0].delivered, false);
  await page.getByRole('button', {name: `Deliveries to ${url}`}).click();
  const dialog = page.getByRole('dialog', {name: `Deliveries to ${url}`});
  await dialog.locator('#deliveries-table tbody tr').first().waitFor();
  await dialog.getByRole('button', {name: 'Close'}).click();

  await page.getByRole('button', {name: `Delete the webhook to ${url}`}).click();
  await page.getByRole('dialog', {name: 'Delete this webhook?'}).getByRole('button', {name: 'Delete webhook'}).click();
  await page.getByText('Webhook deleted.').waitFor();
  const after = await api(`/api/teams/${acme.id}/webhooks`, {token: owner.key});
  assert.ok(!after.data.some((w) => w.id === hook.id));
  await assertClean(page, problems);
  await context.close();
});

test('usage groups by a cost allocation tag', async () => {
  for (const tags of ['project=e2e-alpha', 'project=e2e-alpha,env=ci', 'project=e2e-beta']) {
    const res = await completion(admin, {'x-tollgate-tags': tags});
    assert.equal(res.status, 200);
    await res.text();
  }
  const {context, page, problems} = await openPage(browser);
  await signIn(page, owner.key, 'overview');
  await goTo(page, 'usage');
  await page.getByLabel('Tag key').fill('project');
  await page.locator('#tag-apply').click();
  const table = page.locator('#usage-by-tag-project');
  await table.waitFor();
  const range = await page.locator('#usage-totals').getAttribute('data-range');
  const [from, to] = range.split('/');
  const report = await api(`/api/teams/${acme.id}/usage?from=${from}&to=${to}&group_by=tag:project`, {token: owner.key});
  const alpha = report.groups.find((g) => g.key === 'e2e-alpha');
  assert.ok(alpha && alpha.requests >= 2, 'the API groups by the tag');
  const shownKeys = await table.locator('tbody tr').evaluateAll((rows) => rows.map((r) => r.dataset.key));
  assert.deepEqual([...shownKeys].sort(), report.groups.map((g) => g.key).sort());
  await table.locator('tr[data-key="e2e-alpha"]').waitFor();
  await table.locator('tr[data-key=""]').getByText('(none)').waitFor();
  await assertClean(page, problems);
  await context.close();
});
