/**
 * Receives signed webhooks on httpNode (DESIGN.md §4): our verifier's (Standard Webhooks) and
 * Didit's. The signature is checked on the exact bytes received, duplicates are dropped across
 * restarts, and the sender hears 2xx as soon as the event is in the flow. Output 1 approved (and
 * fully signed), output 2 everything else. Several nodes may share a path: each checks with its
 * own secrets, and the sender hears 2xx when one of them accepted. The logic is in lib/webhooks.
 */
import type { Node, NodeAPI, NodeDef, NodeMessage } from 'node-red';
import { M2MError } from '../../lib/errors';
import { readRawBody } from '../../lib/http-body';
import { sendProblem } from '../../lib/verifier/http';
import { type ReceivedWebhook, WebhookReceiver } from '../../lib/webhooks/receiver';
import { SeenEvents } from '../../lib/webhooks/seen-events';
import type { IdentityApiNode } from '../shared/config-nodes';
import {
  type ExpressApp,
  type Handler,
  type RawBodyRequest,
  captureRawBody,
  mount,
  nodeUrlPath,
} from '../shared/express';
import { errorCode, nodeError, nodeStateFile, removeStateFiles, status, throttledStatus } from '../shared/node-kit';
import { localWebhookSecret } from '../shared/webhook-secret';

const MAX_WEBHOOK_BYTES = 1024 * 1024;
/** A sender gets this long to deliver its body: a trickling one (slow loris) is cut off. */
const BODY_TIMEOUT_MS = 10_000;

interface WebhookInDef extends NodeDef {
  path: string;
  api: string;
}

interface WebhookInCredentials {
  secrets?: string;
}

/** One node's part in a shared route. */
interface Listener {
  receiver: WebhookReceiver;
  /** Hands an accepted event to the flow, unless it is a duplicate. */
  deliver(received: ReceivedWebhook): void;
  rejected(err: unknown): void;
}

function webhookPath(configured: string | undefined): string {
  return `/${(configured || '/m2m-events').trim().replace(/^\/+|\/+$/g, '')}`;
}

export = (RED: NodeAPI) => {
  /** Path → the nodes listening there and the function that removes the route. */
  const routes = new Map<string, { listeners: Set<Listener>; remove: () => void }>();

  function route(pathname: string): Handler {
    return (req, res, next) => {
      // Mounted with use(): the path is a prefix, the rest of it must be empty.
      if (!/^\/?(?:\?.*)?$/.test(req.url ?? '')) {
        next();
        return;
      }
      if (req.method !== 'POST') {
        res.setHeader('allow', 'POST');
        sendProblem(res, new M2MError('method_not_allowed', 'webhooks are POSTed', 405));
        return;
      }
      const request = req as RawBodyRequest;
      const body = request.rawBody
        ? Promise.resolve(request.rawBody)
        : request._body
          ? Promise.reject(
              new M2MError(
                'body_parsed',
                'a body parser read this request before the webhook node could check it',
                400,
              ),
            )
          : readRawBody(req, { maxBytes: MAX_WEBHOOK_BYTES, timeoutMs: BODY_TIMEOUT_MS });
      body
        .then(bytes => {
          const listeners = [...(routes.get(pathname)?.listeners ?? [])];
          const accepted: Array<[Listener, ReceivedWebhook]> = [];
          let refusal: unknown = new M2MError('not_found', 'no webhook node here', 404);
          for (const listener of listeners) {
            try {
              accepted.push([listener, listener.receiver.receive(bytes, req.headers)]);
            } catch (err) {
              refusal = err;
            }
          }
          if (!accepted.length) {
            for (const listener of listeners) listener.rejected(refusal);
            throw refusal;
          }
          for (const [listener, received] of accepted) listener.deliver(received);
          // A duplicate is answered 2xx too: the sender must stop retrying it.
          res.writeHead(204).end();
        })
        .catch(err => sendProblem(res, err));
    };
  }

  function listen(pathname: string, listener: Listener): () => void {
    let entry = routes.get(pathname);
    if (!entry) {
      const handler = route(pathname);
      const removers = [
        captureRawBody(RED, nodeUrlPath(RED, pathname), { maxBytes: MAX_WEBHOOK_BYTES, timeoutMs: BODY_TIMEOUT_MS }),
        mount(RED.httpNode as unknown as ExpressApp, pathname, handler),
      ];
      entry = {
        listeners: new Set(),
        remove: () => {
          for (const remove of removers) remove();
        },
      };
      routes.set(pathname, entry);
    }
    const { listeners } = entry;
    listeners.add(listener);
    return () => {
      listeners.delete(listener);
      if (!listeners.size) {
        routes.get(pathname)?.remove();
        routes.delete(pathname);
      }
    };
  }

  function WebhookIn(this: Node<WebhookInCredentials>, config: WebhookInDef) {
    RED.nodes.createNode(this, config);
    const t = (key: string, values?: Record<string, string | number>) => RED._(`m2m-webhook-in.${key}`, values);
    const pathname = webhookPath(config.path);
    const api = config.api ? (RED.nodes.getNode(config.api) as IdentityApiNode | null) : null;
    const counts = { accepted: 0, rejected: 0, duplicate: 0 };
    let lastRefusal = '';
    const showStatus = throttledStatus(this, () => {
      const text = t('status.counts', counts);
      return lastRefusal ? status.declined(`${text} (${lastRefusal})`) : status.working(text);
    });

    const dedupeFile = nodeStateFile(RED, this.id, 'webhook-in', '.db');
    let seen: SeenEvents;
    let receiver: WebhookReceiver;
    try {
      const configured = [this.credentials.secrets, api?.credentials.webhookSecret]
        .flatMap(value => (value ?? '').split(/\s+/))
        .filter(Boolean);
      // Didit signs with the secret of its console: this Node-RED's own secret would refuse all.
      if (api?.provider === 'didit' && !configured.length)
        throw new M2MError('no_secret', 'set the webhook secret of the Didit configuration (or this node)', 400);
      receiver = new WebhookReceiver({ secrets: configured.length ? configured : [localWebhookSecret(RED)] });
      seen = new SeenEvents({ file: dedupeFile });
    } catch (err) {
      // A missing secret is configuration to finish, said by the status; anything else is a fault.
      if (errorCode(err) === 'no_secret') {
        this.status(status.failed(t('status.no-secret')));
        return;
      }
      this.status(status.failed(t('status.failed')));
      this.error(nodeError(RED, 'm2m-webhook-in', err));
      return;
    }

    const stopListening = listen(pathname, {
      receiver,
      deliver: received => {
        if (!seen.firstTime(received.dedupeKey)) {
          counts.duplicate++;
          showStatus();
          return;
        }
        for (const key of received.alsoSeen ?? []) seen.firstTime(key);
        counts.accepted++;
        lastRefusal = '';
        const msg: NodeMessage & { m2m: unknown } = {
          topic: received.facts.type ?? '',
          payload: received.event,
          m2m: received.facts,
        };
        const approved = received.facts.decision === 'approved' && received.facts.trusted;
        this.send(approved ? [msg, null] : [null, msg]);
        showStatus();
      },
      rejected: err => {
        counts.rejected++;
        lastRefusal = err instanceof M2MError ? err.code : 'error';
        showStatus();
      },
    });
    this.status(status.idle(t('status.listening', { path: pathname })));

    this.on('close', (removed: boolean, done: () => void) => {
      stopListening();
      seen.close();
      if (removed) removeStateFiles(dedupeFile);
      done();
    });
  }

  RED.nodes.registerType<Node<WebhookInCredentials>, WebhookInDef, object, WebhookInCredentials>(
    'm2m-webhook-in',
    WebhookIn,
    { credentials: { secrets: { type: 'password' } } },
  );
};
