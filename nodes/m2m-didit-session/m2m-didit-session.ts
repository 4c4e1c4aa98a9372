/**
 * Didit verification sessions from a flow: `create` opens a hosted session for a person (an
 * operator at a machine, a contractor at the gate) and sends its URL on, for an HMI to show as a
 * link or QR code; `decision` reads a session's decision and routes Approved to output 1,
 * everything else (pending, declined, errors) to output 2 with a reason code.
 */
import type { Node, NodeAPI, NodeDef, NodeMessage } from 'node-red';
import { type DiditClient, DiditError, isFinalStatus, statusReason } from '../../lib/didit/client';
import { M2MError } from '../../lib/errors';
import type { IdentityApiNode } from '../shared/config-nodes';
import {
  disable,
  errorCode,
  msgError,
  providerProblem,
  providerStatusKey,
  status,
  typedValue,
  m2mOf,
} from '../shared/node-kit';

interface DiditSessionDef extends NodeDef {
  api: string;
  action: 'create' | 'decision';
  workflowId: string;
  vendorData: string;
  vendorDataType: string;
  callback: string;
  language: string;
  sessionId: string;
  sessionIdType: string;
  /** Put Didit's whole decision (document fields, image links) on msg.payload. */
  fullDecision: boolean;
}

type DiditMessage = NodeMessage & { m2m?: Record<string, unknown> };

const WORKFLOW_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export = (RED: NodeAPI) => {
  function DiditSession(this: Node, config: DiditSessionDef) {
    RED.nodes.createNode(this, config);
    const t = (key: string, values?: Record<string, string | number>) => RED._(`m2m-didit-session.${key}`, values);
    const api = RED.nodes.getNode(config.api) as IdentityApiNode | null;
    const problem = providerProblem(api ? () => api : undefined, 'didit');
    if (problem) {
      disable(this, RED, 'm2m-didit-session', t(`status.${providerStatusKey(problem)}`), problem);
      return;
    }
    const action = config.action === 'decision' ? 'decision' : 'create';
    if (action === 'create' && !WORKFLOW_ID.test(config.workflowId?.trim() ?? '')) {
      const noWorkflow = new M2MError('no_workflow', 'set the Didit workflow id (a UUID) to create sessions', 400);
      disable(this, RED, 'm2m-didit-session', t('status.no-workflow'), noWorkflow);
      return;
    }
    this.status(status.idle(t(`status.ready-${action}`)));

    const evaluate = (value: string, type: string, msg: NodeMessage) => typedValue(RED, this, value, type, msg);

    const create = async (client: DiditClient, msg: DiditMessage) => {
      const vendorData = evaluate(config.vendorData, config.vendorDataType, msg);
      if (vendorData !== undefined && typeof vendorData !== 'string')
        throw new M2MError('invalid_request', 'vendor_data must be a string', 400);
      const metadata = (msg as { metadata?: unknown }).metadata;
      const session = await client.createSession({
        workflowId: config.workflowId?.trim(),
        vendorData: vendorData || undefined,
        callback: config.callback?.trim() || undefined,
        language: config.language?.trim() || undefined,
        metadata:
          metadata && typeof metadata === 'object' && !Array.isArray(metadata)
            ? (metadata as Record<string, unknown>)
            : undefined,
      });
      msg.payload = session;
      msg.m2m = { ...m2mOf(msg), provider: 'didit', ...session, reasons: [] };
      this.status(status.working(t('status.created', { number: session.sessionNumber ?? '', status: session.status })));
      return 0;
    };

    const decide = async (client: DiditClient, msg: DiditMessage) => {
      const sessionId = evaluate(config.sessionId || 'm2m.sessionId', config.sessionIdType || 'msg', msg);
      if (typeof sessionId !== 'string' || !sessionId)
        throw new M2MError(
          'no_session_id',
          `no session id at ${config.sessionIdType || 'msg'}.${config.sessionId || 'm2m.sessionId'}`,
          400,
        );
      const decision = await client.decision(sessionId);
      const { raw, ...summary } = decision;
      const approved = decision.status === 'Approved';
      const final = isFinalStatus(decision.status);
      msg.payload = config.fullDecision ? raw : summary;
      msg.m2m = {
        ...m2mOf(msg),
        provider: 'didit',
        sessionId: decision.sessionId,
        status: decision.status,
        ...(decision.vendorData ? { vendorData: decision.vendorData } : {}),
        decision: approved ? 'approved' : final ? 'declined' : 'in_review',
        reasons: approved ? [] : [statusReason(decision.status)],
      };
      const shown = approved ? status.working : final ? status.declined : status.waiting;
      this.status(shown(decision.status));
      return approved ? 0 : 1;
    };

    this.on('input', (msg: DiditMessage, send, done) => {
      let client: DiditClient;
      try {
        client = api!.didit();
      } catch (err) {
        this.status(status.failed(t('status.error', { code: errorCode(err) })));
        done(err as Error);
        return;
      }
      this.status(status.waiting(t(`status.${action}`)));
      (action === 'create' ? create(client, msg) : decide(client, msg)).then(
        output => {
          send(output === 0 ? [msg, null] : [null, msg]);
          done();
        },
        err => {
          // Didit's refusals and outages are answers for the flow (output 2), not node errors.
          const error = msgError(RED, 'm2m-didit-session', err);
          msg.m2m = {
            ...m2mOf(msg),
            provider: 'didit',
            reasons: [error.code],
            error,
            ...(err instanceof DiditError && err.retryAfter !== undefined ? { retryAfter: err.retryAfter } : {}),
          };
          this.status(status.failed(t('status.error', { code: error.code })));
          send([null, msg]);
          done();
        },
      );
    });
  }

  RED.nodes.registerType('m2m-didit-session', DiditSession);
};
