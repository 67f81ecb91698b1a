// A headless Chromium (Debian's, never a downloaded one) driven by playwright-core, one JSON
// command per line on stdin, one JSON answer per line on stdout. The Python test decides what to
// do and checks what it sees; this only does it and reports.
//
//   node browser.mjs <user-data-dir>
//   {"op": "goto", "url": "http://localhost:3000/login"}
//   {"op": "sign_in", "email": "...", "password": "..."}
//   {"op": "click", "selector": "#home"}
//   {"op": "cookies"} | {"op": "screenshot", "path": "..."} | {"op": "close"}
//
// Every page answer carries the document requests the step made (method, path, status, Location,
// the names of the cookies each response set): what the browser saw, hop by hop.
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const [userDataDir] = process.argv.slice(2);
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--no-first-run',
  ],
  viewport: { width: 900, height: 600 },
});
const page = context.pages()[0] ?? (await context.newPage());

let hops = [];
let pending = [];
page.on('response', (response) => {
  const request = response.request();
  if (request.resourceType() !== 'document') return;
  const url = new URL(response.url());
  // Pushed now, so hops stay in the order the browser received them; the raw headers (every
  // Set-Cookie line) arrive asynchronously and pageState() waits for them.
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
          const value = pair.slice(pair.indexOf('=') + 1);
          return value === '' ? `-${name}` : `+${name}`;
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
  async sign_in({ email, password }) {
    await page.fill('input[name=email]', email);
    await page.fill('input[name=password]', password);
    // The form posts to the login Server Action (signInWithPassword on the server, which writes
    // the session cookie), whose redirect the client router follows to /dashboard; an error comes
    // back as /login?error=...
    await page.click('button[type=submit]');
    await Promise.race([
      page.waitForURL((url) => url.pathname === '/dashboard', { timeout: 30_000 }),
      page.waitForURL((url) => url.searchParams.has('error'), { timeout: 30_000 }),
    ]);
    await page.waitForSelector('#user, #error', { timeout: 30_000 });
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
