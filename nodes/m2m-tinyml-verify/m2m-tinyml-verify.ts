/**
 * Checks that each source feeding the flow behaves like the device enrolled under its name:
 * a rolling window of (value, time) per source → the behaviour model → score against the
 * source's enrolled profile. Output 1 trusted, output 2 suspicious (with the reason), so nothing
 * unverified passes silently. Also checks Ed25519 signatures of peer messages against a local
 * trust store. The logic lives in lib/tinyml; this file is configuration and wiring.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Node, NodeAPI, NodeDef, NodeMessage } from 'node-red';
import { TrustStore, type PeerSignatureResult } from '../../lib/edge/peer-signature';
import { HeldMessages } from '../../lib/held-messages';
import type { BehaviourMonitor, Verdict } from '../../lib/tinyml/behaviour-monitor';
import { shippedModelDir } from '../../lib/tinyml/catalog';
import { WINDOW } from '../../lib/tinyml/features';
import type { BehaviourModel } from '../../lib/tinyml/model';
import type { ProfileStore } from '../../lib/tinyml/profile-store';
import { dataDir, errorText, status } from '../shared/node-kit';

type Policy = 'pass' | 'hold' | 'reject';

interface TinymlVerifyDef extends NodeDef {
  mode: 'verify' | 'enrol';
  keyProperty: string;
  valueProperty: string;
  timeProperty: string;
  enrolWindows: number | string;
  unverified: Policy;
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
    model = Promise.resolve().then(async () => {
      const { useBackend, BehaviourModel } = runtime();
      await useBackend();
      return BehaviourModel.load(dir);
    });
    model.catch(() => models.delete(key));
    models.set(key, model);
  }
  return model;
}

function positiveInt(value: number | string, fallback: number): number {
  const n = Number(value);
  return Number.isInteger(n) && n > 0 ? n : fallback;
}

export = (RED: NodeAPI) => {
  function TinymlVerify(this: Node, config: TinymlVerifyDef) {
    RED.nodes.createNode(this, config);
    const t = (key: string, values?: Record<string, string | number>) => RED._(`m2m-tinyml-verify.${key}`, values);
    const modelDir = config.model?.trim()
      ? path.resolve(config.model.trim())
      : shippedModelDir(config.timeProperty ? 'source' : 'arrival');
    const policy: Policy = ['pass', 'hold', 'reject'].includes(config.unverified) ? config.unverified : 'hold';
    const override = config.threshold === '' || config.threshold === undefined ? undefined : Number(config.threshold);
    const thresholdOverride = override !== undefined && override >= 0 && override <= 1 ? override : undefined;
    const enrolWindows = positiveInt(config.enrolWindows, 20);
    // Room for one source's whole enrolment, so holding it does not spill onto output 2.
    const held = new HeldMessages<Routed>(Math.max(1000, (enrolWindows + 1) * WINDOW));

    let trustStore = TrustStore.empty();
    const trustFile = config.trustStore?.trim() || path.join(dataDir(RED), 'trust-store.jwks.json');
    try {
      trustStore = TrustStore.load(trustFile);
    } catch (err) {
      this.error(t('errors.trust_store', { message: (err as Error).message }));
    }
    if (trustStore.skipped) this.warn(t('errors.trust_store-skipped', { count: trustStore.skipped, file: trustFile }));

    let monitor: BehaviourMonitor | undefined;
    let store: ProfileStore | undefined;
    let modelId = '';
    let failure: string | undefined;
    let last: { score: number; trusted: boolean } | undefined;
    let enrolling: { source: string; windows: number } | undefined;
    let statusTimer: NodeJS.Timeout | undefined;

    const showStatus = () => {
      statusTimer = undefined;
      if (failure) this.status(status.failed(failure));
      else if (!store) this.status(status.waiting(t('status.loading')));
      else if (enrolling)
        this.status(
          status.waiting(
            t('status.enrolling', { source: enrolling.source, windows: enrolling.windows, of: enrolWindows }),
          ),
        );
      else if (last)
        this.status(
          (last.trusted ? status.working : status.failed)(
            t('status.score', { score: last.score.toFixed(2), sources: store.size }),
          ),
        );
      else
        this.status(
          (store.size ? status.working : status.idle)(
            t(config.mode === 'enrol' ? 'status.enrol-mode' : 'status.enrolled', { count: store.size }),
          ),
        );
    };
    // Status at message rate would flood the editor; twice a second is what a person can read.
    const refreshStatus = () => {
      statusTimer ??= setTimeout(showStatus, 500);
    };
    showStatus();

    const ready = loadModel(modelDir)
      .then(model => {
        modelId = model.id;
        const { ProfileStore, BehaviourMonitor } = runtime();
        store = new ProfileStore(
          path.join(dataDir(RED, 'tinyml'), `profiles-${this.id}.json`),
          model.id,
          model.embeddingSize,
        );
        store.onSaveError = err => this.error(t('errors.profiles-save', { message: err.message }));
        if (store.loaded.problem) this.warn(t('errors.profiles', { message: store.loaded.problem }));
        else if (store.loaded.skipped) this.warn(t('errors.profiles-skipped', { count: store.loaded.skipped }));
        monitor = new BehaviourMonitor(model, store, {
          enrolWindows,
          maxSources: positiveInt(config.maxSources, 1000),
          replayMemory: 65536,
          autoEnrol: config.mode === 'enrol',
          maxBatch: 64,
          thresholdOverride,
        });
        monitor.onEnrolled = source => {
          enrolling = undefined;
          this.log(t('log.enrolled', { source }));
          refreshStatus();
        };
        showStatus();
      })
      .catch(err => {
        // A model that does not load, or a profiles folder that cannot be used: messages then
        // leave on output 2 as model_unavailable, never unrouted.
        monitor = undefined;
        failure = t('status.model-failed');
        this.error(errorText(RED, 'm2m-tinyml-verify', err));
        showStatus();
      });

    const route = (item: Routed, trusted: boolean, tinyml: Record<string, unknown>) => {
      item.msg.m2m = { ...item.msg.m2m, tinyml: { ...tinyml, model: modelId } };
      item.send(trusted ? [item.msg, null] : [null, item.msg]);
      item.done();
    };

    const scored = (source: string, verdict: Extract<Verdict, { status: 'scored' }>) => ({
      source,
      score: Math.round(verdict.score * 1e4) / 1e4,
      threshold: Math.round(verdict.threshold * 1e4) / 1e4,
      trusted: verdict.trusted,
      ...(verdict.trusted ? {} : { reason: verdict.replay ? 'replay' : 'score_below_threshold' }),
    });

    const onVerdict = (item: Routed, source: string, verdict: Verdict) => {
      if (verdict.status === 'scored') {
        last = verdict;
        refreshStatus();
        const tinyml = scored(source, verdict);
        for (const waiting of held.take(source)) route(waiting, verdict.trusted, { ...tinyml, held: true });
        route(item, verdict.trusted, tinyml);
        return;
      }
      const tinyml = {
        source,
        score: null,
        trusted: false,
        reason: verdict.reason,
        ...('enrolled' in verdict ? { enrolled: verdict.enrolled } : {}),
      };
      if (verdict.status === 'rejected' || policy === 'reject') route(item, false, tinyml);
      else if (policy === 'pass') route(item, true, tinyml);
      else {
        const overflow = held.add(source, item);
        if (overflow)
          route(overflow.item, false, { source: overflow.key, score: null, trusted: false, reason: 'hold_overflow' });
      }
      if (verdict.status === 'unverified' && verdict.reason === 'enrolling') {
        // The reading that completes an enrolment is still reported as enrolling.
        const windows = verdict.enrolled ?? 0;
        enrolling = windows < enrolWindows ? { source, windows } : undefined;
        refreshStatus();
      }
    };

    const peerCheck = (msg: M2MMessage): PeerSignatureResult | undefined => {
      const signature = msg.m2m?.signature;
      if (signature === undefined) return config.requireSignature ? { valid: false, reason: 'unsigned' } : undefined;
      return trustStore.verify(signature, msg.payload);
    };

    this.on('input', (msg: M2MMessage, send, done) => {
      ready
        .then(() => {
          const item: Routed = { msg, send, done };
          const key = RED.util.getMessageProperty(msg, config.keyProperty || 'topic');
          const source = key === undefined || key === null ? '' : String(key);
          if (!monitor) {
            route(item, false, { source, score: null, trusted: false, reason: 'model_unavailable' });
            return;
          }
          const peer = peerCheck(msg);
          if (peer) msg.m2m = { ...msg.m2m, peer };
          if (peer && !peer.valid) {
            route(item, false, { source, score: null, trusted: false, reason: peer.reason });
            return;
          }
          if (msg.m2m?.enrol === true && config.enrolOnRequest) monitor.startEnrolment(source);
          const value = RED.util.getMessageProperty(msg, config.valueProperty || 'payload');
          const time = config.timeProperty
            ? RED.util.getMessageProperty(msg, config.timeProperty)
            : performance.timeOrigin + performance.now();
          const verdict = monitor.observe(source, value, time);
          if (verdict instanceof Promise) verdict.then(v => onVerdict(item, source, v), done);
          else onVerdict(item, source, verdict);
        })
        .catch(done);
    });

    this.on('close', (done: () => void) => {
      if (statusTimer) clearTimeout(statusTimer);
      monitor?.flush();
      try {
        store?.flush();
      } catch (err) {
        this.error(t('errors.profiles-save', { message: (err as Error).message }));
      }
      // Held messages were never verified; they leave on output 2 rather than vanish.
      for (const { key, item } of held.drain())
        route(item, false, { source: key, score: null, trusted: false, reason: 'closed' });
      done();
    });
  }

  RED.nodes.registerType('m2m-tinyml-verify', TinymlVerify);
};
