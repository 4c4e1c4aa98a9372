/**
 * Checks that each source feeding the flow behaves like the device enrolled under its name:
 * a rolling window of (value, time) per source → the behaviour model → score against the
 * source's enrolled profile. Output 1 trusted, output 2 suspicious (with the reason), so nothing
 * unverified passes silently. Also checks Ed25519 signatures of peer messages against a local
 * trust store. The policy lives in lib/tinyml (monitor, gate); this file is configuration and wiring.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { M2MError } from '../../lib/errors';
import type { Node, NodeAPI, NodeDef, NodeMessage } from 'node-red';
import { type PeerSignatureResult, TrustStore } from '../../lib/edge/peer-signature';
import type { BehaviourMonitor, Enrolled, OutOfRangePolicy } from '../../lib/tinyml/behaviour-monitor';
import { shippedModelDir } from '../../lib/tinyml/catalog';
import { WINDOW } from '../../lib/tinyml/features';
import { BehaviourGate, type Policy, type TinymlReport } from '../../lib/tinyml/gate';
import type { BehaviourModel } from '../../lib/tinyml/model';
import type { ProfileStore } from '../../lib/tinyml/profile-store';
import { dataDir, m2mOf, messageError, nodeError, removeStateFiles, status, tooDeep } from '../shared/node-kit';

interface TinymlVerifyDef extends NodeDef {
  mode: 'verify' | 'enrol';
  keyProperty: string;
  valueProperty: string;
  timeProperty: string;
  enrolWindows: number | string;
  /** Minutes after which an enrolment ends with what it has (at least 4 windows); empty: windows only. */
  enrolMinutes: number | string;
  unverified: Policy;
  /** A source outside the model's training range: output 2 (default), or judged by its own statistics. */
  outOfRange?: OutOfRangePolicy;
  threshold: number | string;
  maxSources: number | string;
  model: string;
  trustStore: string;
  requireSignature: boolean;
  /** Whether msg.m2m.enrol = true may (re-)enrol a source; off, no message can change a profile. */
  enrolOnRequest: boolean;
}

type M2MMessage = NodeMessage & { m2m?: Record<string, unknown> & { enrol?: unknown; signature?: unknown } };

interface Routed {
  msg: M2MMessage;
  send: (msg: Array<NodeMessage | null>) => void;
  done: (err?: Error) => void;
}

/** Required on first deploy, not at palette load: see lib/tinyml/runtime. */
const runtime = (): typeof import('../../lib/tinyml/runtime') => require('../../lib/tinyml/runtime');

/** One load per model file version, shared by every node using it. */
const models = new Map<string, Promise<BehaviourModel>>();

function loadModel(dir: string): Promise<BehaviourModel> {
  let version = 'missing';
  try {
    version = String(fs.statSync(path.join(dir, 'model.json')).mtimeMs);
  } catch {
    // BehaviourModel.load reports the missing file in its own words.
  }
  const key = `${dir}#${version}`;
  let model = models.get(key);
  if (!model) {
    model = Promise.resolve().then(() => runtime().BehaviourModel.load(dir));
    model.catch(() => models.delete(key));
    models.set(key, model);
  }
  return model;
}

function positive(value: number | string, fallback: number, integer = true): number {
  const n = Number(value);
  return (integer ? Number.isInteger(n) : Number.isFinite(n)) && n > 0 ? n : fallback;
}

/** How often live sources' replay memory is saved with their profiles. */
const REPLAY_SAVE_MS = 60_000;

export = (RED: NodeAPI) => {
  function TinymlVerify(this: Node, config: TinymlVerifyDef) {
    RED.nodes.createNode(this, config);
    const t = (key: string, values?: Record<string, string | number>) => RED._(`m2m-tinyml-verify.${key}`, values);
    const modelDir = config.model?.trim()
      ? path.resolve(config.model.trim())
      : shippedModelDir(config.timeProperty ? 'source' : 'arrival');
    const override = config.threshold === '' || config.threshold === undefined ? undefined : Number(config.threshold);
    const enrolWindows = positive(config.enrolWindows, 20);
    const enrolMinutes =
      config.enrolMinutes === '' || config.enrolMinutes === undefined
        ? undefined
        : positive(config.enrolMinutes, 10, false);
    const maxSources = positive(config.maxSources, 1000);

    let modelId = '';
    let failure: string | undefined;
    let ready = false;
    let notice: string | undefined;
    let last: { score: number; trusted: boolean; weakEnrolment?: true } | undefined;
    let enrolling: { source: string; windows: number } | undefined;
    let statusTimer: NodeJS.Timeout | undefined;
    let sourceCount = 0;

    const showStatus = () => {
      statusTimer = undefined;
      if (failure) this.status(status.failed(failure));
      else if (!ready) this.status(status.waiting(t('status.loading')));
      else if (enrolling)
        this.status(
          status.waiting(
            t('status.enrolling', { source: enrolling.source, windows: enrolling.windows, of: enrolWindows }),
          ),
        );
      else if (notice) this.status(status.waiting(notice));
      else if (last)
        this.status(
          (last.trusted ? status.working : status.declined)(
            t(last.weakEnrolment ? 'status.score-weak' : 'status.score', {
              score: last.score.toFixed(2),
              sources: sourceCount,
            }),
          ),
        );
      else
        this.status(
          (sourceCount ? status.working : status.idle)(
            t(config.mode === 'enrol' ? 'status.enrol-mode' : 'status.enrolled', { count: sourceCount }),
          ),
        );
    };
    // Status at message rate would flood the editor; twice a second is what a person can read.
    const refreshStatus = () => {
      statusTimer ??= setTimeout(showStatus, 500);
    };
    showStatus();

    const gate = new BehaviourGate<Routed>(
      {
        policy: (['pass', 'hold', 'reject'] as const).find(p => p === config.unverified) ?? 'hold',
        // Room for a whole enrolment (and the window that follows it) per source.
        holdPerSource: (enrolWindows + 1) * WINDOW,
        maxSources,
      },
      (item, trusted, report: TinymlReport) => {
        // Each report is the route's own. Copying it to add the model cost 0.5 µs a message in V8,
        // a fifth of a Node-RED hop; so it is named here.
        report.model = modelId;
        const { m2m } = item.msg;
        item.msg.m2m = m2m ? { ...m2m, tinyml: report } : { tinyml: report };
        item.send(trusted ? [item.msg, null] : [null, item.msg]);
        item.done();
      },
    );

    let trustStore = TrustStore.empty();
    const trustFile = config.trustStore?.trim() || path.join(dataDir(RED), 'trust-store.jwks.json');
    // Kept under its old name (profiles-<id>.json), so enrolments made before survive an update.
    const profilesFile = path.join(dataDir(RED, 'tinyml'), `profiles-${this.id}.json`);
    try {
      trustStore = TrustStore.load(trustFile);
    } catch (err) {
      this.error(t('errors.trust_store', { message: (err as Error).message }));
    }
    if (trustStore.skipped) this.warn(t('errors.trust_store-skipped', { count: trustStore.skipped, file: trustFile }));

    const enrolled = ({ source, profile, separation }: Enrolled) => {
      enrolling = undefined;
      sourceCount++;
      this.log(t('log.enrolled', { source }));
      notice = undefined;
      // A weak enrolment is said in the log and on every score of the source, not held in the status.
      if (profile.weakEnrolment) this.warn(t('log.weak-enrolment', { source, windows: profile.windows }));
      if (profile.outOfRange.length) {
        const oneClass = config.outOfRange === 'one-class';
        notice = t(oneClass ? 'status.out-of-range' : 'status.out-of-range-rejected', { source });
        this.warn(
          t(oneClass ? 'log.out-of-range' : 'log.out-of-range-rejected', {
            source,
            features: profile.outOfRange.join(', '),
          }),
        );
      }
      if (separation && separation.distance < runtime().SEPARATION_WARNING) {
        notice = t('status.too-close', { source, other: separation.nearest });
        this.warn(t('log.too-close', { source, other: separation.nearest, distance: separation.distance.toFixed(2) }));
      }
      refreshStatus();
    };

    let monitor: BehaviourMonitor | undefined;
    let store: ProfileStore | undefined;
    let replayTimer: NodeJS.Timeout | undefined;
    const loaded = loadModel(modelDir)
      .then(model => {
        modelId = model.id;
        const { ProfileStore, BehaviourMonitor } = runtime();
        store = new ProfileStore(profilesFile, model.id, model.embeddingSize);
        store.onSaveError = err => this.error(t('errors.profiles-save', { message: err.message }));
        if (store.loaded.problem) this.warn(t('errors.profiles', { message: store.loaded.problem }));
        else if (store.loaded.skipped) this.warn(t('errors.profiles-skipped', { count: store.loaded.skipped }));
        sourceCount = store.size;
        monitor = new BehaviourMonitor(model, store, {
          enrolWindows,
          ...(enrolMinutes !== undefined ? { enrolMs: enrolMinutes * 60_000 } : {}),
          maxSources,
          replayMemory: 32768,
          autoEnrol: config.mode === 'enrol',
          thresholdOverride: override !== undefined && override >= 0 && override <= 1 ? override : undefined,
          outOfRange: config.outOfRange === 'one-class' ? 'one-class' : 'reject',
        });
        monitor.onEnrolled = enrolled;
        replayTimer = setInterval(() => monitor?.saveReplayMemory(), REPLAY_SAVE_MS);
        ready = true;
        showStatus();
      })
      .catch(err => {
        // A model that does not load, or a profiles folder that cannot be used: messages then
        // leave on output 2 as model_unavailable, never unrouted.
        monitor = undefined;
        failure = t('status.model-failed');
        this.error(nodeError(RED, 'm2m-tinyml-verify', err));
        showStatus();
      });

    const peerCheck = (msg: M2MMessage): PeerSignatureResult | undefined => {
      const signature = msg.m2m?.signature;
      if (signature === undefined) return config.requireSignature ? { valid: false, reason: 'unsigned' } : undefined;
      return trustStore.verify(signature, msg.payload);
    };

    // Once the model has loaded (or failed to), messages are handled as they come: a promise turn
    // per message would cost more than the check. Those that came before wait for it, in order.
    let settled = false;
    loaded.then(() => {
      settled = true;
    });

    this.on('input', (msg: M2MMessage, send, done) => {
      const failed = (err: unknown) => done(messageError(RED, 'm2m-tinyml-verify', msg, err));
      const deep = tooDeep(RED, 'm2m-tinyml-verify', msg);
      if (deep) {
        done(deep);
        return;
      }
      const handle = () => {
        const item: Routed = { msg, send, done };
        const key = RED.util.getMessageProperty(msg, config.keyProperty || 'topic');
        if (key !== undefined && key !== null && typeof key !== 'string' && typeof key !== 'number') {
          failed(
            new M2MError(
              'invalid_source',
              `msg.${config.keyProperty || 'topic'} names the source: it must be text or a number, not ${typeof key}`,
              400,
            ),
          );
          return;
        }
        const source = key === undefined || key === null ? '' : String(key);
        if (!monitor) {
          gate.reject(source, item, 'model_unavailable');
          return;
        }
        const peer = peerCheck(msg);
        if (peer) msg.m2m = { ...m2mOf(msg), peer };
        else if ('peer' in m2mOf(msg)) {
          // m2m.peer is this node's finding: one an upstream node wrote was checked by nobody.
          const { peer: _unchecked, ...rest } = m2mOf(msg);
          msg.m2m = rest;
        }
        if (peer && !peer.valid) {
          gate.reject(source, item, peer.reason);
          return;
        }
        if (msg.m2m?.enrol === true && config.enrolOnRequest) monitor.startEnrolment(source);
        const value = RED.util.getMessageProperty(msg, config.valueProperty || 'payload');
        const time = config.timeProperty
          ? RED.util.getMessageProperty(msg, config.timeProperty)
          : performance.timeOrigin + performance.now();
        const verdict = monitor.observe(source, value, time);
        if (verdict.status === 'scored') {
          last = verdict;
          refreshStatus();
        } else if (verdict.status === 'unverified' && verdict.reason === 'enrolling') {
          // The reading that completes an enrolment is still reported as enrolling.
          const windows = verdict.enrolled ?? 0;
          enrolling = windows < enrolWindows ? { source, windows } : undefined;
          refreshStatus();
        }
        gate.handle(source, item, verdict);
      };
      if (!settled) {
        loaded.then(handle).catch(failed);
        return;
      }
      try {
        handle();
      } catch (err) {
        failed(err);
      }
    });

    this.on('close', (removed: boolean, done: () => void) => {
      if (statusTimer) clearTimeout(statusTimer);
      if (replayTimer) clearInterval(replayTimer);
      monitor?.saveReplayMemory();
      try {
        store?.flush();
      } catch (err) {
        this.error(t('errors.profiles-save', { message: (err as Error).message }));
      }
      // Held messages were never verified; they leave on output 2 rather than vanish.
      gate.drain('closed');
      if (removed) removeStateFiles(profilesFile, profilesFile.replace(/\.json$/, '.replay.json'));
      done();
    });
  }

  RED.nodes.registerType('m2m-tinyml-verify', TinymlVerify);
};
