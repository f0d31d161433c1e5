// Invite by email → the invitee accepts in a second browser context → the
// new member appears in the owner's Members view.

import assert from 'node:assert/strict';
import {after, before, test} from 'node:test';

import {api, assertClean, goTo, launch, openPage, ready, seed, signIn} from './helpers.mjs';

const {owner, invitee} = seed.users;
const acme = seed.teams.acme;
let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

test('an invitation is created, accepted by the invitee and shows them in Members', async () => {
  const ownerSide = await openPage(browser);
  await signIn(ownerSide.page, owner.key, 'overview');
  await goTo(ownerSide.page, 'members');
  await ownerSide.page.getByLabel('Email').fill(invitee.email);
  await ownerSide.page.getByLabel('Role', {exact: true}).selectOption('member');
  await ownerSide.page.getByRole('button', {name: 'Create invitation'}).click();
  const tokenField = ownerSide.page.getByRole('textbox', {name: 'Invitation token'});
  await tokenField.waitFor();
  const invitation = await tokenField.inputValue();
  assert.match(invitation, /^tgi_[A-Za-z0-9]{43}$/);
  const link = await ownerSide.page.getByRole('textbox', {name: 'Invitation link'}).inputValue();
  assert.match(link, /\/invite\/tgi_[A-Za-z0-9]+$/);
  await ownerSide.page.getByRole('button', {name: `Revoke the invitation for ${invitee.email}`}).waitFor();
  assert.equal(await ownerSide.page.locator(`tr[data-email="${invitee.email}"]`).count(), 0);

  // The invitee, in their own context, opens the link: a page that says
  // what signing in is for, then joins with one click.
  const inviteeSide = await openPage(browser, {width: 375, height: 812});
  await inviteeSide.page.goto(link.replace(/^https?:\/\/[^/]+/, seed.base));
  await inviteeSide.page.getByText(`Sign in with the API key of ${invitee.email} to join Acme as a member.`).waitFor();
  await inviteeSide.page.getByLabel('API key or operator token').fill(invitee.key);
  await inviteeSide.page.getByRole('button', {name: 'Sign in'}).click();
  await ready(inviteeSide.page, 'invite');
  await inviteeSide.page.getByText('You are invited to join Acme as a member.').waitFor();
  await inviteeSide.page.getByRole('button', {name: 'Join Acme'}).click();
  await inviteeSide.page.getByText('You joined Acme as a member.').waitFor();
  await inviteeSide.page.locator('.team-name', {hasText: 'Acme'}).waitFor();
  await goTo(inviteeSide.page, 'overview');
  await inviteeSide.page.getByText('Acme · you are a member').waitFor();
  // A second use of the same token is refused in words.
  await goTo(inviteeSide.page, 'keys');
  await inviteeSide.page.getByLabel('Token or link').fill(invitation);
  await inviteeSide.page.getByRole('button', {name: 'Join', exact: true}).click();
  await inviteeSide.page.getByText('This invitation was already used.').waitFor();

  await goTo(ownerSide.page, 'members');
  await ownerSide.page.locator(`tr[data-email="${invitee.email}"]`).waitFor();
  assert.equal(await ownerSide.page.getByRole('button', {name: `Revoke the invitation for ${invitee.email}`}).count(), 0);
  const members = await api(`/api/teams/${acme.id}/members`, {token: owner.key});
  assert.ok(members.data.some((m) => m.email === invitee.email && m.role === 'member'));

  await assertClean(ownerSide.page, ownerSide.problems);
  await assertClean(inviteeSide.page, inviteeSide.problems, [410]);
  await ownerSide.context.close();
  await inviteeSide.context.close();
});
