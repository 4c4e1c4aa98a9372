/**
 * Webhooks, side by side in one run:
 *
 * - signed webhooks accepted per second by m2m-webhook-in against Node-RED's own http in + a
 *   function node doing the same Standard Webhooks check (HMAC, timestamp, in-memory dedupe) +
 *   http response (goal ≥ 1.0x), the load from a client in its own process;
 * - events per second the verifier's outbox worker delivers to a local receiver;
 * - attestations per second of the standalone verifier with no subscriber, a dead one (connection
 *   refused) and one that never answers (goal ≥ 0.95x of none for both).
 */
import { execFile } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { Verifier } from '../lib/verifier';
import { decisionEvent } from '../lib/verifier/events';
import { SqliteStore } from '../lib/verifier/store/sqlite';
import { generateSecret, secretKey, signedHeaders } from '../lib/webhooks/standard';
import { closedPort, startReceiver } from '../test/helpers/webhook-receiver';
import { tempUserDir } from '../test/helpers/node-red';
import { helper, m2mNodes, serveHttpNode } from '../test/nodes/harness';
import { table } from './stats';
import { attestationsPerSecond } from './verifier';

const WEBHOOKS = 4000;
const IN_FLIGHT = 16;
const EVENTS = 5000;
const ROUNDS = 2;

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

/** The function node's code: what a user would write to check Standard Webhooks by hand. */
const HAND_WRITTEN_CHECK = `
const crypto = global.get('crypto');
const key = global.get('webhookKey');
const h = msg.req.headers;
const id = h['webhook-id'], ts = h['webhook-timestamp'], signatures = h['webhook-signature'];
let ok = !!(id && ts && signatures) && Math.abs(Date.now() / 1000 - Number(ts)) <= 300;
if (ok) {
  const expected = crypto.createHmac('sha256', key).update(id + '.' + ts + '.').update(msg.payload).digest();
  ok = signatures.split(' ').some(s => {
    const given = Buffer.from(s.slice(3), 'base64');
    return s.startsWith('v1,') && given.length === expected.length && crypto.timingSafeEqual(given, expected);
  });
}
msg.statusCode = ok ? 204 : 401;
if (!ok) return [msg, null];
const seen = context.get('seen') || new Set();
if (seen.has(id)) return [msg, null];
seen.add(id);
context.set('seen', seen);
const event = JSON.parse(msg.payload);
return [msg, { topic: event.type, payload: event }];
`;

async function webhookIntake(): Promise<Array<Record<string, string | number>>> {
  const core = path.join(path.dirname(require.resolve('@node-red/nodes/package.json')), 'core');
  const httpIn = require(path.join(core, 'network', '21-httpin.js'));
  const fn = require(path.join(core, 'function', '10-function.js'));
  const secret = generateSecret();
  const key = secretKey(secret)!;
  const userDir = tempUserDir();
  helper.settings({ userDir, functionGlobalContext: { crypto, webhookKey: key } });
  await new Promise<void>(resolve => helper.startServer(resolve));
  const server = await serveHttpNode();
  const flow = [
    { id: 'tab', type: 'tab' },
    { id: 'ours', z: 'tab', type: 'm2m-webhook-in', path: '/ours', wires: [['sink'], ['sink']] },
    { id: 'theirs', z: 'tab', type: 'http in', url: '/theirs', method: 'post', wires: [['check']] },
    { id: 'check', z: 'tab', type: 'function', func: HAND_WRITTEN_CHECK, outputs: 2, wires: [['answer'], ['sink']] },
    { id: 'answer', z: 'tab', type: 'http response', wires: [] },
    { id: 'sink', z: 'tab', type: 'helper' },
  ];
  await helper.load([server.capture, httpIn, fn, ...m2mNodes], flow, { ours: { secrets: secret } });
  let received = 0;
  helper.getNode('sink').on('input', () => received++);

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-bench-webhooks-'));
  const client = path.join(__dirname, 'clients', 'post-load.js');
  const measure = async (target: string, round: number) => {
    const now = Math.floor(Date.now() / 1000);
    const requests = Array.from({ length: WEBHOOKS }, (_, i) => {
      const body = JSON.stringify({
        type: 'attestation.decided',
        timestamp: new Date().toISOString(),
        data: { deviceId: `press-${i % 50}`, decision: 'approved', reasons: [], sessionId: crypto.randomUUID() },
      });
      const id = `evt_${target}_${round}_${i}`;
      return { path: target, headers: { 'content-type': 'text/plain', ...signedHeaders([key], id, now, body) }, body };
    });
    const file = path.join(dir, 'requests.json');
    fs.writeFileSync(file, JSON.stringify(requests));
    const before = received;
    const { stdout } = await promisify(execFile)(process.execPath, [client, server.url, file, String(IN_FLIGHT)]);
    const { seconds, statuses } = JSON.parse(stdout) as { seconds: number; statuses: Record<string, number> };
    if (statuses['204'] !== WEBHOOKS || received - before !== WEBHOOKS)
      throw new Error(`${target}: ${JSON.stringify(statuses)}, ${received - before} reached the flow`);
    return WEBHOOKS / seconds;
  };
  const rates: Record<string, number[]> = { '/ours': [], '/theirs': [] };
  try {
    await measure('/ours', -1); // warm-up: JIT, SQLite pages
    await measure('/theirs', -1);
    for (let round = 0; round < ROUNDS; round++)
      for (const target of ['/ours', '/theirs']) rates[target].push(await measure(target, round));
  } finally {
    await helper.unload();
    await new Promise<void>(resolve => helper.stopServer(() => resolve()));
    await server.close();
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(userDir, { recursive: true, force: true });
  }
  const ours = median(rates['/ours']);
  const theirs = median(rates['/theirs']);
  return [
    { receiver: 'm2m-webhook-in (raw bytes, persisted dedupe)', 'webhooks/s': Math.round(ours), ratio: ours / theirs },
    {
      receiver: 'http in + function (HMAC, memory dedupe) + http response',
      'webhooks/s': Math.round(theirs),
      ratio: 1,
    },
  ];
}

async function deliveryRate(): Promise<number> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-bench-delivery-'));
  const store = new SqliteStore(path.join(dir, 'verifier.db'));
  const now = Date.now();
  for (let i = 0; i < EVENTS; i++) {
    const session = {
      sessionId: crypto.randomUUID(),
      deviceId: `press-${i % 50}`,
      decision: 'approved' as const,
      reasons: [],
      createdAt: now,
    };
    await store.recordSession(session, decisionEvent(session, 'default', now));
  }
  const receiver = await startReceiver(() => 204);
  const start = process.hrtime.bigint();
  const verifier = await Verifier.create({
    store,
    publicUrl: 'http://127.0.0.1:1/',
    webhooks: { subscribers: [{ url: receiver.url, secret: generateSecret() }] },
  });
  await receiver.waitFor(EVENTS, 120_000);
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  await verifier.close();
  await receiver.close();
  fs.rmSync(dir, { recursive: true, force: true });
  return EVENTS / seconds;
}

export async function run(): Promise<void> {
  table(await webhookIntake());
  console.log(
    `(${WEBHOOKS} signed webhooks per round, ${IN_FLIGHT} in flight from a client process, median of ${ROUNDS} rounds; goal ≥ 1.0x)`,
  );

  console.log(
    `\noutbox delivery: ${Math.round(await deliveryRate())} events/s to a local receiver (${EVENTS} events, 8 in flight)`,
  );

  const secret = generateSecret();
  const refused = { M2M_WEBHOOK_URL: `http://127.0.0.1:${await closedPort()}/hook`, M2M_WEBHOOK_SECRET: secret };
  const silent = await startReceiver(() => 'hang');
  const hanging = { M2M_WEBHOOK_URL: silent.url, M2M_WEBHOOK_SECRET: secret };
  const rates: Record<string, number[]> = { none: [], refused: [], hanging: [] };
  for (let round = 0; round < ROUNDS; round++) {
    rates.none.push(await attestationsPerSecond({}));
    rates.refused.push(await attestationsPerSecond(refused));
    rates.hanging.push(await attestationsPerSecond(hanging));
  }
  await silent.close();
  const none = median(rates.none);
  table(
    [
      ['no subscriber', none],
      ['dead subscriber (connection refused)', median(rates.refused)],
      ['subscriber that never answers', median(rates.hanging)],
    ].map(([subscriber, rate]) => ({
      subscriber,
      'attestations/s': Math.round(rate as number),
      ratio: (rate as number) / none,
    })),
  );
  console.log(`(standalone verifier, SQLite, median of ${ROUNDS} rounds alternated; goal ≥ 0.95x)`);
}
