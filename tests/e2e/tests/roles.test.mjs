// What the owner, an admin, a member and the operator see and can do.

import assert from 'node:assert/strict';
import {after, before, test} from 'node:test';

import {api, assertClean, goTo, launch, openPage, seed, signIn} from './helpers.mjs';

const {owner, admin, member, applicant} = seed.users;
const acme = seed.teams.acme;
let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

const navNames = (page) => page.getByRole('navigation', {name: 'Sections'}).getByRole('link').allTextContents();

test('the owner sees every control and can change settings', async () => {
  const {context, page, problems} = await openPage(browser);
  await signIn(page, owner.key, 'overview');
  assert.deepEqual(await navNames(page), ['Overview', 'Members', 'Usage', 'Settings', 'My usage', 'My keys']);
  await page.getByText('you are the owner').waitFor();
  assert.equal(await page.locator('.team-name').textContent(), 'Acme');

  await goTo(page, 'members');
  await page.getByRole('heading', {name: 'Invite a member'}).waitFor();
  await page.getByRole('heading', {name: 'Join requests'}).waitFor();
  await page.getByRole('heading', {name: 'Invite link'}).waitFor();
  await page.getByRole('heading', {name: 'Pending invitations'}).waitFor();
  assert.equal(await page.getByLabel(`Role of ${admin.email}`).count(), 1);
  assert.equal(await page.getByLabel(`Role of ${owner.email}`).count(), 0, 'the owner role moves only by transfer');
  assert.equal(await page.getByRole('button', {name: `Remove ${owner.email}`}).count(), 0);
  assert.equal(await page.getByRole('button', {name: `Remove ${member.email}`}).count(), 1);

  await goTo(page, 'settings');
  await page.getByRole('heading', {name: 'Danger zone'}).waitFor();
  await page.getByRole('button', {name: 'Transfer ownership'}).waitFor();
  await page.getByRole('button', {name: 'Delete team'}).waitFor();
  // Do: add a restricted pattern and save; the API has it.
  await page.getByLabel('Add a name or glob').fill('claude-opus-*');
  await page.getByRole('button', {name: 'Add', exact: true}).click();
  await page.getByRole('button', {name: 'Remove pattern claude-opus-*'}).waitFor();
  await page.getByRole('button', {name: 'Save changes'}).click();
  await page.getByText('Settings saved.').waitFor();
  const team = await api(`/api/teams/${acme.id}`, {token: owner.key});
  assert.deepEqual(team.restricted_models, ['claude-opus-*']);
  // The delete dialog refuses a wrong name and can be cancelled.
  await page.getByRole('button', {name: 'Delete team'}).click();
  const dialog = page.getByRole('dialog');
  await dialog.getByLabel(/Type the team name/).fill('Not Acme');
  await dialog.getByRole('button', {name: 'Delete team'}).click();
  await dialog.getByText('The name does not match.').waitFor();
  await dialog.getByRole('button', {name: 'Cancel'}).click();
  assert.equal((await api(`/api/teams/${acme.id}`, {token: owner.key})).name, 'Acme');
  await assertClean(page, problems);
  await context.close();
});

test('an admin manages members but not billing, deletion or ownership', async () => {
  const {context, page, problems} = await openPage(browser);
  await signIn(page, admin.key, 'overview');
  await page.getByText('you are an admin').waitFor();
  await goTo(page, 'members');
  await page.getByRole('heading', {name: 'Invite a member'}).waitFor();
  const roleSelect = page.getByLabel(`Role of ${member.email}`);
  assert.deepEqual(await roleSelect.locator('option').allTextContents(), ['Admin', 'Member'], 'no owner grants');
  assert.equal(await page.getByLabel(`Role of ${owner.email}`).count(), 0);
  assert.equal(await page.getByRole('button', {name: `Remove ${owner.email}`}).count(), 0);

  // Do: approve the pending join request; the applicant becomes a member.
  await page.getByRole('button', {name: `Approve ${applicant.email}`}).click();
  await page.getByText(`${applicant.email} joined the team.`).waitFor();
  await page.locator(`tr[data-email="${applicant.email}"]`).waitFor();
  const members = await api(`/api/teams/${acme.id}/members`, {token: admin.key});
  assert.ok(members.data.some((m) => m.email === applicant.email && m.role === 'member'));

  await goTo(page, 'settings');
  await page.getByRole('button', {name: 'Save changes'}).waitFor();
  assert.equal(await page.getByRole('heading', {name: 'Danger zone'}).count(), 0);
  assert.equal(await page.getByRole('button', {name: 'Delete team'}).count(), 0);
  assert.equal(await page.getByRole('button', {name: 'Transfer ownership'}).count(), 0);
  await page.getByRole('button', {name: 'Leave team'}).waitFor();
  await assertClean(page, problems);
  await context.close();
});

test('a member gets read-only team views and manages their own keys', async () => {
  const {context, page, problems} = await openPage(browser);
  await signIn(page, member.key, 'overview');
  await page.getByText('you are a member').waitFor();
  await page.locator('.chart svg').waitFor();

  await goTo(page, 'members');
  await page.locator(`tr[data-email="${owner.email}"]`).waitFor();
  assert.equal(await page.getByRole('heading', {name: 'Invite a member'}).count(), 0);
  assert.equal(await page.getByRole('heading', {name: 'Invite link'}).count(), 0);
  assert.equal(await page.getByRole('heading', {name: 'Pending invitations'}).count(), 0);
  assert.equal(await page.locator('.members-table select').count(), 0);
  assert.equal(await page.getByRole('button', {name: /^Set monthly limit/}).count(), 0);
  assert.equal(await page.getByRole('button', {name: /^Remove /}).count(), 0);

  await goTo(page, 'usage');
  await page.locator('#usage-by-member').waitFor();

  await goTo(page, 'settings');
  await page.getByText('Only admins and the owner can change these settings.').waitFor();
  assert.equal(await page.getByRole('button', {name: 'Save changes'}).count(), 0);
  assert.ok(await page.getByLabel('Team name').isDisabled());
  assert.ok(await page.getByLabel('Default monthly limit per member').isDisabled());
  assert.equal(await page.getByRole('heading', {name: 'Danger zone'}).count(), 0);

  // Do: create a key (shown once), then revoke it.
  await goTo(page, 'keys');
  await page.getByLabel('Name', {exact: true}).fill('e2e temp');
  await page.getByRole('button', {name: 'Create key'}).click();
  const shown = await page.getByRole('textbox', {name: 'New API key'}).inputValue();
  assert.match(shown, /^tg-[A-Za-z0-9]{40}$/);
  assert.equal((await api('/api/me', {token: shown})).email, member.email, 'the new key works');
  await page.getByRole('button', {name: /^Revoke e2e temp/}).click();
  await page.getByRole('dialog').getByRole('button', {name: 'Revoke key'}).click();
  await page.getByText('e2e temp was revoked.').waitFor();
  await page.getByText(/^Revoked keys \(\d+\)$/).waitFor();
  assert.equal((await api('/api/me', {token: shown, raw: true})).status, 401);
  await assertClean(page, problems);
  await context.close();
});

test('the operator sees every team and has no personal keys', async () => {
  const {context, page, problems} = await openPage(browser);
  await signIn(page, seed.adminToken, 'overview');
  assert.deepEqual(await navNames(page), ['Overview', 'Members', 'Usage', 'Settings']);
  const options = await page.getByLabel('Team (all teams)').locator('option').allTextContents();
  assert.deepEqual(options, ['Acme', 'Northwind Labs']);
  await page.getByLabel('Team (all teams)').selectOption({label: 'Northwind Labs'});
  await page.waitForSelector('#view-body[data-ready="overview"] .chart svg');
  await page.getByText('Northwind Labs · operator access').waitFor();
  await assertClean(page, problems);
  await context.close();
});
