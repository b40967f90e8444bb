'use strict';
// The API base as CC-UI computes it when no host is configured: <its own origin>/cc
const API = window.location.origin + '/cc';

async function call(method, path, credentials, body) {
  const response = await fetch(API + path, {
    method: method,
    mode: 'cors',
    headers: {
      'Authorization': 'Basic ' + btoa(credentials),
      'Content-Type': 'application/json',
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return {status: response.status, body: await response.json()};
}

function show(text) {
  document.getElementById('status').textContent = text;
}

async function start() {
  // CC-UI's first request: no user yet, so it sends btoa(null), i.e. "bnVsbA=="
  const first = await call('GET', '/token', String(null));
  if (first.status !== 401) {
    show('unexpected answer to the first request: ' + first.status);
    return;
  }
  show('please log in');
  document.getElementById('login').hidden = false;
}

async function login(event) {
  event.preventDefault();
  const user = document.getElementById('username').value;
  const password = document.getElementById('password').value;
  const token = await call('GET', '/token', user + ':' + password);
  if (token.status !== 200) {
    show('login failed: ' + token.body.error);
    return;
  }
  const auth = user + ':' + token.body.token;
  const query = {aggregate: [{$project: {tags: 1, username: 1}}, {$sort: {_id: 1}}]};
  const answer = await call('POST', '/tasks/query', auth, query);
  if (answer.status !== 200) {
    show('query failed: ' + answer.status + ' ' + answer.body.error);
    return;
  }
  document.getElementById('login').hidden = true;
  const result = document.getElementById('result');
  result.textContent = JSON.stringify(answer.body);
  result.hidden = false;
  show('logged in');
}

document.getElementById('login').addEventListener('submit', (event) => {
  login(event).catch((e) => show('error: ' + e));
});
start().catch((e) => show('error: ' + e));
