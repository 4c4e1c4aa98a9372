/** A verifier on a random loopback port with a temp SQLite file and a controllable clock. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { SqliteStore, startVerifierServer, type RunningVerifier, type ServerOptions } from '../../lib/verifier';

export const ADMIN_KEY = 'admin-key-for-tests';
export const ENROLLMENT_TOKEN = 'enrollment-token-for-tests';

export interface Harness extends RunningVerifier {
  clock: { now: number };
  dir: string;
  post(
    pathname: string,
    body: unknown,
    headers?: Record<string, string>,
  ): Promise<{ status: number; type: string; body: any }>;
  get(pathname: string, headers?: Record<string, string>): Promise<{ status: number; type: string; body: any }>;
  stop(): Promise<void>;
}

/** `dir` reuses a database from an earlier harness (closed with `close()`, which keeps it). */
export async function startHarness(
  options: Partial<ServerOptions> = {},
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-verifier-')),
): Promise<Harness> {
  const clock = { now: Date.now() };
  const running = await startVerifierServer({
    port: 0,
    store: new SqliteStore(path.join(dir, 'verifier.db')),
    adminKey: ADMIN_KEY,
    enrollmentToken: ENROLLMENT_TOKEN,
    now: () => clock.now,
    ...options,
  });
  const request = async (method: string, pathname: string, body?: unknown, headers: Record<string, string> = {}) => {
    const response = await fetch(running.url + pathname, {
      method,
      headers: { 'content-type': 'application/json', ...headers },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await response.text();
    return {
      status: response.status,
      type: response.headers.get('content-type') ?? '',
      body: text ? JSON.parse(text) : undefined,
    };
  };
  return {
    ...running,
    clock,
    dir,
    post: (pathname, body, headers) => request('POST', pathname, body, headers),
    get: (pathname, headers) => request('GET', pathname, undefined, headers),
    async stop() {
      await running.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

export const enrol = { authorization: `Bearer ${ENROLLMENT_TOKEN}` };
export const admin = { 'x-api-key': ADMIN_KEY };
