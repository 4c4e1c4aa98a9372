/** Reading a request body in full, bounded in size and time, for the HTTP edges of this package. */
import type { IncomingMessage } from 'node:http';
import { M2MError } from './errors';

export interface BodyLimits {
  maxBytes: number;
  /** A sender that trickles its body (slow loris) is cut off after this; none by default. */
  timeoutMs?: number;
}

export function tooLarge(maxBytes: number): M2MError {
  return new M2MError('payload_too_large', `body over ${maxBytes} bytes`, 413);
}

/** The raw bytes of the body; rejects with 413 past `maxBytes`, 408 past `timeoutMs`. */
export function readRawBody(req: IncomingMessage, { maxBytes, timeoutMs }: BodyLimits): Promise<Buffer> {
  if (Number(req.headers['content-length']) > maxBytes) return Promise.reject(tooLarge(maxBytes));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const timer =
      timeoutMs === undefined
        ? undefined
        : setTimeout(
            () => stop(new M2MError('request_timeout', `body not received within ${timeoutMs} ms`, 408)),
            timeoutMs,
          );
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBytes) stop(tooLarge(maxBytes));
      else chunks.push(chunk);
    };
    function stop(err: M2MError) {
      clearTimeout(timer);
      req.off('data', onData);
      req.pause();
      reject(err);
    }
    req.on('data', onData);
    req.on('end', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks));
    });
    // A client that hangs up mid-body is the client's doing: a 400 nobody reads, not a server
    // error with a stack in the log.
    const closed = () => {
      clearTimeout(timer);
      reject(new M2MError('client_closed', 'the client closed the connection before its body ended', 400));
    };
    req.on('error', closed);
    req.on('close', () => {
      if (!req.complete) closed();
    });
  });
}
