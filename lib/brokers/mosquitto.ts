/**
 * Keeps Mosquitto's dynamic-security plugin in step with the verifier's registry (issue #23): an
 * active device has a client (its certificate's CN) with a role for its own topic tree; a revoked
 * or pending one is blocked, and Mosquitto drops its live connection at once. Driven from the
 * verifier's outbox, so a broker that is down gets every change when it is back.
 *
 * Mosquitto 2.0 does not look at dynsec's `disabled` flag for clients that authenticate with a
 * certificate (use_identity_as_username; eclipse/mosquitto#2999): a disabled device could
 * reconnect at once with all its rights. So blocking also gives the client a deny-everything role
 * above all others, and the CRL (served by the verifier, optionally written to the broker's
 * crlfile with a SIGHUP) refuses its certificate at the TLS handshake.
 *
 * Every dynsec command that changes a client disconnects it, so the state is read first
 * (getClient, which does not) and only what differs is sent. `mqtt` is an optional peer, loaded
 * when a broker is configured.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import type { IClientOptions, MqttClient } from 'mqtt';
import { M2MError } from '../errors';
import * as s from '../schema';

const CONTROL = '$CONTROL/dynamic-security/v1';
const RESPONSE = `${CONTROL}/response`;
/** The role that denies a blocked device everything; its priority puts it above every other role. */
export const BLOCKED_ROLE = 'm2m-blocked';
const BLOCKED_PRIORITY = 1000;

export interface MosquittoOptions {
  /** The listener the verifier manages the broker through: mqtt://host:port or mqtts://host:port. */
  url: string;
  /** A dynsec client with the admin role. */
  username: string;
  password: string;
  /** Each device's topic tree; `{deviceId}` is replaced. Default `plant/{deviceId}/#`. */
  topics?: string;
  /** For mqtts: the CA of the broker's server certificate (PEM). */
  ca?: string;
  /** Also write the verifier's CRL here (the broker's `crlfile`) after every change... */
  crlFile?: string;
  /** ...and signal the broker whose pid this file holds to read it (SIGHUP). */
  pidFile?: string;
  /** One dynsec command's deadline; 5 s by default. */
  timeoutMs?: number;
}

export type DesiredState = 'enabled' | 'blocked' | 'absent';

/** What the registry says of a device now, and a version of that (any change of the device changes it). */
export interface DeviceStanding {
  desired: DesiredState;
  version: string;
}

const response = s.object({
  responses: s.array(
    s.object({
      command: s.string({ maxLength: 128 }),
      error: s.optional(s.string({ maxLength: 1024 })),
      correlationData: s.optional(s.string({ maxLength: 128 })),
      data: s.optional(s.unknownValue()),
    }),
    { maxItems: 100 },
  ),
});

const clientInfo = s.object({
  client: s.object({
    username: s.string({ maxLength: 256 }),
    disabled: s.optional(s.boolean()),
    roles: s.optional(s.array(s.object({ rolename: s.string({ maxLength: 256 }) }), { maxItems: 256 })),
  }),
});

/** A dynsec answer that reports an error: the delivery is retried, with the broker's words. */
export class DynsecError extends M2MError {
  constructor(command: string, error: string) {
    super('dynsec_error', `Mosquitto refused ${command}: ${error}`, 502);
  }
}

type Command = Record<string, unknown> & { command: string };
type Answer = s.Infer<typeof response>['responses'][number];

function loadMqtt(): typeof import('mqtt') {
  try {
    return require('mqtt');
  } catch (err) {
    throw new M2MError(
      'mqtt_unavailable',
      `keeping Mosquitto in step needs the mqtt package: npm install mqtt (${(err as Error).message.split('\n')[0]})`,
      500,
    );
  }
}

/** The role name of a device (one role per device: dynsec 2.0 has no %u patterns in ACLs). */
export function deviceRole(deviceId: string): string {
  return `m2m-device-${deviceId}`;
}

export class MosquittoDynsec {
  private client?: Promise<MqttClient>;
  private readonly waiting = new Map<string, (answer: Answer) => void>();
  /**
   * Per device, the standing this process last applied: another approval of an unchanged device
   * costs no command. Keyed by the device's version, so a change made through another verifier
   * process is read from the broker again.
   */
  private readonly applied = new Map<string, string>();
  /** Applications to one device run one after another: the last one read the newest state. */
  private readonly queues = new Map<string, Promise<unknown>>();
  private blockedRoleReady = false;
  private closed = false;

  constructor(readonly options: MosquittoOptions) {}

  /** Brings the broker to `state` for the device: reads its client, then sends only what differs. */
  apply(deviceId: string, standing: () => Promise<DeviceStanding>): Promise<void> {
    const previous = this.queues.get(deviceId) ?? Promise.resolve();
    const run = previous
      .catch(() => undefined)
      .then(async () => {
        const { desired, version } = await standing();
        const key = `${desired}@${version}`;
        if (this.applied.get(deviceId) === key) return;
        await this.converge(deviceId, desired);
        this.applied.set(deviceId, key);
      });
    this.queues.set(deviceId, run);
    const forget = () => {
      if (this.queues.get(deviceId) === run) this.queues.delete(deviceId);
    };
    // The caller handles run's failure; this branch only tidies up, and must not leave it unhandled.
    run.then(forget, forget);
    return run;
  }

  /** Forgets what was applied (the broker may have been reset): the next event reads the broker again. */
  forget(): void {
    this.applied.clear();
  }

  private async converge(deviceId: string, desired: DesiredState): Promise<void> {
    if (!this.blockedRoleReady) {
      await this.send(
        [
          {
            command: 'createRole',
            rolename: BLOCKED_ROLE,
            textname: 'm2m identity: revoked or pending devices',
            acls: ['publishClientSend', 'publishClientReceive', 'subscribePattern'].map(acltype => ({
              acltype,
              topic: '#',
              priority: BLOCKED_PRIORITY,
              allow: false,
            })),
          },
        ],
        ['Role already exists'],
      );
      this.blockedRoleReady = true;
    }
    const [found] = await this.send([{ command: 'getClient', username: deviceId }], ['Client not found']);
    const client = found.error ? undefined : clientInfo.parse(found.data, 'getClient').client;
    const roles = new Set(client?.roles?.map(role => role.rolename));
    const role = deviceRole(deviceId);
    const changes: Command[] = [];
    if (desired === 'enabled') {
      if (!client) {
        await this.send(
          [{ command: 'createRole', rolename: role, acls: this.deviceAcls(deviceId) }],
          ['Role already exists'],
        );
        changes.push({ command: 'createClient', username: deviceId, roles: [{ rolename: role, priority: 0 }] });
      } else {
        if (!roles.has(role)) {
          await this.send(
            [{ command: 'createRole', rolename: role, acls: this.deviceAcls(deviceId) }],
            ['Role already exists'],
          );
          changes.push({ command: 'addClientRole', username: deviceId, rolename: role, priority: 0 });
        }
        if (roles.has(BLOCKED_ROLE))
          changes.push({ command: 'removeClientRole', username: deviceId, rolename: BLOCKED_ROLE });
        if (client.disabled) changes.push({ command: 'enableClient', username: deviceId });
      }
    } else if (desired === 'blocked' && client) {
      if (!roles.has(BLOCKED_ROLE))
        changes.push({
          command: 'addClientRole',
          username: deviceId,
          rolename: BLOCKED_ROLE,
          priority: BLOCKED_PRIORITY,
        });
      if (!client.disabled) changes.push({ command: 'disableClient', username: deviceId });
    }
    // A device the broker never knew needs nothing to be blocked: an unknown name is denied everything.
    if (changes.length) await this.send(changes);
  }

  private deviceAcls(deviceId: string): Array<Record<string, unknown>> {
    const topic = (this.options.topics ?? 'plant/{deviceId}/#').replaceAll('{deviceId}', deviceId);
    return ['publishClientSend', 'publishClientReceive', 'subscribePattern'].map(acltype => ({
      acltype,
      topic,
      priority: 0,
      allow: true,
    }));
  }

  /** Writes the CRL to the broker's crlfile and tells the broker to read it (SIGHUP); no-op unless configured. */
  async publishCrl(crlPem: string): Promise<void> {
    const { crlFile, pidFile } = this.options;
    if (!crlFile) return;
    const temporary = `${crlFile}.${process.pid}.tmp`;
    fs.writeFileSync(temporary, crlPem, { mode: 0o644 });
    fs.renameSync(temporary, crlFile);
    if (!pidFile) return;
    const pid = Number(fs.readFileSync(pidFile, 'utf8').trim());
    if (!Number.isInteger(pid) || pid < 2) throw new M2MError('bad_config', `no broker pid in ${pidFile}`, 500);
    process.kill(pid, 'SIGHUP');
  }

  /** Sends commands in one batch; an answer with an error not in `expected` throws DynsecError. */
  async send(commands: Command[], expected: string[] = []): Promise<Answer[]> {
    const client = await this.connect();
    // mqtt.js would queue a publish until it reconnects: the delivery fails now and is retried.
    if (!client.connected)
      throw new M2MError('broker_unreachable', `Mosquitto at ${new URL(this.options.url).host} is not connected`, 503);
    const batch = crypto.randomUUID();
    const timeoutMs = this.options.timeoutMs ?? 5000;
    const tagged = commands.map((command, i) => ({ ...command, correlationData: `${batch}:${i}` }));
    const answers = Promise.all(
      tagged.map(
        command =>
          new Promise<Answer>((resolve, reject) => {
            const timer = setTimeout(() => {
              this.waiting.delete(command.correlationData);
              reject(
                new M2MError(
                  'dynsec_timeout',
                  `Mosquitto did not answer ${command.command} within ${timeoutMs} ms`,
                  504,
                ),
              );
            }, timeoutMs);
            this.waiting.set(command.correlationData, answer => {
              clearTimeout(timer);
              resolve(answer);
            });
          }),
      ),
    );
    // The deadline covers the publish too: a connection that drops mid-way must not hold the outbox.
    const [, received] = await Promise.all([
      client.publishAsync(CONTROL, JSON.stringify({ commands: tagged }), { qos: 1 }),
      answers,
    ]);
    for (const answer of received)
      if (answer.error && !expected.includes(answer.error)) throw new DynsecError(answer.command, answer.error);
    return received;
  }

  private connect(): Promise<MqttClient> {
    if (this.closed) return Promise.reject(new M2MError('closed', 'the broker sync is closed', 500));
    this.client ??= this.open().catch(err => {
      this.client = undefined;
      throw err;
    });
    return this.client;
  }

  private async open(): Promise<MqttClient> {
    const mqtt = loadMqtt();
    const { url, username, password, ca } = this.options;
    const options: IClientOptions = {
      username,
      password,
      protocolVersion: 5,
      clientId: `m2m-verifier-${crypto.randomBytes(6).toString('hex')}`,
      reconnectPeriod: 1000,
      connectTimeout: this.options.timeoutMs ?? 5000,
      ...(ca ? { ca } : {}),
    };
    let client: MqttClient;
    try {
      client = await mqtt.connectAsync(url, options, false);
    } catch (err) {
      throw new M2MError(
        'broker_unreachable',
        `cannot reach Mosquitto at ${new URL(url).host}: ${(err as Error).message}`,
        503,
      );
    }
    client.on('message', (_topic, payload) => {
      let parsed: s.Infer<typeof response>;
      try {
        parsed = response.parse(JSON.parse(payload.toString('utf8')), 'dynsec answer');
      } catch {
        return; // not an answer of ours (another admin's, or garbage): nothing waits for it
      }
      for (const answer of parsed.responses) {
        const waiting = answer.correlationData && this.waiting.get(answer.correlationData);
        if (!waiting) continue;
        this.waiting.delete(answer.correlationData!);
        waiting(answer);
      }
    });
    // A broker that restarted may have lost what was applied (a new dynamic-security.json).
    client.on('connect', () => this.forget());
    await client.subscribeAsync(RESPONSE, { qos: 1 });
    return client;
  }

  async close(): Promise<void> {
    this.closed = true;
    const client = await this.client?.catch(() => undefined);
    await client?.endAsync(true);
  }
}
