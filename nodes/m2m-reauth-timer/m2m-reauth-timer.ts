/**
 * Keeps a valid token for the device and stamps passing messages with it, and with a per-message
 * proof of possession signed by the device key: `msg.m2m.token`, `msg.headers` (for http
 * request) and MQTT v5 `msg.userProperties` (for mqtt out). Re-attests on schedule and on
 * triggers (lib/edge/reauth); holds or rejects messages while it has no token; never drops one.
 * The logic lives in lib/edge; this file is configuration and wiring.
 */
import * as fs from 'node:fs';
import * as jose from 'jose';
import type { Node, NodeAPI, NodeDef, NodeMessage } from 'node-red';
import { ApiError } from '../../lib/edge/api-client';
import { attestDevice, evidenceFrom } from '../../lib/edge/attestation';
import {
  CertificateFile,
  type PendingRequest,
  type TlsIdentity,
  issuedIdentity,
  newCertificateRequest,
} from '../../lib/edge/client-certificate';
import { MessageQueue } from '../../lib/edge/message-queue';
import { networkSignature } from '../../lib/edge/network';
import { type CurrentToken, DEFAULT_REAUTH, type KeeperEvent, TokenKeeper, type Trigger } from '../../lib/edge/reauth';
import { M2MError } from '../../lib/errors';
import { createProof } from '../../lib/proof';
import { RevocationWatch } from '../../lib/revocation-watch';
import type { TinymlEvidence } from '../../lib/verifier/workflow';
import type { DeviceNode } from '../shared/config-nodes';
import { installClientCertificate, tlsNodeProblem } from '../shared/mqtt-tls';
import {
  disable,
  m2mOf,
  messageError,
  nodeError,
  nodeStateFile,
  providerProblem,
  removeStateFiles,
  status,
  tooDeep,
} from '../shared/node-kit';

interface ReauthDef extends NodeDef {
  device: string;
  fraction: number | string;
  floor: number | string;
  riskScore: number | string;
  networkPoll: number | string;
  offline: 'hold' | 'reject';
  maxMessages: number | string;
  maxBytes: number | string;
  proofs: boolean;
  stampHeaders: boolean;
  stampUserProperties: boolean;
  /** Ask for a short-lived client certificate with each attestation, for MQTT over TLS. */
  certificate?: boolean;
  /** The tls-config node the mqtt-broker uses: it gets the certificate and its key. */
  tls?: string;
}

type M2MMessage = NodeMessage & {
  m2m?: Record<string, unknown> & { reauth?: unknown; tinyml?: unknown };
  statusCode?: number;
  url?: string;
  headers?: Record<string, unknown>;
  userProperties?: Record<string, unknown>;
};

function number(value: number | string, fallback: number, { min = 0, max = Infinity } = {}): number {
  const n = Number(value);
  return value !== '' && Number.isFinite(n) && n >= min && n <= max ? n : fallback;
}

/** Evidence from a low behaviour score is only worth sending while it is fresh. */
const EVIDENCE_TTL_MS = 5 * 60_000;
/** Decline reasons of an attestation signed by another key than the registered one. */
const KEY_MISMATCH = new Set(['bad_signature', 'wrong_alg']);
/** How often a gateway looks at the verifier's revocation list for its own device. */
const REVOCATION_POLL_MS = 10_000;

/** RFC 7638 thumbprints of the keys seen, computed once per key. */
const thumbprints = new WeakMap<object, string>();
function thumbprintOf(key: { publicKey: { thumbprint(): string } }): string {
  let thumbprint = thumbprints.get(key);
  if (!thumbprint) {
    thumbprint = key.publicKey.thumbprint();
    thumbprints.set(key, thumbprint);
  }
  return thumbprint;
}

export = (RED: NodeAPI) => {
  function ReauthTimer(this: Node, config: ReauthDef) {
    RED.nodes.createNode(this, config);
    const device = RED.nodes.getNode(config.device) as DeviceNode | null;
    const t = (key: string, values?: Record<string, string | number>) => RED._(`m2m-reauth-timer.${key}`, values);
    if (!device) {
      const noDevice = new M2MError('no_device', 'no m2m-device configured', 400);
      disable(this, RED, 'm2m-reauth-timer', t('status.no-device'), noDevice);
      return;
    }
    const problem = providerProblem(device.api, 'm2m');
    if (problem?.code === 'wrong_provider') {
      disable(this, RED, 'm2m-reauth-timer', t('status.wrong-provider'), problem);
      return;
    }
    const tlsProblem = config.certificate ? tlsNodeProblem(RED, config.tls) : undefined;
    if (tlsProblem) {
      disable(this, RED, 'm2m-reauth-timer', t('status.no-tls'), tlsProblem);
      return;
    }
    const riskScore = number(config.riskScore, 0.6, { max: 1 });
    const hold = config.offline !== 'reject';
    const tokenFile = nodeStateFile(RED, this.id, 'reauth', '.token.json');
    const queueFile = nodeStateFile(RED, this.id, 'reauth', '.queue.jsonl');
    const queue = new MessageQueue<M2MMessage>(queueFile, {
      maxMessages: number(config.maxMessages, 1000, { min: 1 }),
      maxBytes: number(config.maxBytes, 1_048_576, { min: 1024 }),
    });
    let evidence: { value: TinymlEvidence; at: number } | undefined;
    let lastEvent: KeeperEvent | undefined;
    let rejected = 0;

    const savedToken = (): CurrentToken | undefined => {
      try {
        return JSON.parse(fs.readFileSync(tokenFile, 'utf8')) as CurrentToken;
      } catch {
        return undefined;
      }
    };
    const certificateFile = nodeStateFile(RED, this.id, 'reauth', '.tls.json');
    const certificates = config.certificate ? new CertificateFile(certificateFile) : undefined;
    /**
     * With a client certificate: stamped messages wait while the MQTT brokers have no valid
     * certificate, or reconnect with a new one (mqtt out drops what arrives while disconnected).
     */
    let certificateWait = !!certificates;
    let certificateError: M2MError | undefined;
    /** Installations run one after another; messages wait until the last one is done. */
    let installing = Promise.resolve();
    let installsPending = 0;
    const installCertificate = (tls: TlsIdentity): void => {
      certificateWait = true;
      installsPending++;
      installing = installing
        .then(() => installClientCertificate(RED, config.tls!, tls))
        .then(
          () => {
            certificateError = undefined;
          },
          err => {
            certificateError = err instanceof M2MError ? err : new M2MError('tls_install', (err as Error).message, 500);
            this.error(nodeError(RED, 'm2m-reauth-timer', certificateError));
          },
        )
        .then(() => {
          // A failed installation keeps messages waiting: mqtt out would drop them.
          if (--installsPending === 0 && !certificateError) {
            certificateWait = false;
            release();
          }
          showStatus();
        });
    };

    const attest = async (request?: PendingRequest) => {
      const fresh = evidence && Date.now() - evidence.at < EVIDENCE_TTL_MS ? evidence.value : undefined;
      const client = device.api().client();
      const { identity } = device.identity();
      const once = () => attestDevice(client, identity, device.components(), fresh, request?.csr);
      try {
        const answer = await once();
        // The key moved into a TPM or an HSM while the verifier still knows the file key: the
        // registration hands the device over (both keys sign), then the new key attests.
        if (answer.reasons.some(reason => KEY_MISMATCH.has(reason)) && device.keyMoving()) {
          await device.register();
          return once();
        }
        return answer;
      } catch (err) {
        // Not registered yet (the flow's m2m-provision may not have run): register, as it would,
        // and attest again. A revoked device is refused registration (device_revoked).
        if (!(err instanceof ApiError) || err.code !== 'device_unknown') throw err;
        await device.register();
        return once();
      }
    };

    const keeper = new TokenKeeper(
      async () => {
        const request = certificates ? await newCertificateRequest(device.deviceId) : undefined;
        const answer = await attest(request);
        if (request && answer.certificate) {
          const tls = issuedIdentity(request, answer.certificate);
          certificates?.save(tls);
          // The brokers reconnect in the background: stamped messages wait for them, the token does not.
          installCertificate(tls);
        }
        return answer;
      },
      device.deviceId,
      {
        ...DEFAULT_REAUTH,
        lifetimeFraction: number(config.fraction, 0.5, { min: 0.05, max: 0.95 }),
        floorMs: number(config.floor, 30, { min: 1 }) * 1000,
      },
      undefined,
      savedToken(),
    );

    const time = (epochMs: number | undefined) =>
      epochMs === undefined
        ? '-'
        : new Date(epochMs).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
    const showStatus = () => {
      const current = keeper.current();
      const held = queue.length ? t('status.holding', { count: queue.length }) : '';
      // Overflowed messages are among the rejected (each is reported on output 2 once).
      const lost = rejected ? t('status.rejected', { count: rejected }) : '';
      const extra = [held, lost].filter(Boolean).join(', ');
      const text = (key: string, values: Record<string, string | number> = {}) =>
        t(key, { ...values, extra: extra ? ` (${extra})` : '' });
      if (certificateError) {
        this.status(status.failed(text('status.tls-failed', { code: certificateError.code })));
      } else if (lastEvent?.type === 'declined') {
        this.status(
          status.declined(
            text('status.declined', {
              reason: lastEvent.reasons.join(', ') || lastEvent.decision,
              retry: time(lastEvent.retryAt),
            }),
          ),
        );
      } else if (lastEvent?.type === 'failed' && current) {
        this.status(
          status.waiting(text('status.grace', { until: time(current.expiresAt), retry: time(lastEvent.retryAt) })),
        );
      } else if (lastEvent?.type === 'failed') {
        this.status(status.failed(text('status.offline', { code: lastEvent.code, retry: time(lastEvent.retryAt) })));
      } else if (current) {
        this.status(
          status.working(text('status.valid', { until: time(current.expiresAt), next: time(keeper.nextAttemptAt) })),
        );
      } else {
        this.status(status.waiting(text('status.attesting')));
      }
    };

    // Status at message rate would flood the editor; twice a second is what a person can read.
    let statusTimer: NodeJS.Timeout | undefined;
    const refreshStatus = () => {
      statusTimer ??= setTimeout(() => {
        statusTimer = undefined;
        showStatus();
      }, 500);
    };

    let expiresAtCache: { token: CurrentToken; text: string } | undefined;
    const expiresAtText = (token: CurrentToken) => {
      if (expiresAtCache?.token !== token) expiresAtCache = { token, text: new Date(token.expiresAt).toISOString() };
      return expiresAtCache.text;
    };

    /** The key and generation a token is bound to, read once per token. */
    let tokenFacts: { token: string; jkt?: string; generation: number } | undefined;
    const factsOf = (token: CurrentToken) => {
      if (tokenFacts?.token !== token.token) {
        const claims = jose.decodeJwt(token.token) as { cnf?: { jkt?: string }; m2m?: { generation?: number } };
        tokenFacts = { token: token.token, jkt: claims.cnf?.jkt, generation: claims.m2m?.generation ?? 0 };
      }
      return tokenFacts;
    };

    /**
     * The current token, if it is bound to the key the device holds now: one bound to a key that
     * is gone (a keystore replaced while running) is dropped, and a new attestation asked for.
     * Throws keystore_missing when the keystore is gone.
     */
    const usableToken = (): CurrentToken | undefined => {
      const token = keeper.current();
      if (!token) return undefined;
      const key = device.identity().identity.privateKey;
      if (factsOf(token).jkt === thumbprintOf(key)) return token;
      keeper.invalidate('key_changed');
      void keeper.trigger('key_changed');
      return undefined;
    };

    const stamp = (msg: M2MMessage, token: CurrentToken): M2MMessage => {
      const target = msg.url ?? (typeof msg.topic === 'string' ? msg.topic : '');
      const proof =
        config.proofs === false
          ? undefined
          : createProof(device.identity().identity.privateKey, { token: token.token, payload: msg.payload, target });
      const stamped = { authorization: `Bearer ${token.token}`, ...(proof ? { 'm2m-pop': proof } : {}) };
      msg.m2m = {
        ...m2mOf(msg),
        deviceId: token.deviceId,
        token: token.token,
        expiresAt: expiresAtText(token),
      };
      if (config.stampHeaders !== false) msg.headers = { ...msg.headers, ...stamped };
      if (config.stampUserProperties !== false) msg.userProperties = { ...msg.userProperties, ...stamped };
      return msg;
    };

    const reject = (msg: M2MMessage, reason: string) => {
      rejected++;
      msg.m2m = { ...m2mOf(msg), reauth: { reason } };
      this.send([null, msg]);
    };

    /**
     * A message with a low behaviour score asked for a re-attestation: it, and what comes after
     * it, wait for the verifier's answer (an outage does not clear it; a decision does).
     */
    let riskPending = false;

    /** Sends what waited, in order, while a token is good and no risk waits for its answer. */
    const release = () => {
      let token: CurrentToken | undefined;
      try {
        token = usableToken();
      } catch {
        return; // the keystore is gone: what waits keeps waiting, the status says why
      }
      if (!token || riskPending || certificateWait || !queue.length) return;
      for (const msg of queue.takeAll()) {
        try {
          this.send([stamp(msg, token), null]);
        } catch (err) {
          // The queue is already taken: a message that cannot be stamped goes to Catch, not away.
          this.error(messageError(RED, 'm2m-reauth-timer', msg, err), msg);
        }
      }
    };

    keeper.onEvent = event => {
      lastEvent = event;
      if (event.type !== 'failed') riskPending = false;
      if (event.type === 'approved') {
        fs.writeFileSync(tokenFile, JSON.stringify(event.token), { mode: 0o600 });
        release();
      } else {
        if (event.type === 'declined') fs.rmSync(tokenFile, { force: true });
        // Declines, revocations and outages are events for the flow, on output 2.
        this.send([
          null,
          {
            topic: 'm2m/reauth',
            payload: { ...event, token: undefined },
            m2m: { deviceId: device.deviceId, reauth: { event: event.type } },
          } as NodeMessage,
        ]);
        // A keystore or set-up fault needs a person: Catch nodes hear of it (outages are only events).
        if (event.type === 'failed' && !event.remote)
          this.error(nodeError(RED, 'm2m-reauth-timer', new M2MError(event.code, event.message)));
        // Offline with a token still good (grace): what waited goes out stamped with it.
        if (event.type === 'failed') release();
      }
      showStatus();
    };

    // The network the gateway sits on: a change is a reason to prove itself again.
    let network = networkSignature();
    const pollMs = number(config.networkPoll, 30, { min: 0 }) * 1000;
    const networkTimer = pollMs
      ? setInterval(() => {
          const now = networkSignature();
          if (now !== network) {
            network = now;
            void keeper.trigger('network');
          }
        }, pollMs)
      : undefined;
    networkTimer?.unref();
    const clockTimer = setInterval(showStatus, 15_000);
    clockTimer.unref();

    /** A control message (not forwarded) asks for a re-attestation: which one, if any. */
    const controlTrigger = (msg: M2MMessage): Trigger | undefined => {
      const asked = msg.m2m?.reauth;
      if (asked === 'task') return 'task';
      if (asked === 'unauthorized' || msg.statusCode === 401) return 'unauthorized';
      if (asked === true || asked === 'request') return 'request';
      return undefined;
    };

    this.on('input', (msg: M2MMessage, _send, done) => {
      const control = controlTrigger(msg);
      if (control) {
        void keeper.trigger(control);
        done();
        return;
      }
      const deep = tooDeep(RED, 'm2m-reauth-timer', msg);
      if (deep) {
        done(deep);
        return;
      }
      const tinyml = evidenceFrom(msg.m2m?.tinyml);
      if (tinyml) evidence = { value: tinyml, at: Date.now() };
      const risky = tinyml && (tinyml.score === null || tinyml.score < riskScore || tinyml.trusted === false);
      if (risky) {
        riskPending = true;
        void keeper.trigger('risk');
      }
      try {
        const token = usableToken();
        // A message that raised the risk, and those after it, wait for the re-attestation it asked for.
        if (token && !riskPending && !certificateWait) {
          release();
          this.send([stamp(msg, token), null]);
        } else if (hold || token || keeper.attempting)
          for (const pushedOut of queue.push(RED.util.cloneMessage(msg))) reject(pushedOut, 'queue_overflow');
        else reject(msg, 'no_token');
        done();
      } catch (err) {
        done(messageError(RED, 'm2m-reauth-timer', msg, err));
      }
      refreshStatus();
    });

    // The verifier's revocation list, for this device: a revocation drops the token at once (the
    // receivers refuse it anyway), and a reinstatement asks for a new one at once, not at the
    // end of a decline's backoff.
    let watch: RevocationWatch | undefined;
    try {
      const client = device.api().client();
      watch = new RevocationWatch({
        source: { fetch: etag => client.revocations(etag) },
        keys: jose.createRemoteJWKSet(client.jwksUrl, { cooldownDuration: 30_000, timeoutDuration: 5000 }),
        issuer: client.audience,
        pollMs: REVOCATION_POLL_MS,
        onChange: () => {
          const standing = watch?.standing(device.deviceId);
          if (!standing) return;
          const token = keeper.current();
          if (token && (standing.revoked || factsOf(token).generation < standing.generation))
            keeper.invalidate('device_revoked');
          else if (!token && !standing.revoked && lastEvent?.type === 'declined') void keeper.trigger('reinstated');
        },
      });
    } catch {
      // No usable identity API yet: the attestations say why.
    }

    keeper.start();
    // A certificate kept from before a restart serves until the next attestation brings a new one.
    const kept = certificates?.load();
    if (kept) installCertificate(kept);
    else if (certificates) void keeper.trigger('certificate');
    showStatus();
    if (queue.unreadable) this.warn(t('log.queue-unreadable', { count: queue.unreadable }));

    this.on('close', (removed: boolean, done: () => void) => {
      keeper.stop();
      watch?.stop();
      if (networkTimer) clearInterval(networkTimer);
      clearInterval(clockTimer);
      clearTimeout(statusTimer);
      // Queued messages stay in their file for the next start, unless the node itself is gone.
      if (removed) removeStateFiles(tokenFile, queueFile, certificateFile);
      done();
    });
  }

  RED.nodes.registerType('m2m-reauth-timer', ReauthTimer);
};
