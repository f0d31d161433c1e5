// Time to interactive on the big team (50 members, 100,000 ledger rows):
// from navigation, through sign-in, to the Overview fully rendered (chart
// and both top lists). Printed and written to timing.json; not asserted.

import {writeFileSync} from 'node:fs';
import {join} from 'node:path';
import {after, before, test} from 'node:test';

import {ARTIFACTS, BASE, assertClean, launch, openPage, seed} from './helpers.mjs';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

async function measure() {
  const {context, page, problems} = await openPage(browser);
  const start = Date.now();
  await page.goto(`${BASE}/dashboard`);
  const input = page.getByLabel('API key or operator token');
  await input.waitFor();
  const pageLoaded = Date.now();
  await input.fill(seed.users.bigOwner.key);
  const clicked = Date.now();
  await page.getByRole('button', {name: 'Sign in'}).click();
  await page.waitForFunction(() => {
    const body = document.querySelector('#view-body[data-ready="overview"]');
    return body && body.querySelectorAll('.chart svg .bar').length > 0 && body.querySelectorAll('.toplist').length === 2
      && [...body.querySelectorAll('.toplist')].every((list) => list.children.length > 0);
  }, null, {timeout: 60000, polling: 'raf'});
  const done = Date.now();
  await assertClean(page, problems);
  await context.close();
  return {total_ms: done - start, page_load_ms: pageLoaded - start, sign_in_to_overview_ms: done - clicked};
}

test('time from navigation and sign-in to a rendered Overview (100,000 rows)', async () => {
  const cold = await measure();
  const warm = await measure();
  const result = {team: 'Northwind Labs', members: seed.bigMembers.length, ledger_rows: 100000, cold, warm, measured_at: new Date().toISOString()};
  writeFileSync(join(ARTIFACTS, 'timing.json'), `${JSON.stringify(result, null, 2)}\n`);
  console.log(`time to interactive: cold ${cold.total_ms} ms (sign-in → overview ${cold.sign_in_to_overview_ms} ms), warm ${warm.total_ms} ms (sign-in → overview ${warm.sign_in_to_overview_ms} ms)`);
});
