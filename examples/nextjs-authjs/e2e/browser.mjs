// A headless Chromium (Debian's, never a downloaded one) driven by playwright-core, one JSON
// command per line on stdin, one JSON answer per line on stdout (tests/support/e2e.py's
// BrowserDriver speaks it). The Python test decides what to do and checks what it sees.
//
//   node browser.mjs <user-data-dir>
//   {"op": "goto", "url": "http://localhost:3000/sign-in"}
//   {"op": "sign_in"}            click "Sign in" and follow the IdP's redirects to /dashboard
//   {"op": "click", "selector": "#go"}
//   {"op": "cookies"} | {"op": "screenshot", "path": "..."} | {"op": "close"}
//
// Every page answer carries the document requests the step made (method, path, status, Location,
// the names of the cookies each response set, "-" for a deletion): what the browser saw, hop by hop.
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const [userDataDir] = process.argv.slice(2);
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run'],
  viewport: { width: 900, height: 600 },
});
const page = context.pages()[0] ?? (await context.newPage());

let hops = [];
let pending = [];
page.on('response', (response) => {
  const request = response.request();
  if (request.resourceType() !== 'document') return;
  const url = new URL(response.url());
  const hop = {
    method: request.method(),
    path: url.pathname + url.search,
    status: response.status(),
    location: response.headers().location ?? null,
    set_cookies: [],
  };
  hops.push(hop);
  pending.push(
    response.headersArray().then((headers) => {
      hop.set_cookies = headers
        .filter((h) => h.name.toLowerCase() === 'set-cookie')
        .flatMap((h) => h.value.split('\n'))
        .map((line) => {
          const [pair] = line.split(';');
          const name = pair.slice(0, pair.indexOf('='));
          const empty = pair.slice(pair.indexOf('=') + 1) === '' || /max-age=0\b/i.test(line);
          return empty ? `-${name}` : `+${name}`;
        });
    }),
  );
});

async function pageState() {
  await page.waitForLoadState('load');
  await Promise.all(pending);
  pending = [];
  const url = new URL(page.url());
  const text = (await page.locator('main').innerText().catch(() => '')).trim();
  const state = { url: url.pathname + url.search, text, hops };
  hops = [];
  return state;
}

const ops = {
  async goto({ url }) {
    await page.goto(url, { waitUntil: 'load', timeout: 30_000 });
    return pageState();
  },
  async sign_in() {
    // next-auth's signIn posts for a CSRF-checked redirect to the IdP, which signs in at once
    // (the test IdP's login) and redirects back to the callback, then to /dashboard.
    await Promise.all([
      page.waitForURL((url) => url.pathname === '/dashboard', { timeout: 30_000, waitUntil: 'load' }),
      page.click('#sign-in'),
    ]);
    return pageState();
  },
  async click({ selector }) {
    // A link is a full page load: wait until the main frame has committed the new document.
    await Promise.all([
      page.waitForEvent('framenavigated', { predicate: (frame) => frame === page.mainFrame(), timeout: 30_000 }),
      page.click(selector),
    ]);
    return pageState();
  },
  async cookies() {
    return { cookies: await context.cookies() };
  },
  async screenshot({ path }) {
    await page.screenshot({ path, fullPage: true });
    return { path };
  },
  async close() {
    await context.close();
    return {};
  },
};

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  const command = JSON.parse(line);
  let answer;
  try {
    answer = { ok: true, ...(await ops[command.op](command)) };
  } catch (error) {
    answer = { ok: false, error: String(error?.stack ?? error) };
  }
  process.stdout.write(JSON.stringify(answer) + '\n');
  if (command.op === 'close') break;
}
process.exit(0);
