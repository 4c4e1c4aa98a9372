/**
 * Hosts identity API v1 inside Node-RED: the verifier's request listener mounted on httpNode
 * under a path (default /m2m), with its SQLite store under the user dir.
 */
import * as path from 'node:path';
import type { Node, NodeAPI, NodeDef } from 'node-red';
import { M2MError } from '../../lib/errors';
import { Verifier, createRequestListener, openStore } from '../../lib/verifier';
import { sendProblem } from '../../lib/verifier/http';
import { answerParserErrors, mount, nodeUrlPath, type ExpressApp, type Handler } from '../shared/express';
import { dataDir, localVerifierUrl, nodeError, status } from '../shared/node-kit';

interface VerifierDef extends NodeDef {
  path: string;
  store: string;
  publicUrl: string;
  manualApproval: boolean;
  loopbackEnrollment: boolean;
}

interface VerifierCredentials {
  adminKey?: string;
  enrollmentToken?: string;
}

function mountPath(configured: string): string {
  const trimmed = `/${(configured || '/m2m').trim().replace(/^\/+|\/+$/g, '')}`;
  return trimmed === '/' ? '/m2m' : trimmed;
}

export = (RED: NodeAPI) => {
  function M2MVerifier(this: Node<VerifierCredentials>, config: VerifierDef) {
    RED.nodes.createNode(this, config);
    const mountAt = mountPath(config.path);
    const publicUrl = config.publicUrl?.trim() || localVerifierUrl(RED, mountAt);

    this.status(status.waiting(RED._('m2m-verifier.status.starting')));
    // Opening the store can fail (a path without permission): that becomes a red status, not a crash.
    const ready = Promise.resolve().then(async () => {
      const store = await openStore(config.store?.trim() || path.join(dataDir(RED, 'verifier'), 'verifier.db'));
      return Verifier.create({
        store,
        publicUrl,
        adminKey: this.credentials.adminKey || undefined,
        enrollmentToken: this.credentials.enrollmentToken || undefined,
        manualApproval: !!config.manualApproval,
        loopbackEnrollment: !!config.loopbackEnrollment,
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
      answerParserErrors(RED, nodeUrlPath(RED, mountAt)),
    ];
    ready.then(
      () => this.status(status.working(RED._('m2m-verifier.status.serving', { path: mountAt }))),
      err => {
        this.status(status.failed(RED._('m2m-verifier.status.failed')));
        this.error(nodeError(RED, 'm2m-verifier', err));
      },
    );

    this.on('close', (done: () => void) => {
      for (const remove of unmount) remove();
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
      },
    },
  );
};
