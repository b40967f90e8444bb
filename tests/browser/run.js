'use strict';
// Drives Debian's chromium (never a downloaded browser) against a running ccserver that
// serves site/ natively, and prints one JSON object with what happened.  Used by
// tests/security/test_browser.py, which makes the assertions.
//
//   node run.js SCENARIO.json
//
// SCENARIO: {"site": "http://127.0.0.1:PORT", "user": "...", "password": "...",
//            "attack_task": {...a valid task...}, "attack_tag": "csrf1", "step_ms": 20000}
//
// Every wait has a limit: a step that does not finish in step_ms is recorded as failed and
// the script goes on; the whole run ends within 4 steps' time whatever happens.

const fs = require('fs');
const http = require('http');
const {chromium} = require('playwright-core');

const EXECUTABLE = process.env.CCSERVER_CHROMIUM || '/usr/bin/chromium';
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--no-first-run'];

const scenario = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const STEP = scenario.step_ms || 20000;
const API = scenario.site + '/cc';
const out = {
  login_form_shown: false, status_text: null, dialogs: [], challenges: [], console_errors: [],
  page_errors: [], result_text: null, attack: {}, errors: [], unanswered: [],
};
// requests of the pages still waiting for an answer (a browser login dialog keeps one waiting)
const pending = new Map();

function finish(code) {
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(code);
}

// the last resort: whatever hangs, print what is known and leave
setTimeout(() => {
  out.errors.push('the whole run took longer than ' + (5 * STEP) + ' ms');
  out.unanswered.push(...pending.values());
  finish(3);
}, 5 * STEP).unref();

function watch(page, label) {
  page.on('dialog', (dialog) => {
    out.dialogs.push({page: label, type: dialog.type(), message: dialog.message()});
    dialog.dismiss().catch(() => {});
  });
  page.on('request', (request) => pending.set(request, label + ' ' + request.method() + ' ' + request.url()));
  page.on('requestfinished', (request) => pending.delete(request));
  page.on('requestfailed', (request) => pending.delete(request));
  page.on('response', (response) => {
    const challenge = response.headers()['www-authenticate'];
    if (challenge !== undefined) {
      out.challenges.push({page: label, url: response.url(), status: response.status(), challenge: challenge});
    }
  });
  if (label === 'attacker') {
    page.on('console', (message) => {
      if (message.text().startsWith('json fetch: ')) out.attack.json_fetch = message.text().slice(12);
    });
  }
  if (label === 'ui') {
    page.on('console', (message) => {
      if (message.type() === 'error') out.console_errors.push(message.text() + ' at ' + message.location().url);
    });
    page.on('pageerror', (error) => out.page_errors.push(String(error)));
  }
}

async function step(name, action) {
  try {
    await action();
  } catch (e) {
    out.errors.push(name + ': ' + String(e).split('\n')[0]);
    out.unanswered.push(...pending.values());
  }
}

// The attacker's page: on another site (localhost vs 127.0.0.1, another port).  It tries a
// JSON fetch (needs a preflight, which the API does not allow) and then auto-submits a
// text/plain form whose body is a valid JSON task with the tag "csrf=1".
function attackerPage() {
  const task = JSON.stringify(scenario.attack_task);
  const marker = '"' + scenario.attack_tag + '"';
  const cut = task.indexOf(marker) + marker.length - 2;  // inside the tag, before its last character
  const fields = {name: task.slice(0, cut), value: task.slice(cut)};
  return `<!doctype html><html><head><meta charset="utf-8"><title>elsewhere</title></head><body>
<form id="f" method="POST" enctype="text/plain" action="${API}/tasks"><input id="i" type="hidden"></form>
<script>
const fields = ${JSON.stringify(fields)};
const input = document.getElementById('i');
input.name = fields.name;
input.value = fields.value;
fetch(${JSON.stringify(API + '/tasks')}, {method: 'POST', mode: 'cors', credentials: 'include',
  headers: {'Content-Type': 'application/json'}, body: ${JSON.stringify(task)}})
  .then((r) => console.log('json fetch: answered ' + r.status), (e) => console.log('json fetch: blocked: ' + e))
  .finally(() => document.getElementById('f').submit());
</script></body></html>`;
}

function startAttacker() {
  const page = attackerPage();
  const server = http.createServer((request, response) => {
    response.writeHead(200, {'content-type': 'text/html; charset=utf-8'});
    response.end(page);
  });
  return new Promise((resolve, reject) => {
    server.on('error', reject);
    server.listen(0, 'localhost', () => resolve(server));
  });
}

async function main() {
  const browser = await chromium.launch({executablePath: EXECUTABLE, args: FLAGS, headless: true, timeout: STEP});
  try {
    const ui = await browser.newContext();
    const page = await ui.newPage();
    page.setDefaultTimeout(STEP);
    watch(page, 'ui');
    await step('open the UI', async () => {
      await page.goto(scenario.site + '/', {timeout: STEP});
      await page.locator('#login').waitFor({state: 'visible', timeout: STEP});
      out.login_form_shown = true;
    });
    out.status_text = await page.locator('#status').textContent({timeout: 2000}).catch(() => null);
    if (out.login_form_shown) {
      await step('log in', async () => {
        await page.fill('#username', scenario.user);
        await page.fill('#password', scenario.password);
        await page.click('#submit');
        await page.locator('#result').waitFor({state: 'visible', timeout: STEP});
        out.result_text = await page.locator('#result').textContent();
      });
      out.status_text = await page.locator('#status').textContent({timeout: 2000}).catch(() => null);
    }
    await ui.close();

    // a browser that holds the user's credentials for the API and sends them by itself (as
    // after typing them into its own login dialog, or through a proxy's login)
    const remembered = 'Basic ' + Buffer.from(scenario.user + ':' + scenario.password).toString('base64');
    const attacker = await startAttacker();
    const victim = await browser.newContext({extraHTTPHeaders: {Authorization: remembered}});
    const evil = await victim.newPage();
    watch(evil, 'attacker');
    await step('cross-site form post', async () => {
      const origin = 'http://localhost:' + attacker.address().port;
      out.attack.origin = origin;
      const posted = evil.waitForResponse(
        (r) => r.url() === API + '/tasks' && r.request().method() === 'POST' && r.request().isNavigationRequest(),
        {timeout: STEP});
      await evil.goto(origin + '/', {timeout: STEP});
      const response = await posted;
      out.attack.form_status = response.status();
      out.attack.form_request_type = response.request().headers()['content-type'] || null;
      out.attack.form_authorized = Boolean(response.request().headers()['authorization']);
      out.attack.form_body = await response.text().catch(() => null);
    });
    await victim.close();
    attacker.close();
  } finally {
    await browser.close().catch(() => {});
  }
}

main().then(() => finish(0), (e) => {
  out.errors.push('run: ' + String(e).split('\n')[0]);
  finish(2);
});
