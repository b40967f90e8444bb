'use strict';
// Drives Debian's chromium (never a downloaded browser) through the dashboard of a running
// ccserver and prints one JSON object with what it saw.  tests/dashboard/test_browser.py
// makes the assertions.
//
//   node browser.js SCENARIO.json
//
// SCENARIO: {"site": "http://HOST:PORT", "api": "<site><prefix>", "user", "password",
//            "task_id", "dead_node", "screenshots": DIR, "step_ms": 30000}
// Every wait has a limit; the whole run ends within 8 steps' time whatever happens.

const fs = require('fs');
const path = require('path');
const {createRequire} = require('module');
// playwright-core is installed (npm ci) in tests/browser
const {chromium} = createRequire(path.join(__dirname, '..', 'browser', 'package.json'))('playwright-core');

const EXECUTABLE = process.env.CCSERVER_CHROMIUM || '/usr/bin/chromium';
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--no-first-run'];
const scenario = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const STEP = scenario.step_ms || 30000;
const out = {steps: {}, console_errors: [], page_errors: [], errors: [], screenshots: []};

function finish(code) {
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(code);
}
setTimeout(() => { out.errors.push('the whole run took longer than ' + 8 * STEP + ' ms'); finish(3); }, 8 * STEP).unref();

async function step(name, action) {
  try {
    out.steps[name] = (await action()) ?? true;
  } catch (e) {
    out.steps[name] = false;
    out.errors.push(name + ': ' + String(e).split('\n')[0]);
  }
}

async function main() {
  const browser = await chromium.launch({executablePath: EXECUTABLE, args: FLAGS, headless: true, timeout: STEP});
  const shot = async (page, name) => {
    const file = path.join(scenario.screenshots, name + '.png');
    await page.screenshot({path: file, fullPage: true});
    out.screenshots.push(file);
  };
  try {
    const context = await browser.newContext({viewport: {width: 1200, height: 800}});
    const page = await context.newPage();
    page.setDefaultTimeout(STEP);
    page.on('console', (m) => { if (m.type() === 'error') out.console_errors.push(m.text() + ' at ' + m.location().url); });
    page.on('pageerror', (e) => out.page_errors.push(String(e)));
    page.on('dialog', (d) => { out.errors.push('dialog: ' + d.message()); d.dismiss().catch(() => {}); });
    const loaded = (name) => page.locator(`#page[data-loaded="${name}"]`).waitFor({timeout: STEP});

    await step('login_form', async () => {
      await page.goto(scenario.api + '/ui/', {timeout: STEP});
      await page.locator('#login').waitFor({state: 'visible'});
      await shot(page, 'login');
    });
    await step('logged_in', async () => {
      await page.fill('#username', scenario.user);
      await page.fill('#password', scenario.password);
      await page.click('#submit');
      await loaded('cluster');
      return await page.locator('#who').textContent();
    });
    await step('dead_node', async () => {
      const dead = page.locator(`.node[data-node="${scenario.dead_node}"]`);
      await dead.locator('.state-dead').waitFor();
      const healthy = await page.locator('.node .state-healthy').count();
      const reason = await dead.locator('.reason').textContent();
      await shot(page, 'cluster');
      return {reason, healthy};
    });
    await step('queue', async () => {
      await page.click('#nav-queue');
      await loaded('queue');
      await page.locator('#activity-plot polyline[data-series="submitted"]').waitFor();
      const processing = await page.locator('#counts [data-state="processing"]').textContent().catch(() => null);
      await shot(page, 'queue');
      return {processing};
    });
    await step('tasks', async () => {
      await page.click('#nav-tasks');
      await loaded('tasks');
      const row = page.locator(`tr[data-task="${scenario.task_id}"]`);
      await row.waitFor();
      const state = await row.locator('.state').textContent();
      await shot(page, 'tasks');
      // the state filter: the running task is among the processing ones, not the succeeded ones
      const rowsOf = async (value) => {
        await page.selectOption('#filter-state', value);
        await page.waitForFunction((v) => {
          const rows = [...document.querySelectorAll('#task-rows tr')];
          return rows.length && rows.every((r) => !r.dataset.task || r.querySelector('.state').textContent === v);
        }, value, {timeout: STEP});
        return await page.locator('#task-rows tr[data-task]').evaluateAll((rows) => rows.map((r) => r.dataset.task));
      };
      const processing = await rowsOf('processing');
      const succeeded = await rowsOf('success');
      await page.selectOption('#filter-state', '');
      await row.waitFor();
      await row.locator('a').click();
      return {state, processing, succeeded};
    });
    await step('task_running', async () => {
      await loaded('task');
      await page.waitForFunction(() => document.getElementById('task-state')?.textContent === 'processing', null, {timeout: STEP});
      const node = await page.locator('#containers .node-name').first().textContent();
      // live output: lines, or the note that this server does not follow output
      await page.waitForFunction(() => document.getElementById('logs').textContent.length > 0
        || document.getElementById('logs-note').textContent.includes('no live logs'), null, {timeout: STEP});
      const logs = await page.locator('#logs').textContent();
      const note = await page.locator('#logs-note').textContent();
      await shot(page, 'task-running');
      return {node, logs, note};
    });
    await step('cancelled', async () => {
      await page.click('#cancel');
      await page.waitForFunction(() => document.getElementById('task-state')?.textContent === 'cancelled', null, {timeout: STEP});
      const hidden = await page.locator('#cancel').isHidden();
      const timeline = await page.locator('#timeline').textContent();
      await shot(page, 'task-cancelled');
      return {hidden, timeline};
    });
    await step('logged_out', async () => {
      await page.click('#logout');
      await page.locator('#login').waitFor({state: 'visible'});
      return await page.evaluate(() => sessionStorage.length);
    });
    await context.close();
  } finally {
    await browser.close().catch(() => {});
  }
}

main().then(() => finish(0), (e) => { out.errors.push('run: ' + String(e).split('\n')[0]); finish(2); });
