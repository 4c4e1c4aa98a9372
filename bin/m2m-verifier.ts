#!/usr/bin/env node
/**
 * The standalone verifier: identity API v1 on its own HTTP server.
 *   m2m-verifier [--host 127.0.0.1] [--port 8787] [--store sqlite:PATH|postgres://…] [--workers N] …
 * Secrets come from the environment, never from arguments (which `ps` shows to everyone).
 * With several workers this process is the primary: it checks the configuration, migrates the
 * store once, generates missing secrets, and forks the workers, which run the same file.
 */
import cluster from 'node:cluster';
import * as crypto from 'node:crypto';
import * as net from 'node:net';
import * as os from 'node:os';
import { parseArgs } from 'node:util';
import { M2MError } from '../lib/errors';
import * as s from '../lib/schema';
import { parseJson } from '../lib/schema';
import type { MosquittoOptions } from '../lib/brokers/mosquitto';
import type { CertificateOptions } from '../lib/verifier/certificates';
import { openStore, startVerifierServer, workflowSchema } from '../lib/verifier';
import { DEFAULT_CONNECTION_LIMITS } from '../lib/verifier/server';
import { metricsOfAllWorkers, rateLimitsOfPrimary, runPrimary, serveAsWorker } from '../lib/verifier/cluster';
import type { MetricsSnapshot } from '../lib/verifier/metrics';
import { limitsSchema } from '../lib/verifier/schemas';
import { DEFAULT_LIMITS, weakSecret } from '../lib/verifier/verifier';
import { describeStore } from '../lib/verifier/store/open';
import { type SubscriberConfig, parseSubscribers, toSubscriber } from '../lib/verifier/subscribers';
import { generateSecret } from '../lib/webhooks/standard';

const USAGE = `Usage: m2m-verifier [options]

  --host HOST          address to listen on (default 127.0.0.1)
  --port PORT          port (default 8787; 0 picks a free one)
  --store SPEC         sqlite:PATH (default sqlite:./m2m-verifier.db), or postgres://user@host/db
                       to share one database among verifiers on many machines (also M2M_STORE,
                       which keeps a password out of ps); see docs/deploy.md
  --workers N          processes serving the port (default: one per core; 1 for sqlite::memory:)
  --key-rotation DURATION
                       how often a new token-signing key takes over, e.g. 30d, 12h (default 30d,
                       at least 1h)
  --token-alg ALG      what tokens are signed with: EdDSA (default) or ES256, for brokers and
                       stacks that know no EdDSA (EMQX, many OPC UA stacks); a change rotates
                       to a key of the new algorithm, published an hour ahead
  --certificates       issue short-lived client certificates (MQTT over TLS) with approvals that
                       carry a certificate request; the CA is made on first start and kept in
                       the store, or read from --ca-key FILE and --ca-cert FILE (PEM)
  --certificate-lifetime DURATION
                       how long they live (default twice the token lifetime, at most 24h)
  --public-url URL     the URL devices reach /v1 under: the attestation audience and token
                       issuer (default the listening URL; also M2M_PUBLIC_URL)
  --manual-approval    new devices wait in "pending" until an admin approves them
  --workflow JSON      the fleet's workflow, e.g. '[{"step":"signature"},{"step":"fingerprint","minMatch":0.75}]'
                       (default: signature, fingerprint 0.75, tinyml 0.6 / review 0.8)
  --limits JSON        rate limits of the calls anyone may make, each {"burst": N, "perSecond": N}:
                       challengesPerDevice (default 10, 1/s), challengesPerAddress (200, 100/s:
                       raise it behind a reverse proxy or NAT, where every gateway has one address),
                       badSignaturesRecordedPerDevice (5, 0.1/s), credentialFailuresPerAddress
                       (10, 0.2/s: wrong admin keys and enrollment tokens, then 429)
  --max-connections N  open connections at most, all workers together (default 800; each of
                       N workers holds N-th of it; keep it under the file limit, ulimit -n)
  --max-connections-per-address N
                       open connections from one client address at most, all workers
                       together (default 256; each worker holds its share)
  --trust-proxy ADDRESSES
                       reverse proxies (IP addresses, comma-separated) whose X-Forwarded-For
                       names the client, so rate limits count clients, not the proxy
  --new-webhook-secret print a new whsec_ webhook secret and exit
  -h, --help           this text

Environment: M2M_ADMIN_KEY, M2M_ENROLLMENT_TOKEN (at least 16 characters; random ones are
generated and printed to stderr when unset), M2M_PUBLIC_URL, M2M_STORE.
Operations: GET /healthz (alive), /readyz (store reachable and migrated), /metrics (Prometheus
text; the admin key as x-api-key or a bearer token).
Webhooks (every registration, decision and revocation, signed per Standard Webhooks):
  M2M_WEBHOOK_URL + M2M_WEBHOOK_SECRET   one subscriber
  M2M_WEBHOOKS='[{"url":"https://...","secret":"whsec_..."}, ...]'   several
A secret may hold several space-separated whsec_ secrets while receivers rotate.
Mosquitto kept in step with the registry through its dynamic-security plugin (docs/brokers.md):
  M2M_MOSQUITTO='{"url":"mqtt://127.0.0.1:1883","username":"admin","password":"...",
                  "topics":"plant/{deviceId}/#","crlFile":"...","pidFile":"..."}'`;

function fail(message: string): never {
  process.stderr.write(`m2m-verifier: ${message}\n`);
  process.exit(2);
}

/** What `attempt` returns, or an exit with `message(error)`. */
function orFail<T>(attempt: () => T, message: (err: Error) => string): T {
  try {
    return attempt();
  } catch (err) {
    return fail(message(err as Error));
  }
}

/** Subscribers from the environment, checked here so a bad secret stops the start with its reason. */
function webhookSubscribers(): SubscriberConfig[] {
  const { M2M_WEBHOOK_URL: url, M2M_WEBHOOK_SECRET: secret, M2M_WEBHOOKS: list } = process.env;
  if (url && !secret)
    throw new Error('M2M_WEBHOOK_URL needs M2M_WEBHOOK_SECRET (m2m-verifier --new-webhook-secret makes one)');
  const subscribers = [...(url ? [{ url, secret: secret ?? '' }] : []), ...(list ? parseSubscribers(list) : [])];
  for (const subscriber of subscribers) toSubscriber(subscriber);
  return subscribers;
}

const mosquittoSchema = s.object({
  url: s.string({ pattern: /^mqtts?:\/\/[^\s@]+$/, format: 'mqtt:// or mqtts:// URL without credentials' }),
  username: s.string({ maxLength: 256 }),
  password: s.string({ maxLength: 1024 }),
  topics: s.optional(s.string({ maxLength: 512 })),
  ca: s.optional(s.string({ maxLength: 64 * 1024 })),
  crlFile: s.optional(s.string({ maxLength: 4096 })),
  pidFile: s.optional(s.string({ maxLength: 4096 })),
});

/** M2M_MOSQUITTO: one broker as a JSON object, or several as an array. */
function mosquittoBrokers(): MosquittoOptions[] {
  const text = process.env.M2M_MOSQUITTO;
  if (!text) return [];
  const value = parseJson(text, 'M2M_MOSQUITTO');
  return (Array.isArray(value) ? value : [value]).map((broker, i) =>
    mosquittoSchema.parse(broker, `M2M_MOSQUITTO[${i}]`),
  );
}

async function main(): Promise<void> {
  const { values } = orFail(
    () =>
      parseArgs({
        options: {
          host: { type: 'string', default: '127.0.0.1' },
          port: { type: 'string', default: '8787' },
          store: { type: 'string', default: process.env.M2M_STORE || 'sqlite:./m2m-verifier.db' },
          workers: { type: 'string' },
          'key-rotation': { type: 'string', default: '30d' },
          'token-alg': { type: 'string', default: 'EdDSA' },
          'public-url': { type: 'string' },
          certificates: { type: 'boolean', default: false },
          'certificate-lifetime': { type: 'string' },
          'ca-key': { type: 'string' },
          'ca-cert': { type: 'string' },
          'manual-approval': { type: 'boolean', default: false },
          workflow: { type: 'string' },
          limits: { type: 'string' },
          'max-connections': { type: 'string' },
          'max-connections-per-address': { type: 'string' },
          'trust-proxy': { type: 'string' },
          'new-webhook-secret': { type: 'boolean', default: false },
          help: { type: 'boolean', short: 'h', default: false },
        },
      }),
    err => `${err.message}\n\n${USAGE}`,
  );
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  if (values['new-webhook-secret']) {
    process.stdout.write(`${generateSecret()}\n`);
    return;
  }
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`--port must be 0-65535, got ${values.port}`);

  const count = (flag: 'max-connections' | 'max-connections-per-address') => {
    const value = values[flag];
    if (value === undefined) return undefined;
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1) fail(`--${flag} must be a whole number of at least 1, got ${value}`);
    return n;
  };
  const connections = {
    maxConnections: count('max-connections'),
    maxConnectionsPerAddress: count('max-connections-per-address'),
  };

  const trustedProxies = (values['trust-proxy'] ?? '')
    .split(',')
    .map(address => address.trim())
    .filter(Boolean);
  for (const address of trustedProxies)
    if (!net.isIP(address)) fail(`--trust-proxy takes IP addresses separated by commas, got ${address}`);

  const workflow = orFail(
    () =>
      values.workflow === undefined
        ? undefined
        : workflowSchema.parse(parseJson(values.workflow, '--workflow'), 'workflow'),
    err => `--workflow: ${err.message}`,
  );

  const limits = orFail(
    () =>
      values.limits === undefined ? undefined : limitsSchema.parse(parseJson(values.limits, '--limits'), 'limits'),
    err => `--limits: ${err.message}`,
  );

  const tokenAlg = values['token-alg'];
  if (tokenAlg !== 'EdDSA' && tokenAlg !== 'ES256') fail(`--token-alg must be EdDSA or ES256, got ${tokenAlg}`);
  const rotationMs = parseDuration(values['key-rotation']);
  if (!rotationMs) fail(`--key-rotation must be a duration such as 30d, 12h or 90m, got ${values['key-rotation']}`);
  // Each key is published ahead and kept until its last token expires: rotating faster than that
  // piles keys up in every relying party's cache without making any token safer.
  if (rotationMs < MIN_KEY_ROTATION_MS) fail(`--key-rotation must be at least 1h, got ${values['key-rotation']}`);

  const inMemory = /^(sqlite:)?:memory:$/.test(values.store);
  let workers = inMemory ? 1 : os.availableParallelism();
  if (values.workers !== undefined) {
    workers = Number(values.workers);
    if (!Number.isInteger(workers) || workers < 1 || workers > 256)
      fail(`--workers must be a whole number from 1 to 256, got ${values.workers}`);
    if (inMemory && workers > 1) fail('--workers must be 1 with sqlite::memory: (each process would have its own)');
  }

  // A worker inherits the primary's secrets, so generating them happens once, in the primary.
  const generated = (name: string) => {
    const value = crypto.randomBytes(24).toString('base64url');
    process.stderr.write(`m2m-verifier: ${name} not set; generated one for this run: ${value}\n`);
    return value;
  };
  const adminKey = process.env.M2M_ADMIN_KEY || generated('M2M_ADMIN_KEY');
  const enrollmentToken = process.env.M2M_ENROLLMENT_TOKEN || generated('M2M_ENROLLMENT_TOKEN');
  const weak = weakSecret('M2M_ADMIN_KEY', adminKey) ?? weakSecret('M2M_ENROLLMENT_TOKEN', enrollmentToken);
  if (weak) fail(weak.message);

  const subscribers = orFail(webhookSubscribers, err => err.message);
  const mosquitto = orFail(mosquittoBrokers, err => err.message);

  let certificates: CertificateOptions | undefined;
  if (values.certificates || values['ca-key'] || values['ca-cert'] || values['certificate-lifetime']) {
    if (!values['ca-key'] !== !values['ca-cert']) fail('--ca-key and --ca-cert go together');
    const lifetime = values['certificate-lifetime'];
    const lifetimeMs = lifetime === undefined ? undefined : parseDuration(lifetime);
    if (lifetime !== undefined && !lifetimeMs)
      fail(`--certificate-lifetime must be a duration such as 30m or 2h, got ${lifetime}`);
    certificates = {
      ...(lifetimeMs ? { lifetimeSeconds: Math.round(lifetimeMs / 1000) } : {}),
      ...(values['ca-key']
        ? { authority: { kind: 'files', keyFile: values['ca-key'], certificateFile: values['ca-cert']! } }
        : {}),
    };
  }

  const open = () =>
    openStore(values.store).catch(err =>
      fail(err instanceof M2MError ? err.message : `cannot open store ${describeStore(values.store)}: ${err.message}`),
    );

  if (workers > 1 && cluster.isPrimary) {
    // Migrate (and find a bad store) here, once, before any worker starts.
    await (await open()).close();
    const primary = await runPrimary({
      workers,
      limits: { ...DEFAULT_LIMITS, ...limits },
      env: { M2M_ADMIN_KEY: adminKey, M2M_ENROLLMENT_TOKEN: enrollmentToken },
      log: message => process.stderr.write(`m2m-verifier: ${message}\n`),
    }).catch(err => fail(`cannot start: ${(err as Error).message}`));
    process.stderr.write(`m2m-verifier: ${workers} workers\n`);
    process.stdout.write(`listening on ${primary.url}\n`);
    stopOnSignal(() => primary.stop());
    return;
  }

  let own: (() => MetricsSnapshot) | undefined;
  const store = await open();
  const running = await startVerifierServer({
    host: values.host,
    port,
    store,
    publicUrl: values['public-url'] ?? process.env.M2M_PUBLIC_URL,
    adminKey,
    enrollmentToken,
    manualApproval: values['manual-approval'],
    workflow,
    limits,
    webhooks: {
      subscribers,
      onError: err => process.stderr.write(`m2m-verifier: webhook delivery: ${(err as Error).message}\n`),
    },
    certificates,
    mosquitto,
    // The caps are the machine's: each of N workers holds an equal share of them.
    connections: {
      maxConnections: workerShare(connections.maxConnections ?? DEFAULT_CONNECTION_LIMITS.maxConnections, workers),
      maxConnectionsPerAddress: workerShare(
        connections.maxConnectionsPerAddress ?? DEFAULT_CONNECTION_LIMITS.maxConnectionsPerAddress,
        workers,
      ),
    },
    trustedProxies,
    keyRotation: { periodMs: rotationMs, alg: tokenAlg },
    metricsOfAllProcesses: cluster.isWorker
      ? metricsOfAllWorkers(() => own?.() ?? { counters: {}, histograms: {} })
      : undefined,
    sharedRateLimits: cluster.isWorker ? rateLimitsOfPrimary() : undefined,
    onError: err => process.stderr.write(`m2m-verifier: internal error: ${(err as Error).stack ?? err}\n`),
    onStoreAvailability: (available, err) =>
      process.stderr.write(
        available
          ? 'm2m-verifier: the store answers again\n'
          : `m2m-verifier: the store is unavailable (${storeFailure(err)}); answering 503 until it is back\n`,
      ),
  }).catch(err => fail(`cannot start: ${(err as Error).message}`));
  own = () => running.verifier.metricsSnapshot();
  const stop = stopOnSignal(() => running.close());
  if (cluster.isWorker) serveAsWorker(running.url, stop);
  else process.stdout.write(`listening on ${running.url}\n`);
}

/** Stops once on SIGTERM or SIGINT (and on the returned function), exiting 0 when all is closed. */
function stopOnSignal(close: () => Promise<void>): () => void {
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  return stop;
}

/** One line on why the store failed: the driver's message, or that of the error behind ours. */
function storeFailure(err: unknown): string {
  const cause = (err as { cause?: unknown })?.cause ?? err;
  return String((cause as Error)?.message ?? cause).split('\n')[0];
}

const MIN_KEY_ROTATION_MS = 3_600_000;

/** One worker's part of a cap on the whole machine: never more than the cap in all. */
function workerShare(cap: number, workers: number): number {
  return Math.max(1, Math.floor(cap / workers));
}

/** `30d`, `12h`, `90m`, `45s` in milliseconds; undefined for anything else. */
function parseDuration(text: string): number | undefined {
  const match = /^(\d+)(s|m|h|d)$/.exec(text.trim());
  if (!match || Number(match[1]) === 0) return undefined;
  return Number(match[1]) * { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[match[2] as 's' | 'm' | 'h' | 'd'];
}

main().catch(err => fail((err as Error).message));
