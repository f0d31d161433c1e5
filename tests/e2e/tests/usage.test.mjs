// The Usage view's totals and tables equal the API's /usage report, and the
// CSV export downloads exactly the API's CSV for what is shown.

import assert from 'node:assert/strict';
import {readFile} from 'node:fs/promises';
import {after, before, test} from 'node:test';

import {api, assertClean, goTo, launch, openPage, seed, signIn, usageTotals} from './helpers.mjs';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

const shownRange = async (page) => ({
  from: await page.locator('#range-from').inputValue(),
  to: await page.locator('#range-to').inputValue(),
});

/** The rows of a usage table as {key: exact cost}, and its footer total. */
const tableCosts = (page, group) => page.evaluate((group) => {
  const table = document.getElementById(`usage-by-${group}`);
  const rows = {};
  for (const tr of table.querySelectorAll('tbody tr')) rows[tr.dataset.key] = tr.querySelector('[data-usd]').dataset.usd;
  return {rows, total: table.querySelector('tfoot [data-usd]').dataset.usd};
}, group);

async function checkAgainstApi(page, teamId, token) {
  const range = await shownRange(page);
  const report = (group) => api(`/api/teams/${teamId}/usage?from=${range.from}&to=${range.to}&group_by=${group}`, {token});
  const [byMember, byModel] = await Promise.all([report('member'), report('model')]);
  const shown = await usageTotals(page);
  assert.deepEqual(shown, {
    cost_usd: byMember.total.cost_usd,
    requests: byMember.total.requests,
    input_tokens: byMember.total.input_tokens,
    output_tokens: byMember.total.output_tokens,
  });
  for (const [group, json] of [['member', byMember], ['model', byModel]]) {
    const table = await tableCosts(page, group);
    assert.equal(table.total, json.total.cost_usd, `${group} table total`);
    assert.deepEqual(table.rows, Object.fromEntries(json.groups.map((g) => [g.key, g.cost_usd])), `${group} rows`);
  }
  return {range, byMember};
}

/** The UTC day ranges the presets must pick. */
function expectedRange(label) {
  const pad = (n) => String(n).padStart(2, '0');
  const day = (d) => `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
  const now = new Date();
  const today = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate()));
  const month = (offset) => ({
    from: day(new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth() + offset, 1))),
    to: day(new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth() + offset + 1, 0))),
  });
  const last = (n) => ({from: day(new Date(today - (n - 1) * 86400000)), to: day(today)});
  return {'This month': month(0), 'Last month': month(-1), 'Last 7 days': last(7), 'Last 30 days': last(30)}[label];
}

async function choosePreset(page, label) {
  await page.getByLabel('Date range').selectOption({label});
  const {from, to} = expectedRange(label);
  await page.waitForSelector(`#usage-totals[data-range="${from}/${to}"]`);
  await page.waitForFunction(() => document.getElementById('view-body').getAttribute('aria-busy') !== 'true');
  return {from, to};
}

test('Acme: this month equals the API report (and its default range)', async () => {
  const {owner} = seed.users;
  const {context, page, problems} = await openPage(browser);
  await signIn(page, owner.key, 'overview');
  await goTo(page, 'usage');
  const {byMember} = await checkAgainstApi(page, seed.teams.acme.id, owner.key);
  const defaultReport = await api(`/api/teams/${seed.teams.acme.id}/usage?group_by=member`, {token: owner.key});
  assert.deepEqual(byMember.total, defaultReport.total, 'this month = the API default');
  assert.ok(byMember.total.requests >= 14, 'the seeded requests are counted');
  await assertClean(page, problems);
  await context.close();
});

test('Northwind Labs: every range matches, and CSV exports are the API CSV', async () => {
  const {bigOwner} = seed.users;
  const team = seed.teams.northwind.id;
  const {context, page, problems} = await openPage(browser);
  await signIn(page, bigOwner.key, 'overview');
  await goTo(page, 'usage');
  await checkAgainstApi(page, team, bigOwner.key);

  assert.deepEqual(await shownRange(page), expectedRange('This month'));
  for (const label of ['Last month', 'Last 7 days', 'Last 30 days']) {
    const expected = await choosePreset(page, label);
    const {range} = await checkAgainstApi(page, team, bigOwner.key);
    assert.deepEqual(range, expected, label);
  }

  // A custom range: the 3rd to the 12th of last month.
  await page.getByLabel('Date range').selectOption({label: 'Custom range'});
  const month = (await shownRange(page)).from.slice(0, 7);
  await page.getByLabel('From', {exact: true}).fill(`${month}-03`);
  await page.getByLabel('To', {exact: true}).fill(`${month}-12`);
  await page.getByRole('button', {name: 'Apply'}).click();
  await page.waitForSelector(`#usage-totals[data-range="${month}-03/${month}-12"]`);
  await page.waitForFunction(() => document.getElementById('view-body').getAttribute('aria-busy') !== 'true');
  const {range} = await checkAgainstApi(page, team, bigOwner.key);
  assert.deepEqual(range, {from: `${month}-03`, to: `${month}-12`});

  // The stacked chart has one column per day and can stack by model.
  assert.equal(await page.locator('.chart svg .col').count(), 10);
  await page.getByRole('button', {name: 'By model'}).click();
  await page.waitForSelector('#split-model[aria-pressed="true"]');
  await page.locator('.legend', {hasText: 'gpt-5.1'}).waitFor();

  for (const group of ['member', 'model', 'day']) {
    const [download] = await Promise.all([page.waitForEvent('download'), page.locator(`#export-${group}`).click()]);
    assert.equal(download.suggestedFilename(), `usage-northwind-labs-by-${group}-${range.from}-to-${range.to}.csv`);
    const file = await readFile(await download.path(), 'utf8');
    const res = await api(`/api/teams/${team}/usage?from=${range.from}&to=${range.to}&group_by=${group}&format=csv`, {token: bigOwner.key, raw: true});
    assert.equal(res.status, 200);
    assert.equal(file, await res.text(), `${group} CSV`);
    // The eight columns it always had come first, in order; the parts follow.
    assert.ok(file.startsWith('key,label,requests,input_tokens,output_tokens,cached_tokens,reasoning_tokens,cost_usd,cache_write_tokens,'));
  }
  await assertClean(page, problems);
  await context.close();
});
