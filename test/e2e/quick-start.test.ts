/**
 * The quick start in a real Node-RED process (the one under test: node-red 4 here, 3.1 in the
 * compatibility run): the editor's body parser sits in front of every route there, unlike in
 * node-red-node-test-helper, so this is where m2m-webhook-in must prove it reads the exact bytes.
 */
import * as assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { openSqlite } from '../../lib/sqlite';
import { packageRoot, prepareUserDir, startNodeRed } from '../../tools/node-red-home';
import { secretKey, signedHeaders } from '../../lib/webhooks/standard';

function freePort(): Promise<number> {
  return new Promise(resolve => {
    const server = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

async function until<T>(what: () => T | Promise<T>, ok: (value: T) => boolean, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await what();
    if (ok(value)) return value;
    if (Date.now() > deadline) throw new Error(`gave up waiting: ${JSON.stringify(value)}`);
    await new Promise(resolve => setTimeout(resolve, 200));
  }
}

describe('the quick start in a real Node-RED', function () {
  this.timeout(60_000);
  let userDir: string;
  let nodeRed: ChildProcess;
  let url: string;

  before(async () => {
    userDir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-quickstart-'));
    prepareUserDir(userDir, () => fs.readFileSync(path.join(packageRoot, 'examples', 'quick-start.json'), 'utf8'));
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    nodeRed = startNodeRed(userDir, port, 'pipe');
    let log = '';
    await new Promise<void>((resolve, reject) => {
      nodeRed.stdout!.on('data', chunk => {
        log += chunk;
        if (log.includes('Started flows')) resolve();
      });
      nodeRed.on('exit', code => reject(new Error(`Node-RED exited with ${code}: ${log}`)));
    });
  });

  after(async () => {
    if (nodeRed?.exitCode === null) {
      const exited = new Promise(resolve => nodeRed.once('exit', resolve));
      nodeRed.kill('SIGTERM');
      await exited;
    }
    fs.rmSync(userDir, { recursive: true, force: true });
  });

  it("delivers the verifier's events to m2m-webhook-in, signed with this Node-RED's own secret", async () => {
    const db = path.join(userDir, 'm2m-identity', 'verifier', 'verifier.db');
    const delivered = await until(
      () => {
        if (!fs.existsSync(db)) return [];
        const reader = openSqlite(db, { readonly: true });
        try {
          return reader
            .prepare(`SELECT o.webhook_type AS type, d.status, d.last_status AS http FROM deliveries d
              JOIN outbox o ON o.event_id = d.event_id ORDER BY d.id`)
            .all() as Array<{ type: string; status: string; http: number }>;
        } finally {
          reader.close();
        }
      },
      rows => rows.filter(row => row.status === 'delivered').length >= 2,
    );
    assert.deepEqual(
      delivered.slice(0, 2).map(row => [row.type, row.status, row.http]),
      [
        ['device.registered', 'delivered', 204],
        ['attestation.decided', 'delivered', 204],
      ],
    );
  });

  it('m2m-webhook-in checks the bytes as sent, ahead of the editor body parser', async () => {
    const secret = fs.readFileSync(path.join(userDir, 'm2m-identity', 'webhook.secret'), 'utf8').trim();
    // Spacing and key order a parser would not keep.
    const body =
      '{ "type": "device.revoked",  "data": {"status": "revoked", "deviceId": "press-9"}, "timestamp": "t" }';
    for (const [type, id] of [
      ['application/json', 'evt_json'],
      ['application/x-www-form-urlencoded', 'evt_form'],
    ]) {
      const answer = await fetch(`${url}/m2m-events`, {
        method: 'POST',
        headers: {
          'content-type': type,
          ...signedHeaders([secretKey(secret)!], id, Math.floor(Date.now() / 1000), body),
        },
        body,
      });
      assert.equal(answer.status, 204, `${type}: ${await answer.text()}`);
    }
    const tampered = await fetch(`${url}/m2m-events`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        ...signedHeaders([secretKey(secret)!], 'evt_x', Math.floor(Date.now() / 1000), body),
      },
      body: body.replace('press-9', 'press-1'),
    });
    assert.equal(tampered.status, 401);
    // The editor's own API still parses its JSON.
    assert.equal((await fetch(`${url}/flows`)).status, 200);
  });

  it('m2m-webhook-in keeps the bytes of a sender that writes its path with a slash or in capitals', async () => {
    const secret = fs.readFileSync(path.join(userDir, 'm2m-identity', 'webhook.secret'), 'utf8').trim();
    const body = '{"type": "device.revoked", "data": {"deviceId": "press-9"}, "timestamp": "t"}';
    for (const [target, id] of [
      ['/m2m-events/', 'evt_slash'],
      ['/M2M-Events', 'evt_case'],
    ]) {
      const answer = await fetch(`${url}${target}`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          ...signedHeaders([secretKey(secret)!], id, Math.floor(Date.now() / 1000), body),
        },
        body,
      });
      assert.equal(answer.status, 204, `${target}: ${await answer.text()}`);
    }
  });

  it("m2m-verifier answers malformed and oversized bodies with problem+json, not Node-RED's error page", async () => {
    const malformed = await fetch(`${url}/m2m/v1/challenges`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"deviceId": ',
    });
    assert.equal(malformed.status, 400);
    assert.match(malformed.headers.get('content-type') ?? '', /application\/problem\+json/);
    assert.equal((await malformed.json()).code, 'invalid_request');
    const huge = await fetch(`${url}/m2m/v1/challenges`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: `{"deviceId": "${'x'.repeat(6 * 1024 * 1024)}"}`,
    }).catch(err => err as Error);
    // Past the limit the verifier may close the connection before reading on (DESIGN.md §3).
    if (!(huge instanceof Error)) {
      assert.equal(huge.status, 413);
      assert.match(huge.headers.get('content-type') ?? '', /application\/problem\+json/);
      assert.doesNotMatch(await huge.text(), /node_modules|<html/i);
    }
  });
});
