/**
 * Keeps a copy of the verifier's revocation list (lib/revocations) current, for a receiver (so a
 * revocation reaches every token check within seconds without an admin key in the receiving
 * flow) and for a gateway (so it stops stamping when revoked and asks again at once when
 * reinstated): polled with its ETag (the verifier mostly answers 304) and checked against the
 * verifier's JWKS. When the list cannot be fetched for `maxStaleMs`, it says it does not know,
 * and the caller decides (refuse, by default).
 */
import * as jose from 'jose';
import { REVOCATIONS_TYP, type RevocationEntries, deviceHash, revocationListSchema, revokedBy } from './revocations';

export interface RevocationSource {
  /** The list as a JWS with its ETag, or `unchanged` for the ETag given. */
  fetch(etag?: string): Promise<{ jws: string; etag: string } | 'unchanged'>;
}

export interface RevocationWatchOptions {
  source: RevocationSource;
  /** The verifier's token keys (the list is signed with them) and its issuer URL. */
  keys: jose.JWTVerifyGetKey;
  issuer: string;
  pollMs?: number;
  /** A list older than this is not trusted to be complete. */
  maxStaleMs?: number;
  now?: () => number;
  /** Each fetch's outcome, for a status. */
  onUpdate?: (state: { current: boolean; error?: unknown }) => void;
  /** The list's content changed. */
  onChange?: () => void;
}

export const DEFAULT_REVOCATION_POLL_MS = 2000;
export const DEFAULT_REVOCATION_MAX_STALE_MS = 60_000;

export class RevocationWatch {
  private entries: RevocationEntries = {};
  private etag?: string;
  private fetchedAt = Number.NEGATIVE_INFINITY;
  private timer?: NodeJS.Timeout;
  private stopped = false;
  private readonly now: () => number;
  /** Settles after the first fetch, whatever its outcome: the first messages wait for it. */
  readonly ready: Promise<void>;

  constructor(private readonly options: RevocationWatchOptions) {
    this.now = options.now ?? Date.now;
    this.ready = this.poll();
  }

  /** Whether a token of `deviceId` from `generation` is revoked; undefined while the list is stale. */
  isRevoked(deviceId: string, generation: number): boolean | undefined {
    if (this.now() - this.fetchedAt > (this.options.maxStaleMs ?? DEFAULT_REVOCATION_MAX_STALE_MS)) return undefined;
    return revokedBy(this.entries, deviceId, generation);
  }

  /** What the list says of a device: its generation and whether it is revoked now; undefined when it was never revoked. */
  standing(deviceId: string): { generation: number; revoked: boolean } | undefined {
    const entry = this.entries[deviceHash(deviceId)];
    return entry && { generation: entry[0], revoked: entry[1] === 1 };
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /** Fetches now (and then every `pollMs`). */
  private async poll(): Promise<void> {
    try {
      const answer = await this.options.source.fetch(this.etag);
      if (answer !== 'unchanged') {
        const { payload } = await jose.compactVerify(answer.jws, this.options.keys as jose.CompactVerifyGetKey, {
          algorithms: ['EdDSA'],
        });
        const header = jose.decodeProtectedHeader(answer.jws);
        if (header.typ !== REVOCATIONS_TYP) throw new Error(`the revocation list has typ ${String(header.typ)}`);
        const list = revocationListSchema.parse(JSON.parse(new TextDecoder().decode(payload)), 'revocation list');
        if (list.iss !== this.options.issuer) throw new Error(`the revocation list is from ${list.iss}`);
        this.entries = list.devices as RevocationEntries;
        this.etag = answer.etag || undefined;
      }
      this.fetchedAt = this.now();
      this.options.onUpdate?.({ current: true });
      if (answer !== 'unchanged') this.options.onChange?.();
    } catch (error) {
      this.options.onUpdate?.({ current: false, error });
    }
    if (this.stopped) return;
    this.timer = setTimeout(() => this.poll(), this.options.pollMs ?? DEFAULT_REVOCATION_POLL_MS);
    this.timer.unref();
  }
}
