/**
 * Hosts identity API v1 inside Node-RED: the verifier's request listener mounted on httpNode
 * under a path (default /m2m), with its SQLite store under the user dir (or a PostgreSQL shared
 * with standalone verifiers, docs/deploy.md). Every event leaves on
 * the node's output, in process, and as a signed webhook to each configured URL.
 */
import * as path from 'node:path';
import type { Node, NodeAPI, NodeDef, NodeMessage } from 'node-red';
import { M2MError } from '../../lib/errors';
import { Verifier, type VerifierEvent, createRequestListener, openStore } from '../../lib/verifier';
import { sendProblem } from '../../lib/verifier/http';
import type { SubscriberConfig } from '../../lib/verifier/subscribers';
import type { CertificateOptions } from '../../lib/verifier/certificates';
import type { MosquittoOptions } from '../../lib/brokers/mosquitto';
import { eventFacts } from '../../lib/webhooks/receiver';
import { MAX_BODY_BYTES } from '../../lib/verifier/http';
import { captureRawBody, mount, nodeUrlPath, type ExpressApp, type Handler } from '../shared/express';
import { fleetRegistry } from '../shared/fleet-registry';
import { dataDir, localVerifierUrl, nodeError, status } from '../shared/node-kit';
import { localWebhookSecret } from '../shared/webhook-secret';

interface VerifierDef extends NodeDef {
  path: string;
  store: string;
  publicUrl: string;
  manualApproval: boolean;
  loopbackEnrollment: boolean;
  /** Webhook URLs, one per line; `/path` is a path of this Node-RED's httpNode. */
  webhooks: string;
  /** What tokens are signed with; EdDSA unless ES256 is chosen. */
  tokenAlg?: string;
  /** Issue short-lived client certificates with approvals that ask for one. */
  certificates?: boolean;
  /** Their lifetime in seconds; empty: twice the token's. */
  certificateLifetime?: string | number;
  /** A Mosquitto broker to keep in step (dynamic security): its admin listener, mqtt://host:port. */
  mosquittoUrl?: string;
  mosquittoUser?: string;
  /** Each device's topic tree; {deviceId} is replaced. */
  mosquittoTopics?: string;
  /** The broker's crlfile and pid file, when it runs beside this Node-RED (a revoked certificate is refused at TLS). */
  mosquittoCrlFile?: string;
  mosquittoPidFile?: string;
}

interface VerifierCredentials {
  adminKey?: string;
  enrollmentToken?: string;
  /** Signs every webhook; several space-separated during a rotation; empty: this Node-RED's own secret. */
  webhookSecret?: string;
  /** The PostgreSQL password, kept out of the store URL (which the flow file holds). */
  storePassword?: string;
  mosquittoPassword?: string;
}

/** A client gets this long to send its body: a trickling one is cut off. */
const BODY_TIMEOUT_MS = 10_000;

function certificateOptions(config: VerifierDef): CertificateOptions | undefined {
  if (!config.certificates) return undefined;
  const lifetime = String(config.certificateLifetime ?? '').trim();
  return lifetime ? { lifetimeSeconds: Number(lifetime) } : {};
}

function mosquittoOptions(config: VerifierDef, password: string | undefined): MosquittoOptions[] {
  const url = config.mosquittoUrl?.trim();
  if (!url) return [];
  return [
    {
      url,
      username: config.mosquittoUser?.trim() ?? '',
      password: password ?? '',
      topics: config.mosquittoTopics?.trim() || undefined,
      crlFile: config.mosquittoCrlFile?.trim() || undefined,
      pidFile: config.mosquittoPidFile?.trim() || undefined,
    },
  ];
}

function mountPath(configured: string): string {
  const trimmed = `/${(configured || '/m2m').trim().replace(/^\/+|\/+$/g, '')}`;
  return trimmed === '/' ? '/m2m' : trimmed;
}

export = (RED: NodeAPI) => {
  /** Mount path → the node serving it: a second verifier on one path would never be reached. */
  const mounted = new Map<string, string>();

  function subscribers(config: VerifierDef, secret: string | undefined): SubscriberConfig[] {
    const urls = (config.webhooks ?? '')
      .split('\n')
      .map(line => line.trim())
      .filter(Boolean);
    if (!urls.length) return [];
    const signWith = secret?.trim() || localWebhookSecret(RED);
    return urls.map(url => ({ url: url.startsWith('/') ? localVerifierUrl(RED, url) : url, secret: signWith }));
  }

  function M2MVerifier(this: Node<VerifierCredentials>, config: VerifierDef) {
    RED.nodes.createNode(this, config);
    const mountAt = mountPath(config.path);
    const publicUrl = config.publicUrl?.trim() || localVerifierUrl(RED, mountAt);
    const owner = mounted.get(mountAt);
    if (owner && owner !== this.id) {
      this.status(status.failed(RED._('m2m-verifier.status.pathTaken', { path: mountAt })));
      this.error(RED._('m2m-verifier.errors.path_taken', { path: mountAt, node: owner }));
      return;
    }
    mounted.set(mountAt, this.id);

    this.status(status.waiting(RED._('m2m-verifier.status.starting')));
    const failing = new Set<string>();
    let started = false;
    const showServing = () => {
      if (!started) return;
      this.status(
        failing.size
          ? status.waiting(RED._('m2m-verifier.status.receiverFailing', { path: mountAt, count: failing.size }))
          : status.working(RED._('m2m-verifier.status.serving', { path: mountAt })),
      );
    };
    // Opening the store can fail (a path without permission): that becomes a red status, not a crash.
    const ready = Promise.resolve().then(async () => {
      const store = await openStore(config.store?.trim() || path.join(dataDir(RED, 'verifier'), 'verifier.db'), {
        password: this.credentials.storePassword ?? '',
      });
      return Verifier.create({
        store,
        publicUrl,
        adminKey: this.credentials.adminKey || undefined,
        enrollmentToken: this.credentials.enrollmentToken || undefined,
        manualApproval: !!config.manualApproval,
        loopbackEnrollment: !!config.loopbackEnrollment,
        keyRotation: { alg: config.tokenAlg === 'ES256' ? 'ES256' : 'EdDSA' },
        certificates: certificateOptions(config),
        mosquitto: mosquittoOptions(config, this.credentials.mosquittoPassword),
        // A receiver or broker that fails shows in the status, not only in the admin API.
        onReceiverHealth: (receiver, error) => {
          if (error) {
            failing.add(receiver.url);
            this.warn(RED._('m2m-verifier.errors.receiver_failing', { url: receiver.url, error }));
          } else if (failing.delete(receiver.url)) {
            this.log(RED._('m2m-verifier.log.receiver_back', { url: receiver.url }));
          }
          showServing();
        },
        webhooks: {
          subscribers: subscribers(config, this.credentials.webhookSecret),
          onError: err => this.warn(nodeError(RED, 'm2m-verifier', err).message),
        },
      }).catch(async err => {
        await store.close();
        throw err;
      });
    });
    const listener = ready.then(verifier =>
      createRequestListener(verifier, { onError: err => this.error(nodeError(RED, 'm2m-verifier', err)) }),
    );
    listener.catch(() => undefined); // reported through `ready` below; requests get a 503
    // Requests that arrive while the store opens wait for it rather than failing.
    const handler: Handler = (req, res) => {
      listener
        .then(
          listen => listen(req, res),
          () =>
            sendProblem(
              res,
              new M2MError('verifier_unavailable', 'the verifier could not start; see the Node-RED log', 503),
            ),
        )
        .catch(err => sendProblem(res, err));
    };
    const unmount = [
      mount(RED.httpNode as unknown as ExpressApp, mountAt, handler),
      // The API reads its own bodies: Node-RED's parser would answer a bad one with an HTML page.
      captureRawBody(
        RED,
        nodeUrlPath(RED, mountAt),
        { maxBytes: MAX_BODY_BYTES, timeoutMs: BODY_TIMEOUT_MS },
        { subtree: true, anyMethod: true },
      ),
    ];
    const toFlow = (event: VerifierEvent) => {
      const { id, ...body } = event;
      this.send({ topic: event.type, payload: body, m2m: eventFacts(body, id, 'in-process') } as NodeMessage);
    };
    const stopEvents = ready
      .then(verifier => {
        const stopFlow = verifier.onEvent(toFlow);
        const unlist = fleetRegistry.add({ id: this.id, label: config.name || `verifier ${mountAt}`, verifier });
        return () => {
          stopFlow();
          unlist();
        };
      })
      .catch(() => () => undefined);
    ready.then(
      () => {
        started = true;
        showServing();
      },
      err => {
        this.status(status.failed(RED._('m2m-verifier.status.failed')));
        this.error(nodeError(RED, 'm2m-verifier', err));
      },
    );

    this.on('close', (done: () => void) => {
      for (const remove of unmount) remove();
      if (mounted.get(mountAt) === this.id) mounted.delete(mountAt);
      stopEvents.then(stop => stop());
      ready
        .then(
          verifier => verifier.close(),
          () => undefined,
        )
        .then(() => done());
    });
  }

  RED.nodes.registerType<Node<VerifierCredentials>, VerifierDef, object, VerifierCredentials>(
    'm2m-verifier',
    M2MVerifier,
    {
      credentials: {
        adminKey: { type: 'password' },
        enrollmentToken: { type: 'password' },
        webhookSecret: { type: 'password' },
        storePassword: { type: 'password' },
        mosquittoPassword: { type: 'password' },
      },
    },
  );
};
