/**
 * Hands a device's current client certificate to Node-RED's own MQTT nodes: the `tls-config`
 * node the user picked gets the certificate and key, and every `mqtt-broker` using it reconnects
 * with them (the broker node copies its TLS options only when it (re)configures). The core nodes
 * stay as they are; this reaches into two of their fields (`cert`, `key`) and the broker's
 * connect / disconnect / setOptions, which its own `msg.action` handling uses.
 */
import type { NodeAPI } from 'node-red';
import type { TlsIdentity } from '../../lib/edge/client-certificate';
import { M2MError } from '../../lib/errors';

interface TlsConfigNode {
  cert?: Buffer;
  key?: Buffer;
  valid?: boolean;
  certType?: string;
}

interface BrokerNode {
  connected?: boolean;
  connecting?: boolean;
  users?: Record<string, unknown>;
  setOptions?(options: object, init?: boolean): void;
  connect?(callback: () => void): void;
  disconnect?(callback: () => void): void;
}

/** How long a reconnection may take before the messages held for it go on anyway. */
const RECONNECT_WAIT_MS = 10_000;

export function tlsNodeProblem(RED: NodeAPI, tlsId: string | undefined): M2MError | undefined {
  const tls = tlsId ? (RED.nodes.getNode(tlsId) as (TlsConfigNode & object) | null) : null;
  if (!tls) return new M2MError('no_tls_config', 'pick the TLS configuration the MQTT broker uses', 400);
  if (tls.certType && tls.certType !== 'files')
    return new M2MError(
      'tls_config_type',
      'the TLS configuration must take its certificate from files (left empty): this node fills it',
      400,
    );
  return undefined;
}

/** Puts `identity` into the TLS node and reconnects the brokers that use it; resolves when they are back. */
export async function installClientCertificate(RED: NodeAPI, tlsId: string, identity: TlsIdentity): Promise<void> {
  const problem = tlsNodeProblem(RED, tlsId);
  if (problem) throw problem;
  const tls = RED.nodes.getNode(tlsId) as unknown as TlsConfigNode;
  tls.cert = Buffer.from(identity.certificate);
  tls.key = Buffer.from(identity.key);
  tls.valid = true;
  const brokers: BrokerNode[] = [];
  RED.nodes.eachNode((config: { id: string; type: string; tls?: string }) => {
    if (config.type === 'mqtt-broker' && config.tls === tlsId)
      brokers.push(RED.nodes.getNode(config.id) as unknown as BrokerNode);
  });
  await Promise.all(brokers.filter(Boolean).map(reconnect));
}

async function reconnect(broker: BrokerNode): Promise<void> {
  if (!broker.setOptions || !broker.connect || !broker.disconnect) return;
  // Messages sent just before are still on their way to mqtt out (Node-RED delivers on the next
  // turn of the event loop): they are published before the connection closes, not into it.
  await new Promise(resolve => setImmediate(resolve));
  await new Promise(resolve => setImmediate(resolve));
  const active = broker.connected || broker.connecting;
  // A clean disconnect: QoS 1 messages in flight are acknowledged before the connection closes.
  if (active) await new Promise<void>(resolve => broker.disconnect!(resolve));
  broker.setOptions({}, false);
  if (!active && !Object.keys(broker.users ?? {}).length) return;
  await new Promise<void>(resolve => {
    const timer = setTimeout(resolve, RECONNECT_WAIT_MS);
    broker.connect!(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}
