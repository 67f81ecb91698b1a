// A headless Chromium (Debian's, never a downloaded one) driven by playwright-core, one JSON
// command per line on stdin, one JSON answer per line on stdout. The Python test decides what to
// do and checks what it sees; this only does it and reports.
//
//   node browser.mjs <user-data-dir>
//   {"op": "goto", "url": "http://localhost:3000/sign-in"}
//   {"op": "sign_in", "username": "...", "password": "..."}
//   {"op": "click", "selector": "#go"}
//   {"op": "cookies"} | {"op": "screenshot", "path": "..."} | {"op": "close"}
//   {"op": "watch_tab", "endpoint": "/.cookieguard/session"}   then "wait_poll", "wait_url", "tab"
//
// Every page answer carries the document requests the step made (method, path, status, Location,
// the names of the cookies each response set): what the browser saw, hop by hop.
// watch_tab records, from then on, every answer of the session endpoint (status, JSON body, the
// cookies it set) and every main-frame navigation, and marks the page's window object: a page
// load (which the session health script must never need) replaces the window and loses the mark.
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
let watched = null; // {endpoint, polls: [], loads: [], navigations: 0, documents: 0, mark}
const pollWaiters = new Set();
page.on('request', (request) => {
  if (watched && request.resourceType() === 'document' && request.frame() === page.mainFrame()) {
    const url = new URL(request.url());
    watched.loads.push({ at_ms: Date.now(), path: url.pathname + url.search });
  }
});

page.on('framenavigated', (frame) => {
  if (watched && frame === page.mainFrame()) watched.navigations += 1;
});

page.on('response', (response) => {
  const request = response.request();
  if (watched && new URL(response.url()).pathname === watched.endpoint) {
    recordPoll(response);
    return;
  }
  if (request.resourceType() !== 'document') return;
  if (watched) watched.documents += 1;
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
      hop.set_cookies = setCookieNames(headers);
    }),
  );
});

function setCookieNames(headers) {
  return headers
    .filter((h) => h.name.toLowerCase() === 'set-cookie')
    .flatMap((h) => h.value.split('\n'))
    .map((line) => {
      const [pair] = line.split(';');
      const name = pair.slice(0, pair.indexOf('='));
      const value = pair.slice(pair.indexOf('=') + 1);
      return value === '' ? `-${name}` : `+${name}`;
    });
}

// A poll is recorded from the network (when, from which page, status, the cookies it set) and
// from the page: the JSON the script read, handed over by its `cookieguard:session` event. The
// page is the only reliable source of the body: once the script navigates away on an answer, the
// browser no longer holds that answer's body for the driver to read.
const bodies = [];

function recordPoll(response) {
  const referer = response.request().headers().referer;
  const poll = {
    at_ms: Date.now(),
    from: referer ? new URL(referer).pathname : null, // the page whose script polled
    status: response.status(),
    set_cookies: null,
    body: response.status() === 200 ? undefined : null,
  };
  watched.polls.push(poll);
  if (poll.body === undefined && bodies.length) poll.body = bodies.shift();
  response.headersArray().then((headers) => {
    poll.set_cookies = setCookieNames(headers);
    wakePollWaiters();
  });
}

function recordBody(body) {
  if (!watched) return;
  const poll = watched.polls.find((p) => p.body === undefined);
  if (poll) poll.body = body;
  else bodies.push(body);
  wakePollWaiters();
}

function wakePollWaiters() {
  for (const wake of pollWaiters) wake();
}

await page.exposeBinding('__e2eSessionAnswer', (_source, body) => recordBody(body));
await context.addInitScript(() => {
  document.addEventListener('cookieguard:session', (event) => window.__e2eSessionAnswer(event.detail));
});

function nextPoll(timeoutMs) {
  // Resolves at the next recorded poll, or after timeoutMs (the caller checks which).
  return new Promise((resolve) => {
    const wake = () => {
      pollWaiters.delete(wake);
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(wake, timeoutMs);
    pollWaiters.add(wake);
  });
}

async function tabState() {
  const url = new URL(page.url());
  const mark = await page.evaluate(() => window.__e2eMark ?? null).catch(() => null);
  return {
    url: url.pathname + url.search,
    mark_intact: mark === watched.mark,
    navigations: watched.navigations,
    documents: watched.documents,
    polls: watched.polls.length,
  };
}

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
  async sign_in({ username, password }) {
    await page.fill('input[name=username]', username);
    await page.fill('input[name=password]', password);
    // The form signs in from the browser (Amplify's signIn, straight to the IdP), then loads
    // /dashboard; an error stays on the page.
    await page.click('button[type=submit]');
    await Promise.race([
      page.waitForURL((url) => !url.pathname.startsWith('/sign-in'), { timeout: 30_000 }),
      page.waitForSelector('#error', { timeout: 30_000 }),
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
  async watch_tab({ endpoint }) {
    const mark = `mark-${Math.random().toString(36).slice(2)}`;
    await page.evaluate((value) => {
      window.__e2eMark = value;
    }, mark);
    watched = { endpoint, polls: [], loads: [], navigations: 0, documents: 0, mark };
    return tabState();
  },
  async wait_poll({ after, reasons, expired = false, timeout_ms }) {
    // The first poll at index >= `after` whose JSON `reason` is one of `reasons` (and, with
    // `expired`, that reports the access token as expired: `expires_in` 0).
    const deadline = Date.now() + timeout_ms;
    const matches = (p) =>
      p.set_cookies !== null && reasons.includes(p.body?.reason) && (!expired || p.body?.expires_in === 0);
    for (;;) {
      const index = watched.polls.findIndex((p, i) => i >= after && matches(p));
      if (index >= 0) return { index, poll: watched.polls[index], tab: await tabState() };
      const left = deadline - Date.now();
      if (left <= 0) {
        const seen = watched.polls.slice(after).map((p) => p.body?.reason ?? p.status);
        throw new Error(`no session poll with reason ${reasons} within ${timeout_ms} ms (seen: ${seen})`);
      }
      await nextPoll(left);
    }
  },
  async wait_url({ pathname, timeout_ms }) {
    await page.waitForURL((url) => url.pathname === pathname, { timeout: timeout_ms, waitUntil: 'load' });
    const landed_ms = Date.now();
    return { landed_ms, tab: await tabState(), page: await pageState(), polls: watched.polls, loads: watched.loads };
  },
  async tab() {
    return { tab: await tabState(), polls: watched.polls };
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
