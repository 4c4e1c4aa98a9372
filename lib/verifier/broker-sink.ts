/**
 * Mosquitto as a receiver of the verifier's events (lib/brokers/mosquitto): every event of a
 * device makes the broker match the device as the store has it now, so deliveries retried out of
 * order, or after an outage, still end in the latest state. It retries every minute for a week
 * rather than backing off for hours: a revocation must reach the broker soon after it is back.
 */
import { type MosquittoOptions, MosquittoDynsec } from '../brokers/mosquitto';
import type { AttemptResult, EventSink } from './delivery';
import type { VerifierStore } from './store/types';
import { subscriberId } from './subscribers';

const SECOND = 1000;
const BROKER_RETRY_CAPS_MS = [
  SECOND,
  2 * SECOND,
  5 * SECOND,
  10 * SECOND,
  30 * SECOND,
  ...Array(7 * 24 * 60).fill(60 * SECOND),
];
/** Events after which the CRL changes. */
const CRL_EVENTS = new Set(['device.revoked', 'device.reinstated']);

export interface BrokerSink extends EventSink {
  dynsec: MosquittoDynsec;
  /** Brings the broker to the device's current standing now (before a certificate goes out). */
  ready(deviceId: string): Promise<void>;
}

export function mosquittoSink(
  options: MosquittoOptions,
  store: VerifierStore,
  crl?: () => Promise<string>,
): BrokerSink {
  const dynsec = new MosquittoDynsec(options);
  const { protocol, host } = new URL(options.url);
  const url = `${protocol}//${host}`;
  const apply = (deviceId: string) =>
    dynsec.apply(deviceId, async () => {
      const device = await store.getDevice(deviceId);
      if (!device) return { desired: 'absent', version: 'none' };
      return {
        desired: device.status === 'active' ? 'enabled' : 'blocked',
        version: `${device.generation}:${device.thumbprint}:${device.updatedAt}`,
      };
    });
  return {
    id: subscriberId(`mosquitto+${url}`),
    url,
    dynsec,
    retryCapsMs: BROKER_RETRY_CAPS_MS,
    breakerMaxMs: 10 * SECOND,
    async send({ body }): Promise<AttemptResult> {
      const event = JSON.parse(body) as { type?: unknown; data?: { deviceId?: unknown } };
      const deviceId = event.data?.deviceId;
      if (typeof deviceId !== 'string') return { kind: 'delivered' };
      try {
        await apply(deviceId);
        if (crl && typeof event.type === 'string' && CRL_EVENTS.has(event.type)) await dynsec.publishCrl(await crl());
        return { kind: 'delivered' };
      } catch (err) {
        const { code, message } = err as { code?: string; message: string };
        return { kind: 'failed', error: code ? `${code}: ${message}` : message };
      }
    },
    ready: apply,
    close: () => dynsec.close(),
  };
}
