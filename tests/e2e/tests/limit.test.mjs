// A hard limit set in the Members view refuses the member's next request
// (402 monthly_limit_exceeded) and shows as reached.

import assert from 'node:assert/strict';
import {after, before, test} from 'node:test';

import {BASE, api, assertClean, goTo, launch, openPage, seed, signIn} from './helpers.mjs';

const {owner, member} = seed.users;
const acme = seed.teams.acme;
let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  // Leave the member without an override for the other tests.
  await api(`/api/teams/${acme.id}/members/${member.id}`, {token: owner.key, method: 'PATCH', body: {monthly_limit_usd: null}});
  await browser?.close();
});

const completion = () => fetch(`${BASE}/v1/chat/completions`, {
  method: 'POST',
  headers: {authorization: `Bearer ${member.key}`, 'content-type': 'application/json', 'x-tollgate-billing': `team:${acme.id}`},
  body: JSON.stringify({model: 'mock-1', max_tokens: 16, messages: [{role: 'user', content: 'one more, please'}]}),
});

test('a hard member limit refuses the next request and shows as reached', async () => {
  const before = await completion();
  assert.equal(before.status, 200, 'the member can spend before the limit');
  await before.text();

  const {context, page, problems} = await openPage(browser);
  await signIn(page, owner.key, 'overview');
  await goTo(page, 'members');
  const row = page.locator(`tr[data-email="${member.email}"]`);
  assert.equal(await row.locator('[data-limit-state]').getAttribute('data-limit-state'), 'ok');
  await row.getByRole('button', {name: `Set monthly limit for ${member.email}`}).click();
  const dialog = page.getByRole('dialog', {name: `Monthly limit for ${member.email}`});
  await dialog.getByLabel('Monthly limit override (USD)').fill('abc');
  await dialog.getByRole('button', {name: 'Save limit'}).click();
  await dialog.getByText(/Enter the limit in US dollars/).waitFor();
  await dialog.getByLabel('Monthly limit override (USD)').fill('0.000001');
  await dialog.getByRole('button', {name: 'Save limit'}).click();
  await page.getByText(`Monthly limit for ${member.email} set to`).waitFor();
  await row.getByText('override').waitFor();
  assert.equal(await row.locator('[data-limit-state]').getAttribute('data-limit-state'), 'bad');
  assert.equal((await row.locator('[data-limit-state]').textContent()), 'Limit reached · blocked');
  assert.equal(await row.locator('.money[data-usd="0.000001"]').first().getAttribute('title'), 'Exact: $0.000001');

  const refused = await completion();
  const body = await refused.json();
  assert.equal(refused.status, 402);
  assert.equal(body.error.code, 'monthly_limit_exceeded');
  assert.equal(refused.headers.get('x-should-retry'), 'false');

  await goTo(page, 'members');
  assert.equal(await row.locator('[data-limit-state]').textContent(), 'Limit reached · blocked');
  const apiRow = (await api(`/api/teams/${acme.id}/members`, {token: owner.key})).data.find((m) => m.user_id === member.id);
  assert.equal(apiRow.monthly_limit_usd, '0.000001');
  assert.equal(await row.locator('.spend-top .money').first().getAttribute('data-usd'), apiRow.spend_this_month_usd);

  // Clearing the override (empty field) returns to the team default.
  await row.getByRole('button', {name: `Set monthly limit for ${member.email}`}).click();
  await dialog.getByLabel('Monthly limit override (USD)').fill('');
  await dialog.getByRole('button', {name: 'Save limit'}).click();
  await page.getByText(`${member.email} now follows the team default.`).waitFor();
  await row.getByText('team default').waitFor();
  await assertClean(page, problems);
  await context.close();
});
