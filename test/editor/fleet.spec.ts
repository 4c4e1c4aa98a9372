/**
 * The "m2m fleet" sidebar in headless Chromium, on a Node-RED running the quick start: the device
 * listed, revoked from the sidebar (the next attestation declines, in the debug sidebar and the
 * tab), reinstated; with adminAuth, a read-only user who can look but not change, and no verifier
 * admin key in any page or answer; and on the MQTT client-certificate example against a Mosquitto
 * of the test's own, a revoke clicked in the sidebar dropping the gateway from the broker.
 */
import * as assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { MqttClient } from 'mqtt';
import { chromium, type Browser, type Page } from 'playwright-core';
import { packageRoot, prepareUserDir, startNodeRed } from '../../tools/node-red-home';
import { editorReady } from '../helpers/editor';
import { requireHardware } from '../helpers/hardware';
import { BROKER_ADMIN, type TestBroker, startMosquitto } from '../helpers/mosquitto';
import { freePort } from '../helpers/ports';
import { makeDevice, registration } from '../fixtures/device';

const CHROMIUM = process.env.M2M_CHROMIUM || '/usr/bin/chromium';
const docs = path.join(packageRoot, 'screenshots');
const quickStart = fs.readFileSync(path.join(packageRoot, 'examples', 'quick-start.json'), 'utf8');
const DEVICE = 'quickstart-gateway';

declare const RED: any;
declare const $: any;

interface Running {
  url: string;
  userDir: string;
  process: ChildProcess;
}

/** Node-RED with `flows` in a fresh user dir; `settings` replaces the default settings file. */
async function startWith(flows: string, settings?: (userDir: string) => string): Promise<Running> {
  const userDir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-fleet-'));
  if (settings) fs.writeFileSync(path.join(userDir, 'settings.js'), settings(userDir));
  prepareUserDir(userDir, () => flows);
  const port = await freePort();
  const child = startNodeRed(userDir, port, 'pipe');
  let log = '';
  await new Promise<void>((resolve, reject) => {
    const collect = (chunk: Buffer) => {
      log += chunk;
      if (log.includes('Server now running')) resolve();
    };
    child.stdout!.on('data', collect);
    child.stderr!.on('data', collect);
    child.on('exit', code => reject(new Error(`Node-RED exited with ${code}: ${log}`)));
  });
  return { url: `http://127.0.0.1:${port}/`, userDir, process: child };
}

const startQuickStart = (settings?: (userDir: string) => string) => startWith(quickStart, settings);

/** A full deploy through the admin API, credentials on the nodes, as the editor sends it. */
async function deploy(url: string, flows: unknown[], headers: Record<string, string> = {}): Promise<void> {
  const deployed = await fetch(`${url}flows`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'node-red-deployment-type': 'full', ...headers },
    body: JSON.stringify(flows),
  });
  assert.equal(deployed.status, 204, await deployed.text());
}

async function stop(running: Running | undefined): Promise<void> {
  if (!running) return;
  if (running.process.exitCode === null) {
    const exited = new Promise(resolve => running.process.once('exit', resolve));
    running.process.kill('SIGTERM');
    await exited;
  }
  fs.rmSync(running.userDir, { recursive: true, force: true });
}

async function openFleet(page: Page, url: string): Promise<void> {
  await page.goto(url);
  await editorReady(page);
  // The tab appears once a running verifier is found.
  await page.waitForFunction(() => RED.sidebar.containsTab('m2m-fleet'), undefined, { timeout: 30_000 });
  await showFleet(page);
}

/** Brings the fleet tab forward; the editor may bring its own first tab forward while it settles. */
async function showFleet(page: Page): Promise<void> {
  await page.waitForFunction(
    () => {
      if (!$('.m2m-fleet').is(':visible')) RED.sidebar.show('m2m-fleet');
      return $('.m2m-fleet').is(':visible');
    },
    undefined,
    { timeout: 30_000, polling: 250 },
  );
}

const row = (page: Page, device = DEVICE) => page.locator(`.m2m-fleet-device[data-device="${device}"]`);

/** The device's card says `text` (rendered; whether the tab is in front is openFleet's business). */
async function rowShows(page: Page, selector: string, text: string, device = DEVICE): Promise<void> {
  await row(page, device).locator(selector, { hasText: text }).waitFor({ state: 'attached', timeout: 30_000 });
}

/** Revokes `device` from its card: the button, a reason, the confirmation; resolves as it is confirmed. */
async function revokeFromSidebar(page: Page, reason: string, device = DEVICE): Promise<void> {
  await row(page, device).locator('.m2m-fleet-revoke').click();
  await page.locator('.m2m-fleet-reason').fill(reason);
  await page.locator('.m2m-fleet-confirm-revoke').click();
}

describe('the m2m fleet sidebar in headless Chromium', function () {
  this.timeout(180_000);
  let browser: Browser;

  before(async () => {
    assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing: install Debian's chromium package`);
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run', '--disable-sync'],
    });
  });
  after(async () => {
    await browser?.close();
  });

  describe('on the quick start, without adminAuth', () => {
    let nodeRed: Running | undefined;
    let page: Page;
    before(async () => {
      nodeRed = await startQuickStart();
      page = await browser.newPage({ viewport: { width: 1600, height: 900 } });
    });
    after(async () => {
      await page?.close();
      await stop(nodeRed);
    });

    const press = async (injectId: string) => {
      const answer = await page.request.post(`${nodeRed!.url}inject/${injectId}`);
      assert.equal(answer.status(), 200);
    };

    it("lists the quick start's device; revoking it declines the next attestation, reinstating lets it attest again", async () => {
      await openFleet(page, nodeRed!.url);
      await rowShows(page, '.m2m-fleet-device-status', 'active');
      await rowShows(page, '.m2m-fleet-decision', 'approved');
      await rowShows(page, '.m2m-fleet-key', 'EdDSA (Ed25519) · in a file');
      fs.mkdirSync(docs, { recursive: true });
      await page.locator('#red-ui-sidebar').screenshot({ path: path.join(docs, 'fleet-sidebar.png') });

      await row(page).locator('.m2m-fleet-revoke').click();
      // A decision arriving while the user types the reason must not wipe the confirmation.
      const latest = await page.locator('.m2m-fleet-latest li').count();
      await press('qs-reattest');
      await page.waitForFunction(n => $('.m2m-fleet-latest li').length > n, latest, { timeout: 30_000 });
      await page.waitForTimeout(500);
      assert.equal(await page.locator('.m2m-fleet-confirm').count(), 1, 'the confirmation survived a live update');
      await page.locator('.m2m-fleet-reason').fill('gateway sent for repair');
      await page.locator('.m2m-fleet-confirm-revoke').click();
      await rowShows(page, '.m2m-fleet-device-status', 'revoked');

      await press('qs-reattest');
      await rowShows(page, '.m2m-fleet-decision', 'declined');
      await rowShows(page, '.m2m-fleet-reasons', 'device_revoked');
      await page.locator('.m2m-fleet-latest li', { hasText: 'device_revoked' }).first().waitFor();
      // The quick start's "held, declined or offline" debug node: the message in the debug sidebar,
      // its reasons under the node.
      await page.evaluate(() => RED.sidebar.show('debug'));
      await page.locator('.red-ui-debug-msg', { hasText: 'declined' }).first().waitFor({ timeout: 30_000 });
      await page.waitForFunction(
        () => String(RED.nodes.node('qs-debug-events')?.status?.text ?? '').includes('device_revoked'),
        undefined,
        { timeout: 30_000 },
      );

      const history = await page.request.get(`${nodeRed!.url}m2m-fleet/sources/qs-verifier/devices/${DEVICE}/history`);
      const revoked = (await history.json()).audit.find((entry: { action: string }) => entry.action === 'revoked');
      assert.deepEqual([revoked.actor, revoked.reason], ['node-red:editor', 'gateway sent for repair']);

      await showFleet(page);
      await row(page).locator('.m2m-fleet-reinstate').click();
      await rowShows(page, '.m2m-fleet-device-status', 'active');
      await press('qs-reattest');
      await rowShows(page, '.m2m-fleet-decision', 'approved');
    });

    it('pages 1,000 devices 50 at a time', async () => {
      // A thousand gateways registered (the quick start accepts registrations from this machine).
      const devices = Array.from({ length: 1000 }, (_, i) => makeDevice(`line-${String(i).padStart(4, '0')}`));
      for (let i = 0; i < devices.length; i += 50)
        await Promise.all(
          devices.slice(i, i + 50).map(async device => {
            const answer = await fetch(`${nodeRed!.url}m2m/v1/devices`, {
              method: 'POST',
              headers: { 'content-type': 'application/json' },
              body: JSON.stringify({ registration: registration(device) }),
            });
            assert.equal(answer.status, 201);
          }),
        );
      await showFleet(page);
      let started = Date.now();
      await page.locator('.m2m-fleet-search').fill('line-');
      await page.locator('.m2m-fleet-range', { hasText: '1–50 of 1000' }).waitFor();
      const first = Date.now() - started;
      assert.equal(await page.locator('.m2m-fleet-device').count(), 50);
      started = Date.now();
      await page.locator('.m2m-fleet-next').click();
      await page.locator('.m2m-fleet-range', { hasText: '51–100 of 1000' }).waitFor();
      const next = Date.now() - started;
      assert.equal(await page.locator('.m2m-fleet-device').first().getAttribute('data-device'), 'line-0050');
      console.log(
        `      (1,000 devices: first page ${first} ms after typing, with the 250 ms search pause; next page ${next} ms)`,
      );
    });

    it('shows the page asked for last, whatever order the answers arrive in', async () => {
      await showFleet(page);
      // The first page's answer is held back until the second page, asked for after it, is shown.
      let release!: () => void;
      const held = new Promise<void>(resolve => {
        release = resolve;
      });
      const firstPage = (url: URL) => url.pathname.endsWith('/devices') && url.searchParams.get('offset') === '0';
      await page.route(firstPage, async route => {
        await held;
        await route.continue();
      });
      try {
        const asked = page.waitForRequest(request => firstPage(new URL(request.url())));
        await page.locator('.m2m-fleet-search').fill('line-0');
        await asked;
        await page.locator('.m2m-fleet-next').click();
        await page.locator('.m2m-fleet-range', { hasText: '51–100 of 1000' }).waitFor();
        assert.equal(await page.locator('.m2m-fleet-device').first().getAttribute('data-device'), 'line-0050');

        const late = page.waitForResponse(response => firstPage(new URL(response.url())));
        release();
        await (await late).finished();
        await page.evaluate(() => new Promise(resolve => setTimeout(resolve, 200)));
        assert.equal(await page.locator('.m2m-fleet-device').first().getAttribute('data-device'), 'line-0050');
        assert.equal(await page.locator('.m2m-fleet-range').textContent(), '51–100 of 1000');
      } finally {
        await page.unroute(firstPage);
      }
    });
  });

  describe('with adminAuth: a read-only user, and the admin key nowhere in the browser', () => {
    const ADMIN_KEY = 'fleet-admin-key-that-must-not-leak';
    let nodeRed: Running | undefined;

    before(async () => {
      // The bcrypt Node-RED itself checks passwords with (its editor-api's), whatever else is installed.
      const editorApi = path.dirname(require.resolve('@node-red/editor-api/package.json', { paths: [packageRoot] }));
      const bcrypt = require(require.resolve('bcryptjs', { paths: [editorApi] }));
      const hash = bcrypt.hashSync('viewer-password', 8);
      const adminHash = bcrypt.hashSync('admin-password', 8);
      nodeRed = await startQuickStart(
        () => `module.exports = {
  uiHost: '127.0.0.1',
  uiPort: Number(process.env.PORT),
  flowFile: 'flows.json',
  credentialSecret: 'fleet-test-secret',
  editorTheme: { tours: false },
  telemetry: { enabled: false },
  adminAuth: {
    type: 'credentials',
    users: [
      { username: 'viewer', password: ${JSON.stringify(hash)}, permissions: 'read' },
      { username: 'admin', password: ${JSON.stringify(adminHash)}, permissions: '*' },
    ],
  },
};
`,
      );
    });
    after(async () => {
      await stop(nodeRed);
    });

    /** A token as the editor's login gets one; a read-only user may only ask for the read scope. */
    async function login(username: string, password: string, scope = '*'): Promise<Record<string, unknown>> {
      const answer = await fetch(`${nodeRed!.url}auth/token`, {
        method: 'POST',
        // As the editor's login form sends it: a form, not JSON.
        body: new URLSearchParams({
          client_id: 'node-red-editor',
          grant_type: 'password',
          scope,
          username,
          password,
        }),
      });
      assert.equal(answer.status, 200, await answer.clone().text());
      return (await answer.json()) as Record<string, unknown>;
    }

    it('shows the viewer the fleet without buttons, refuses their POST, and never shows the admin key', async () => {
      // The admin gives the verifier an admin key and adds a remote source that uses it.
      const admin = await login('admin', 'admin-password');
      const auth = { authorization: `Bearer ${admin.access_token}` };
      const flows = JSON.parse(quickStart) as Array<Record<string, unknown>>;
      for (const node of flows) if (node.id === 'qs-verifier') node.credentials = { adminKey: ADMIN_KEY };
      flows.push({
        id: 'fleet-remote',
        type: 'm2m-identity-api',
        name: 'central verifier',
        provider: 'm2m',
        baseUrl: `${nodeRed!.url}m2m`,
        timeout: 10000,
        credentials: { apiKey: ADMIN_KEY },
      });
      await deploy(nodeRed!.url, flows, auth);

      const viewer = await login('viewer', 'viewer-password', 'read');
      const context = await browser.newContext({ viewport: { width: 1600, height: 900 } });
      const page = await context.newPage();
      const bodies: string[] = [];
      page.on('response', response => {
        response.text().then(
          text => bodies.push(text),
          () => undefined,
        );
      });
      await page.addInitScript(tokens => {
        localStorage.setItem('auth-tokens', JSON.stringify(tokens));
      }, viewer);
      try {
        await openFleet(page, nodeRed!.url);
        await rowShows(page, '.m2m-fleet-device-status', 'active');
        assert.equal(await page.locator('.m2m-fleet-revoke, .m2m-fleet-reinstate, .m2m-fleet-approve').count(), 0);
        await page.locator('.m2m-fleet-readonly').waitFor();
        // Both sources list the device: this Node-RED's verifier, and the remote one through its admin API.
        const sources = await page.locator('.m2m-fleet-source option').allInnerTexts();
        assert.deepEqual(sources.length, 2, JSON.stringify(sources));
        await page.locator('.m2m-fleet-source').selectOption('fleet-remote');
        await rowShows(page, '.m2m-fleet-device-status', 'active');

        const refused = await page.request.post(
          `${nodeRed!.url}m2m-fleet/sources/qs-verifier/devices/${DEVICE}/revoke`,
          { headers: { authorization: `Bearer ${viewer.access_token}` }, data: {} },
        );
        assert.ok([401, 403].includes(refused.status()), `viewer's revoke answered ${refused.status()}`);
        const anonymous = await fetch(`${nodeRed!.url}m2m-fleet/sources`);
        assert.equal(anonymous.status, 401);

        await page.waitForTimeout(500);
        assert.ok(bodies.length > 5);
        assert.deepEqual(
          bodies.filter(body => body.includes(ADMIN_KEY)),
          [],
          'an answer carried the admin key',
        );
        assert.ok(!(await page.content()).includes(ADMIN_KEY));
      } finally {
        await context.close();
      }
    });
  });

  describe('on the MQTT client-certificate example, against a Mosquitto of its own', () => {
    const GATEWAY = 'mqtt-gateway';
    const example = JSON.parse(
      fs.readFileSync(path.join(packageRoot, 'examples', 'm2m-reauth-timer', 'mqtt-client-certificates.json'), 'utf8'),
    ) as Array<Record<string, unknown>>;
    let nodeRed: Running | undefined;
    let broker: TestBroker | undefined;
    let subscriber: MqttClient | undefined;
    let page: Page | undefined;

    after(async () => {
      await page?.close();
      subscriber?.end(true);
      await stop(nodeRed);
      await broker?.stop();
    });

    it('drops the gateway from the broker within a second of a revoke clicked in the sidebar', async function () {
      // The verifier alone first: its CA, made now and kept in its database, is what the broker trusts.
      nodeRed = await startWith(
        JSON.stringify(
          example
            .filter(node => node.id === 'mc-tab' || node.id === 'mc-verifier')
            .map(node => (node.id === 'mc-verifier' ? { ...node, mosquittoUrl: '' } : node)),
        ),
      );
      const base = `${nodeRed.url}m2m-mqtt/v1`;
      // The server answers before the flows have started: the verifier's routes come with them.
      let answer = await fetch(`${base}/ca`);
      for (const started = Date.now(); answer.status === 404 && Date.now() - started < 30_000; ) {
        await new Promise(resolve => setTimeout(resolve, 200));
        answer = await fetch(`${base}/ca`);
      }
      const ca = await answer.text();
      const crl = await (await fetch(`${base}/crl`)).text();
      assert.match(ca, /BEGIN CERTIFICATE/);
      broker = requireHardware(this, await startMosquitto(ca, { crl }));
      const serverCa = path.join(nodeRed.userDir, 'broker-ca.pem');
      fs.writeFileSync(serverCa, broker.serverCa);
      const changes: Record<string, Record<string, unknown>> = {
        'mc-verifier': {
          mosquittoUrl: broker.adminUrl,
          mosquittoCrlFile: broker.crlFile,
          mosquittoPidFile: broker.pidFile,
          credentials: { mosquittoPassword: BROKER_ADMIN.password },
        },
        'mc-tls': { ca: serverCa },
        'mc-broker': { port: String(broker.tlsPort) },
      };
      await deploy(
        nodeRed.url,
        example.map(node => ({ ...node, ...changes[node.id as string] })),
      );

      // Its readings reach the broker over its certificate (an inject every 2 s).
      const mqtt: typeof import('mqtt') = require('mqtt');
      subscriber = await mqtt.connectAsync(broker.adminUrl, { ...BROKER_ADMIN, protocolVersion: 5 });
      const reading = new Promise((resolve, reject) => {
        subscriber!.once('message', resolve);
        setTimeout(() => reject(new Error('no reading of the gateway reached the broker in 30 s')), 30_000).unref();
      });
      await subscriber.subscribeAsync(`plant/${GATEWAY}/#`, { qos: 1 });
      await reading;

      page = await browser.newPage({ viewport: { width: 1600, height: 900 } });
      await openFleet(page, nodeRed.url);
      await rowShows(page, '.m2m-fleet-device-status', 'active', GATEWAY);
      // Node-RED's MQTT nodes show a green dot while connected (the text is translated on some versions).
      const connected = () => page!.evaluate(() => RED.nodes.node('mc-out')?.status?.fill === 'green');
      assert.ok(await connected(), 'the publishing node shows its broker connection');

      await revokeFromSidebar(page, 'gateway stolen', GATEWAY);
      const clicked = Date.now();
      await page.waitForFunction(() => RED.nodes.node('mc-out')?.status?.fill !== 'green', undefined, {
        timeout: 5_000,
        polling: 5,
      });
      const dropped = Date.now() - clicked;
      console.log(`      (revoke clicked to the broker connection shown gone in the editor: ${dropped} ms)`);
      assert.ok(dropped < 1000, `dropped after ${dropped} ms`);
      await rowShows(page, '.m2m-fleet-device-status', 'revoked', GATEWAY);
      // Its MQTT client tries again after 5 s, with the same certificate: refused.
      await page.waitForTimeout(6500);
      assert.ok(!(await connected()), 'the revoked gateway got back in');
    });
  });
});
