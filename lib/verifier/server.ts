/** The verifier on its own node:http server: what `m2m-verifier` on the command line runs. */
import * as http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { M2MError } from '../errors';
import { createRequestListener, problem } from './http';
import type { VerifierStore } from './store/types';
import { Verifier, type VerifierOptions } from './verifier';

/**
 * What one client can hold of the server. Without a cap, a thousand idle sockets exhaust the
 * process's file descriptors and lock every other client out; without timeouts they stay.
 */
export interface ConnectionLimits {
  maxConnections: number;
  maxConnectionsPerAddress: number;
  /** A socket that sends nothing (no request, no keep-alive traffic) is closed after this. */
  idleTimeoutMs: number;
  headersTimeoutMs: number;
  requestTimeoutMs: number;
  keepAliveTimeoutMs: number;
}

export const DEFAULT_CONNECTION_LIMITS: ConnectionLimits = {
  maxConnections: 800,
  maxConnectionsPerAddress: 256,
  idleTimeoutMs: 30_000,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  keepAliveTimeoutMs: 5_000,
};

export interface ServerOptions extends Omit<VerifierOptions, 'publicUrl' | 'store'> {
  host?: string;
  port?: number;
  store: VerifierStore;
  /** Defaults to the `listening on` URL. */
  publicUrl?: string;
  connections?: Partial<ConnectionLimits>;
  onError?: (err: unknown) => void;
  /** Reverse proxies whose X-Forwarded-For gives the client's address (see ListenerOptions). */
  trustedProxies?: readonly string[];
}

export interface RunningVerifier {
  url: string;
  verifier: Verifier;
  close(): Promise<void>;
}

/** A socket whose answer cannot be flushed (the client reads nothing) is destroyed after this. */
const FLUSH_GRACE_MS = 1000;

/**
 * Writes a last answer and closes the socket whatever the client does next. `end()` alone only
 * half-closes (the HTTP server allows half-open sockets), and a client that keeps trickling
 * bytes would hold the slot for as long as it likes.
 */
export function answerAndClose(socket: Duplex, text: string): void {
  const timer = setTimeout(() => socket.destroy(), FLUSH_GRACE_MS);
  timer.unref();
  socket.end(text, () => {
    clearTimeout(timer);
    socket.destroy();
  });
}

/** Node's parser errors (bad request line, oversized headers, timeouts) answered as problem+json. */
function answerClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
  if (!socket.writable || err.code === 'ECONNRESET') {
    socket.destroy();
    return;
  }
  const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
  const code = status === 431 ? 'headers_too_large' : status === 408 ? 'request_timeout' : 'bad_request';
  const body = JSON.stringify(
    problem(new M2MError(code, status === 400 ? 'malformed HTTP request' : code.replace(/_/g, ' '), status)).body,
  );
  answerAndClose(
    socket,
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\ncontent-type: application/problem+json; charset=utf-8\r\n` +
      `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
}

/**
 * Caps connections in all and per client address; the excess is closed at once. Counted here
 * rather than with `server.maxConnections`: under node:cluster a worker that refuses a connection
 * hands it back to the primary, which offers it to the next worker, and so on without end.
 */
function capConnections(server: http.Server, limits: ConnectionLimits): void {
  const perAddress = new Map<string, number>();
  let open = 0;
  server.on('connection', (socket: Socket) => {
    const address = socket.remoteAddress ?? '';
    const count = (perAddress.get(address) ?? 0) + 1;
    if (open >= limits.maxConnections || count > limits.maxConnectionsPerAddress) {
      socket.destroy();
      return;
    }
    open++;
    perAddress.set(address, count);
    socket.once('close', () => {
      open--;
      const left = (perAddress.get(address) ?? 1) - 1;
      if (left > 0) perAddress.set(address, left);
      else perAddress.delete(address);
    });
  });
}

export async function startVerifierServer(options: ServerOptions): Promise<RunningVerifier> {
  const { host = '127.0.0.1', port = 8787 } = options;
  const limits = { ...DEFAULT_CONNECTION_LIMITS, ...options.connections };
  const server = http.createServer({
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    // How often the two timeouts above are enforced (Node's default, 30 s, would let them slip).
    connectionsCheckingInterval: Math.min(1000, limits.headersTimeoutMs),
    // Node's own answer to a missing Host is a bare 400; the listener answers with problem+json.
    requireHostHeader: false,
  });
  server.setTimeout(limits.idleTimeoutMs);
  server.on('clientError', answerClientError);
  capConnections(server, limits);
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
  server.on(
    'request',
    createRequestListener(verifier, { onError: options.onError, trustedProxies: options.trustedProxies }),
  );
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
