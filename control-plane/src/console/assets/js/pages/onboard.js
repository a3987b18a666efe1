// Onboard a tenant: POST /v1/tenants with an Idempotency-Key, so a double click or a retry after a
// lost response creates one tenant.

import { api, newIdempotencyKey } from '../api.js';
import { append, errorBox, fill, h } from '../dom.js';
import { SLUG_PATTERN, TIERS } from '../rules.js';

const SLUG = new RegExp(SLUG_PATTERN);

/** Each tier in a sentence, for whoever picks one. */
const TIER_SENTENCES = {
  pool: 'Rows in tables shared with other pool tenants, kept apart by row-level security: the lightest tier.',
  bridge: 'A schema and a database login of its own, in the shared database.',
  silo: 'A database of its own (on AWS, a dedicated RDS instance encrypted with its own key).',
  account: 'A whole AWS account of its own, with the silo inside (AWS target only).',
};

const field = (id, label, input, help) =>
  h(
    'div',
    { class: 'field' },
    h('label', { for: id }, label),
    input,
    help ? h('p', { id: `${id}-help`, class: 'muted small' }, help) : null,
  );

/** What the server says of a slug, said before sending it: null when the server will accept it. */
export function slugProblem(slug) {
  if (SLUG.test(slug)) return null;
  if (slug.length < 3 || slug.length > 40) return 'A slug has 3 to 40 characters.';
  if (!/^[a-z]/.test(slug)) return 'A slug starts with a lowercase letter.';
  return 'A slug has only lowercase letters, digits and hyphens.';
}

export async function renderOnboard(view, { navigate }) {
  const slug = h('input', {
    id: 'slug',
    name: 'slug',
    required: true,
    autocomplete: 'off',
    spellcheck: 'false',
    'aria-describedby': 'slug-help slug-problem',
  });
  const slugMessage = h('p', { id: 'slug-problem', class: 'field-problem', 'aria-live': 'polite' });
  const name = h('input', {
    id: 'name',
    name: 'name',
    required: true,
    maxlength: 200,
    autocomplete: 'organization',
  });
  const tiers = h(
    'fieldset',
    { class: 'tiers' },
    h('legend', {}, 'Tier'),
    TIERS.map((t) =>
      h(
        'div',
        { class: 'tier-choice' },
        h('input', {
          type: 'radio',
          id: `tier-${t}`,
          name: 'tier',
          value: t,
          checked: t === 'pool',
          'aria-describedby': `tier-${t}-help`,
        }),
        h('label', { for: `tier-${t}` }, t),
        h('p', { id: `tier-${t}-help`, class: 'muted small' }, TIER_SENTENCES[t]),
      ),
    ),
  );
  const region = h('input', { id: 'region', name: 'region', autocomplete: 'off', placeholder: 'eu-west-1' });
  const plan = h('input', { id: 'plan', name: 'plan', autocomplete: 'off' });
  const email = h('input', {
    id: 'contactEmail',
    name: 'contactEmail',
    type: 'email',
    autocomplete: 'email',
  });
  const submit = h('button', { type: 'submit' }, 'Onboard');
  const problem = h('div', { id: 'onboard-problem' });
  const form = h(
    'form',
    { class: 'card', method: 'post', novalidate: true, 'aria-labelledby': 'onboard-title' },
    field('slug', 'Slug', slug, 'Names every object of the tenant; it cannot change later.'),
    slugMessage,
    field('name', 'Name', name),
    tiers,
    field('region', 'Region (optional)', region),
    field('plan', 'Plan (optional)', plan),
    field('contactEmail', 'Contact email (optional)', email),
    submit,
    problem,
  );

  const checkSlug = () => {
    const message = slug.value === '' ? null : slugProblem(slug.value);
    slugMessage.textContent = message ?? '';
    slug.setAttribute('aria-invalid', message ? 'true' : 'false');
    return message;
  };
  slug.addEventListener('input', checkSlug);

  // One key per body: re-sending the same body (a double click, a retry after a lost answer) reuses it,
  // and the API answers the first request's 202 again; a changed body is a new request.
  let pending = null;
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (submit.disabled) return;
    fill(problem);
    const message = checkSlug() ?? (slug.value === '' ? 'Enter a slug.' : null);
    if (message) {
      slugMessage.textContent = message;
      slug.focus();
      return;
    }
    const data = new FormData(form);
    const body = { slug: slug.value, name: name.value.trim(), tier: data.get('tier') };
    for (const [k, input] of [
      ['region', region],
      ['plan', plan],
      ['contactEmail', email],
    ]) {
      if (input.value.trim()) body[k] = input.value.trim();
    }
    const json = JSON.stringify(body);
    if (pending?.json !== json) pending = { json, key: newIdempotencyKey() };
    submit.disabled = true;
    submit.textContent = 'Onboarding…';
    try {
      const out = await api('POST', '/v1/tenants', { body, headers: { 'idempotency-key': pending.key } });
      pending = null;
      navigate(`#/tenants/${out.tenant.slug}`);
    } catch (err) {
      fill(problem, errorBox(err));
    } finally {
      submit.disabled = false;
      submit.textContent = 'Onboard';
    }
  });

  append(view, [h('h1', { id: 'onboard-title' }, 'Onboard a tenant'), form]);
  slug.focus();
}
