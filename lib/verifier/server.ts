/** The verifier on its own node:http server: what `m2m-verifier` on the command line runs. */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { M2MError } from '../errors';
import { createRequestListener } from './http';
import { SqliteStore } from './store/sqlite';
import type { VerifierStore } from './store/types';
import { Verifier, type VerifierOptions } from './verifier';

/** `sqlite:PATH` (or a bare path) opens the embedded store; PostgreSQL comes with its own store. */
export function openStore(spec: string): VerifierStore {
  if (/^postgres(ql)?:\/\//.test(spec)) {
    throw new M2MError('store_unsupported', 'the PostgreSQL store is not available in this version; use sqlite:PATH', 400);
  }
  return new SqliteStore(spec.replace(/^sqlite:/, ''));
}

export interface ServerOptions extends Omit<VerifierOptions, 'publicUrl' | 'store'> {
  host?: string;
  port?: number;
  store: VerifierStore;
  /** Defaults to the `listening on` URL. */
  publicUrl?: string;
  onError?: (err: unknown) => void;
}

export interface RunningVerifier {
  url: string;
  verifier: Verifier;
  close(): Promise<void>;
}

export async function startVerifierServer(options: ServerOptions): Promise<RunningVerifier> {
  const { host = '127.0.0.1', port = 8787 } = options;
  const server = http.createServer();
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  const url = `http://${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}`;
  let verifier: Verifier;
  try {
    verifier = await Verifier.create({ ...options, publicUrl: options.publicUrl ?? url });
  } catch (err) {
    server.close();
    throw err;
  }
  server.on('request', createRequestListener(verifier, { onError: options.onError }));
  return {
    url,
    verifier,
    async close() {
      await new Promise<void>(resolve => {
        server.close(() => resolve());
        server.closeIdleConnections();
        // Give requests in flight a moment, then drop keep-alive clients that hold on.
        setTimeout(() => server.closeAllConnections(), 2000).unref();
      });
      await verifier.close();
    },
  };
}
