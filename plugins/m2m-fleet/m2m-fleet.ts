/**
 * The runtime half of the "m2m fleet" editor sidebar: admin routes behind Node-RED's own
 * authentication (`m2m-fleet.read` to list, `m2m-fleet.write` to change (status, re-key), so a read-only editor
 * user sees the fleet but cannot revoke), over two kinds of source:
 * - the m2m-verifier nodes running here (their lib calls, no HTTP), whose events reach open
 *   editors live over Node-RED's comms;
 * - m2m-identity-api configurations (provider m2m) with an admin key and a base URL, through
 *   their verifier's admin API; the key is used here and never reaches the browser.
 */
import type { NodeAPI } from 'node-red';
import type { IdentityApiClient } from '../../lib/edge/api-client';
import { M2MError } from '../../lib/errors';
import { sendProblem } from '../../lib/verifier/http';
import type { IdentityApiNode } from '../../nodes/shared/config-nodes';
import { fleetRegistry } from '../../nodes/shared/fleet-registry';

type Action = 'revoke' | 'approve' | 'reinstate' | 'rekey';

interface FleetSource {
  id: string;
  label: string;
  kind: 'local' | 'remote';
  listDevices(query: Record<string, string>): Promise<unknown>;
  deviceHistory(deviceId: string): Promise<unknown>;
  setStatus(deviceId: string, action: Action, audit: { actor: string; reason?: string }): Promise<unknown>;
}

interface Request {
  params: Record<string, string>;
  query: Record<string, unknown>;
  body?: unknown;
  user?: { username?: string };
}

interface Response {
  json(body: unknown): void;
}

/** Query parameters the sources understand, strings only (express may parse arrays). */
function pageQuery(query: Record<string, unknown>): Record<string, string> {
  const wanted = ['offset', 'limit', 'status', 'q'];
  return Object.fromEntries(
    Object.entries(query).filter(
      (entry): entry is [string, string] => wanted.includes(entry[0]) && typeof entry[1] === 'string',
    ),
  );
}

export = (RED: NodeAPI) => {
  const plugins = (RED as unknown as { plugins: { registerPlugin(id: string, definition: object): void } }).plugins;
  plugins.registerPlugin('m2m-fleet', { type: 'm2m-fleet' });

  function remoteSources(): FleetSource[] {
    const sources: FleetSource[] = [];
    RED.nodes.eachNode(config => {
      const flowConfig = config as { id: string; type: string; name?: string; baseUrl?: string; provider?: string };
      if (flowConfig.type !== 'm2m-identity-api' || flowConfig.provider === 'didit') return;
      // An empty base URL is the m2m-verifier node of this Node-RED, listed as a local source.
      if (!flowConfig.baseUrl?.trim()) return;
      const api = RED.nodes.getNode(flowConfig.id) as IdentityApiNode | null;
      if (!api?.credentials?.apiKey) return;
      const client = (): IdentityApiClient => api.client();
      sources.push({
        id: flowConfig.id,
        label: flowConfig.name || flowConfig.baseUrl,
        kind: 'remote',
        listDevices: query => client().listDevices(query),
        deviceHistory: deviceId => client().deviceHistory(deviceId),
        setStatus: (deviceId, action, audit) =>
          action === 'rekey' ? client().allowRekey(deviceId, audit) : client().setDeviceStatus(deviceId, action, audit),
      });
    });
    return sources;
  }

  function sources(): FleetSource[] {
    const local = fleetRegistry.list().map(
      ({ id, label, verifier }): FleetSource => ({
        id,
        label,
        kind: 'local',
        listDevices: query => verifier.listDevices(query),
        deviceHistory: deviceId => verifier.deviceHistory(deviceId),
        setStatus: (deviceId, action, audit) =>
          action === 'rekey' ? verifier.allowRekey(deviceId, audit) : verifier.setStatus(deviceId, action, audit),
      }),
    );
    return [...local, ...remoteSources()];
  }

  function sourceOf(req: Request): FleetSource {
    const source = sources().find(candidate => candidate.id === req.params.source);
    if (!source) throw new M2MError('source_unknown', `no verifier ${req.params.source} in this Node-RED`, 404);
    return source;
  }

  /** An express handler whose errors are answered as problem+json (never the stack). */
  const answer =
    (work: (req: Request) => Promise<unknown>) =>
    (req: Request, res: Response & Parameters<typeof sendProblem>[0]) => {
      work(req).then(
        body => res.json(body),
        err => {
          if (!(err instanceof M2MError)) RED.log.warn(`m2m fleet: ${(err as Error).message}`);
          sendProblem(res, err);
        },
      );
    };

  const read = RED.auth.needsPermission('m2m-fleet.read');
  const write = RED.auth.needsPermission('m2m-fleet.write');
  const admin = RED.httpAdmin as unknown as {
    get(path: string, ...handlers: unknown[]): void;
    post(path: string, ...handlers: unknown[]): void;
  };

  admin.get(
    '/m2m-fleet/sources',
    read,
    answer(async () => sources().map(({ id, label, kind }) => ({ id, label, kind }))),
  );
  admin.get(
    '/m2m-fleet/sources/:source/devices',
    read,
    answer(async req => sourceOf(req).listDevices(pageQuery(req.query))),
  );
  admin.get(
    '/m2m-fleet/sources/:source/devices/:device/history',
    read,
    answer(async req => sourceOf(req).deviceHistory(req.params.device)),
  );
  admin.post(
    '/m2m-fleet/sources/:source/devices/:device/:action(revoke|approve|reinstate|rekey)',
    write,
    answer(async req => {
      const body = (req.body ?? {}) as { reason?: unknown };
      const reason = typeof body.reason === 'string' && body.reason.trim() ? body.reason.trim().slice(0, 500) : undefined;
      // The editor user, as Node-RED's adminAuth knows them; without adminAuth there is no name.
      const actor = `node-red:${req.user?.username ?? 'editor'}`;
      return sourceOf(req).setStatus(req.params.device, req.params.action as Action, { actor, reason });
    }),
  );

  // Decisions and status changes of the local verifiers, to every open editor.
  fleetRegistry.onEvent((source, event) => {
    RED.comms.publish('m2m-fleet/event', { source, event }, false);
  });
};
