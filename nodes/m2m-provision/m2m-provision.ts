/**
 * Makes the device's key pair if there is none, computes its fingerprint and registers it with
 * the identity API: on deploy (retrying while the API is unreachable) and on every input.
 * Registering again with the same key is harmless, so the node is idempotent.
 */
import type { Node, NodeAPI, NodeDef, NodeMessage } from 'node-red';
import { ApiError } from '../../lib/edge/api-client';
import type { DeviceNode } from '../shared/config-nodes';
import { M2MError } from '../../lib/errors';
import { disable, errorCode, errorText, msgError, nodeError, providerProblem, status, m2mOf } from '../shared/node-kit';

interface ProvisionDef extends NodeDef {
  device: string;
  onDeploy: boolean;
}

const RETRY_CODES = new Set(['verifier_unreachable', 'verifier_timeout', 'http_502', 'http_503', 'http_504']);
const MAX_RETRY_MS = 60_000;

export = (RED: NodeAPI) => {
  function Provision(this: Node, config: ProvisionDef) {
    RED.nodes.createNode(this, config);
    const device = RED.nodes.getNode(config.device) as DeviceNode | null;
    let retryTimer: NodeJS.Timeout | undefined;
    let closed = false;

    if (!device) {
      const noDevice = new M2MError('no_device', 'no m2m-device configured', 400);
      disable(this, RED, 'm2m-provision', RED._('m2m-provision.status.no-device'), noDevice);
      return;
    }
    const problem = providerProblem(device.api, 'm2m');
    if (problem?.code === 'wrong_provider') {
      disable(this, RED, 'm2m-provision', RED._('m2m-provision.status.wrong-provider'), problem);
      return;
    }

    const provision = async (msg: NodeMessage & { m2m?: Record<string, unknown> }) => {
      this.status(status.waiting(RED._('m2m-provision.status.registering')));
      const answer = await device.register();
      this.status(
        answer.status === 'active'
          ? status.working(RED._('m2m-provision.status.registered', { deviceId: answer.deviceId }))
          : status.waiting(RED._('m2m-provision.status.pending', { deviceId: answer.deviceId })),
      );
      msg.m2m = {
        ...m2mOf(msg),
        deviceId: answer.deviceId,
        status: answer.status,
        created: answer.created,
        keyCreated: answer.keyCreated,
        keyStorage: answer.keyStorage,
        ...(answer.keyChanged ? { keyChanged: true } : {}),
      };
      return msg;
    };

    const fail = (err: unknown) => {
      // A revoked device is the verifier's decision, not a fault of this node.
      const shown = errorCode(err) === 'device_revoked' ? status.declined : status.failed;
      this.status(shown(RED._('m2m-provision.status.failed', { code: errorCode(err) })));
      return nodeError(RED, 'm2m-provision', err);
    };

    const provisionOnDeploy = (attempt: number) => {
      provision({ payload: 'deploy' }).then(
        msg => this.send(msg),
        err => {
          if (closed) return;
          if (err instanceof ApiError && RETRY_CODES.has(err.code)) {
            const delay = Math.min(1000 * 2 ** attempt, MAX_RETRY_MS);
            this.status(status.waiting(RED._('m2m-provision.status.waiting', { seconds: delay / 1000 })));
            this.warn(
              RED._('m2m-provision.status.retrying', {
                seconds: delay / 1000,
                message: errorText(RED, 'm2m-provision', err),
              }),
            );
            retryTimer = setTimeout(() => provisionOnDeploy(attempt + 1), delay);
          } else {
            // With a message of its own, so Catch nodes hear of it as of any failed input.
            const msg = {
              topic: 'm2m/provision',
              payload: 'deploy',
              m2m: { deviceId: device.deviceId, error: msgError(RED, 'm2m-provision', err) },
            };
            this.error(fail(err), msg);
          }
        },
      );
    };
    // Let the rest of the flow (a verifier in the same Node-RED, say) start first.
    if (config.onDeploy) retryTimer = setTimeout(() => provisionOnDeploy(0), 500);

    this.on('input', (msg: NodeMessage & { m2m?: Record<string, unknown> }, send, done) => {
      provision(msg).then(
        out => {
          send(out);
          done();
        },
        err => {
          // Node-RED 4 puts the error's code on msg.error.code for Catch nodes; msg.m2m.error carries
          // it on every version.
          msg.m2m = { ...m2mOf(msg), error: msgError(RED, 'm2m-provision', err) };
          done(fail(err));
        },
      );
    });

    this.on('close', (done: () => void) => {
      closed = true;
      clearTimeout(retryTimer);
      done();
    });
  }

  RED.nodes.registerType('m2m-provision', Provision);
};
