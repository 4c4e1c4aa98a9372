/**
 * The local services some suites talk to (PostgreSQL, an MQTT broker): the URL the environment
 * names, else the usual local one when something answers there. A suite that cannot run says why
 * (skipWith), and `npm test` lists every such reason above its closing line.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';

export interface Service {
  url?: string;
  /** Why suites needing it cannot run here, if they cannot. */
  skipReason?: string;
}

/** Whether a TCP connection to host:port succeeds within a second, asked synchronously (suites decide at load). */
function answers(host: string, port: number): boolean {
  const probe = `const s = require('net').connect(${port}, ${JSON.stringify(host)});
s.on('connect', () => process.exit(0)); s.on('error', () => process.exit(1)); setTimeout(() => process.exit(1), 1000);`;
  return spawnSync(process.execPath, ['-e', probe], { timeout: 3000 }).status === 0;
}

const found = new Map<string, Service>();

/** `env` set: that URL (`off`: skip); unset: `fallback` when something listens there. */
export function localService(env: string, fallback: string, what: string): Service {
  let service = found.get(env);
  if (!service) {
    const given = process.env[env];
    if (given === 'off') service = { skipReason: `${what}: ${env}=off` };
    else if (given) service = { url: given };
    else {
      const { hostname, port } = new URL(fallback);
      service = answers(hostname, Number(port))
        ? { url: fallback }
        : { skipReason: `${what}: nothing answers at ${hostname}:${port} (start it, or set ${env})` };
    }
    found.set(env, service);
  }
  return service;
}

export const POSTGRES_SERVICE = () => localService('M2M_PG_URL', 'postgres://127.0.0.1:5432/test', 'PostgreSQL suites');
export const MQTT_SERVICE = () => localService('M2M_MQTT_URL', 'mqtt://127.0.0.1:1883', 'MQTT suites');

/** Skips the current suite or test saying why, and records the reason for `npm test`'s summary. */
export function skipWith(context: Mocha.Context, reason: string): never {
  console.log(`      (skipped: ${reason})`);
  if (process.env.M2M_TEST_SKIPS) fs.appendFileSync(process.env.M2M_TEST_SKIPS, `${reason}\n`);
  return context.skip();
}
