// API tokens (admin only): the list, revoking one, and creating one, whose value is shown once.

import { api } from '../api.js';
import { append, badge, errorBox, fill, h, table, when } from '../dom.js';
import { ROLES } from '../rules.js';

function createdOnce(out) {
  const value = h('input', {
    id: 'new-token',
    readonly: true,
    value: out.token,
    spellcheck: 'false',
    autocomplete: 'off',
    'aria-describedby': 'new-token-help',
  });
  const box = h(
    'div',
    { class: 'once', role: 'status' },
    h('label', { for: 'new-token' }, `Token for ${out.info.name} (${out.info.role})`),
    value,
    h(
      'p',
      { id: 'new-token-help' },
      h('strong', {}, 'Shown once. '),
      'Copy it now: the API keeps only its hash, and this page forgets it when you leave.',
    ),
  );
  value.addEventListener('focus', () => value.select());
  return box;
}

export async function renderTokens(view, { session, signal }) {
  const list = h('div');
  const problem = h('div');
  const show = async () => {
    const { items } = await api('GET', '/v1/tokens', { signal });
    fill(
      list,
      table(
        'API tokens',
        ['Name', 'Role', 'Created', 'Status', 'Action'],
        items.map((t) => {
          const revoked = t.revokedAt !== null;
          const revoke = h(
            'button',
            {
              type: 'button',
              class: 'secondary',
              'aria-label': `Revoke ${t.name}`,
              disabled: revoked || t.id === session.id,
            },
            'Revoke',
          );
          revoke.addEventListener('click', async () => {
            revoke.disabled = true;
            fill(problem);
            try {
              await api('DELETE', `/v1/tokens/${t.id}`, { signal });
              await show();
            } catch (err) {
              fill(problem, errorBox(err));
              revoke.disabled = false;
            }
          });
          return [
            t.name,
            h('span', { class: 'badge badge-role' }, t.role),
            when(t.createdAt),
            revoked ? badge('revoked') : badge('active'),
            t.id === session.id ? h('span', { class: 'muted small' }, 'this session') : revoke,
          ];
        }),
      ),
    );
  };

  const name = h('input', {
    id: 'token-name',
    name: 'name',
    required: true,
    maxlength: 100,
    autocomplete: 'off',
  });
  const role = h(
    'select',
    { id: 'token-role', name: 'role' },
    ROLES.map((r) => h('option', { value: r }, r)),
  );
  const button = h('button', { type: 'submit' }, 'Create token');
  const result = h('div', { 'aria-live': 'polite' });
  const form = h(
    'form',
    { class: 'action', method: 'post', 'aria-labelledby': 'token-create-title' },
    h('h2', { id: 'token-create-title' }, 'Create a token'),
    h('div', { class: 'field' }, h('label', { for: 'token-name' }, 'Name'), name),
    h('div', { class: 'field' }, h('label', { for: 'token-role' }, 'Role'), role),
    button,
    result,
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    button.disabled = true;
    fill(result);
    try {
      const out = await api('POST', '/v1/tokens', {
        body: { name: name.value.trim(), role: role.value },
        signal,
      });
      name.value = '';
      fill(result, createdOnce(out));
      await show();
    } catch (err) {
      fill(result, errorBox(err));
    } finally {
      button.disabled = false;
    }
  });

  append(view, [h('h1', {}, 'Tokens'), problem, form, h('h2', {}, 'All tokens'), list]);
  await show();
}
