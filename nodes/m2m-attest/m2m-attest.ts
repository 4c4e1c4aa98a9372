/**
 * Proves the device's identity: challenge → attestation signed with the device key, carrying the
 * fingerprint and, when present, the TinyML score (msg.m2m.tinyml) as evidence → decision.
 * Output 1 approved (token on msg.m2m), output 2 everything else, errors included, so a flow can
 * route on it; configuration and keystore failures are also reported to Catch nodes.
 */
import type { Node, NodeAPI, NodeDef, NodeMessage } from 'node-red';
import { ApiError } from '../../lib/edge/api-client';
import { attestDevice, evidenceFrom } from '../../lib/edge/attestation';
import type { DeviceNode } from '../shared/config-nodes';
import { M2MError } from '../../lib/errors';
import {
  disable,
  errorCode,
  messageError,
  msgError,
  nodeError,
  providerProblem,
  status,
  m2mOf,
} from '../shared/node-kit';

interface AttestDef extends NodeDef {
  device: string;
}

type M2MMessage = NodeMessage & { m2m?: Record<string, unknown> & { tinyml?: unknown } };

export = (RED: NodeAPI) => {
  function Attest(this: Node, config: AttestDef) {
    RED.nodes.createNode(this, config);
    const device = RED.nodes.getNode(config.device) as DeviceNode | null;
    const problem = device && providerProblem(device.api, 'm2m');
    if (problem?.code === 'wrong_provider') {
      disable(this, RED, 'm2m-attest', RED._('m2m-attest.status.wrong-provider'), problem);
      return;
    }
    if (!device) this.status(status.failed(RED._('m2m-attest.status.no-device')));
    else this.status(status.idle(RED._('m2m-attest.status.ready')));

    this.on('input', (msg: M2MMessage, send, done) => {
      if (!device) {
        done(messageError(RED, 'm2m-attest', msg, new M2MError('no_device', 'no m2m-device configured', 400)));
        return;
      }
      this.status(status.waiting(RED._('m2m-attest.status.attesting')));
      const evidence = evidenceFrom(msg.m2m?.tinyml);
      Promise.resolve()
        .then(() => attestDevice(device.api().client(), device.identity().identity, device.components(), evidence))
        .then(answer => {
          msg.m2m = {
            ...m2mOf(msg),
            deviceId: device.deviceId,
            decision: answer.decision,
            token: answer.token,
            expiresAt: answer.expiresAt,
            score: evidence?.score ?? undefined,
            reasons: answer.reasons,
            sessionId: answer.sessionId,
          };
          if (answer.decision === 'approved') {
            const expires = answer.expiresAt
              ? new Date(answer.expiresAt).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
              : '';
            this.status(status.working(RED._('m2m-attest.status.approved', { expires })));
            send([msg, null]);
          } else {
            const label = answer.decision === 'in_review' ? 'in-review' : 'declined';
            this.status(
              (answer.decision === 'in_review' ? status.waiting : status.declined)(
                RED._(`m2m-attest.status.${label}`, { reason: answer.reasons.join(', ') }),
              ),
            );
            send([null, msg]);
          }
          done();
        })
        .catch(err => {
          msg.m2m = {
            ...m2mOf(msg),
            deviceId: device.deviceId,
            decision: 'error',
            reasons: [errorCode(err)],
            error: msgError(RED, 'm2m-attest', err),
          };
          this.status(status.failed(RED._('m2m-attest.status.error', { code: errorCode(err) })));
          send([null, msg]);
          // An unreachable or refusing verifier is a decision path the flow handles on output 2;
          // a broken keystore or configuration needs a person, so Catch nodes hear of it too.
          done(err instanceof ApiError ? undefined : nodeError(RED, 'm2m-attest', err));
        });
    });
  }

  RED.nodes.registerType('m2m-attest', Attest);
};
