import * as assert from 'node:assert/strict';
import { ApiError, type AttestAnswer } from '../../lib/edge/api-client';
import {
  backoffDelay,
  type Clock,
  DEFAULT_REAUTH,
  type KeeperEvent,
  renewalDelay,
  TokenKeeper,
  TRIGGER_SPACING_MS,
  type Trigger,
} from '../../lib/edge/reauth';

/** Time that moves only when a test says so; timers fire in order. */
class FakeClock implements Clock {
  time = 1_000_000;
  private timers: Array<{ at: number; fn: () => void; id: number }> = [];
  private ids = 0;
  randomValue = 0.5;

  now(): number {
    return this.time;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = ++this.ids;
    this.timers.push({ at: this.time + ms, fn, id });
    return id;
  }
  clearTimeout(handle: unknown): void {
    this.timers = this.timers.filter(timer => timer.id !== handle);
  }
  random(): number {
    return this.randomValue;
  }
  /** When the next timer is due, or undefined. */
  get next(): number | undefined {
    return this.timers.length ? Math.min(...this.timers.map(timer => timer.at)) : undefined;
  }
  /** Moves to the next timer and runs it, then lets the promises it started settle. */
  async fire(): Promise<void> {
    const due = this.next!;
    this.time = due;
    const ready = this.timers.filter(timer => timer.at <= due);
    this.timers = this.timers.filter(timer => timer.at > due);
    for (const timer of ready) timer.fn();
    await settle();
  }
}

const settle = () => new Promise(resolve => setImmediate(resolve));

const approved = (clock: FakeClock, lifetimeMs = 900_000): AttestAnswer => ({
  decision: 'approved',
  reasons: [],
  sessionId: 's',
  token: `token-${clock.now()}`,
  expiresAt: new Date(clock.now() + lifetimeMs).toISOString(),
});

function keeper(clock: FakeClock, answers: Array<(trigger: Trigger) => AttestAnswer | Error>) {
  const calls: Trigger[] = [];
  const events: KeeperEvent[] = [];
  const k = new TokenKeeper(
    async trigger => {
      calls.push(trigger);
      const next = answers.shift() ?? (() => approved(clock));
      const answer = next(trigger);
      if (answer instanceof Error) throw answer;
      return answer;
    },
    'press-7',
    { ...DEFAULT_REAUTH, startSpreadMs: 0 },
    clock,
  );
  k.onEvent = event => events.push(event);
  return { k, calls, events };
}

describe('lib/edge/reauth: one current token per device', () => {
  it('renews at half the lifetime, within ±10 % jitter, never under the floor', () => {
    const random = (r: number) => () => r;
    assert.equal(renewalDelay(0, 900_000, DEFAULT_REAUTH, random(0.5)), 450_000);
    assert.equal(renewalDelay(0, 900_000, DEFAULT_REAUTH, random(0)), 405_000);
    assert.ok(Math.abs(renewalDelay(0, 900_000, DEFAULT_REAUTH, random(0.999999)) - 495_000) < 1);
    assert.equal(renewalDelay(0, 40_000, DEFAULT_REAUTH, random(0.5)), 30_000, 'the floor');
    assert.equal(renewalDelay(0, 10_000, DEFAULT_REAUTH, random(0.5)), 9000, 'never after the token ends');
  });

  it('backs off exponentially with full jitter, capped at 5 minutes', () => {
    const ceilings = [1, 2, 3, 4, 5, 6, 9, 12].map(n => backoffDelay(n, DEFAULT_REAUTH, () => 0.999999));
    assert.deepEqual(
      ceilings.map(ms => Math.round(ms)),
      [1000, 2000, 4000, 8000, 16000, 32000, 256000, 300000],
    );
    assert.ok(backoffDelay(3, DEFAULT_REAUTH, () => 0) >= 1, 'full jitter reaches down to (almost) nothing');
    assert.ok(backoffDelay(3, DEFAULT_REAUTH, () => 0.25) === 1000);
  });

  it('attests on start, then on schedule, and spreads a fleet over the jitter window', async () => {
    const clock = new FakeClock();
    const { k, calls, events } = keeper(clock, []);
    k.start();
    await clock.fire();
    assert.deepEqual(calls, ['start']);
    assert.equal(events[0].type, 'approved');
    assert.equal(clock.next, clock.now() + 450_000);
    await clock.fire();
    assert.deepEqual(calls, ['start', 'schedule']);
    const spread = [0, 0.25, 0.5, 0.75, 0.999].map(r => renewalDelay(0, 900_000, DEFAULT_REAUTH, () => r));
    assert.ok(Math.max(...spread) - Math.min(...spread) > 80_000, 'restarted together, renewed apart');
  });

  it('keeps a still-valid token through an outage (grace), and drops it when it expires', async () => {
    const clock = new FakeClock();
    const down = () => new ApiError('verifier_unreachable', 'down', 0);
    const { k, events } = keeper(clock, [() => approved(clock, 60_000), ...new Array(30).fill(down)]);
    k.start();
    await clock.fire();
    const token = k.current()!.token;
    await clock.fire(); // the renewal at 30 s fails
    assert.deepEqual([events[1].type, (events[1] as { grace: boolean }).grace], ['failed', true]);
    assert.equal(k.current()?.token, token, 'stamping goes on with the last token');
    while (clock.now() < 1_000_000 + 60_000) await clock.fire();
    assert.equal(k.current(), undefined);
  });

  it('drops the token at once on a decline, and on a revoked (unknown) device', async () => {
    for (const answer of [
      (): AttestAnswer => ({ decision: 'declined', reasons: ['tinyml_low'], sessionId: 's' }),
      () => new ApiError('device_unknown', 'no active device', 404),
    ]) {
      const clock = new FakeClock();
      const { k, events } = keeper(clock, [() => approved(clock), answer]);
      k.start();
      await clock.fire();
      assert.ok(k.current());
      await k.trigger('risk');
      assert.equal(k.current(), undefined);
      assert.equal(events[1].type, 'declined');
      const wait = clock.next! - clock.now();
      assert.ok(
        wait >= DEFAULT_REAUTH.declineBackoffBaseMs / 2 && wait <= DEFAULT_REAUTH.declineBackoffBaseMs,
        `${wait} ms`,
      );
    }
  });

  it('asks again after a decision against the device in tens of seconds, not in a burst', async () => {
    const clock = new FakeClock();
    clock.randomValue = 0;
    const declined = (): AttestAnswer => ({ decision: 'declined', reasons: ['device_revoked'], sessionId: 's' });
    const { k, calls } = keeper(clock, [declined, declined, declined, declined, declined]);
    k.start();
    const started = clock.now();
    for (let i = 0; i < 5; i++) await clock.fire();
    assert.equal(calls.length, 5);
    // Four waits of at least half the base each, even with the lowest random draw.
    assert.ok(clock.now() - started >= 4 * (DEFAULT_REAUTH.declineBackoffBaseMs / 2), `${clock.now() - started} ms`);
  });

  it('re-attests at once on a trigger, once for several that arrive during an attempt', async () => {
    const clock = new FakeClock();
    let release: (() => void) | undefined;
    const calls: Trigger[] = [];
    const k = new TokenKeeper(
      async trigger => {
        calls.push(trigger);
        if (trigger === 'network')
          await new Promise<void>(resolve => {
            release = resolve;
          });
        return approved(clock);
      },
      'press-7',
      { ...DEFAULT_REAUTH, startSpreadMs: 0 },
      clock,
    );
    k.start();
    await clock.fire();
    void k.trigger('network');
    await settle();
    void k.trigger('task');
    void k.trigger('unauthorized');
    release!();
    await settle();
    await settle();
    // The follow-up waits out the spacing between trigger-caused attempts.
    assert.deepEqual(calls, ['start', 'network']);
    assert.equal(clock.next, 1_000_000 + TRIGGER_SPACING_MS);
    await clock.fire();
    assert.deepEqual(calls, ['start', 'network', 'task']);
  });

  it('turns a flood of triggers into one attempt every few seconds', async () => {
    const clock = new FakeClock();
    const { k, calls } = keeper(clock, []);
    k.start();
    await clock.fire();
    // 60 "401"s in 4.6 s, as a receiver rejecting every message would send them.
    for (let i = 0; i < 60; i++) {
      void k.trigger('unauthorized');
      await settle();
      clock.time += 77;
    }
    assert.deepEqual(calls, ['start', 'unauthorized']);
    await clock.fire();
    assert.deepEqual(calls, ['start', 'unauthorized', 'unauthorized']);
  });

  it('keeps an asked-for attempt waiting out its spacing when the token is dropped meanwhile', async () => {
    const clock = new FakeClock();
    const { k, calls } = keeper(clock, []);
    k.start();
    await clock.fire();
    void k.trigger('request');
    await settle();
    clock.time += 1000;
    // Asked again within the spacing: planned for when it has passed.
    void k.trigger('request');
    await settle();
    assert.equal(clock.next, 1_000_000 + TRIGGER_SPACING_MS);
    // The revocation list names the token before then: it goes at once, and the asked-for
    // attempt still comes at its moment rather than after a decline's backoff of 15-30 s.
    clock.time += 1000;
    k.invalidate('device_revoked');
    assert.equal(k.current(), undefined);
    assert.equal(clock.next, 1_000_000 + TRIGGER_SPACING_MS);
    await clock.fire();
    assert.deepEqual(calls, ['start', 'request', 'request']);
  });

  it('spreads the first attestations of a fleet started at once over a few seconds', () => {
    const starts = [0, 0.3, 0.6, 0.99].map(r => {
      const clock = new FakeClock();
      clock.randomValue = r;
      new TokenKeeper(async () => approved(clock), 'd', DEFAULT_REAUTH, clock).start();
      return clock.next! - clock.now();
    });
    assert.deepEqual(
      starts.map(ms => Math.round(ms)),
      [0, 1500, 3000, 4950],
    );
  });

  it('resumes with a saved token that is still good, renewing it on schedule', async () => {
    const clock = new FakeClock();
    const calls: Trigger[] = [];
    const saved = { deviceId: 'press-7', token: 'saved', expiresAt: clock.now() + 600_000 };
    const k = new TokenKeeper(
      async trigger => {
        calls.push(trigger);
        return approved(clock);
      },
      'press-7',
      DEFAULT_REAUTH,
      clock,
      saved,
    );
    k.start();
    await settle();
    assert.deepEqual(calls, []);
    assert.equal(k.current()?.token, 'saved');
    assert.equal(clock.next, clock.now() + 300_000);
  });
});
