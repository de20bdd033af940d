// End-to-end test of syncbrok's web dashboard (/ui) in headless Chromium. Run by
// scripts/ui-browser.sh, which starts a broker with auth on; by hand:
//   node scripts/ui/dashboard.mjs URL ADMIN_TOKEN READ_TOKEN
// (or SYNCBROK_URL, UI_ADMIN_TOKEN, UI_READ_TOKEN; UI_SCREENSHOTS names the screenshot folder).
//
// Setup (steps 1-2) goes through the v1 API, not the dashboard, so that a failure after it is
// the dashboard's.
import http from 'node:http';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const url = (process.argv[2] ?? process.env.SYNCBROK_URL ?? '').replace(/\/+$/, '');
const adminToken = process.argv[3] ?? process.env.UI_ADMIN_TOKEN;
const readToken = process.argv[4] ?? process.env.UI_READ_TOKEN;
const shots = process.env.UI_SCREENSHOTS ?? 'target/ui-screenshots';
if (!url || !adminToken || !readToken) {
  console.error('usage: node dashboard.mjs URL ADMIN_TOKEN READ_TOKEN');
  process.exit(2);
}
mkdirSync(shots, { recursive: true });

const queue = 'orders';
const messagePage = (id) => `${url}/ui/queues/${queue}/messages/${id}`;

// --- the subscriber: fails while `failing`, so that P goes dead, then accepts the redrive ---
let failing = true;
const received = []; // {id, parent, status} in arrival order
const sink = http.createServer((req, res) => {
  req.resume(); // the body is not needed; drain it so the connection stays usable
  req.on('end', () => {
    const status = failing ? 500 : 200;
    received.push({
      id: req.headers['webhook-id'] ?? null,
      parent: req.headers['syncbrok-parent'] ?? null,
      status,
    });
    res.writeHead(status, { 'content-type': 'text/plain' }).end(status === 200 ? 'ok' : 'failing');
  });
});

// --- small helpers: playwright-core has no `expect`, so failures are plain errors ---
function fail(message) {
  throw new Error(message);
}

async function api(method, path, { body, headers = {}, token = adminToken } = {}) {
  const res = await fetch(`${url}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...headers },
    body,
  });
  const text = await res.text();
  if (!res.ok) fail(`${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

// Polls `probe` until it returns a truthy value; `describe` says what was last seen on timeout.
async function until(what, probe, { timeout = 15000, interval = 200, describe } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await probe();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      const seen = describe ? await describe().catch((e) => String(e)) : String(last);
      fail(`timed out after ${timeout} ms waiting for ${what} (last seen: ${seen})`);
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}

// Playwright's own timeout message is long and coloured; this one names what was missing.
async function expectSelector(page, selector, state = 'visible') {
  try {
    await page.locator(selector).first().waitFor({ state });
  } catch {
    fail(`no ${state === 'attached' ? '' : `${state} `}${selector} on ${page.url()}`);
  }
}

const pathOf = (page) => new URL(page.url()).pathname;
const textOf = async (page, selector) => {
  const text = await page.locator(selector).first().textContent().catch(() => fail(`no ${selector} on ${page.url()}`));
  return (text ?? '').trim();
};

let stepNo = 0;
let current = '';
async function step(name, fn) {
  stepNo += 1;
  current = `${stepNo}. ${name}`;
  await fn();
  console.log(`ok ${current}`);
}

async function screenshot(page, name) {
  await page.screenshot({ path: join(shots, name), fullPage: true });
}

async function login(page, token) {
  await page.goto(`${url}/ui/login`);
  await page.fill('input[name=token]', token);
  await page.click('button[type=submit]');
  await page.waitForLoadState('load');
}

// Form posts go through the context's request API so the session cookie goes along, as it
// would from the page; maxRedirects 0 keeps a refusal that redirects (e.g. to the login page)
// from turning into the 200 of the page it redirects to.
async function postForm(page, path, form) {
  // A 403 only means something if the session went along: without it the refusal could be
  // "not logged in". /ui answers 200 only to a session (a redirect to the login page otherwise).
  const probe = await page.request.get(`${url}/ui`, { maxRedirects: 0 });
  if (probe.status() !== 200) fail(`the session cookie did not go with page.request (GET /ui: ${probe.status()})`);
  const res = await page.request.post(`${url}${path}`, { form, maxRedirects: 0 });
  return res.status();
}

let browser;
let page;
let exitCode = 0;
try {
  await new Promise((resolve, reject) => {
    sink.once('error', reject);
    sink.listen(0, '127.0.0.1', resolve);
  });
  const sinkUrl = `http://127.0.0.1:${sink.address().port}/hook`;

  let P;
  let C;
  let subscriber;
  await step('queue and subscriber created through the API', async () => {
    // Two quick attempts make P dead within a second. Delivered messages are kept for an hour
    // (the default, 0s, removes them at once and their page would be a 404).
    await api('PUT', `/v1/queues/${queue}`, {
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        retry: { max_attempts: 2, initial_backoff: '10ms', max_backoff: '50ms' },
        delivery_timeout: '5s',
        retention: { delivered: '1h' },
        on_parent_dead: 'wait',
      }),
    });
    subscriber = (await api('POST', `/v1/queues/${queue}/subscribers`, {
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ endpoint: sinkUrl }),
    })).id;
  });

  await step('parent P goes dead, child C waits for it', async () => {
    P = (await api('POST', `/v1/queues/${queue}/messages`, {
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ order: 1, item: 'parent' }),
    })).id;
    C = (await api('POST', `/v1/queues/${queue}/messages`, {
      headers: { 'content-type': 'application/json', 'syncbrok-parent': P },
      body: JSON.stringify({ order: 1, item: 'child' }),
    })).id;
    const state = async (id) => (await api('GET', `/v1/queues/${queue}/messages/${id}`)).state;
    await until(`P (${P}) to be dead`, async () => (await state(P)) === 'dead', {
      describe: () => state(P),
    });
    const childState = await state(C);
    if (childState !== 'waiting') fail(`C (${C}) is ${childState}, expected waiting`);
    if (received.some((r) => r.id === C)) fail('the sink got C before its parent was delivered');
  });

  current = 'launching Chromium';
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    // This network reaches no Google service: without these Chromium stalls or logs errors
    // trying; --no-sandbox because CI runs as root.
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  let context = await browser.newContext();
  page = await context.newPage();
  page.setDefaultTimeout(10000);

  await step('/ui sends to the login page; the admin token logs in', async () => {
    await page.goto(`${url}/ui`);
    if (pathOf(page) !== '/ui/login') fail(`/ui led to ${page.url()}, expected /ui/login`);
    await page.fill('input[name=token]', adminToken);
    await page.click('button[type=submit]');
    await page.waitForURL((u) => u.pathname === '/ui' || u.pathname === '/ui/').catch(() => {
      fail(`logging in led to ${page.url()}, expected /ui`);
    });
    await page.getByText(queue).first().waitFor().catch(() => fail(`no text "${queue}" on ${page.url()}`));
    await screenshot(page, 'overview.png');
  });

  await step('the dead message shows its state, its child in the lineage and why', async () => {
    await page.goto(messagePage(P));
    const state = await textOf(page, '#state');
    if (state !== 'dead') fail(`#state reads "${state}", expected "dead"`);
    // SVG nodes may have no box of their own (a <g>), so presence is what counts, not visibility.
    await expectSelector(page, `svg#lineage [data-id="${C}"]`, 'attached');
    await expectSelector(page, '#explain');
    if (!(await textOf(page, '#explain'))) fail('#explain is empty');
    await screenshot(page, 'message-dead.png');
  });

  await step('redrive from the page delivers P, then C', async () => {
    failing = false;
    await page.click('button#redrive');
    await page.waitForLoadState('load');
    // goto rather than reload: if the redrive was a form post, a reload would post it again.
    await until('P to read delivered on its page', async () => {
      await page.goto(messagePage(P));
      return (await textOf(page, '#state')) === 'delivered';
    }, { interval: 500, describe: () => textOf(page, '#state') });
    await screenshot(page, 'message-delivered.png');
    await until('C to read delivered on its page', async () => {
      await page.goto(messagePage(C));
      return (await textOf(page, '#state')) === 'delivered';
    }, { interval: 500, describe: () => textOf(page, '#state') });
    const pAt = received.findIndex((r) => r.id === P && r.status === 200);
    const cAt = received.findIndex((r) => r.id === C && r.status === 200);
    if (pAt < 0 || cAt < 0) fail(`the sink did not accept both: ${JSON.stringify(received)}`);
    if (pAt > cAt) fail(`the sink got C before P: ${JSON.stringify(received)}`);
    if (received[cAt].parent !== P) fail(`C came with syncbrok-parent ${received[cAt].parent}, expected ${P}`);
  });

  await step('an open page follows its message live, without a reload by the test', async () => {
    await api('POST', `/v1/queues/${queue}/subscribers/${subscriber}/pause`);
    const E = (await api('POST', `/v1/queues/${queue}/messages`, {
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ order: 2 }),
    })).id;
    await page.goto(messagePage(E));
    const before = await textOf(page, '#state');
    if (before !== 'ready') fail(`#state reads "${before}" while its subscriber is paused, expected "ready"`);
    await api('POST', `/v1/queues/${queue}/subscribers/${subscriber}/resume`);
    // The page's own script notices the change and shows it.
    await until('the open page to read delivered', async () => (await textOf(page, '#state')) === 'delivered', {
      timeout: 15000,
      interval: 250,
      describe: () => textOf(page, '#state'),
    });
  });

  await step('dead letters, subscribers and queue pages answer', async () => {
    for (const [path, name] of [
      ['/ui/dead-letters', 'dead-letters.png'],
      ['/ui/subscribers', 'subscribers.png'],
      [`/ui/queues/${queue}`, 'queue.png'],
    ]) {
      const res = await page.goto(`${url}${path}`);
      if (res?.status() !== 200) fail(`${path} answered ${res?.status()}`);
      await expectSelector(page, 'h1');
      await screenshot(page, name);
    }
  });

  await step('a form post without csrf is refused', async () => {
    const status = await postForm(page, `/ui/queues/${queue}/messages/${P}/redrive`, {});
    if (status !== 403) fail(`redrive without csrf answered ${status}, expected 403`);
  });

  await step('logout ends the session', async () => {
    await page.click('button#logout');
    await page.waitForLoadState('load');
    await page.goto(`${url}/ui`);
    if (pathOf(page) !== '/ui/login') fail(`after logout /ui led to ${page.url()}, expected /ui/login`);
  });

  await step('the read token sees no redrive and may not post one', async () => {
    await login(page, readToken);
    await page.goto(messagePage(P));
    // Wait for the page proper first, so that an error page cannot pass for "no button".
    await expectSelector(page, '#state');
    if ((await page.locator('button#redrive').count()) !== 0) fail('a read session sees button#redrive');
    // A valid csrf value, so that the 403 is the role's refusal and not the csrf check's.
    let csrf = null;
    if ((await page.locator('input[name=csrf]').count()) > 0) {
      csrf = await page.locator('input[name=csrf]').first().inputValue();
    } else if ((await page.locator('meta[name=csrf]').count()) > 0) {
      csrf = await page.locator('meta[name=csrf]').first().getAttribute('content');
    }
    if (!csrf) fail('no csrf value on the message page (input[name=csrf] or meta[name=csrf])');
    const status = await postForm(page, `/ui/queues/${queue}/messages/${P}/redrive`, { csrf });
    if (status !== 403) fail(`redrive by a read session answered ${status}, expected 403`);
    await screenshot(page, 'message-read-only.png');
  });

  await step('a wrong token is refused at the login page', async () => {
    // A fresh context: no cookie from the read session.
    await context.close();
    context = await browser.newContext();
    page = await context.newPage();
    page.setDefaultTimeout(10000);
    await login(page, `wrong-${adminToken}`);
    if (pathOf(page) !== '/ui/login') fail(`a wrong token led to ${page.url()}, expected /ui/login`);
    await expectSelector(page, 'input[name=token]');
    await expectSelector(page, '.error');
    await screenshot(page, 'login-error.png');
  });

  console.log(`ui-browser: ${stepNo} steps passed; screenshots in ${shots}`);
} catch (e) {
  exitCode = 1;
  const message = String(e?.message ?? e).replace(/\x1b\[[0-9;]*m/g, '');
  console.error(`FAILED at step ${current || '(setup)'}: ${message}`);
  if (page) {
    console.error(`  page: ${page.url()}`);
    await page.screenshot({ path: join(shots, 'failure.png'), fullPage: true }).catch(() => {});
    console.error(`  screenshot: ${join(shots, 'failure.png')}`);
  }
} finally {
  await browser?.close().catch(() => {});
  sink.closeAllConnections?.();
  await new Promise((r) => sink.close(() => r()));
}
process.exit(exitCode);
