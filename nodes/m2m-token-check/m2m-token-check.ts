/**
 * Checks messages stamped by m2m-reauth-timer on the receiving side (after mqtt in or http in):
 * the token against the verifier's keys, its expiry, issuer and audience, its revocation (from the
 * verifier's signed revocation list, polled, or by introspection with an admin key), and the
 * per-message proof against the token's key, with a replay cache kept in a file so a redeploy or
 * a restart forgets nothing. Output 1 valid, output 2 invalid with a reason, in arrival order.
 * The logic lives in lib/receiver; this file is wiring.
 */
import type { Node, NodeAPI, NodeDef, NodeMessage } from 'node-red';
import { M2MError } from '../../lib/errors';
import * as jose from 'jose';
import { InOrder } from '../../lib/in-order';
import { FileReplayCache } from '../../lib/receiver/replay-cache';
import { RevocationWatch } from '../../lib/revocation-watch';
import { type CheckResult, TokenChecker } from '../../lib/receiver/token-check';
import { requestPath } from '../../lib/url';
import type { IdentityApiNode } from '../shared/config-nodes';
import {
  errorCode,
  m2mOf,
  messageError,
  nodeStateFile,
  removeStateFiles,
  status,
  throttledStatus,
  tooDeep,
} from '../shared/node-kit';

interface TokenCheckDef extends NodeDef {
  api: string;
  audience: string;
  requireProof: boolean;
  /** How revocations reach this node: the verifier's list (default), introspection, or not at all. */
  revocations?: 'list' | 'introspect' | 'none';
  /** What a token gets while the revocation list cannot be fetched. */
  whenUnknown?: 'refuse' | 'accept';
  /** Before `revocations`: introspection when the identity API had an admin key. */
  introspect?: boolean;
  proofMaxAge: number | string;
}

type Headers = Record<string, unknown> | undefined;
type M2MMessage = NodeMessage & {
  m2m?: Record<string, unknown>;
  userProperties?: Headers;
  headers?: Headers;
  req?: { headers?: Headers; originalUrl?: string; url?: string };
};

/** A header or user property as one string (mqtt in gives arrays for repeated properties). */
function single(value: unknown): string | undefined {
  const first = Array.isArray(value) ? value[0] : value;
  return typeof first === 'string' ? first : undefined;
}

/** The first of the places a stamp can travel in: MQTT v5 user properties, the HTTP request, msg.headers. */
function stamped(msg: M2MMessage, name: string): string | undefined {
  for (const place of [msg.userProperties, msg.req?.headers, msg.headers]) {
    const value = single(place?.[name]);
    if (value !== undefined) return value;
  }
  return undefined;
}

export = (RED: NodeAPI) => {
  function TokenCheck(this: Node, config: TokenCheckDef) {
    RED.nodes.createNode(this, config);
    const api = RED.nodes.getNode(config.api) as IdentityApiNode | null;
    const t = (key: string, values?: Record<string, string | number>) => RED._(`m2m-token-check.${key}`, values);
    const replayFile = nodeStateFile(RED, this.id, 'token-check', '.replays.db');
    let checker: TokenChecker | undefined;
    let watch: RevocationWatch | undefined;
    let failure: unknown;
    const counts = { valid: 0, invalid: 0 };
    let lastReason = '';
    let revocationsCurrent = true;
    const showStatus = throttledStatus(this, () => {
      const text = t('status.counts', { valid: counts.valid, invalid: counts.invalid });
      if (!revocationsCurrent) return status.waiting(`${text} (${t('status.revocations-stale')})`);
      return (lastReason ? status.declined : status.working)(lastReason ? `${text} (${lastReason})` : text);
    });
    try {
      if (!api) throw new M2MError('no_api', 'no identity API configured', 400);
      const client = api.client();
      const maxAge = Number(config.proofMaxAge);
      const keys = jose.createRemoteJWKSet(client.jwksUrl, {
        cooldownDuration: 30_000,
        cacheMaxAge: 10 * 60_000,
        timeoutDuration: 5000,
      });
      const revocations = config.revocations ?? (config.introspect && api.credentials.apiKey ? 'introspect' : 'list');
      if (revocations === 'list')
        watch = new RevocationWatch({
          source: { fetch: etag => client.revocations(etag) },
          keys,
          issuer: client.audience,
          onUpdate: ({ current }) => {
            if (current === revocationsCurrent) return;
            revocationsCurrent = current;
            showStatus();
          },
        });
      checker = new TokenChecker({
        jwks: keys,
        issuer: client.audience,
        audience: config.audience?.trim() || client.audience,
        requireProof: config.requireProof !== false,
        proofMaxAgeSeconds: Number.isFinite(maxAge) && maxAge > 0 ? maxAge : 300,
        replayCache: new FileReplayCache(replayFile),
        ...(watch ? { revocations: watch, whenRevocationsUnknown: config.whenUnknown ?? 'refuse' } : {}),
        ...(revocations === 'introspect' && api.credentials.apiKey
          ? { introspect: (token: string) => client.introspect(token) }
          : {}),
      });
    } catch (err) {
      failure = err;
      watch?.stop();
      this.status(status.failed(t(errorCode(err) === 'wrong_provider' ? 'status.wrong-provider' : 'status.no-api')));
    }
    if (checker) this.status(status.idle(t('status.ready')));
    // Checks run concurrently (a new token waits for its key), results leave in arrival order.
    const results = new InOrder<CheckResult>();

    this.on('input', (msg: M2MMessage, send, done) => {
      if (!checker) {
        done(messageError(RED, 'm2m-token-check', msg, failure));
        return;
      }
      const deep = tooDeep(RED, 'm2m-token-check', msg);
      if (deep) {
        done(deep);
        return;
      }
      const authorization = stamped(msg, 'authorization');
      const token =
        authorization?.match(/^(?:Bearer|DPoP)\s+(\S+)$/i)?.[1] ??
        (typeof msg.m2m?.token === 'string' ? msg.m2m.token : undefined);
      const url = [msg.req?.originalUrl, msg.req?.url].find(value => typeof value === 'string');
      const target = msg.req ? requestPath(url) : typeof msg.topic === 'string' ? msg.topic : '';
      results.push(checker.check({ token, proof: stamped(msg, 'm2m-pop'), payload: msg.payload, target }), outcome => {
        if (!outcome.ok) {
          done(messageError(RED, 'm2m-token-check', msg, outcome.error));
          return;
        }
        const result = outcome.value;
        if (result.valid) {
          counts.valid++;
          msg.m2m = { ...m2mOf(msg), valid: true, deviceId: result.deviceId, claims: result.claims };
          send([msg, null]);
        } else {
          counts.invalid++;
          lastReason = result.reason;
          // What came with the message says nothing: only the token may name a device here.
          const { deviceId: _claimed, claims: _claimedClaims, ...rest } = m2mOf(msg);
          msg.m2m = {
            ...rest,
            valid: false,
            reason: result.reason,
            ...(result.deviceId ? { deviceId: result.deviceId } : {}),
          };
          send([null, msg]);
        }
        showStatus();
        done();
      });
    });

    this.on('close', (removed: boolean, done: () => void) => {
      watch?.stop();
      checker?.close();
      if (removed) removeStateFiles(replayFile);
      done();
    });
  }

  RED.nodes.registerType('m2m-token-check', TokenCheck);
};
