// Seeds a fresh gateway through its public API and writes what the tests
// need (ids, keys) to $E2E_STATE as JSON.
//
// Team "Acme" (owner, admin, member, a pending join request, real requests
// to mock-1 and mock-embed-1), an invitee with no team (for the invite
// test), and team "Northwind Labs" with 50 members whose ledger rows
// bulk_usage.py inserts afterwards.

import {writeFileSync} from 'node:fs';

const BASE = process.env.E2E_BASE;
const ADMIN = process.env.E2E_ADMIN_TOKEN;
const STATE = process.env.E2E_STATE;

async function call(path, {token = ADMIN, method = 'POST', body, headers = {}} = {}) {
  const res = await fetch(`${BASE}${path}`, {
    method,
    headers: {authorization: `Bearer ${token}`, 'content-type': 'application/json', ...headers},
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: HTTP ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

async function user(email, name, credits) {
  const u = await call('/api/users', {body: {email, name}});
  const k = await call(`/api/users/${u.id}/keys`, {body: {name: 'laptop'}});
  if (credits) await call(`/api/users/${u.id}/credits`, {body: {amount_usd: credits, note: 'e2e seed'}});
  return {id: u.id, email, key: k.key, keyId: k.id};
}

async function join(team, owner, who, role) {
  const inv = await call(`/api/teams/${team}/invitations`, {token: owner.key, body: {email: who.email, role}});
  await call(`/api/invitations/${inv.token}/accept`, {token: who.key});
}

async function chat(who, team, text) {
  await call('/v1/chat/completions', {
    token: who.key,
    headers: {'x-tollgate-billing': `team:${team}`},
    body: {model: 'mock-1', max_tokens: 64, messages: [{role: 'user', content: text}]},
  });
}

const owner = await user('owner@acme.test', 'Acme owner', '50');
const admin = await user('admin@acme.test', 'Acme admin');
const member = await user('member@acme.test', 'Acme member');
const invitee = await user('invitee@acme.test', 'A new user');
const applicant = await user('applicant@acme.test', 'An applicant');
const acme = await call('/api/teams', {token: owner.key, body: {name: 'Acme'}});
await join(acme.id, owner, admin, 'admin');
await join(acme.id, owner, member, 'member');
await call(`/api/teams/${acme.id}`, {token: owner.key, method: 'PATCH', body: {default_monthly_limit_usd: '20', enforcement: 'hard'}});
const link = await call(`/api/teams/${acme.id}/invite-link`, {token: owner.key, method: 'PUT', body: {enabled: true}});
await call(`/api/join/${link.token}`, {token: applicant.key});

// Real requests, billed to the team, so the ledger has rows.
const prompts = ['Summarise our Q3 plan.', 'Draft a haiku about invoices.', 'What is a token?', 'Explain rate limits briefly.', 'Translate "hello" to French.'];
for (const [who, n] of [[owner, 3], [admin, 4], [member, 5]]) {
  for (let i = 0; i < n; i++) await chat(who, acme.id, prompts[i % prompts.length].repeat(i + 1));
}
for (const text of ['embed me', 'and me too']) {
  await call('/v1/embeddings', {token: member.key, headers: {'x-tollgate-billing': `team:${acme.id}`}, body: {model: 'mock-embed-1', input: text}});
}

// Northwind Labs: 50 members (the owner included).
const bigOwner = await user('owner@northwind.test', 'Northwind owner', '5000');
const northwind = await call('/api/teams', {token: bigOwner.key, body: {name: 'Northwind Labs'}});
const bigMembers = [{id: bigOwner.id, email: bigOwner.email}];
for (let i = 1; i < 50; i++) {
  const role = i % 9 === 1 ? 'admin' : 'member';
  const email = `${role}-${String(i).padStart(2, '0')}@northwind.test`;
  const who = await user(email);
  await join(northwind.id, bigOwner, who, role);
  bigMembers.push({id: who.id, email});
}
await call(`/api/teams/${northwind.id}`, {token: bigOwner.key, method: 'PATCH', body: {default_monthly_limit_usd: '40', enforcement: 'soft', restricted_models: ['claude-opus-*']}});
for (const [i, limit] of [[3, '120'], [7, '15'], [12, '60'], [20, '5']]) {
  await call(`/api/teams/${northwind.id}/members/${bigMembers[i].id}`, {token: bigOwner.key, method: 'PATCH', body: {monthly_limit_usd: limit}});
}

writeFileSync(STATE, JSON.stringify({
  base: BASE,
  adminToken: ADMIN,
  users: {owner, admin, member, invitee, applicant, bigOwner},
  teams: {acme: {id: acme.id, name: acme.name}, northwind: {id: northwind.id, name: northwind.name}},
  bigMembers,
}, null, 2));
console.log(`seeded: Acme ${acme.id}, Northwind Labs ${northwind.id} (${bigMembers.length} members)`);
