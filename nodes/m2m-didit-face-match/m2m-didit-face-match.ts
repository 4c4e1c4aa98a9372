/**
 * 1:1 face match through Didit: a camera's picture against a reference (a badge photo, an ID
 * portrait). Output 1 when Didit says Approved (the score above the threshold), output 2
 * otherwise, with score, warnings and reason codes on msg.m2m. Images are Buffers or file paths
 * on the msg; they go to Didit and nowhere else, and never onto the outgoing msg.m2m.
 */
import * as fs from 'node:fs/promises';
import type { Node, NodeAPI, NodeDef, NodeMessage } from 'node-red';
import { DiditError, MAX_IMAGE_BYTES } from '../../lib/didit/client';
import { M2MError } from '../../lib/errors';
import type { IdentityApiNode } from '../shared/config-nodes';
import { disable, msgError, providerProblem, providerStatusKey, status, typedValue, m2mOf } from '../shared/node-kit';

interface FaceMatchDef extends NodeDef {
  api: string;
  userImage: string;
  userImageType: string;
  refImage: string;
  refImageType: string;
  threshold: string | number;
  rotateImage: boolean;
  /** Keep the comparison in Didit's console (Didit's default). */
  saveApiRequest: boolean;
}

type FaceMessage = NodeMessage & { m2m?: Record<string, unknown> };

export = (RED: NodeAPI) => {
  function DiditFaceMatch(this: Node, config: FaceMatchDef) {
    RED.nodes.createNode(this, config);
    const t = (key: string, values?: Record<string, string | number>) => RED._(`m2m-didit-face-match.${key}`, values);
    const api = RED.nodes.getNode(config.api) as IdentityApiNode | null;
    const problem = providerProblem(api ? () => api : undefined, 'didit');
    if (problem) {
      disable(this, RED, 'm2m-didit-face-match', t(`status.${providerStatusKey(problem)}`), problem);
      return;
    }
    const threshold = config.threshold === '' || config.threshold === undefined ? 30 : Number(config.threshold);
    this.status(status.idle(t('status.ready', { threshold })));

    /** A Buffer from the msg, or the file a string names (at most Didit's 5 MB, read no further). */
    const image = async (value: string, type: string, msg: NodeMessage, what: string): Promise<Buffer> => {
      const found = typedValue(RED, this, value, type || 'msg', msg);
      if (Buffer.isBuffer(found)) return found;
      if (typeof found === 'string' && found) {
        const stat = await fs.stat(found).catch(() => undefined);
        if (!stat?.isFile()) throw new M2MError('image_missing', `${what}: no file ${found}`, 400);
        if (stat.size > MAX_IMAGE_BYTES)
          throw new DiditError('didit_image_too_large', `${what} is ${stat.size} bytes; Didit takes at most 5 MB`, 0);
        return fs.readFile(found);
      }
      throw new M2MError('image_missing', `${what}: expected a Buffer or a file path at ${type}.${value}`, 400);
    };

    this.on('input', (msg: FaceMessage, send, done) => {
      this.status(status.waiting(t('status.comparing')));
      Promise.all([
        image(config.userImage || 'payload', config.userImageType, msg, 'user image'),
        image(config.refImage || 'refImage', config.refImageType, msg, 'reference image'),
      ])
        .then(([userImage, refImage]) =>
          api!.didit().faceMatch({
            userImage,
            refImage,
            declineThreshold: threshold,
            rotateImage: !!config.rotateImage,
            saveApiRequest: config.saveApiRequest !== false,
          }),
        )
        .then(
          match => {
            const approved = match.status === 'Approved';
            const risks = match.warnings.flatMap(w => (w.risk ? [w.risk] : []));
            msg.m2m = {
              ...m2mOf(msg),
              provider: 'didit',
              faceMatch: match,
              score: match.score,
              decision: approved ? 'approved' : 'declined',
              reasons: approved ? [] : risks.length ? risks : ['didit_declined'],
            };
            const shown = approved ? status.working : status.declined;
            this.status(shown(t('status.result', { status: match.status, score: match.score ?? '-' })));
            send(approved ? [msg, null] : [null, msg]);
            done();
          },
          err => {
            const error = msgError(RED, 'm2m-didit-face-match', err);
            msg.m2m = { ...m2mOf(msg), provider: 'didit', decision: 'declined', reasons: [error.code], error };
            this.status(status.failed(t('status.error', { code: error.code })));
            send([null, msg]);
            done();
          },
        );
    });
  }

  RED.nodes.registerType('m2m-didit-face-match', DiditFaceMatch);
};
