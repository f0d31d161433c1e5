// My usage: a member sees their own spend, wherever it was billed, and a
// balance that is read fresh (not the one from sign-in).

import assert from 'node:assert/strict';
import {after, before, test} from 'node:test';

import {api, assertClean, goTo, launch, openPage, seed, signIn} from './helpers.mjs';

const {member} = seed.users;
let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

test('My usage shows the member\u2019s own spend by payer and model, and the live balance', async () => {
  const {context, page, problems} = await openPage(browser);
  await signIn(page, member.key, 'overview');
  await goTo(page, 'mine');
  const report = await api('/api/me/usage', {token: member.key});
  assert.ok(report.by_payer.some((g) => g.team_id === seed.teams.acme.id), 'the seed billed the member to Acme');
  await page.getByRole('heading', {name: 'By who paid'}).waitFor();
  await page.getByText('Team: Acme').first().waitFor();
  // Spending after sign-in shows on the next visit (the balance is read
  // fresh, not kept from sign-in): a personal request, on a credit the
  // operator adds now.
  await api(`/api/users/${member.id}/credits`, {method: 'POST', body: {amount_usd: '1', note: 'e2e my usage'}});
  const before = (await api('/api/me', {token: member.key})).balance_usd;
  const res = await fetch(`${seed.base}/v1/chat/completions`, {
    method: 'POST',
    headers: {authorization: `Bearer ${member.key}`, 'content-type': 'application/json'},
    body: JSON.stringify({model: 'mock-1', messages: [{role: 'user', content: 'hi'}]}),
  });
  assert.equal(res.status, 200);
  await res.text();
  const afterSpend = (await api('/api/me', {token: member.key})).balance_usd;
  assert.notEqual(afterSpend, before);
  await goTo(page, 'overview');
  await goTo(page, 'mine');
  const shown = await page.locator('.stat', {hasText: 'Balance'}).locator('[data-usd]').first().getAttribute('data-usd');
  assert.equal(shown, afterSpend);
  await assertClean(page, problems);
  await context.close();
});
