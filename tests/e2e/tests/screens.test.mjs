// Screenshots of every view at 1440 and 375 px (light), plus the Overview
// and Usage in dark mode, into target/e2e-artifacts/screens/.

import assert from 'node:assert/strict';
import {after, before, test} from 'node:test';

import {assertClean, goTo, launch, openPage, screenshot, seed, signIn} from './helpers.mjs';

const VIEWS = ['overview', 'members', 'usage', 'settings', 'mine', 'keys'];
let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

async function shoot(width, height, colorScheme, views) {
  const {context, page, problems} = await openPage(browser, {width, height, colorScheme});
  await signIn(page, seed.users.bigOwner.key, 'overview');
  for (const view of views) {
    await goTo(page, view);
    if (view === 'overview' || view === 'usage') await page.locator('.chart svg .bar').first().waitFor();
    if (view === 'mine') await page.locator('.chart svg').first().waitFor();
    await page.mouse.move(0, 0);
    // No horizontal overflow of the page itself at this width.
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `${view} at ${width}px overflows by ${overflow}px`);
    await screenshot(page, `${view}-${width}${colorScheme === 'dark' ? '-dark' : ''}`);
  }
  await assertClean(page, problems);
  await context.close();
}

test('every view at 1440 px', () => shoot(1440, 900, 'light', VIEWS));
test('every view at 375 px', () => shoot(375, 812, 'light', VIEWS));
test('dark mode at 1440 px', () => shoot(1440, 900, 'dark', ['overview', 'usage', 'members']));
