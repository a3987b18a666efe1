// Sign in with an API token. It is kept in sessionStorage (this tab only, gone when it closes) and
// sent as a header: never in a URL, a cookie or localStorage.

import { token } from '../api.js';
import { errorBox, fill, h } from '../dom.js';

export function renderSignIn(main, { reason, onSignedIn }) {
  const input = h('input', {
    id: 'token',
    name: 'token',
    type: 'password',
    autocomplete: 'off',
    spellcheck: 'false',
    required: true,
    'aria-describedby': 'token-help',
  });
  const problem = h('div', { id: 'signin-problem' }, reason ? errorBox(reason) : null);
  const button = h('button', { type: 'submit' }, 'Sign in');
  const form = h(
    'form',
    { class: 'card narrow', method: 'post', 'aria-labelledby': 'signin-title' },
    h('label', { for: 'token' }, 'API token'),
    input,
    h(
      'p',
      { id: 'token-help', class: 'muted' },
      'A token from your administrator (or the one printed at first start). It stays in this tab only.',
    ),
    button,
    problem,
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const value = input.value.trim();
    if (!value) return;
    button.disabled = true;
    fill(problem);
    token.set(value);
    input.value = '';
    // The app checks it with GET /v1/whoami: a 401 brings the user back here with the API's error.
    await onSignedIn();
  });
  fill(main, h('div', { class: 'page' }, h('h1', { id: 'signin-title' }, 'Sign in to Tenantry'), form));
  input.focus();
}
