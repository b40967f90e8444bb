'use strict';
// Logs in to the dashboard and waits for the page to renew its token by itself; prints one
// JSON object.  tests/dashboard/test_token_renewal.py makes the assertions.
//   node renewal.js SCENARIO.json   ({"api", "user", "password", "step_ms"})
const fs = require('fs');
const path = require('path');
const {createRequire} = require('module');
const {chromium} = createRequire(path.join(__dirname, '..', 'browser', 'package.json'))('playwright-core');

const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--no-first-run'];
const scenario = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const STEP = scenario.step_ms || 30000;
const out = {errors: [], console_errors: [], page_errors: []};
function finish(code) { process.stdout.write(JSON.stringify(out) + '\n'); process.exit(code); }
setTimeout(() => { out.errors.push('timed out'); finish(3); }, 4 * STEP).unref();

async function main() {
  const browser = await chromium.launch({executablePath: process.env.CCSERVER_CHROMIUM || '/usr/bin/chromium',
    args: FLAGS, headless: true, timeout: STEP});
  try {
    const page = await browser.newPage();
    page.setDefaultTimeout(STEP);
    page.on('console', (m) => { if (m.type() === 'error') out.console_errors.push(m.text()); });
    page.on('pageerror', (e) => out.page_errors.push(String(e)));
    const token = () => page.evaluate(() => JSON.parse(sessionStorage.getItem('ccserver.session') || 'null'));
    await page.goto(scenario.api + '/ui/');
    await page.fill('#username', scenario.user);
    await page.fill('#password', scenario.password);
    await page.click('#submit');
    await page.locator('#page[data-loaded="cluster"]').waitFor();
    out.first = await token();
    await page.waitForFunction((old) => {
      const now = JSON.parse(sessionStorage.getItem('ccserver.session') || 'null');
      return now && now.token !== old;
    }, out.first.token, {timeout: STEP, polling: 250});
    out.second = await token();
    await page.click('#nav-tasks');
    await page.locator('#page[data-loaded="tasks"]').waitFor();
    out.after_renewal = await page.locator('#status').textContent();
  } catch (e) {
    out.errors.push(String(e).split('\n')[0]);
  } finally {
    await browser.close().catch(() => {});
  }
}
main().then(() => finish(0), (e) => { out.errors.push(String(e)); finish(2); });
